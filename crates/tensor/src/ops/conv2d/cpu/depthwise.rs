//! Direct depthwise convolution (one filter per channel), no im2col.
//!
//! A task takes one channel and a group of `G` images: their planes of that channel share the
//! filter. They are laid out once, stacked, into `stride * stride` zero-padded *phase* planes:
//! `phase[a][b][j * Hq + r][c] = padded_j[stride * r + a][stride * c + b]` for image `j` of the
//! group (`Hq x Wq` per image, `Hq = Hp / s`, `Wq = Wp / s` rounded up; at stride 1 that is
//! just the padded planes one under the other). The output is computed on rows `Wq` wide,
//! image `j`'s rows starting at `j * Hq`: then the tap `(kh, kw)` reads, for every output
//! element `i`, the phase buffer at `offset(kh, kw) + i`, a plain shift, and never crosses into
//! another image for the elements kept. The whole group is one loop over `i` with every tap
//! accumulated in registers (`simd::weighted_shifts`), no padding branch; the extra columns and
//! rows are dropped at the end. Stacking is what keeps small planes (14x14 down to 1x1) fast:
//! the per-call work is a group, not a 4-element plane.
//!
//! Backward: the weight gradient is a dot product of the (widened) output gradient with each
//! shift, over all the channel's images; the input gradient at stride 1 is the forward pass of
//! the output gradient with the flipped filter, and otherwise the adjoint of the forward pass,
//! gathered phase by phase.

mod tiny;

use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::simd::{every_second, interleave, shifted_dots, weighted_shifts};
use crate::cpu::workspace::{self, HostBuffer};
use crate::cpu::{copy_row, items_per_job, Planes};
use crate::ops::conv2d::Conv2dShape;

use super::{ChannelMap, InputMap};

/// Phase-buffer elements a task aims at: with its wide output plane, about 32 KiB, so that a
/// group stays in the L1 and L2 caches while every tap sweeps it.
const GROUP_ELEMENTS: usize = 4096;

/// Whether the backward pass takes [`tiny`]: planes up to 16x16 (and a filter that fits its
/// tap buffer). Measured, batch 128 (64 for MobileNet-V2's): 96 channels 14x14 k5 5.8 against
/// 10.4 ms for the phase layout, 288 channels 7x7 k5 s2 2.5 against 12.0 ms, 96 channels 16x16
/// k3 s2 1.3 against 2.9 ms; at 28x28 the phase layout wins (36 channels k3: 3.5 against 9.3).
fn tiny_planes(s: &Conv2dShape) -> bool {
    s.in_height * s.in_width <= tiny::MAX_PIXELS && s.kernel_height * s.kernel_width <= 49
}

/// Whether the forward pass takes [`tiny`]: at stride 1 only planes up to 8x8, since on 14x14
/// the phase layout's shifts win (96 channels k5: 4.2 against 6.9 ms); at stride 2 the phase
/// layout's split costs more than the triples up to 16x16 (48 channels 14x14 k3: 0.65 against
/// 2.4 ms; 96 channels 16x16: 0.63 against 1.7 ms).
fn tiny_forward(s: &Conv2dShape) -> bool {
    tiny_planes(s) && (s.stride > 1 || s.in_height * s.in_width <= 64)
}

/// The map of `channel`, if the input has one.
fn channel_map(map: Option<InputMap<'_>>, channel: usize) -> Option<ChannelMap> {
    map.map(|m| m.channel(channel))
}

struct Geometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    stride: usize,
    /// Phase rows and columns of one image.
    hq: usize,
    wq: usize,
    /// Images stacked in one task.
    group: usize,
}

impl Geometry {
    fn new(s: &Conv2dShape) -> Geometry {
        let stride = s.stride;
        let hq = (s.in_height + 2 * s.padding).div_ceil(stride);
        let wq = (s.in_width + 2 * s.padding).div_ceil(stride);
        Geometry {
            h: s.in_height,
            w: s.in_width,
            oh: s.out_height,
            ow: s.out_width,
            kh: s.kernel_height,
            kw: s.kernel_width,
            pad: s.padding,
            stride,
            hq,
            wq,
            group: group_size(s.batch, stride * stride * hq * wq),
        }
    }

