//! Direct depthwise convolution (one filter per channel), one plane per task, no im2col.
//!
//! Each input plane is laid out once into `stride * stride` zero-padded *phase* planes,
//! `phase[a][b][r][c] = padded[stride * r + a][stride * c + b]` (`Hq x Wq` each, `Hq = Hp / s`,
//! `Wq = Wp / s` rounded up; at stride 1 that is just the padded plane). The output is computed
//! on rows `Wq` wide: then the tap `(kh, kw)` reads, for every output element `i`, the phase
//! buffer at `offset(kh, kw) + i`, a plain shift. The whole plane is one loop over `i` with all
//! taps accumulated in registers (`simd::weighted_shifts`) and no padding branch; the
//! `Wq - OW` extra columns of each row are dropped at the end.
//!
//! Backward: the weight gradient is a dot product of the (widened) output gradient with each
//! shift; the input gradient at stride 1 is the forward pass of the output gradient with the
//! flipped filter, and otherwise the adjoint scatter of the forward pass into the phase planes.

use rayon::prelude::*;

use crate::cpu::pool::{self, HostBuffer};
use crate::cpu::simd::{scatter_shifts, shifted_dots, weighted_shifts};
use crate::ops::conv2d::Conv2dShape;

struct Geometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    stride: usize,
    /// Phase plane rows and columns.
    hq: usize,
    wq: usize,
}

impl Geometry {
    fn new(s: &Conv2dShape) -> Geometry {
        let stride = s.stride;
        Geometry {
            h: s.in_height,
            w: s.in_width,
            oh: s.out_height,
            ow: s.out_width,
            kh: s.kernel_height,
            kw: s.kernel_width,
            pad: s.padding,
            stride,
            hq: (s.in_height + 2 * s.padding).div_ceil(stride),
            wq: (s.in_width + 2 * s.padding).div_ceil(stride),
        }
    }

    fn phase_len(&self) -> usize {
        self.hq * self.wq
    }

    /// All phase planes plus one row of slack: the last tap's shift may read past the last
    /// phase plane's last row, into columns whose outputs are dropped.
    fn phases_len(&self) -> usize {
        self.stride * self.stride * self.phase_len() + self.wq + self.kw
    }

    /// Length of an output plane on wide rows.
    fn wide_len(&self) -> usize {
        self.oh * self.wq
    }

    fn offset(&self, kh: usize, kw: usize) -> usize {
        let s = self.stride;
        ((kh % s) * s + kw % s) * self.phase_len() + (kh / s) * self.wq + kw / s
    }

    /// `(offset, weight)` of every tap of `filter` (`kh x kw`, row-major).
    fn taps(&self, filter: &[f32]) -> Vec<(usize, f32)> {
        (0..self.kh)
            .flat_map(|kh| (0..self.kw).map(move |kw| (kh, kw)))
            .map(|(kh, kw)| (self.offset(kh, kw), filter[kh * self.kw + kw]))
            .collect()
    }

    /// Lays `plane` (`H x W`) out into zero-padded phase planes.
    fn split(&self, plane: &[f32], phases: &mut [f32]) {
        let s = self.stride;
        if s == 1 {
            // Zeros only where no input value lands: the padding rows (and the slack after
            // them) and the padding columns of each row.
            let (p, wq) = (self.pad, self.wq);
            phases[..p * wq + p].fill(0.0);
            for y in 0..self.h {
                let row = &mut phases[(y + p) * wq + p..][..wq];
                row[..self.w].copy_from_slice(&plane[y * self.w..][..self.w]);
                row[self.w..].fill(0.0); // right padding, then the next row's left padding
            }
            phases[(self.h + p) * wq + p..].fill(0.0);
            return;
        }
        phases.fill(0.0);
        for y in 0..self.h {
            let (a, r) = ((y + self.pad) % s, (y + self.pad) / s);
            let row = &plane[y * self.w..][..self.w];
            // Input column x goes to phase b = (x + pad) % s, column (x + pad) / s: the first
            // x of each phase and then every s-th one.
            for b in 0..s.min(self.w) {
                let x0 = (b + s - self.pad % s) % s;
                let dst = &mut phases
                    [(a * s + b) * self.phase_len() + r * self.wq + (x0 + self.pad) / s..];
                let src = &row[x0.min(self.w)..];
                let count = src.len().div_ceil(s);
                for (i, d) in dst[..count].iter_mut().enumerate() {
                    *d = src[i * s];
                }
            }
        }
    }

    /// The inverse of [`Geometry::split`]: gathers the `H x W` plane out of the phase planes
    /// (padding dropped).
    fn merge(&self, phases: &[f32], plane: &mut [f32]) {
        let s = self.stride;
        for y in 0..self.h {
            let (a, r) = ((y + self.pad) % s, (y + self.pad) / s);
            let row = &mut plane[y * self.w..][..self.w];
            for b in 0..s.min(self.w) {
                let x0 = (b + s - self.pad % s) % s;
                let src =
                    &phases[(a * s + b) * self.phase_len() + r * self.wq + (x0 + self.pad) / s..];
                for (d, &v) in row[x0.min(self.w)..].iter_mut().step_by(s).zip(src) {
                    *d = v;
                }
            }
        }
    }

