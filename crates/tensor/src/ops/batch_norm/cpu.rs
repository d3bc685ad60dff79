//! CPU kernels of batch norm: float32 sums within a plane (vectorised), float64 across planes.
//!
//! In training one task takes one channel and does everything for it at once: its statistics,
//! then its normalisation (forward), or its two reductions, then its input gradient (backward).
//! The channel's planes (N x H x W values) are read from memory by the first sweep and, while
//! they still sit in the core's cache, again by the second: one trip to memory instead of two.

use rayon::prelude::*;

use crate::cpu::simd::multiversion;
use crate::cpu::{par_fill, pool, Planes};

/// The planes (H*W values each) of `channel` across the batch.
#[inline(always)]
fn planes<'a>(
    x: &'a [f32],
    [batch, channels, h, w]: [usize; 4],
    channel: usize,
) -> impl Iterator<Item = &'a [f32]> + 'a {
    let plane = h * w;
    (0..batch).map(move |n| &x[(n * channels + channel) * plane..][..plane])
}

/// `sum(f(a_i, b_i))` over two equal slices, in eight float32 lanes that the compiler vectorises.
#[inline(always)]
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

#[inline(always)]
/// Mean and biased variance of `channel` in one sweep: sums of `x - K` and of its square, with
/// `K` the channel's first plane mean (so that the difference of the two sums does not cancel
/// when the mean is large against the spread).
fn channel_moments(x: &[f32], dims: [usize; 4], channel: usize) -> (f64, f64) {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    let plane = (dims[2] * dims[3]) as f64;
    let first = planes(x, dims, channel).next().unwrap_or(&[]);
    let k = (lane_sum(first, first, |v, _| v) as f64 / plane) as f32;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for p in planes(x, dims, channel) {
        let (a, b) = lane_sums2(p, |v| {
            let d = v - k;
            (d, d * d)
        });
        s1 += a as f64;
        s2 += b as f64;
    }
    let d = s1 / count;
    (k as f64 + d, (s2 / count - d * d).max(0.0))
}

/// `1 / sqrt(var + eps)` as the forward and backward passes both compute it.
pub(super) fn inv_std(var: f64, eps: f32) -> f32 {
    (1.0 / (var + eps as f64).sqrt()) as f32
}

/// Training forward: per channel, the batch mean and biased variance, then
/// `y = x * scale + shift` (and `max(y, 0)` when `relu`). Returns `(y, mean, var)`.
pub(super) fn train_forward(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    relu: bool,
) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let channels = dims[1];
    let mut y = pool::take(x.len());
    let out = Planes::new(&mut y, dims[2] * dims[3]);
    let (mean, var) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mean, var) = channel_moments(x, dims, c);
            let (scale, shift) = channel_affine(mean as f32, inv_std(var, eps), weight[c], bias[c]);
            for (n, xp) in planes(x, dims, c).enumerate() {
                // SAFETY: this task alone writes channel c's planes.
                let yp = unsafe { out.get(n * channels + c) };
                normalize_plane(xp, yp, scale, shift, relu);
            }
            (mean, var)
        })
        .unzip();
    (y, mean, var)
}

/// Two sums at once, `(sum f(v).0, sum f(v).1)`, in eight float32 lanes each.
#[inline(always)]
fn lane_sums2(a: &[f32], f: impl Fn(f32) -> (f32, f32)) -> (f32, f32) {
    lane_sums2_of(a, a, |v, _| f(v))
}

/// Two sums over two equal slices at once, `(sum f(a_i, b_i).0, sum f(a_i, b_i).1)`, in eight
/// float32 lanes each: one sweep over the data instead of two.
#[inline(always)]
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

/// The affine form of the normalisation of one channel: `y = x * scale + shift`.
#[inline(always)]
fn channel_affine(mean: f32, inv_std: f32, weight: f32, bias: f32) -> (f32, f32) {
    let scale = inv_std * weight;
    (scale, bias - mean * scale)
}

