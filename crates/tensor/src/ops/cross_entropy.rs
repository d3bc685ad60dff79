//! Softmax cross-entropy with label smoothing, mean over the batch; loss and gradient in one pass.

use crate::{Device, Error, Result, Tensor};

/// The loss and its gradient with respect to the logits.
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    /// Mean over the batch of `-sum_k q_k log softmax(logits)_k`, with
    /// `q = (1 - smoothing) * onehot(label) + smoothing / K`.
    pub loss: f32,
    /// (N, K): `(softmax(logits) - q) / N`.
    pub dlogits: Tensor,
    /// How many rows the top-scoring class was the label (ties count for the lowest index).
    pub correct: usize,
}

/// Softmax cross-entropy of `logits` against `labels`.
///
/// # Shapes
/// `logits`: (N, K); `labels`: N class indices below K; returns the loss and `dlogits` (N, K)
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    label_smoothing: f32,
) -> Result<CrossEntropy> {
    const OP: &str = "softmax_cross_entropy";
    let [batch, classes] = logits.dims2(OP, "logits")?;
    if labels.len() != batch {
        return Err(Error::shape(
            OP,
            "label count (one per row of logits)",
            batch,
            labels.len(),
        ));
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(Error::argument(
            OP,
            format!("label {label} of row {row} is out of range: expected below {classes} classes"),
        ));
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::argument(
            OP,
            format!("label smoothing {label_smoothing} must lie in [0, 1)"),
        ));
    }
    if batch == 0 {
        return Err(Error::argument(OP, "an empty batch has no mean loss"));
    }
    match logits.device() {
        Device::Cpu => {
            let (loss, dlogits, correct) =
                cpu::forward_backward(logits.cpu_data()?, labels, classes, label_smoothing);
            Ok(CrossEntropy {
                loss,
                dlogits: Tensor::from_vec(dlogits, &[batch, classes])?,
                correct,
            })
        }
        Device::Cuda(_) => cuda::forward_backward(logits, labels, label_smoothing),
    }
}

mod cpu {
    pub(super) fn forward_backward(
        logits: &[f32],
        labels: &[usize],
        classes: usize,
        smoothing: f32,
    ) -> (f32, Vec<f32>, usize) {
        let batch = labels.len();
        let off_target = smoothing as f64 / classes as f64;
        let on_target = 1.0 - smoothing as f64 + off_target;
        let mut dlogits = vec![0.0f32; logits.len()];
        let mut total = 0.0f64;
        let mut correct = 0;
        for ((row, grad), &label) in logits
            .chunks(classes)
            .zip(dlogits.chunks_mut(classes))
            .zip(labels)
        {
            let (argmax, max) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                        if v > best.1 {
                            (i, v)
                        } else {
                            best
                        }
                    });
            correct += usize::from(argmax == label);
            let max = max as f64;
            let sum_exp: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let log_sum = sum_exp.ln() + max;
            for (k, (&v, g)) in row.iter().zip(grad.iter_mut()).enumerate() {
                let target = if k == label { on_target } else { off_target };
                let log_p = v as f64 - log_sum;
                total -= target * log_p;
                *g = ((log_p.exp() - target) / batch as f64) as f32;
            }
        }
        ((total / batch as f64) as f32, dlogits, correct)
    }
}

mod cuda {
    use super::CrossEntropy;
    use crate::cuda::kernels::Kernel;
    use crate::cuda::launch;
    use crate::{Result, Tensor};
    use cudarc::driver::LaunchConfig;

    /// One warp per row (kernels/cross_entropy.cu); the per-row losses and hits come back to the
    /// host for the mean (the loss is a host number anyway).
    pub(super) fn forward_backward(
        logits: &Tensor,
        labels: &[usize],
        smoothing: f32,
    ) -> Result<CrossEntropy> {
        const OP: &str = "softmax_cross_entropy";
        let ls = logits.cuda(OP)?;
        let dev = &ls.device;
        let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
        let labels32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let labels_dev = dev.upload(&labels32)?;
        let mut dlogits = dev.alloc(rows * classes)?;
        // Each row's loss, then its hit: one copy back to the host for both.
        let mut row_stats = dev.alloc(2 * rows)?;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            dev,
            OP,
            Kernel::SoftmaxCrossEntropy,
            cfg,
            [
                &ls.slice,
                &labels_dev,
                &mut dlogits,
                &mut row_stats,
                &rows,
                &classes,
                &smoothing,
            ]
        )?;
        let stats = dev.download(&row_stats, 2 * rows)?;
        let (losses, hits) = stats.split_at(rows);
        let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / rows as f64;
        Ok(CrossEntropy {
            loss: loss as f32,
            dlogits: Tensor::from_cuda(dlogits, dev.clone(), &[rows, classes]),
            correct: hits.iter().filter(|&&h| h > 0.5).count(),
        })
    }
}
