//! CPU kernels of batch norm: float32 sums within a plane (vectorised), float64 across planes.
//!
//! In training one task takes one channel and does everything for it at once: its statistics,
//! then its normalisation (forward), or its two reductions, then its input gradient (backward).
//! The channel's planes (N x H x W values) are read from memory by the first sweep and, while
//! they still sit in the core's cache, again by the second: one trip to memory instead of two.

use rayon::prelude::*;

use crate::cpu::simd::{multiversion, shifted_moments};
use crate::cpu::{items_per_job, par_fill, pool, Planes};

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

/// `sum(a_i)` in eight float32 lanes that the compiler vectorises.
#[inline(always)]
fn lane_sum(a: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let a8 = a.chunks_exact(8);
    let tail: f32 = a8.remainder().iter().sum();
    for a in a8 {
        for i in 0..8 {
            lanes[i] += a[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Mean and biased variance of `channel` in one sweep: sums of `x - K` and of its square, with
/// `K` the channel's first plane mean (so that the difference of the two sums does not cancel
/// when the mean is large against the spread).
#[inline(always)]
fn channel_moments(x: &[f32], dims: [usize; 4], channel: usize) -> (f64, f64) {
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    let plane = (dims[2] * dims[3]) as f64;
    let first = planes(x, dims, channel).next().unwrap_or(&[]);
    let k = (lane_sum(first) as f64 / plane) as f32;
    let mut sums = LaneSums::default();
    for p in planes(x, dims, channel) {
        // Padding with `k` adds zeros.
        sums.add_shifted(p, k);
    }
    let [s1, s2] = sums.finish();
    let d = s1 / count;
    (k as f64 + d, (s2 / count - d * d).max(0.0))
}

/// `1 / sqrt(var + eps)` as the forward and backward passes both compute it.
#[inline(always)]
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
        .with_min_len(items_per_job(dims[0] * dims[2] * dims[3]))
        .map(|c| train_forward_channel(x, dims, c, weight[c], bias[c], eps, relu, &out))
        .unzip();
    (y, mean, var)
}

multiversion! {
    /// [`train_forward`] of one channel; returns its (mean, var).
    fn train_forward_channel(
        x: &[f32],
        dims: [usize; 4],
        c: usize,
        weight: f32,
        bias: f32,
        eps: f32,
        relu: bool,
        out: &Planes,
    ) -> (f64, f64) {
        if let Some(xs) = gathered(x, dims, c) {
            let mut ys = vec![0.0f32; xs.len()];
            let single = Planes::new(&mut ys, xs.len());
            let whole = [1, 1, 1, xs.len()];
            let moments = train_forward_channel(&xs, whole, 0, weight, bias, eps, relu, &single);
            scatter(&ys, dims, c, out);
            return moments;
        }
        let (mean, var) = channel_moments(x, dims, c);
        let (scale, shift) = channel_affine(mean as f32, inv_std(var, eps), weight, bias);
        for (n, xp) in planes(x, dims, c).enumerate() {
            // SAFETY: this task alone writes channel c's planes.
            let yp = unsafe { out.get(n * dims[1] + c) };
            normalize_plane(xp, yp, scale, shift, relu);
        }
        (mean, var)
    }
}

/// Planes smaller than this are gathered, per channel, into one contiguous run first: a plane
/// of 1 to 15 values is too short for vector code on its own (MobileNet-V2 at 32x32 ends on
/// 2x2 and 1x1 planes).
const GATHER_BELOW: usize = 16;

/// `channel`'s values image after image in one buffer, when its planes are small.
#[inline(always)]
fn gathered(x: &[f32], dims: [usize; 4], channel: usize) -> Option<Vec<f32>> {
    let plane = dims[2] * dims[3];
    (plane < GATHER_BELOW && dims[0] > 1).then(|| {
        let mut values = Vec::with_capacity(dims[0] * plane);
        for p in planes(x, dims, channel) {
            values.extend_from_slice(p);
        }
        values
    })
}

/// Writes a gathered run back into `channel`'s planes of `out`.
#[inline(always)]
fn scatter(values: &[f32], dims: [usize; 4], channel: usize, out: &Planes) {
    let plane = dims[2] * dims[3];
    for (n, chunk) in values.chunks_exact(plane.max(1)).enumerate() {
        // SAFETY: this task alone writes channel `channel`'s planes.
        let dst = unsafe { out.get(n * dims[1] + channel) };
        dst.copy_from_slice(chunk);
    }
}

/// Two running sums over a channel's planes, in eight float32 lanes each, flushed into float64
/// every [`LaneSums::FLUSH`] elements: vector code whatever the plane size (7x7 planes too),
/// float64 accuracy across the batch, and an order that depends on the shapes only.
#[derive(Default)]
struct LaneSums {
    lanes: [[f32; 8]; 2],
    pending: usize,
    total: [f64; 2],
}

impl LaneSums {
    const FLUSH: usize = 1024;

    /// Adds `u_i = fu(a_i, b_i)` to the first sum and `fv(a_i, u_i)` to the second, over two
    /// equal planes; a short last chunk is padded with `pad` (values giving zeros).
    #[inline(always)]
    fn add_plane(
        &mut self,
        a: &[f32],
        b: &[f32],
        pad: (f32, f32),
        fu: impl Fn(f32, f32) -> f32,
        fv: impl Fn(f32, f32) -> f32,
    ) {
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
        for (a, b) in a8.zip(b8) {
            self.add_chunk(a.try_into().expect("8"), b.try_into().expect("8"), &fu, &fv);
        }
        if !a_rest.is_empty() {
            let (mut a, mut b) = ([pad.0; 8], [pad.1; 8]);
            a[..a_rest.len()].copy_from_slice(a_rest);
            b[..b_rest.len()].copy_from_slice(b_rest);
            self.add_chunk(&a, &b, &fu, &fv);
        }
        self.counted(a.len());
    }

    /// Adds `x_i - k` to the first sum and its square to the second.
    #[inline(always)]
    fn add_shifted(&mut self, p: &[f32], k: f32) {
        let full = p.len() / 8 * 8;
        shifted_moments(&mut self.lanes, &p[..full], k);
        if full < p.len() {
            // Padding with `k` adds zeros.
            let mut c = [k; 8];
            c[..p.len() - full].copy_from_slice(&p[full..]);
            shifted_moments(&mut self.lanes, &c, k);
        }
        self.counted(p.len());
    }

    /// Notes `len` more values in the lanes; flushes them to float64 every [`LaneSums::FLUSH`].
    #[inline(always)]
    fn counted(&mut self, len: usize) {
        self.pending += len;
        if self.pending >= Self::FLUSH {
            self.flush();
        }
    }

    /// Map, then accumulate, in separate fixed-size loops: the shape the vectoriser turns into
    /// straight vector code.
    #[inline(always)]
    fn add_chunk(
        &mut self,
        a: &[f32; 8],
        b: &[f32; 8],
        fu: &impl Fn(f32, f32) -> f32,
        fv: &impl Fn(f32, f32) -> f32,
    ) {
        let (mut x, mut y) = ([0.0f32; 8], [0.0f32; 8]);
        for i in 0..8 {
            x[i] = fu(a[i], b[i]);
        }
        for i in 0..8 {
            y[i] = fv(a[i], x[i]);
        }
        for i in 0..8 {
            self.lanes[0][i] += x[i];
            self.lanes[1][i] += y[i];
        }
    }

    #[inline(always)]
    fn flush(&mut self) {
        for (total, lanes) in self.total.iter_mut().zip(&mut self.lanes) {
            *total += lanes.iter().sum::<f32>() as f64;
            *lanes = [0.0; 8];
        }
        self.pending = 0;
    }

    #[inline(always)]
    fn finish(mut self) -> [f64; 2] {
        self.flush();
        self.total
    }
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
        .with_min_len(items_per_job(dims[0] * dims[2] * dims[3]))
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
        if let (Some(xs), Some(gs)) = (gathered(x, dims, c), gathered(dy, dims, c)) {
            let mut dxs = vec![0.0f32; xs.len()];
            let single = Planes::new(&mut dxs, xs.len());
            let sums = backward_channel(&xs, &gs, [1, 1, 1, xs.len()], 0, k, &single);
            scatter(&dxs, dims, c, out);
            return sums;
        }
        let (scale, shift) = k.affine;
        let relu = k.relu;
        // The output gradient behind the ReLU: zero where the forward output
        // `max(v * scale + shift, 0)` was not positive (NaN included), as a select.
        #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must gate to zero, as max(NaN, 0) did
        let gate = move |v: f32, g: f32| {
            if relu && !(v * scale + shift > 0.0) {
                0.0
            } else {
                g
            }
        };
        let m = k.mean;
        let mut sums = LaneSums::default();
        for (xp, gp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
            // Padding with a zero gradient adds zeros.
            sums.add_plane(xp, gp, (m, 0.0), gate, |v, g| g * (v - m));
        }
        let [sum_g, sum_g_centred] = sums.finish();
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