    /// One phase plane of a whole group.
    fn phase_len(&self) -> usize {
        self.group * self.hq * self.wq
    }

    /// All phase planes plus one row of slack: the last tap's shift may read past the last
    /// phase plane's last row, into columns whose outputs are dropped.
    fn phases_len(&self) -> usize {
        self.stride * self.stride * self.phase_len() + self.wq + self.kw
    }

    /// Length of a group's output on wide rows: up to the last image's last output row.
    fn wide_len(&self) -> usize {
        self.wide_len_of(self.group)
    }

    /// [`Geometry::wide_len`] of a group of `count` images (a short last group).
    fn wide_len_of(&self, count: usize) -> usize {
        ((count - 1) * self.hq + self.oh) * self.wq
    }

    fn offset(&self, kh: usize, kw: usize) -> usize {
        let s = self.stride;
        ((kh % s) * s + kw % s) * self.phase_len() + (kh / s) * self.wq + kw / s
    }

    /// The shift of every tap (`kh x kw`, row-major): the same for every channel.
    fn offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.kh * self.kw);
        for kh in 0..self.kh {
            for kw in 0..self.kw {
                offsets.push(self.offset(kh, kw));
            }
        }
        offsets
    }

    /// Lays the planes of a group (`H x W` each, `planes[j]` for image `j`) out into the
    /// zero-padded phase planes, through the channel's input map if any (the padding stays
    /// zero: it pads the mapped input).
    fn split<'a>(
        &self,
        planes: impl Iterator<Item = &'a [f32]>,
        map: Option<ChannelMap>,
        phases: &mut [f32],
    ) {
        // No fill: `phases` starts zeroed (see [`scratch`]) and, with one geometry, every call
        // writes the same interior positions, so the padding stays zero from call to call
        // (refilling it measured 6% of a 28x28 depthwise pass). A short last group zeroes the
        // images it lacks (below), which later readers of the whole group take as zeros.
        let s = self.stride;
        let phase_len = self.phase_len();
        // Per phase column b: its first input column, its first phase column, its length.
        let columns: Vec<(usize, usize, usize, usize)> = (0..s.min(self.w))
            .map(|b| {
                let x0 = (b + s - self.pad % s) % s;
                (
                    b,
                    x0.min(self.w),
                    (x0 + self.pad) / s,
                    (self.w - x0.min(self.w)).div_ceil(s),
                )
            })
            .collect();
        // A mapped row of a stride-2 layer goes through this buffer first.
        let mut mapped = [0.0f32; 64];
        let mut count = 0;
        for (j, plane) in planes.enumerate() {
            count = j + 1;
            // Row y goes to phase row a = (y + pad) % s, row (y + pad) / s, stepped along.
            let (mut a, mut r) = (self.pad % s, j * self.hq + self.pad / s);
            for y in 0..self.h {
                let (a_now, r_now) = (a, r);
                a += 1;
                if a == s {
                    (a, r) = (0, r + 1);
                }
                let (a, r) = (a_now, r_now);
                let mut row = &plane[y * self.w..][..self.w];
                if s == 1 {
                    let dst = &mut phases[r * self.wq + self.pad..][..self.w];
                    match map {
                        Some(m) => m.apply(row, dst),
                        None => copy_row(dst, row),
                    }
                    continue;
                }
                let mut long_row = Vec::new();
                if let Some(m) = map {
                    let out = if self.w <= mapped.len() {
                        &mut mapped[..self.w]
                    } else {
                        long_row.resize(self.w, 0.0);
                        &mut long_row[..]
                    };
                    m.apply(row, out);
                    row = out;
                }
                // Input column x goes to phase b = (x + pad) % s, column (x + pad) / s: the
                // first x of each phase and then every s-th one (offsets worked out once, above:
                // a division per row and phase cost as much as the copy).
                for &(b, x0, column, count) in &columns {
                    let at = (a * s + b) * phase_len + r * self.wq + column;
                    let (dst, src) = (&mut phases[at..at + count], &row[x0..]);
                    if s == 2 {
                        every_second(dst, src);
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src[i * s];
                        }
                    }
                }
            }
        }
        // The images a short last group lacks: zeros, in every phase plane.
        let image = self.hq * self.wq;
        for phase in 0..s * s {
            let start = phase * phase_len;
            phases[start + count * image..start + self.group * image].fill(0.0);
        }
    }

    /// The inverse of [`Geometry::split`] for image `j`: gathers its `H x W` plane out of the
    /// phase planes (padding dropped).
    fn merge(&self, phases: &[f32], j: usize, plane: &mut [f32]) {
        let s = self.stride;
        let phase_len = self.phase_len();
        if s == 2 && self.w >= 2 {
            // Row y and column x come from phase ((y + pad) % 2, (x + pad) % 2) at row
            // (y + pad) / 2 and column (x + pad) / 2 (divisions by 2: shifts).
            let (pad, wq) = (self.pad, self.wq);
            for (y, row) in plane.chunks_exact_mut(self.w).take(self.h).enumerate() {
                let (a, r) = ((y + pad) & 1, j * self.hq + ((y + pad) >> 1));
                let at = |x: usize| {
                    let b = (x + pad) & 1;
                    &phases[(a * 2 + b) * phase_len + r * wq + ((x + pad) >> 1)..]
                };
                interleave(row, at(0), at(1));
            }
            return;
        }
        for y in 0..self.h {
            let (a, r) = ((y + self.pad) % s, j * self.hq + (y + self.pad) / s);
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

    /// Lays output-shaped planes (`OH x OW`, `planes[j]` for image `j`) on the group's wide
    /// rows, zeros elsewhere.
    fn widen<'a>(&self, planes: impl Iterator<Item = &'a [f32]>, wide: &mut [f32]) {
        // No fill, as in [`Geometry::split`]: the columns past OW stay zero; the images a short
        // last group lacks are zeroed below.
        let mut count = 0;
        for (j, plane) in planes.enumerate() {
            count = j + 1;
            for oh in 0..self.oh {
                copy_row(
                    &mut wide[(j * self.hq + oh) * self.wq..][..self.ow],
                    &plane[oh * self.ow..][..self.ow],
                );
            }
        }
        let end = wide.len();
        wide[(count * self.hq * self.wq).min(end)..].fill(0.0);
    }

    /// Image `j`'s output plane out of the group's wide rows.
    fn narrow(&self, wide: &[f32], j: usize, plane: &mut [f32]) {
        for oh in 0..self.oh {
            copy_row(
                &mut plane[oh * self.ow..][..self.ow],
                &wide[(j * self.hq + oh) * self.wq..][..self.ow],
            );
        }
    }

    /// The geometry of the stride-1 backward-input pass, when it is a plain forward pass:
    /// the output gradient padded by `k - 1 - padding` and the flipped filter give back `H x W`.
    fn transposed(&self, batch: usize) -> Option<Geometry> {
        // The padded output gradient is OH + 2 (k - 1 - p) - (k - 1) = H high: always H x W.
        let fits = self.stride == 1 && self.kh == self.kw && self.pad < self.kh;
        fits.then(|| {
            let pad = self.kh - 1 - self.pad;
            let (hq, wq) = (self.oh + 2 * pad, self.ow + 2 * pad);
            Geometry {
                h: self.oh,
                w: self.ow,
                oh: self.h,
                ow: self.w,
                kh: self.kh,
                kw: self.kw,
                pad,
                stride: 1,
                hq,
                wq,
                group: group_size(batch, hq * wq),
            }
        })
    }
}

