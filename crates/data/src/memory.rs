//! A dataset held whole in memory (IDX, CIFAR, the demo), resized once at load.

use rayon::prelude::*;

use crate::{resize_center_crop, Dataset, Error, ImageShape, Result};

pub struct InMemory {
    pixels: Vec<u8>,
    labels: Vec<u16>,
    shape: ImageShape,
    classes: usize,
    name: String,
}

impl InMemory {
    /// `pixels` holds `labels.len()` images of `channels x height x width` bytes; they are resized
    /// to `size x size` (shorter side, then centre crop) unless already that size. Every label
    /// must be below `classes`.
    pub fn new(
        name: String,
        pixels: Vec<u8>,
        labels: Vec<u16>,
        (channels, height, width): (usize, usize, usize),
        size: usize,
        classes: usize,
    ) -> Result<InMemory> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(Error::Spec(format!(
                "{name}: images of {channels} x {height} x {width}: expected positive dimensions"
            )));
        }
        let image = channels * height * width;
        if pixels.len() != labels.len() * image {
            return Err(Error::Spec(format!(
                "{name}: {} bytes for {} images of {image} bytes",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(Error::Spec(format!(
                "{name}: label {label} of image {i} is out of range: expected below {classes}"
            )));
        }
        if size == 0 {
            return Err(Error::Spec(format!("{name}: resolution must be positive")));
        }
        let pixels = if height == size && width == size {
            pixels
        } else {
            pixels
                .par_chunks(image.max(1))
                .flat_map_iter(|img| resize_center_crop(img, channels, height, width, size))
                .collect()
        };
        Ok(InMemory {
            pixels,
            labels,
            shape: ImageShape { channels, size },
            classes,
            name,
        })
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn shape(&self) -> ImageShape {
        self.shape
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }

    fn read(&self, index: usize, out: &mut [u8]) -> Result<()> {
        let bytes = self.shape.bytes();
        out.copy_from_slice(&self.pixels[index * bytes..][..bytes]);
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