    /// Lays an output-shaped plane (`OH x OW`) on wide rows, zeros in the extra columns.
    fn widen(&self, plane: &[f32], wide: &mut [f32]) {
        wide.fill(0.0);
        for oh in 0..self.oh {
            wide[oh * self.wq..][..self.ow].copy_from_slice(&plane[oh * self.ow..][..self.ow]);
        }
    }

    /// Drops the extra columns of a wide plane.
    fn narrow(&self, wide: &[f32], plane: &mut [f32]) {
        for oh in 0..self.oh {
            plane[oh * self.ow..][..self.ow].copy_from_slice(&wide[oh * self.wq..][..self.ow]);
        }
    }

    /// The geometry of the stride-1 backward-input pass, when it is a plain forward pass:
    /// the output gradient padded by `k - 1 - padding` and the flipped filter give back `H x W`.
    fn transposed(&self) -> Option<Geometry> {
        // The padded output gradient is OH + 2 (k - 1 - p) - (k - 1) = H high: always H x W.
        let fits = self.stride == 1 && self.kh == self.kw && self.pad < self.kh;
        fits.then(|| {
            let pad = self.kh - 1 - self.pad;
            Geometry {
                h: self.oh,
                w: self.ow,
                oh: self.h,
                ow: self.w,
                kh: self.kh,
                kw: self.kw,
                pad,
                stride: 1,
                hq: self.oh + 2 * pad,
                wq: self.ow + 2 * pad,
            }
        })
    }
}

/// One plane of the forward pass: `y = conv(x, filter)` through the phase layout.
fn forward_plane(
    g: &Geometry,
    x: &[f32],
    taps: &[(usize, f32)],
    y: &mut [f32],
    phases: &mut [f32],
    wide: &mut [f32],
) {
    g.split(x, phases);
    weighted_shifts(wide, phases, taps);
    g.narrow(wide, y);
}

/// A task's phase planes and wide output plane, from the workspace pool.
fn scratch(g: &Geometry) -> (HostBuffer, HostBuffer) {
    (
        HostBuffer::zeroed(g.phases_len()),
        HostBuffer::zeroed(g.wide_len()),
    )
}

/// The taps of every channel's filter (`w`: C x KH x KW), computed once per call; `flip`
/// reverses each filter (the stride-1 backward-input pass).
fn channel_taps(g: &Geometry, w: &[f32], flip: bool) -> Vec<Vec<(usize, f32)>> {
    w.chunks_exact(g.kh * g.kw)
        .map(|filter| {
            if flip {
                g.taps(&filter.iter().rev().copied().collect::<Vec<f32>>())
            } else {
                g.taps(filter)
            }
        })
        .collect()
}

/// # Shapes
/// `x`: (N, C, H, W), `w`: (C, 1, KH, KW); returns (N, C, OH, OW)
pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let taps = channel_taps(&g, w, false);
    let mut y = pool::take(s.batch * s.out_channels * out_plane);
    y.par_chunks_mut(out_plane).enumerate().for_each_init(
        || scratch(&g),
        |(phases, wide), (plane, y)| {
            forward_plane(
                &g,
                &x[plane * in_plane..][..in_plane],
                &taps[plane % s.in_channels],
                y,
                phases,
                wide,
            );
        },
    );
    y
}

/// # Shapes
/// `w`: (C, 1, KH, KW), `dy`: (N, C, OH, OW); returns dx (N, C, H, W)
pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let mut dx = pool::take(s.batch * s.in_channels * in_plane);
    if let Some(t) = g.transposed() {
        let flipped = channel_taps(&t, w, true);
        dx.par_chunks_mut(in_plane).enumerate().for_each_init(
            || scratch(&t),
            |(phases, wide), (plane, dx)| {
                forward_plane(
                    &t,
                    &dy[plane * out_plane..][..out_plane],
                    &flipped[plane % s.in_channels],
                    dx,
                    phases,
                    wide,
                );
            },
        );
        return dx;
    }
    let taps = channel_taps(&g, w, false);
    dx.par_chunks_mut(in_plane).enumerate().for_each_init(
        || scratch(&g),
        |(dphases, wide), (plane, dx)| {
            g.widen(&dy[plane * out_plane..][..out_plane], wide);
            dphases.fill(0.0);
            // The adjoint of the forward pass; the extra columns of `wide` are zeros.
            scatter_shifts(dphases, wide, &taps[plane % s.in_channels]);
            g.merge(dphases, dx);
        },
    );
    dx
}

/// # Shapes
/// `x`: (N, C, H, W), `dy`: (N, C, OH, OW); returns dw (C, 1, KH, KW)
pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let offsets: Vec<usize> = g.taps(&vec![0.0; taps]).iter().map(|t| t.0).collect();
    let mut dw = vec![0.0f32; s.out_channels * taps];
    dw.par_chunks_mut(taps).enumerate().for_each_init(
        || scratch(&g),
        |(phases, wide), (channel, dw)| {
            // float32 within a plane, float64 across the batch: a fixed order, whatever the
            // scheduling.
            let mut sums = vec![0.0f64; taps];
            for image in 0..s.batch {
                let plane = image * s.in_channels + channel;
                g.split(&x[plane * in_plane..][..in_plane], phases);
                g.widen(&dy[plane * out_plane..][..out_plane], wide);
                shifted_dots(&mut sums, wide, phases, &offsets);
            }
            for (out, sum) in dw.iter_mut().zip(sums) {
                *out = sum as f32;
            }
        },
    );
    dw
}