/// Images per task: enough to fill [`GROUP_ELEMENTS`], at least one; one when a plane alone
/// fills [`SINGLE_IMAGE_ELEMENTS`] (see [`tasks`]).
fn group_size(batch: usize, elements_per_image: usize) -> usize {
    if elements_per_image >= SINGLE_IMAGE_ELEMENTS {
        return 1;
    }
    (GROUP_ELEMENTS / elements_per_image.max(1)).clamp(1, batch.max(1))
}

/// Phase elements of one image above which a task takes a single image: large planes keep the
/// vectors busy alone, and single-image tasks run in memory order (see [`tasks`]).
const SINGLE_IMAGE_ELEMENTS: usize = 512;

/// A task's phase planes and wide output rows, from the workspace, zeroed: a buffer is
/// only ever used with the geometry it was made for, whose padding positions no call writes
/// (see [`Geometry::split`]).
fn scratch(g: &Geometry) -> (HostBuffer, HostBuffer) {
    (
        HostBuffer::zeroed(g.phases_len()),
        HostBuffer::zeroed(g.wide_len()),
    )
}

/// The taps of every channel's filter (`w`: C x KH x KW), computed once per call; `flip`
/// reverses each filter (the stride-1 backward-input pass).
fn channel_taps(g: &Geometry, w: &[f32], flip: bool) -> Vec<Vec<(usize, f32)>> {
    let offsets = g.offsets();
    w.chunks_exact(offsets.len())
        .map(|filter| {
            let weight = |t: usize| {
                if flip {
                    filter[filter.len() - 1 - t]
                } else {
                    filter[t]
                }
            };
            offsets
                .iter()
                .enumerate()
                .map(|(t, &o)| (o, weight(t)))
                .collect()
        })
        .collect()
}

