//! CPU kernels of batch norm: per-channel sums in float64, one channel or one plane per task.

use rayon::prelude::*;

/// The planes (H*W values each) of `channel` across the batch.
fn planes<'a>(x: &'a [f32], [batch, channels, h, w]: [usize; 4], channel: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
    let plane = h * w;
    (0..batch).map(move |n| &x[(n * channels + channel) * plane..][..plane])
}

/// Per-channel mean and biased variance (two passes, float64).
pub(super) fn channel_moments(x: &[f32], dims: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    (0..dims[1])
        .into_par_iter()
        .map(|c| {
            let mean = planes(x, dims, c).flat_map(|p| p.iter()).map(|&v| v as f64).sum::<f64>() / count;
            let var = planes(x, dims, c)
                .flat_map(|p| p.iter())
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// `y = (x - mean) * inv_std * weight + bias`, per channel.
pub(super) fn normalize(x: &[f32], dims: [usize; 4], mean: &[f32], inv_std: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let [_, channels, h, w] = dims;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).enumerate().for_each(|(plane, (y, x))| {
        let c = plane % channels;
        let scale = inv_std[c] * weight[c];
        let shift = bias[c] - mean[c] * scale;
        for (out, v) in y.iter_mut().zip(x) {
            *out = v * scale + shift;
        }
    });
    y
}

/// Returns (dx, dweight, dbias). In training mode the gradient also flows through the batch
/// statistics: `dx = weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))`.
pub(super) fn backward(
    x: &[f32],
    dy: &[f32],
    dims: [usize; 4],
    mean: &[f32],
    inv_std: &[f32],
    weight: &[f32],
    training: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [_, channels, h, w] = dims;
    let count = (dims[0] * h * w) as f64;
    let (dweight, dbias): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
            for (xp, gp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
                let (mut s, mut sx) = (0.0f32, 0.0f32);
                for (&v, &g) in xp.iter().zip(gp) {
                    s += g;
                    sx += g * (v - mean[c]);
                }
                sum_dy += s as f64;
                sum_dy_xhat += sx as f64;
            }
            ((sum_dy_xhat * inv_std[c] as f64) as f32, sum_dy as f32)
        })
        .unzip();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(dy.par_chunks(h * w))).enumerate().for_each(
        |(plane, (dx, (x, dy)))| {
            let c = plane % channels;
            let scale = weight[c] * inv_std[c];
            if training {
                let mean_dy = (dbias[c] as f64 / count) as f32;
                let mean_dy_xhat = (dweight[c] as f64 / count) as f32;
                for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                    let xhat = (v - mean[c]) * inv_std[c];
                    *d = scale * (g - mean_dy - xhat * mean_dy_xhat);
                }
            } else {
                for (d, &g) in dx.iter_mut().zip(dy) {
                    *d = scale * g;
                }
            }
        },
    );
    (dx, dweight, dbias)
}