/// [`channel_affine`] of every channel.
pub(super) fn affine(
    mean: &[f32],
    inv_std: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> Vec<(f32, f32)> {
    (0..mean.len())
        .map(|c| channel_affine(mean[c], inv_std[c], weight[c], bias[c]))
        .collect()
}

#[inline(always)]
fn normalize_plane(x: &[f32], y: &mut [f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        for (out, v) in y.iter_mut().zip(x) {
            *out = (v * scale + shift).max(0.0);
        }
    } else {
        for (out, v) in y.iter_mut().zip(x) {
            *out = v * scale + shift;
        }
    }
}

/// `y = x * scale + shift` per channel, then `max(y, 0)` when `relu`: one pass (inference).
pub(super) fn normalize(
    x: &[f32],
    dims: [usize; 4],
    affine: &[(f32, f32)],
    relu: bool,
) -> Vec<f32> {
    let [_, channels, h, w] = dims;
    par_fill(x.len(), h * w, |plane, y| {
        let (scale, shift) = affine[plane % channels];
        normalize_plane(&x[plane * h * w..][..h * w], y, scale, shift, relu);
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
    let plane_len = h * w;
    let mut dx = pool::take(x.len());
    let out = Planes::new(&mut dx, plane_len);
    let (dweight, dbias): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let channel = ChannelBackward {
                mean: mean[c],
                inv_std: inv_std[c],
                weight: weight[c],
                affine: affine[c],
                count,
                training,
                relu,
            };
            backward_channel(x, dy, dims, c, channel, &out)
        })
        .unzip();
    (dx, dweight, dbias)
}

/// The per-channel constants of [`backward`].
#[derive(Clone, Copy)]
struct ChannelBackward {
    mean: f32,
    inv_std: f32,
    weight: f32,
    affine: (f32, f32),
    count: f64,
    training: bool,
    relu: bool,
}

multiversion! {
    /// [`backward`] of one channel: writes its planes of dx, returns (dweight, dbias).
    fn backward_channel(
        x: &[f32],
        dy: &[f32],
        dims: [usize; 4],
        c: usize,
        k: ChannelBackward,
        out: &Planes,
    ) -> (f32, f32) {
        let (scale, shift) = k.affine;
        let relu = k.relu;
        // The output gradient behind the ReLU.
        let gate = move |v: f32, g: f32| {
            if relu && (v * scale + shift).max(0.0) <= 0.0 {
                0.0
            } else {
                g
            }
        };
        let m = k.mean;
        let (mut sum_g, mut sum_g_centred) = (0.0f64, 0.0f64);
        for (xp, gp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
            let (a, b) = lane_sums2_of(xp, gp, |v, g| {
                let g = gate(v, g);
                (g, g * (v - m))
            });
            sum_g += a as f64;
            sum_g_centred += b as f64;
        }
        let (dweight, dbias) = ((sum_g_centred * k.inv_std as f64) as f32, sum_g as f32);
        let scale_dx = k.weight * k.inv_std;
        // Inference mode: the statistics are constants, dx = scale * g.
        let (mean_g, mean_g_xhat) = if k.training {
            (
                (dbias as f64 / k.count) as f32,
                (dweight as f64 / k.count) as f32,
            )
        } else {
            (0.0, 0.0)
        };
        let s = k.inv_std * mean_g_xhat;
        for (n, (xp, gp)) in planes(x, dims, c).zip(planes(dy, dims, c)).enumerate() {
            // SAFETY: this task alone writes channel c's planes.
            let dxp = unsafe { out.get(n * dims[1] + c) };
            for ((o, &v), &g) in dxp.iter_mut().zip(xp).zip(gp) {
                *o = scale_dx * (gate(v, g) - mean_g - (v - m) * s);
            }
        }
        (dweight, dbias)
    }
}