/// The (channel, first image, images) of every task.
///
/// Single-image tasks go image by image, channel after channel: consecutive tasks read
/// consecutive planes, one stream through memory. (Channel-major, every plane is a separate
/// short stream for the hardware prefetcher: fmnist-ref's 72 channels at 28x28, k5 s2, batch
/// 128 measured 6.1 ms channel-major, 5.0 ms image-major.)
fn tasks(g: &Geometry, s: &Conv2dShape) -> Vec<(usize, usize, usize)> {
    let mut tasks = Vec::with_capacity(s.in_channels * s.batch.div_ceil(g.group));
    if g.group == 1 {
        for n in 0..s.batch {
            for c in 0..s.in_channels {
                tasks.push((c, n, 1));
            }
        }
        return tasks;
    }
    for c in 0..s.in_channels {
        for n0 in (0..s.batch).step_by(g.group) {
            tasks.push((c, n0, g.group.min(s.batch - n0)));
        }
    }
    tasks
}

/// One group of the forward pass: `out = conv(input, taps)` for images `n0..n0 + count` of
/// `channel`, through the phase layout.
#[allow(clippy::too_many_arguments)]
fn forward_group(
    g: &Geometry,
    s: &Conv2dShape,
    input: &[f32],
    taps: &[(usize, f32)],
    out: &Planes,
    (channel, n0, count): (usize, usize, usize),
    map: Option<ChannelMap>,
    phases: &mut [f32],
    wide: &mut [f32],
) {
    let (in_plane, channels) = (g.h * g.w, s.in_channels);
    let planes =
        (n0..n0 + count).map(|n| &input[(n * channels + channel) * in_plane..][..in_plane]);
    g.split(planes, map, phases);
    // A short last group computes only its own rows.
    weighted_shifts(&mut wide[..g.wide_len_of(count)], phases, taps);
    for j in 0..count {
        // SAFETY: this task alone owns the (image, channel) pairs of its group.
        let plane = unsafe { out.get((n0 + j) * channels + channel) };
        g.narrow(wide, j, plane);
    }
}

