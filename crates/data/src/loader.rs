//! Batches for training and evaluation: shuffling, augmentation and normalisation, prepared by a
//! worker pool one batch ahead of the consumer.
//!
//! Every random draw is a function of (seed, epoch, position), never of thread timing, so an
//! epoch started at batch k gives exactly the batches k, k+1, ... of the whole epoch: what resume
//! needs.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use eatnas_tensor::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{Dataset, Error, Result};

/// Training-time augmentation, as torchvision's RandomCrop(padding) and RandomHorizontalFlip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Zero padding on each side before a random crop back to the original size (0: no crop).
    pub crop_padding: usize,
    pub horizontal_flip: bool,
}

/// Per-channel normalisation of pixels scaled to [0, 1]: `(v - mean) / std`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Mean and standard deviation per channel over up to `max_images` images spread evenly
    /// over `dataset`.
    pub fn estimate(dataset: &dyn Dataset, max_images: usize) -> Result<Normalize> {
        let shape = dataset.shape();
        let count = dataset.len().min(max_images.max(1));
        if count == 0 {
            return Err(Error::Spec(format!(
                "{}: no images to estimate the normalisation from",
                dataset.describe()
            )));
        }
        let plane = shape.size * shape.size;
        let sums = (0..count)
            .into_par_iter()
            .map(|i| {
                let mut bytes = vec![0u8; shape.bytes()];
                dataset.read(i * dataset.len() / count, &mut bytes)?;
                let mut sums = vec![(0.0f64, 0.0f64); shape.channels];
                for (c, s) in sums.iter_mut().enumerate() {
                    for &v in &bytes[c * plane..][..plane] {
                        let v = v as f64 / 255.0;
                        s.0 += v;
                        s.1 += v * v;
                    }
                }
                Ok(sums)
            })
            .collect::<Result<Vec<_>>>()?;
        let n = (count * plane) as f64;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for c in 0..shape.channels {
            let (s, s2) = sums
                .iter()
                .fold((0.0, 0.0), |acc, v| (acc.0 + v[c].0, acc.1 + v[c].1));
            let m = s / n;
            mean.push(m as f32);
            std.push(((s2 / n - m * m).max(0.0).sqrt() as f32).max(1e-3));
        }
        Ok(Normalize { mean, std })
    }
}

/// One batch: images (N, C, S, S), normalised, and their labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
}

/// Makes batches of one dataset.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    augment: Option<Augment>,
    normalize: Normalize,
    seed: u64,
    pool: Arc<rayon::ThreadPool>,
}

/// A 64-bit mix of three words (SplitMix64's finaliser), for per-sample seeds.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Loader {
    /// A loader over `dataset`: `shuffle` and `augment` for training, neither for evaluation;
    /// `drop_last` leaves out a last partial batch. `workers` threads read and augment images.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
        augment: Option<Augment>,
        normalize: Normalize,
        seed: u64,
        workers: usize,
    ) -> Result<Loader> {
        let channels = dataset.shape().channels;
        if batch_size == 0 {
            return Err(Error::Spec("batch size must be at least 1".into()));
        }
        if normalize.mean.len() != channels || normalize.std.len() != channels {
            return Err(Error::Spec(format!(
                "normalisation has {} means and {} deviations for {channels}-channel images",
                normalize.mean.len(),
                normalize.std.len()
            )));
        }
        if drop_last && dataset.len() < batch_size {
            return Err(Error::Spec(format!(
                "{}: {} images cannot fill one batch of {batch_size}; lower the batch size",
                dataset.describe(),
                dataset.len()
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("eatnas-loader-{i}"))
            .build()
            .map_err(|e| Error::Spec(format!("cannot start the loader's worker threads: {e}")))?;
        Ok(Loader {
            dataset,
            batch_size,
            shuffle,
            drop_last,
            augment,
            normalize,
            seed,
            pool: Arc::new(pool),
        })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.dataset.len() / self.batch_size
        } else {
            self.dataset.len().div_ceil(self.batch_size)
        }
    }

    /// The image order of `epoch`.
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.seed,
                epoch as u64,
                0,
            )));
        }
        order
    }

    /// The batches of `epoch` from batch `first` on, prepared one ahead on the worker pool.
    pub fn epoch(&self, epoch: usize, first: usize) -> Batches {
        let (sender, receiver) = sync_channel(2);
        let loader = self.clone();
        std::thread::spawn(move || {
            let order = loader.order(epoch);
            for b in first..loader.batches_per_epoch() {
                let indices =
                    &order[b * loader.batch_size..((b + 1) * loader.batch_size).min(order.len())];
                let batch = loader
                    .pool
                    .install(|| loader.assemble(epoch, b * loader.batch_size, indices));
                if sender.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        Batches { receiver }
    }

    fn assemble(&self, epoch: usize, first_position: usize, indices: &[usize]) -> Result<Batch> {
        let shape = self.dataset.shape();
        let image = shape.bytes();
        let mut values = vec![0.0f32; indices.len() * image];
        values
            .par_chunks_mut(image)
            .zip(indices.par_iter())
            .enumerate()
            .try_for_each(|(i, (out, &index))| {
                let mut bytes = vec![0u8; image];
                self.dataset.read(index, &mut bytes)?;
                let mut rng = ChaCha8Rng::seed_from_u64(mix(
                    self.seed,
                    epoch as u64,
                    (first_position + i) as u64 + 1,
                ));
                self.transform(&bytes, out, &mut rng);
                Ok::<_, Error>(())
            })?;
        let labels = indices.iter().map(|&i| self.dataset.label(i)).collect();
        let images = Tensor::from_vec(
            values,
            &[indices.len(), shape.channels, shape.size, shape.size],
        )?;
        Ok(Batch { images, labels })
    }

    /// Crop, flip and normalise one image.
    fn transform(&self, bytes: &[u8], out: &mut [f32], rng: &mut ChaCha8Rng) {
        let shape = self.dataset.shape();
        let size = shape.size as isize;
        let (mut dy, mut dx, mut flip) = (0isize, 0isize, false);
        if let Some(augment) = self.augment {
            let pad = augment.crop_padding as isize;
            if pad > 0 {
                dy = rng.gen_range(-pad..=pad);
                dx = rng.gen_range(-pad..=pad);
            }
            flip = augment.horizontal_flip && rng.gen_bool(0.5);
        }
        for c in 0..shape.channels {
            let (mean, inv_std) = (self.normalize.mean[c], 1.0 / self.normalize.std[c]);
            let plane = &bytes[c * shape.size * shape.size..][..shape.size * shape.size];
            let out = &mut out[c * shape.size * shape.size..][..shape.size * shape.size];
            for y in 0..size {
                let sy = y + dy;
                for x in 0..size {
                    let sx = if flip { size - 1 - x } else { x } + dx;
                    let v = if (0..size).contains(&sy) && (0..size).contains(&sx) {
                        plane[(sy * size + sx) as usize]
                    } else {
                        0
                    };
                    out[(y * size + x) as usize] = (v as f32 / 255.0 - mean) * inv_std;
                }
            }
        }
    }
}

/// The batches of one epoch, in order.
pub struct Batches {
    receiver: Receiver<Result<Batch>>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        self.receiver.recv().ok()
    }
}
