//! Evaluation: loss, top-1 and top-5 accuracy of a network on a dataset, in inference mode.

use std::sync::Arc;

use eatnas_data::{Dataset, Loader, Normalize};
use eatnas_nn::Network;
use eatnas_tensor::softmax_cross_entropy;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    pub top1: f64,
    /// Top-5 accuracy (top-k with k the class count when there are fewer than 5 classes).
    pub top5: f64,
    pub images: usize,
}

/// How many rows of `logits` (N x classes) have their label among the `k` highest scores.
pub fn top_k_hits(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| row.iter().filter(|&&v| v > row[label]).count() < k)
        .count()
}

/// Evaluates `net` on all of `dataset` in inference mode.
pub fn evaluate(
    net: &mut Network,
    dataset: Arc<dyn Dataset>,
    normalize: &Normalize,
    batch_size: usize,
    workers: usize,
) -> Result<Evaluation> {
    let loader = Loader::new(
        dataset,
        batch_size,
        false,
        false,
        None,
        normalize.clone(),
        0,
        workers,
    )?;
    let classes = net.classes();
    let (mut loss, mut top1, mut top5, mut images) = (0.0f64, 0usize, 0usize, 0usize);
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let logits = net.predict(&batch.images)?;
        let ce = softmax_cross_entropy(&logits, &batch.labels, 0.0)?;
        let values = logits.to_vec()?;
        loss += ce.loss as f64 * batch.labels.len() as f64;
        top1 += top_k_hits(&values, &batch.labels, classes, 1);
        top5 += top_k_hits(&values, &batch.labels, classes, 5.min(classes));
        images += batch.labels.len();
    }
    let n = images.max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::top_k_hits;

    #[test]
    fn top_k_counts_labels_among_the_k_highest() {
        let logits = [0.1, 0.5, 0.2, 0.9, 0.0, 0.3];
        assert_eq!(top_k_hits(&logits, &[1, 1], 3, 1), 1);
        assert_eq!(top_k_hits(&logits, &[2, 2], 3, 2), 2);
        assert_eq!(top_k_hits(&logits, &[0, 1], 3, 1), 0);
    }
}