/// The input is `x`, or `map(x)` channel by channel when `map` is given.
///
/// # Shapes
/// `x`: (N, C, H, W), `w`: (C, 1, KH, KW); returns (N, C, OH, OW)
pub(super) fn forward(
    x: &[f32],
    map: Option<InputMap<'_>>,
    w: &[f32],
    s: &Conv2dShape,
) -> Vec<f32> {
    if tiny_forward(s) {
        return tiny::forward(x, map, w, s);
    }
    let g = Geometry::new(s);
    let mut y = workspace::take(s.batch * s.out_channels * g.oh * g.ow);
    forward_all(
        &g,
        s,
        x,
        map,
        &channel_taps(&g, w, false),
        &Planes::new(&mut y, g.oh * g.ow),
    );
    y
}

/// Every group of a forward pass of geometry `g` over `input`, in parallel.
fn forward_all(
    g: &Geometry,
    s: &Conv2dShape,
    input: &[f32],
    map: Option<InputMap<'_>>,
    taps: &[Vec<(usize, f32)>],
    out: &Planes,
) {
    tasks(g, s)
        .into_par_iter()
        .with_min_len(items_per_job(g.group * g.oh * g.ow))
        .for_each_init(
            || scratch(g),
            |(phases, wide), task| {
                let map = channel_map(map, task.0);
                forward_group(g, s, input, &taps[task.0], out, task, map, phases, wide);
            },
        );
}

/// # Shapes
/// `w`: (C, 1, KH, KW), `dy`: (N, C, OH, OW); returns dx (N, C, H, W)
pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let mut dx = workspace::take(s.batch * s.in_channels * in_plane);
    let out = Planes::new(&mut dx, in_plane);
    if let Some(t) = g.transposed(s.batch) {
        forward_all(&t, s, dy, None, &channel_taps(&t, w, true), &out);
        return dx;
    }
    // The adjoint of the forward pass, `dphases[off_t + i] += w_t * wide[i]`, as a gather:
    // `dphases[q] = sum_t w_t * wide[q - off_t]`, read from `wide` laid after `front` zeros
    // (the largest offset). Each phase block only takes its own phase's taps: the others
    // reach it only through the zero columns of `wide`. One store per element instead of one
    // per tap.
    let taps = channel_taps(&g, w, false);
    let front = taps.iter().flatten().map(|t| t.0).max().unwrap_or(0);
    let (phases, phase_len) = (s.stride * s.stride, g.phase_len());
    // gathers[channel * phases + phase]: that phase's taps, as shifts into the padded buffer.
    let gathers: Vec<Vec<(usize, f32)>> = taps
        .iter()
        .flat_map(|channel| {
            (0..phases).map(move |phase| {
                let start = phase * phase_len;
                channel
                    .iter()
                    .filter(|t| t.0 / phase_len == phase)
                    .map(|&(offset, weight)| (start + front - offset, weight))
                    .collect()
            })
        })
        .collect();
    tasks(&g, s)
        .into_par_iter()
        .with_min_len(items_per_job(g.group * g.oh * g.ow))
        .for_each_init(
            || {
                let (dphases, _) = scratch(&g);
                (dphases, HostBuffer::zeroed(front + g.phases_len()))
            },
            |(dphases, padded), (channel, n0, count)| {
                let c = s.in_channels;
                let planes =
                    (n0..n0 + count).map(|n| &dy[(n * c + channel) * out_plane..][..out_plane]);
                g.widen(planes, &mut padded[front..front + g.wide_len()]);
                for (phase, block) in dphases[..phases * g.phase_len()]
                    .chunks_exact_mut(g.phase_len())
                    .enumerate()
                {
                    weighted_shifts(block, padded, &gathers[channel * phases + phase]);
                }
                for j in 0..count {
                    // SAFETY: this task alone owns the (image, channel) pairs of its group.
                    let plane = unsafe { out.get((n0 + j) * c + channel) };
                    g.merge(dphases, j, plane);
                }
            },
        );
    dx
}

