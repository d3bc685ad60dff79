//! eatnas-data: labelled image datasets behind one trait, and the batches training reads.
//!
//! - IDX files (MNIST, Fashion-MNIST; gzip or raw), CIFAR-10 and CIFAR-100 binary batches: loaded
//!   whole, resized once to the requested resolution.
//! - Image folders laid out as ImageNet's (`DIR/train/CLASS/*`, `DIR/val/CLASS/*`): decoded from
//!   disk per batch by a worker pool, never loaded whole.
//! - The embedded demo: a class-balanced Fashion-MNIST subset compiled into the binary.
//! - Validation splits with a fixed seed, subsets, augmentation (random crop with padding,
//!   horizontal flip), per-channel normalisation, and a prefetching batch loader.

mod cifar;
mod error;
mod folder;
mod idx;
mod loader;
mod memory;
mod resize;
mod spec;
mod split;

pub use error::{Error, Result};
pub use folder::ImageFolder;
pub use loader::{Augment, Batch, Batches, Loader, Normalize};
pub use memory::InMemory;
pub(crate) use resize::resize_center_crop;
pub use spec::{DataSpec, Splits};
pub use split::{split_validation, Subset};

/// The shape every image of a dataset is delivered in: `channels x size x size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub size: usize,
}

impl ImageShape {
    pub fn bytes(&self) -> usize {
        self.channels * self.size * self.size
    }
}

/// A labelled image dataset. Images come as `channels x size x size` bytes (0 to 255), already
/// resized to the dataset's resolution.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn shape(&self) -> ImageShape;
    fn classes(&self) -> usize;
    /// The class of image `index` (below `classes()`).
    fn label(&self, index: usize) -> usize;
    /// Writes image `index` into `out` (`shape().bytes()` long).
    fn read(&self, index: usize, out: &mut [u8]) -> Result<()>;
    /// Where the data came from, for messages.
    fn describe(&self) -> String;
}

/// What a classifier that learned nothing scores on a labelled set: enough to tell a training
/// that collapsed (its loss finite, so no error) from one that learned little.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChanceLevel {
    pub images: usize,
    /// The top-1 of always answering the set's most common class (0 when it is empty).
    pub majority_top1: f64,
}

impl ChanceLevel {
    /// `data`'s; reads every label, no image.
    pub fn of(data: &dyn Dataset) -> ChanceLevel {
        let mut counts = vec![0usize; data.classes()];
        for i in 0..data.len() {
            counts[data.label(i)] += 1;
        }
        let most = counts.iter().copied().max().unwrap_or(0);
        ChanceLevel {
            images: data.len(),
            majority_top1: if data.is_empty() {
                0.0
            } else {
                most as f64 / data.len() as f64
            },
        }
    }

    /// Whether a top-1 of `accuracy` on this set is no better than always answering its most
    /// common class, within three standard errors of that share. With 12,000 images of 10
    /// balanced classes: at most 0.108.
    pub fn at_chance(&self, accuracy: f64) -> bool {
        if self.images == 0 {
            return false;
        }
        let p = self.majority_top1;
        accuracy <= p + 3.0 * (p * (1.0 - p) / self.images as f64).sqrt()
    }
}
