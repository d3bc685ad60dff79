//! CPU kernels of batch norm, image-major: every pass streams the tensor front to back in runs
//! of whole planes (one rayon job each), never a channel's planes scattered across the batch.
//!
//! A reduction takes two steps: each (image, channel) plane's sums while it sits in the L1
//! cache, kept in a small buffer, then per channel the planes' sums added in image order in
//! float64. The order depends on the shapes only, so the result is the same bit for bit
//! whatever rayon's scheduling. Going channel by channel instead read each channel's `N`
//! planes (3 KiB apart from the next at 28x28) as `N` short streams, which the hardware
//! prefetcher restarts on every plane: 2-3x slower from memory, worse on small planes.

mod small;

use rayon::prelude::*;

use crate::cpu::simd::{gate, gated_sums, multiversion, shifted_sums};
use crate::cpu::{items_per_job, workspace};

/// Planes per rayon job: about 16K values, so that small planes are not one job each.
fn planes_per_job(plane: usize) -> usize {
    items_per_job(plane)
}

/// Per channel, the sums of planes `(n, c)` over `n`, in image order, from the per-plane sums
/// `planes` (`[2 * (n * C + c)]` and the next value).
fn channel_totals(planes: &[f32], batch: usize, channels: usize) -> Vec<(f64, f64)> {
    let mut totals = vec![(0.0f64, 0.0f64); channels];
    for image in planes.chunks_exact(2 * channels).take(batch) {
        for (t, p) in totals.iter_mut().zip(image.chunks_exact(2)) {
            t.0 += p[0] as f64;
            t.1 += p[1] as f64;
        }
    }
    totals
}

/// Per plane of `first..` (as many as `out` holds pairs): `(sum (x - k), sum (x - k)^2)`,
/// `k` the plane's channel's shift.
fn moments_run(x: &[f32], plane: usize, first: usize, shifts: &[f32], out: &mut [f32]) {
    let mut c = first % shifts.len();
    for (i, sums) in out.chunks_exact_mut(2).enumerate() {
        let p = &x[(first + i) * plane..][..plane];
        let (s1, s2) = shifted_sums(p, shifts[c]);
        sums[0] = s1 as f32;
        sums[1] = s2 as f32;
        c = next_channel(c, shifts.len());
    }
}

/// The channel of the plane after one of channel `c`.
#[inline(always)]
fn next_channel(c: usize, channels: usize) -> usize {
    if c + 1 == channels {
        0
    } else {
        c + 1
    }
}

/// Planes shorter than this (4x4 and smaller: MobileNet-V2 at 32x32 ends on 2x2 and 1x1) go
/// through [`small`]: per plane, a call and two horizontal sums would cost more than its 1 to
/// 15 values.
const SMALL_PLANE: usize = 16;

/// Per channel, the batch mean and biased variance of `x` (N, C, H, W): sums of `x - k` and of
/// its square, with `k` the channel's first plane's mean (so that the difference of the two
/// sums does not cancel when the mean is large against the spread).
pub(super) fn moments(x: &[f32], [batch, channels, h, w]: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let plane = h * w;
    let shifts: Vec<f32> = (0..channels)
        .map(|c| {
            let p = &x[c * plane..][..plane];
            (p.iter().map(|&v| v as f64).sum::<f64>() / plane.max(1) as f64) as f32
        })
        .collect();
    let totals = if plane < SMALL_PLANE {
        let k = small::expand(shifts.iter().copied(), plane);
        small::shifted_totals(x, [batch, channels, h, w], &k)
    } else {
        let mut planes = workspace::take(2 * batch * channels);
        let per_job = planes_per_job(plane);
        planes
            .par_chunks_mut(2 * per_job)
            .enumerate()
            .for_each(|(job, out)| moments_run(x, plane, job * per_job, &shifts, out));
        let totals = channel_totals(&planes, batch, channels);
        workspace::give(planes);
        totals
    };
    let count = (batch * plane) as f64;
    totals
        .iter()
        .zip(&shifts)
        .map(|(&(s1, s2), &k)| {
            let d = s1 / count;
            (k as f64 + d, (s2 / count - d * d).max(0.0))
        })
        .unzip()
}