/// Both gradients at once: `(dx, dw)`.
///
/// At stride 1 with "same" padding (odd kernels, padding k / 2) one task per channel reads the
/// channel's `x` and `dy` once: the output gradient laid out padded for the input gradient (the
/// flipped forward pass) is, shifted by one padding row and column, the very wide-row layout
/// the weight gradient's dot products read. Otherwise the two passes run one after the other.
///
/// With `map`, the input was `map(x)` (see [`forward`]) and dx is its gradient.
///
/// # Shapes
/// `x`: (N, C, H, W), `w`: (C, 1, KH, KW), `dy`: (N, C, OH, OW); returns (dx, dw) shaped as
/// `x` and `w`
pub(super) fn backward(
    x: &[f32],
    map: Option<InputMap<'_>>,
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    if tiny_planes(s) {
        return tiny::backward(x, map, w, dy, s);
    }
    let g = Geometry::new(s);
    let shared = g
        .transposed(s.batch)
        .filter(|t| t.pad == g.pad && t.hq == g.hq && t.wq == g.wq && t.group == g.group);
    let Some(t) = shared else {
        return (backward_input(w, dy, s), backward_weight(x, map, dy, s));
    };
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let flipped = channel_taps(&t, w, true);
    // Where the wide-row view of the output gradient starts in its padded layout.
    let shift = g.pad * g.wq + g.pad;
    let c = s.in_channels;
    let mut dx = workspace::take(s.batch * c * in_plane);
    let out = Planes::new(&mut dx, in_plane);
    let offsets = g.offsets();
    let dw = weight_gradient(
        &g,
        s,
        || (scratch(&g), HostBuffer::zeroed(t.phases_len())),
        |((x_phases, wide), dy_phases), channel, images, sums| {
            let (n0, count) = (images.start, images.len());
            let dy_planes = images
                .clone()
                .map(|n| &dy[(n * c + channel) * out_plane..][..out_plane]);
            t.split(dy_planes, None, dy_phases);
            weighted_shifts(
                &mut wide[..t.wide_len_of(count)],
                dy_phases,
                &flipped[channel],
            );
            for j in 0..count {
                // SAFETY: this task alone owns channel `channel`'s planes.
                let plane = unsafe { out.get((n0 + j) * c + channel) };
                t.narrow(wide, j, plane);
            }
            let x_planes = images.map(|n| &x[(n * c + channel) * in_plane..][..in_plane]);
            g.split(x_planes, channel_map(map, channel), x_phases);
            let dy_wide = &dy_phases[shift..shift + g.wide_len()];
            shifted_dots(sums, dy_wide, x_phases, &offsets);
        },
    );
    (dx, dw)
}

/// With `map`, the input was `map(x)` (see [`forward`]).
///
/// # Shapes
/// `x`: (N, C, H, W), `dy`: (N, C, OH, OW); returns dw (C, 1, KH, KW)
pub(super) fn backward_weight(
    x: &[f32],
    map: Option<InputMap<'_>>,
    dy: &[f32],
    s: &Conv2dShape,
) -> Vec<f32> {
    if tiny_planes(s) {
        // The weight gradient does not read the filter: a zero one stands in, and dw has the
        // bits of the two-gradient pass.
        let zeros = vec![0.0f32; s.in_channels * s.kernel_height * s.kernel_width];
        return tiny::backward(x, map, &zeros, dy, s).1;
    }
    let g = Geometry::new(s);
    let (in_plane, out_plane, c) = (g.h * g.w, g.oh * g.ow, s.in_channels);
    let offsets = g.offsets();
    weight_gradient(
        &g,
        s,
        || scratch(&g),
        |(phases, wide), channel, images, sums| {
            let x_planes = images
                .clone()
                .map(|n| &x[(n * c + channel) * in_plane..][..in_plane]);
            let dy_planes = images.map(|n| &dy[(n * c + channel) * out_plane..][..out_plane]);
            g.split(x_planes, channel_map(map, channel), phases);
            g.widen(dy_planes, wide);
            shifted_dots(sums, wide, phases, &offsets);
        },
    )
}

