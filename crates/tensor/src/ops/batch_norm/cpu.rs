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

/// Per-channel mean and biased variance in one sweep over `x`: sums of `x - K` and of its
/// square, with `K` the channel's first plane mean (so that the difference of the two sums
/// does not cancel when the mean is large against the spread).
pub(super) fn channel_moments(x: &[f32], dims: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    let plane = (dims[2] * dims[3]) as f64;
    (0..dims[1])
        .into_par_iter()
        .map(|c| {
            let first = planes(x, dims, c).next().unwrap_or(&[]);
            let k = (lane_sum(first, first, |v, _| v) as f64 / plane) as f32;
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for p in planes(x, dims, c) {
                let (a, b) = lane_sums2(p, |v| {
                    let d = v - k;
                    (d, d * d)
                });
                s1 += a as f64;
                s2 += b as f64;
            }
            let d = s1 / count;
            (k as f64 + d, (s2 / count - d * d).max(0.0))
        })
        .unzip()
}

/// Two sums at once, `(sum f(v).0, sum f(v).1)`, in eight float32 lanes each.
#[inline]
fn lane_sums2(a: &[f32], f: impl Fn(f32) -> (f32, f32)) -> (f32, f32) {
    lane_sums2_of(a, a, |v, _| f(v))
}

/// Two sums over two equal slices at once, `(sum f(a_i, b_i).0, sum f(a_i, b_i).1)`, in eight
/// float32 lanes each: one sweep over the data instead of two.
#[inline]
fn lane_sums2_of(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut l0, mut l1) = ([0.0f32; 8], [0.0f32; 8]);
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (mut t0, mut t1) = (0.0f32, 0.0f32);
    for (&u, &v) in a8.remainder().iter().zip(b8.remainder()) {
        let (x, y) = f(u, v);
        t0 += x;
        t1 += y;
    }
    for (a, b) in a8.zip(b8) {
        for i in 0..8 {
            let (x, y) = f(a[i], b[i]);
            l0[i] += x;
            l1[i] += y;
        }
    }
    (l0.iter().sum::<f32>() + t0, l1.iter().sum::<f32>() + t1)
}

/// The affine form of the normalisation, per channel: `y = x * scale + shift`.
pub(super) fn affine(
    mean: &[f32],
    inv_std: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> Vec<(f32, f32)> {
    (0..mean.len())
        .map(|c| {
            let scale = inv_std[c] * weight[c];
            (scale, bias[c] - mean[c] * scale)
        })
        .collect()
}

/// `y = x * scale + shift` per channel, then `max(y, 0)` when `relu`: one pass.
pub(super) fn normalize(
    x: &[f32],
    dims: [usize; 4],
    affine: &[(f32, f32)],
    relu: bool,
) -> Vec<f32> {
    let [_, channels, h, w] = dims;
    par_fill(x.len(), h * w, |plane, y| {
        let (scale, shift) = affine[plane % channels];
        let x = &x[plane * h * w..][..h * w];
        if relu {
            for (out, v) in y.iter_mut().zip(x) {
                *out = (v * scale + shift).max(0.0);
            }
        } else {
            for (out, v) in y.iter_mut().zip(x) {
                *out = v * scale + shift;
            }
        }
    })
}

/// Returns (dx, dweight, dbias). In training mode the gradient also flows through the batch
/// statistics: `dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat))`, with `g` the
/// output gradient, masked where the forward pass's ReLU (if `relu`) cut the output to zero:
/// the mask is recomputed from `x` with the forward pass's exact expression, so the output
/// itself need not be kept.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    x: &[f32],
    dy: &[f32],
    dims: [usize; 4],
    mean: &[f32],
    inv_std: &[f32],
    weight: &[f32],
    affine: &[(f32, f32)],
    training: bool,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [_, channels, h, w] = dims;
    let count = (dims[0] * h * w) as f64;
    // The output gradient behind the ReLU.
    let gated = |c: usize| {
        let (scale, shift) = affine[c];
        move |v: f32, g: f32| {
            if relu && (v * scale + shift).max(0.0) <= 0.0 {
                0.0
            } else {
                g
            }
        }
    };
    let (dweight, dbias): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (m, gate) = (mean[c], gated(c));
            let (mut sum_g, mut sum_g_centred) = (0.0f64, 0.0f64);
            for (xp, gp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
                let (a, b) = lane_sums2_of(xp, gp, |v, g| {
                    let g = gate(v, g);
                    (g, g * (v - m))
                });
                sum_g += a as f64;
                sum_g_centred += b as f64;
            }
            ((sum_g_centred * inv_std[c] as f64) as f32, sum_g as f32)
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
        // Inference mode: the statistics are constants, dx = scale * g.
        let (mean_g, mean_g_xhat) = if training {
            (
                (dbias[c] as f64 / count) as f32,
                (dweight[c] as f64 / count) as f32,
            )
        } else {
            (0.0, 0.0)
        };
        let (m, s, gate) = (mean[c], inv_std[c] * mean_g_xhat, gated(c));
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            *out = scale * (gate(v, g) - mean_g - (v - m) * s);
        }
    });
    (dx, dweight, dbias)
}
