//! CPU kernels of batch norm: float32 sums within a plane (vectorised), float64 across planes,
//! one channel or one plane per task.

use rayon::prelude::*;

use crate::cpu::par_fill;

/// The planes (H*W values each) of `channel` across the batch.
fn planes<'a>(
    x: &'a [f32],
    [batch, channels, h, w]: [usize; 4],
    channel: usize,
) -> impl Iterator<Item = &'a [f32]> + 'a {
    let plane = h * w;
    (0..batch).map(move |n| &x[(n * channels + channel) * plane..][..plane])
}

/// `sum(f(a_i, b_i))` over two equal slices, in eight float32 lanes that the compiler vectorises.
#[inline]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (a, b) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += f(a[i], b[i]);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(&a, &b)| f(a, b)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Per-channel mean and biased variance (two passes: the mean, then centred squares).
pub(super) fn channel_moments(x: &[f32], dims: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    (0..dims[1])
        .into_par_iter()
        .map(|c| {
            let mean = planes(x, dims, c)
                .map(|p| lane_sum(p, p, |v, _| v) as f64)
                .sum::<f64>()
                / count;
            let m = mean as f32;
            let var = planes(x, dims, c)
                .map(|p| {
                    lane_sum(p, p, |v, _| {
                        let d = v - m;
                        d * d
                    }) as f64
                })
                .sum::<f64>()
                / count;
            // The float32 centre `m` differs from `mean` by rounding; correct the variance for it.
            let shift = mean - m as f64;
            (mean, (var - shift * shift).max(0.0))
        })
        .unzip()
}

/// `y = (x - mean) * inv_std * weight + bias`, per channel.
pub(super) fn normalize(
    x: &[f32],
    dims: [usize; 4],
    mean: &[f32],
    inv_std: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let [_, channels, h, w] = dims;
    par_fill(x.len(), h * w, |plane, y| {
        let c = plane % channels;
        let scale = inv_std[c] * weight[c];
        let shift = bias[c] - mean[c] * scale;
        for (out, v) in y.iter_mut().zip(&x[plane * h * w..][..h * w]) {
            *out = v * scale + shift;
        }
    })
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
            let m = mean[c];
            let (mut sum_dy, mut sum_dy_centred) = (0.0f64, 0.0f64);
            for (xp, gp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
                sum_dy += lane_sum(gp, gp, |g, _| g) as f64;
                sum_dy_centred += lane_sum(xp, gp, |v, g| g * (v - m)) as f64;
            }
            ((sum_dy_centred * inv_std[c] as f64) as f32, sum_dy as f32)
        })
        .unzip();
    let plane_len = h * w;
    let dx = par_fill(x.len(), plane_len, |plane, dx| {
        let c = plane % channels;
        let (x, dy) = (
            &x[plane * plane_len..][..plane_len],
            &dy[plane * plane_len..][..plane_len],
        );
        let scale = weight[c] * inv_std[c];
        // Inference mode: the statistics are constants, dx = scale * dy.
        let (mean_dy, mean_dy_xhat) = if training {
            (
                (dbias[c] as f64 / count) as f32,
                (dweight[c] as f64 / count) as f32,
            )
        } else {
            (0.0, 0.0)
        };
        let (m, s) = (mean[c], inv_std[c] * mean_dy_xhat);
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            *out = scale * (g - mean_dy - (v - m) * s);
        }
    });
    (dx, dweight, dbias)
}