/// The weight gradient: `accumulate(scratch, channel, images, sums)` adds each group of a
/// channel's images, in image order, to the tap sums (float32 within a group, float64 across
/// groups: a fixed order, whatever the scheduling).
///
/// With groups of several images a task takes one channel. With single-image groups the tasks
/// go image by image in memory order (see [`tasks`]), each group's sums are kept (each is one
/// float32 value per tap) and added per channel in image order afterwards: the same
/// arithmetic, so the same bits, without reading every channel's planes as N short streams.
///
/// # Shapes
/// returns dw (C, 1, KH, KW)
fn weight_gradient<S: Send>(
    g: &Geometry,
    s: &Conv2dShape,
    scratch: impl Fn() -> S + Sync + Send,
    accumulate: impl Fn(&mut S, usize, Range<usize>, &mut [f64]) + Sync + Send,
) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let channels = s.out_channels;
    let mut dw = vec![0.0f32; channels * taps];
    if g.group == 1 && s.batch > 1 {
        let mut partial = workspace::take(s.batch * channels * taps);
        partial
            .par_chunks_mut(taps)
            .enumerate()
            .with_min_len(items_per_job(g.oh * g.ow))
            .for_each_init(scratch, |state, (task, out)| {
                let (n, channel) = (task / channels, task % channels);
                let mut sums = [0.0f64; 49];
                let sums = &mut sums[..taps.min(49)];
                if taps > 49 {
                    let mut long = vec![0.0f64; taps];
                    accumulate(state, channel, n..n + 1, &mut long);
                    out.iter_mut().zip(long).for_each(|(o, v)| *o = v as f32);
                    return;
                }
                accumulate(state, channel, n..n + 1, sums);
                out.iter_mut()
                    .zip(sums.iter())
                    .for_each(|(o, v)| *o = *v as f32);
            });
        let mut sums = vec![0.0f64; channels * taps];
        for image in partial.chunks_exact(channels * taps) {
            for (sum, v) in sums.iter_mut().zip(image) {
                *sum += *v as f64;
            }
        }
        workspace::give(partial);
        for (out, sum) in dw.iter_mut().zip(sums) {
            *out = sum as f32;
        }
        return dw;
    }
    dw.par_chunks_mut(taps)
        .enumerate()
        .with_min_len(items_per_job(s.batch * g.oh * g.ow))
        .for_each_init(scratch, |state, (channel, dw)| {
            let mut sums = vec![0.0f64; taps];
            for n0 in (0..s.batch).step_by(g.group) {
                accumulate(state, channel, n0..(n0 + g.group).min(s.batch), &mut sums);
            }
            for (out, sum) in dw.iter_mut().zip(sums) {
                *out = sum as f32;
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::conv_output_size;

    /// A depthwise case with "same" padding: its shape and deterministic `x`, `w` and `dy`.
    fn case(
        batch: usize,
        channels: usize,
        size: usize,
        k: usize,
        stride: usize,
    ) -> (Conv2dShape, Vec<f32>, Vec<f32>, Vec<f32>) {
        let pad = k / 2;
        let out = conv_output_size(size, k, stride, pad).unwrap();
        let s = Conv2dShape {
            batch,
            in_channels: channels,
            in_height: size,
            in_width: size,
            out_channels: channels,
            out_height: out,
            out_width: out,
            kernel_height: k,
            kernel_width: k,
            stride,
            padding: pad,
            groups: channels,
        };
        let value = |i: usize, m: usize| ((i * 7919 % m) as f32 / m as f32) - 0.5;
        let x = (0..batch * channels * size * size)
            .map(|i| value(i, 97))
            .collect();
        let w = (0..channels * k * k).map(|i| value(i, 13)).collect();
        let dy = (0..batch * channels * out * out)
            .map(|i| value(i, 89))
            .collect();
        (s, x, w, dy)
    }

    /// The definition, one multiply-add at a time.
    fn reference(x: &[f32], w: &[f32], dy: &[f32], s: &Conv2dShape) -> [Vec<f32>; 3] {
        let (h, wd, oh, ow, k) = (
            s.in_height,
            s.in_width,
            s.out_height,
            s.out_width,
            s.kernel_height,
        );
        let mut y = vec![0.0f32; s.batch * s.in_channels * oh * ow];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for n in 0..s.batch {
            for c in 0..s.in_channels {
                let plane = n * s.in_channels + c;
                for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                    let o = plane * oh * ow + oy * ow + ox;
                    for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                        let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                        let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                            continue;
                        }
                        let i = plane * h * wd + iy as usize * wd + ix as usize;
                        let t = c * k * k + ky * k + kx;
                        y[o] += w[t] * x[i];
                        dx[i] += w[t] * dy[o];
                        dw[t] += (dy[o] * x[i]) as f64;
                    }
                }
            }
        }
        [y, dx, dw.into_iter().map(|v| v as f32).collect()]
    }

    #[test]
    fn groups_of_stacked_images_match_the_definition() {
        // Every kernel, both strides, the general and the small-plane kernels; 17x17 and 18x18
        // planes group several images per task (11, 8, 8) and the batch of 13 ends on a short
        // group, whose missing images must read as zeros.
        for (size, k, stride) in [
            (17, 3, 1),
            (17, 5, 2),
            (18, 5, 1),
            (40, 3, 1),
            (40, 5, 2),
            (23, 7, 1),
            (23, 3, 2),
            (1, 3, 1),
            (2, 3, 2),
            (4, 5, 1),
            (3, 7, 2),
            (16, 3, 1),
            (13, 5, 2),
        ] {
            let channels = 2;
            let (s, x, w, dy) = case(13, channels, size, k, stride);
            let [y, dx, dw] = reference(&x, &w, &dy, &s);
            let (dx_both, dw_both) = backward(&x, None, &w, &dy, &s);
            // The two paths of the general kernel give the same bits (tiny planes have their
            // own kernel, checked against the definition below).
            if !tiny_planes(&s) {
                assert_eq!(
                    dx_both,
                    backward_input(&w, &dy, &s),
                    "fused dx, size {size} k{k} s{stride}"
                );
            }
            let got = [forward(&x, None, &w, &s), dx_both, dw_both];
            for (name, (got, want)) in ["y", "dx", "dw"].iter().zip(got.iter().zip([y, dx, dw])) {
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{name}[{i}] {a} vs {b}: size {size} k{k} s{stride}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_mapped_input_gives_the_bits_of_the_input_written_out() {
        for (size, k, stride) in [(12, 3, 1), (12, 5, 2), (2, 3, 1), (4, 3, 2)] {
            let channels = 4;
            let (s, x, w, dy) = case(3, channels, size, k, stride);
            let scale: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32).collect();
            let shift: Vec<f32> = (0..channels).map(|c| 0.1 - 0.05 * c as f32).collect();
            for relu in [false, true] {
                let map = InputMap {
                    scale: &scale,
                    shift: &shift,
                    relu,
                };
                let plane = size * size;
                let mut mapped = x.clone();
                for (i, chunk) in mapped.chunks_exact_mut(plane).enumerate() {
                    let original = chunk.to_vec();
                    map.channel(i % channels).apply(&original, chunk);
                }
                let what = format!("size {size} k{k} s{stride} relu {relu}");
                assert_eq!(
                    forward(&x, Some(map), &w, &s),
                    forward(&mapped, None, &w, &s),
                    "{what}"
                );
                assert_eq!(
                    backward(&x, Some(map), &w, &dy, &s),
                    backward(&mapped, None, &w, &dy, &s),
                    "{what}"
                );
            }
        }
    }
}
