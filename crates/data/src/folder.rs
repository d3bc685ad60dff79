//! Image folders laid out as ImageNet's: `ROOT/CLASS/*.{jpg,jpeg,png}`. Only the file list is
//! held in memory; each read decodes one file.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};
use rayon::prelude::*;

use crate::{resize_center_crop, Dataset, Error, ImageShape, Result};

pub struct ImageFolder {
    root: PathBuf,
    files: Vec<(PathBuf, u16)>,
    class_names: Vec<String>,
    shape: ImageShape,
    /// The files left out for not decoding (`skip_bad_images`): "PATH: why".
    skipped: Vec<String>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(Error::io(dir)))
        .collect::<Result<_>>()?;
    entries.sort();
    Ok(entries)
}

/// The largest image side read, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// The most memory one image may decode into: a file's header can claim any size, and a small
/// compressed file can legitimately decode to a large image, so the claim is capped here (a
/// 4000x3000 RGB photograph needs 36 MB).
pub const MAX_IMAGE_BYTES: u64 = 128 << 20;

/// A reader of the image at `path`, its format guessed from the content, with the limits above.
fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    let mut reader = ImageReader::open(path)
        .map_err(Error::io(path))?
        .with_guessed_format()
        .map_err(Error::io(path))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    Ok(reader)
}

fn decode_error(path: &Path, e: image::ImageError) -> Error {
    let message = match e {
        image::ImageError::Limits(_) => format!(
            "image does not decode: it is larger than eatnas reads ({MAX_IMAGE_SIDE} pixels a side, {} MiB decoded)",
            MAX_IMAGE_BYTES >> 20
        ),
        e => format!("image does not decode: {e}"),
    };
    Error::format(path, message)
}

fn open_image(path: &Path) -> Result<DynamicImage> {
    reader(path)?.decode().map_err(|e| decode_error(path, e))
}

impl ImageFolder {
    /// Lists `root/CLASS/*` for the given class names (in that order; `None`: every
    /// sub-folder of `root`, sorted). Images are delivered as `size x size` (default: the
    /// shorter side of the first image, at most 224), with one channel when the first image of
    /// every class is greyscale and three otherwise. With `skip_bad_images`, every file is
    /// decoded once here and those that do not decode (undecodable, truncated, too large) are
    /// left out ([`ImageFolder::skipped`]); without, such a file is an error naming it when it is
    /// read.
    pub fn open(
        root: &Path,
        class_names: Option<&[String]>,
        size: Option<usize>,
        skip_bad_images: bool,
    ) -> Result<ImageFolder> {
        if !root.is_dir() {
            return Err(Error::Spec(format!(
                "{}: not a folder (expected ROOT/CLASS/*.jpg or *.png)",
                root.display()
            )));
        }
        let class_names: Vec<String> = match class_names {
            Some(names) => names.to_vec(),
            None => sorted_entries(root)?
                .into_iter()
                .filter(|p| p.is_dir())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
        };
        if class_names.is_empty() {
            return Err(Error::Spec(format!(
                "{}: no class folders (expected ROOT/CLASS/*.jpg or *.png)",
                root.display()
            )));
        }
        if class_names.len() > u16::MAX as usize {
            return Err(Error::Spec(format!(
                "{}: {} classes, at most {} supported",
                root.display(),
                class_names.len(),
                u16::MAX
            )));
        }
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut colour = false;
        let mut first_size = None;
        for (label, name) in class_names.iter().enumerate() {
            let dir = root.join(name);
            if !dir.is_dir() {
                return Err(Error::Spec(format!(
                    "{}: missing class folder `{name}`",
                    root.display()
                )));
            }
            let mut images: Vec<PathBuf> = sorted_entries(&dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .collect();
            if skip_bad_images {
                let verdicts: Vec<Option<String>> = images
                    .par_iter()
                    .map(|p| open_image(p).err().map(|e| e.to_string()))
                    .collect();
                let mut verdicts = verdicts.into_iter();
                images.retain(|_| match verdicts.next().flatten() {
                    Some(why) => {
                        skipped.push(why);
                        false
                    }
                    None => true,
                });
            }
            let Some(first) = images.first() else {
                return Err(Error::Spec(format!(
                    "{}: class folder holds no .jpg, .jpeg or .png image",
                    dir.display()
                )));
            };
            let decoder = reader(first)?
                .into_decoder()
                .map_err(|e| decode_error(first, e))?;
            colour |= decoder.color_type().has_color();
            let (w, h) = decoder.dimensions();
            first_size.get_or_insert(w.min(h) as usize);
            files.extend(images.into_iter().map(|p| (p, label as u16)));
        }
        let size = size.or(first_size.map(|s| s.min(224))).unwrap_or(0);
        if size == 0 {
            return Err(Error::Spec(format!(
                "{}: image resolution must be positive",
                root.display()
            )));
        }
        let shape = ImageShape {
            channels: if colour { 3 } else { 1 },
            size,
        };
        Ok(ImageFolder {
            root: root.to_path_buf(),
            files,
            class_names,
            shape,
            skipped,
        })
    }

    /// The files [`ImageFolder::open`] left out, each as "PATH: why".
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> ImageShape {
        self.shape
    }

    fn classes(&self) -> usize {
        self.class_names.len()
    }

    fn label(&self, index: usize) -> usize {
        self.files[index].1 as usize
    }

    fn read(&self, index: usize, out: &mut [u8]) -> Result<()> {
        let path = &self.files[index].0;
        let image = open_image(path)?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let planar: Vec<u8> = if self.shape.channels == 3 {
            let rgb = image.into_rgb8();
            let pixels = width * height;
            let mut planar = vec![0u8; 3 * pixels];
            let (r, gb) = planar.split_at_mut(pixels);
            let (g, b) = gb.split_at_mut(pixels);
            for (i, p) in rgb.as_raw().chunks_exact(3).enumerate() {
                (r[i], g[i], b[i]) = (p[0], p[1], p[2]);
            }
            planar
        } else {
            image.into_luma8().into_raw()
        };
        out.copy_from_slice(&resize_center_crop(
            &planar,
            self.shape.channels,
            height,
            width,
            self.shape.size,
        ));
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "image folder {} ({} images, {} classes)",
            self.root.display(),
            self.files.len(),
            self.class_names.len()
        )
    }
}
