//! Subsets of a dataset: the validation split held out from training, and data fractions.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Dataset, Error, ImageShape, Result};

/// The images of `base` at `indices`.
pub struct Subset {
    base: Arc<dyn Dataset>,
    indices: Vec<usize>,
    name: String,
}

impl Subset {
    pub fn new(base: Arc<dyn Dataset>, indices: Vec<usize>, name: &str) -> Subset {
        let name = format!("{} ({name}, {} images)", base.describe(), indices.len());
        Subset {
            base,
            indices,
            name,
        }
    }

    /// A random `fraction` of `base` (at least one image), drawn with `seed`, in base order.
    pub fn fraction(base: Arc<dyn Dataset>, fraction: f64, seed: u64) -> Result<Subset> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Spec(format!(
                "data fraction {fraction} must lie in (0, 1]"
            )));
        }
        let count = ((base.len() as f64 * fraction).round() as usize).clamp(1, base.len().max(1));
        let mut indices: Vec<usize> = (0..base.len()).collect();
        indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        indices.truncate(count);
        indices.sort_unstable();
        Ok(Subset::new(
            base,
            indices,
            &format!("{:.0}%", fraction * 100.0),
        ))
    }
}

/// Holds out a random `fraction` of `train` for validation, fixed by `seed`; returns
/// (training, validation). Both keep the base order.
pub fn split_validation(
    train: Arc<dyn Dataset>,
    fraction: f64,
    seed: u64,
) -> Result<(Subset, Subset)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Spec(format!(
            "validation fraction {fraction} must lie in [0, 1)"
        )));
    }
    let held_out = (train.len() as f64 * fraction).round() as usize;
    if fraction > 0.0 && (held_out == 0 || held_out == train.len()) {
        return Err(Error::Spec(format!(
            "validation fraction {fraction} of {} images leaves an empty split",
            train.len()
        )));
    }
    let mut indices: Vec<usize> = (0..train.len()).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (mut val, mut rest) = (indices[..held_out].to_vec(), indices[held_out..].to_vec());
    val.sort_unstable();
    rest.sort_unstable();
    Ok((
        Subset::new(train.clone(), rest, "training split"),
        Subset::new(train, val, "validation split"),
    ))
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn shape(&self) -> ImageShape {
        self.base.shape()
    }

    fn classes(&self) -> usize {
        self.base.classes()
    }

    fn label(&self, index: usize) -> usize {
        self.base.label(self.indices[index])
    }

    fn read(&self, index: usize, out: &mut [u8]) -> Result<()> {
        self.base.read(self.indices[index], out)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
