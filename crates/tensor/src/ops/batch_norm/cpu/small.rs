//! Batch norm over planes of fewer than 16 values (MobileNet-V2 at 32x32 ends on 4x4, 2x2 and
//! 1x1 planes), vectorised across the `C x P` positions of an image instead of along a plane:
//! every per-channel constant is expanded to its `P` positions once, so each pass is a plain
//! vector loop over contiguous memory, image after image. Sums are kept per position (float32
//! over the images of the batch, added in image order) and folded per channel in float64.

use rayon::prelude::*;

use crate::cpu::simd::{gate, multiversion};
use crate::cpu::workspace;

/// Positions per task.
const CHUNK: usize = 1024;

/// `values[c]` repeated `plane` times, channel after channel.
pub(super) fn expand(values: impl Iterator<Item = f32>, plane: usize) -> Vec<f32> {
    values.flat_map(|v| std::iter::repeat_n(v, plane)).collect()
}

/// Per channel, the float64 sums of two per-position sums over the batch: `run(at, u, v)` adds
/// every image's positions `at..at + u.len()` to `u` and `v`, runs of [`CHUNK`] positions in
/// parallel.
fn position_totals(
    image: usize,
    plane: usize,
    run: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<(f64, f64)> {
    let (mut u, mut v) = (vec![0.0f32; image], vec![0.0f32; image]);
    u.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(i, (u, v))| run(i * CHUNK, u, v));
    fold(&u, &v, plane)
}

/// Per channel, the float64 sums of the per-position sums `u` and `v` (`C x P` each).
fn fold(u: &[f32], v: &[f32], plane: usize) -> Vec<(f64, f64)> {
    u.chunks_exact(plane)
        .zip(v.chunks_exact(plane))
        .map(|(u, v)| {
            (
                u.iter().map(|&a| a as f64).sum(),
                v.iter().map(|&a| a as f64).sum(),
            )
        })
        .collect()
}

multiversion! {
    /// Over positions `at..at + u.len()` of every image: `u += x - k`, `v += (x - k)^2`.
    fn shifted_run(x: &[f32], image: usize, at: usize, k: &[f32], u: &mut [f32], v: &mut [f32]) -> () {
        let len = u.len();
        for x in x.chunks_exact(image) {
            let x = &x[at..at + len];
            let k = &k[at..at + len];
            for i in 0..len {
                let d = x[i] - k[i];
                u[i] += d;
                v[i] += d * d;
            }
        }
    }
}

/// Per channel, `(sum (x - k), sum (x - k)^2)` with `k` expanded per position.
pub(super) fn shifted_totals(
    x: &[f32],
    [_, channels, h, w]: [usize; 4],
    k: &[f32],
) -> Vec<(f64, f64)> {
    let image = channels * h * w;
    position_totals(image, h * w, |at, u, v| shifted_run(x, image, at, k, u, v))
}

/// The per-position constants of the backward pass, each `C x P` long.
pub(super) struct Constants {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

multiversion! {
    /// Over positions `at..at + u.len()` of every image: `u += g'`, `v += g' (x - mean)`, `g'`
    /// the gated gradient.
    fn gated_run(
        x: &[f32],
        dy: &[f32],
        image: usize,
        at: usize,
        k: &Constants,
        relu: bool,
        u: &mut [f32],
        v: &mut [f32],
    ) -> () {
        let len = u.len();
        let (mean, scale, shift) = (&k.mean[at..at + len], &k.scale[at..at + len], &k.shift[at..at + len]);
        for (x, g) in x.chunks_exact(image).zip(dy.chunks_exact(image)) {
            let (x, g) = (&x[at..at + len], &g[at..at + len]);
            for i in 0..len {
                let gated = gate(relu, (scale[i], shift[i]), x[i], g[i]);
                u[i] += gated;
                v[i] += gated * (x[i] - mean[i]);
            }
        }
    }
}

/// Per channel, `(sum g', sum g' (x - mean))` with `g'` the gated output gradient.
pub(super) fn gated_totals(
    x: &[f32],
    dy: &[f32],
    [_, channels, h, w]: [usize; 4],
    k: &Constants,
    relu: bool,
) -> Vec<(f64, f64)> {
    let image = channels * h * w;
    position_totals(image, h * w, |at, u, v| {
        gated_run(x, dy, image, at, k, relu, u, v)
    })
}

multiversion! {
    /// One image of [`normalize`].
    fn normalize_image(x: &[f32], y: &mut [f32], scale: &[f32], shift: &[f32], relu: bool) -> () {
        if relu {
            for i in 0..y.len() {
                y[i] = (x[i] * scale[i] + shift[i]).max(0.0);
            }
        } else {
            for i in 0..y.len() {
                y[i] = x[i] * scale[i] + shift[i];
            }
        }
    }
}

/// `y = x * scale + shift` (then `max(y, 0)` when `relu`), the constants expanded per position.
pub(super) fn normalize(
    x: &[f32],
    image: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    let mut y = workspace::take(x.len());
    y.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .for_each(|(y, x)| normalize_image(x, y, scale, shift, relu));
    y
}

/// The backward pass's per-position constants of the input gradient.
pub(super) struct GradientConstants {
    pub forward: Constants,
    pub scale_dx: Vec<f32>,
    pub mean_g: Vec<f32>,
    pub s: Vec<f32>,
}

multiversion! {
    /// One image of [`input_gradient`].
    fn input_gradient_image(x: &[f32], dy: &[f32], dx: &mut [f32], k: &GradientConstants, relu: bool) -> () {
        let f = &k.forward;
        for i in 0..dx.len() {
            let gated = gate(relu, (f.scale[i], f.shift[i]), x[i], dy[i]);
            dx[i] = k.scale_dx[i] * (gated - k.mean_g[i] - (x[i] - f.mean[i]) * k.s[i]);
        }
    }
}

/// The input gradient, as batch norm's backward pass defines it, per position.
pub(super) fn input_gradient(
    x: &[f32],
    dy: &[f32],
    image: usize,
    k: &GradientConstants,
    relu: bool,
) -> Vec<f32> {
    let mut dx = workspace::take(x.len());
    dx.par_chunks_mut(image)
        .zip(x.par_chunks(image).zip(dy.par_chunks(image)))
        .for_each(|(dx, (x, dy))| input_gradient_image(x, dy, dx, k, relu));
    dx
}