/// `1 / sqrt(var + eps)` as the forward and backward passes both compute it.
#[inline(always)]
pub(super) fn inv_std(var: f64, eps: f32) -> f32 {
    (1.0 / (var + eps as f64).sqrt()) as f32
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

multiversion! {
    /// [`normalize`] of planes `first..` (as many as `y` holds).
    fn normalize_run(
        x: &[f32],
        y: &mut [f32],
        plane: usize,
        first: usize,
        affine: &[(f32, f32)],
        relu: bool,
    ) -> () {
        let x = &x[first * plane..][..y.len()];
        let mut c = first % affine.len();
        for (yp, xp) in y.chunks_exact_mut(plane).zip(x.chunks_exact(plane)) {
            let (scale, shift) = affine[c];
            c = next_channel(c, affine.len());
            if relu {
                for (out, v) in yp.iter_mut().zip(xp) {
                    *out = (v * scale + shift).max(0.0);
                }
            } else {
                for (out, v) in yp.iter_mut().zip(xp) {
                    *out = v * scale + shift;
                }
            }
        }
    }
}

/// `y = x * scale + shift` per channel, then `max(y, 0)` when `relu`: one streaming pass.
pub(super) fn normalize(
    x: &[f32],
    dims: [usize; 4],
    affine: &[(f32, f32)],
    relu: bool,
) -> Vec<f32> {
    let plane = dims[2] * dims[3];
    if plane < SMALL_PLANE {
        let scale = small::expand(affine.iter().map(|a| a.0), plane);
        let shift = small::expand(affine.iter().map(|a| a.1), plane);
        return small::normalize(x, dims[1] * plane, &scale, &shift, relu);
    }
    let mut y = workspace::take(x.len());
    let per_job = planes_per_job(plane);
    y.par_chunks_mut((per_job * plane).max(1))
        .enumerate()
        .for_each(|(job, out)| normalize_run(x, out, plane, job * per_job, affine, relu));
    y
}

/// The per-channel constants of [`backward`].
#[derive(Clone, Copy)]
struct ChannelBackward {
    mean: f32,
    /// The forward pass's affine form, for the ReLU's mask.
    affine: (f32, f32),
    /// `weight * inv_std`: the gradient's scale.
    scale_dx: f32,
    /// Mean of the masked output gradient (0 in inference mode).
    mean_g: f32,
    /// `inv_std * mean(g * xhat)` (0 in inference mode).
    s: f32,
}

/// Per plane of `first..` (as many as `out` holds pairs): `(sum g, sum g * (x - mean))`
/// with `g` the gated output gradient.
fn gradient_sums_run(
    x: &[f32],
    dy: &[f32],
    plane: usize,
    first: usize,
    channels: &[ChannelBackward],
    relu: bool,
    out: &mut [f32],
) {
    let mut c = first % channels.len();
    for (i, sums) in out.chunks_exact_mut(2).enumerate() {
        let k = channels[c];
        let at = (first + i) * plane;
        let (xp, gp) = (&x[at..][..plane], &dy[at..][..plane]);
        let (g, gc) = gated_sums(xp, gp, k.affine, relu, k.mean);
        sums[0] = g as f32;
        sums[1] = gc as f32;
        c = next_channel(c, channels.len());
    }
}

multiversion! {
    /// [`backward`]'s input gradient over planes `first..` (as many as `dx` holds).
    fn input_gradient_run(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        plane: usize,
        first: usize,
        channels: &[ChannelBackward],
        relu: bool,
    ) -> () {
        let at = first * plane;
        let (x, dy) = (&x[at..][..dx.len()], &dy[at..][..dx.len()]);
        let planes = dx.chunks_exact_mut(plane).zip(x.chunks_exact(plane).zip(dy.chunks_exact(plane)));
        let mut c = first % channels.len();
        for (dxp, (xp, gp)) in planes {
            let k = channels[c];
            c = next_channel(c, channels.len());
            for ((o, &v), &g) in dxp.iter_mut().zip(xp).zip(gp) {
                *o = k.scale_dx * (gate(relu, k.affine, v, g) - k.mean_g - (v - k.mean) * k.s);
            }
        }
    }
}

/// Returns (dx, dweight, dbias). In training mode the gradient also flows through the batch
/// statistics: `dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat))`, with `g` the
/// output gradient, masked where the forward pass's ReLU (if `relu`) cut the output to zero:
/// the mask is recomputed from `x` with the forward pass's exact expression, so the output
/// itself need not be kept. Two streaming passes: the per-plane sums, then dx.
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
    let [batch, channels, h, w] = dims;
    let plane = h * w;
    let count = (batch * plane) as f64;
    let per_job = planes_per_job(plane);
    let mut channel: Vec<ChannelBackward> = (0..channels)
        .map(|c| ChannelBackward {
            mean: mean[c],
            affine: affine[c],
            scale_dx: weight[c] * inv_std[c],
            mean_g: 0.0,
            s: 0.0,
        })
        .collect();
    let expanded = (plane < SMALL_PLANE).then(|| small::Constants {
        mean: small::expand(channel.iter().map(|k| k.mean), plane),
        scale: small::expand(channel.iter().map(|k| k.affine.0), plane),
        shift: small::expand(channel.iter().map(|k| k.affine.1), plane),
    });
    let totals = if let Some(k) = &expanded {
        small::gated_totals(x, dy, dims, k, relu)
    } else {
        let mut sums = workspace::take(2 * batch * channels);
        sums.par_chunks_mut(2 * per_job)
            .enumerate()
            .for_each(|(job, out)| {
                gradient_sums_run(x, dy, plane, job * per_job, &channel, relu, out)
            });
        let totals = channel_totals(&sums, batch, channels);
        workspace::give(sums);
        totals
    };
    let (mut dweight, mut dbias) = (vec![0.0f32; channels], vec![0.0f32; channels]);
    for (c, &(sum_g, sum_g_centred)) in totals.iter().enumerate() {
        dweight[c] = (sum_g_centred * inv_std[c] as f64) as f32;
        dbias[c] = sum_g as f32;
        // Inference mode: the statistics are constants, dx = scale * g.
        if training {
            channel[c].mean_g = (dbias[c] as f64 / count) as f32;
            channel[c].s = inv_std[c] * (dweight[c] as f64 / count) as f32;
        }
    }
    if let Some(forward) = expanded {
        let k = small::GradientConstants {
            forward,
            scale_dx: small::expand(channel.iter().map(|k| k.scale_dx), plane),
            mean_g: small::expand(channel.iter().map(|k| k.mean_g), plane),
            s: small::expand(channel.iter().map(|k| k.s), plane),
        };
        let dx = small::input_gradient(x, dy, channels * plane, &k, relu);
        return (dx, dweight, dbias);
    }
    let mut dx = workspace::take(x.len());
    dx.par_chunks_mut((per_job * plane).max(1))
        .enumerate()
        .for_each(|(job, out)| {
            input_gradient_run(x, dy, out, plane, job * per_job, &channel, relu)
        });
    (dx, dweight, dbias)
}
