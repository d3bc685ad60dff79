//! Depthwise convolution of small planes (14x14 and smaller: the last stages of MobileNet-V2
//! at 32x32 run on 2x2 and 1x1 planes), straight from NCHW.
//!
//! The phase layout of the general kernel pays a zero fill, a copy in and a copy out per group
//! of images, and wide rows that are mostly padding when a plane is 2 pixels across. Here the
//! geometry is enumerated once as the list of `(output, input, tap)` triples that exist (a 1x1
//! plane under a 3x3 kernel has one), and every plane runs down that list. A task takes a block
//! of 16 channels across all images: contiguous memory image after image, and the weight
//! gradient of each channel summed in image order (the same bits whatever the scheduling).
//!
//! With AVX-512 the 16 channels of a block are the 16 lanes: each pixel of the block's planes
//! is gathered into one vector (the planes are `P` values apart), so one multiply-add per
//! triple serves all 16 channels, and the results are scattered back.

use rayon::prelude::*;

use super::{channel_map, ChannelMap, InputMap};
#[cfg(target_arch = "x86_64")]
use crate::cpu::simd::{level, Level};
use crate::cpu::{workspace, Planes};
use crate::ops::conv2d::Conv2dShape;

/// Planes of at most this many pixels may take this path (its per-plane buffers of vectors
/// stay within the L1 cache up to here).
pub(super) const MAX_PIXELS: usize = 256;

/// Channels per task.
const BLOCK: usize = 16;

/// One multiply-add of the convolution: `out[output] += w[tap] * in[input]`.
#[derive(Clone, Copy)]
struct Triple {
    output: usize,
    input: usize,
    tap: usize,
}

/// Every `(output, input, tap)` whose input lies inside the plane (padding reads zeros), tap by
/// tap: consecutive triples of one tap write different outputs (forward) and inputs (input
/// gradient), so their read-modify-writes do not wait on each other, and a tap's weight
/// gradient is one run of multiply-adds.
fn triples(s: &Conv2dShape) -> Vec<Triple> {
    let (k, kw) = (s.kernel_height, s.kernel_width);
    let mut list = Vec::new();
    for ky in 0..k {
        for kx in 0..kw {
            for oy in 0..s.out_height {
                for ox in 0..s.out_width {
                    let iy = (oy * s.stride + ky).checked_sub(s.padding);
                    let ix = (ox * s.stride + kx).checked_sub(s.padding);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < s.in_height && ix < s.in_width {
                            list.push(Triple {
                                output: oy * s.out_width + ox,
                                input: iy * s.in_width + ix,
                                tap: ky * kw + kx,
                            });
                        }
                    }
                }
            }
        }
    }
    list
}

/// The runs of `list` that share a tap: `(tap, range)`.
#[cfg(target_arch = "x86_64")]
fn tap_runs(list: &[Triple]) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut runs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match runs.last_mut() {
            Some((tap, range)) if *tap == t.tap => range.end = i + 1,
            _ => runs.push((t.tap, i..i + 1)),
        }
    }
    runs
}

/// Plane `(n, c)` of `x`, through channel `c`'s map if any, in a stack buffer.
#[inline(always)]
fn read_plane(x: &[f32], map: Option<ChannelMap>, at: usize, len: usize) -> [f32; MAX_PIXELS] {
    let mut plane = [0.0f32; MAX_PIXELS];
    let src = &x[at..at + len];
    match map {
        Some(m) => m.apply(src, &mut plane[..len]),
        None => plane[..len].copy_from_slice(src),
    }
    plane
}

/// # Shapes
/// as [`super::forward`]
pub(super) fn forward(
    x: &[f32],
    map: Option<InputMap<'_>>,
    w: &[f32],
    s: &Conv2dShape,
) -> Vec<f32> {
    let (in_plane, out_plane, c) = (
        s.in_height * s.in_width,
        s.out_height * s.out_width,
        s.in_channels,
    );
    let taps = s.kernel_height * s.kernel_width;
    let list = triples(s);
    let mut y = workspace::take(s.batch * c * out_plane);
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        let (scale, shift, relu) = map_vectors(map, c);
        let wt = transposed_filters(w, c, taps);
        let out = SharedOut(y.as_mut_ptr());
        (0..c.div_ceil(BLOCK)).into_par_iter().for_each(|block| {
            // SAFETY: AVX-512F was detected; the block's channels lie inside the checked
            // shapes, and only this task writes their planes.
            unsafe {
                avx512::forward(
                    s,
                    &list,
                    x,
                    &wt,
                    (&scale, &shift, relu),
                    block * BLOCK,
                    &out,
                )
            }
        });
        return y;
    }
    let out = Planes::new(&mut y, out_plane);
    (0..c.div_ceil(BLOCK)).into_par_iter().for_each(|block| {
        let channels = block * BLOCK..((block + 1) * BLOCK).min(c);
        for n in 0..s.batch {
            for ch in channels.clone() {
                let plane = read_plane(x, channel_map(map, ch), (n * c + ch) * in_plane, in_plane);
                let filter = &w[ch * taps..][..taps];
                let mut acc = [0.0f32; MAX_PIXELS];
                for t in &list {
                    acc[t.output] += filter[t.tap] * plane[t.input];
                }
                // SAFETY: this task alone owns the planes of its channels.
                unsafe { out.get(n * c + ch) }.copy_from_slice(&acc[..out_plane]);
            }
        }
    });
    y
}

/// Both gradients, `(dx, dw)`; with `map`, dx is the gradient of the mapped input.
///
/// # Shapes
/// as [`super::backward`]
pub(super) fn backward(
    x: &[f32],
    map: Option<InputMap<'_>>,
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    let (in_plane, out_plane, c) = (
        s.in_height * s.in_width,
        s.out_height * s.out_width,
        s.in_channels,
    );
    let taps = s.kernel_height * s.kernel_width;
    let list = triples(s);
    let mut dx = workspace::take(s.batch * c * in_plane);
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        let (scale, shift, relu) = map_vectors(map, c);
        let wt = transposed_filters(w, c, taps);
        let runs = tap_runs(&list);
        let out = SharedOut(dx.as_mut_ptr());
        let mut dwt = vec![0.0f32; taps * c.div_ceil(BLOCK) * BLOCK];
        dwt.par_chunks_mut(taps * BLOCK)
            .enumerate()
            .for_each(|(block, dwt)| {
                // SAFETY: AVX-512F was detected; the block's channels lie inside the checked
                // shapes, and only this task writes their planes.
                unsafe {
                    avx512::backward(
                        s,
                        &list,
                        &runs,
                        x,
                        &wt,
                        dy,
                        (&scale, &shift, relu),
                        block * BLOCK,
                        &out,
                        dwt,
                    )
                }
            });
        // dwt holds, block by block, tap-major rows of 16 channels.
        let mut dw = vec![0.0f32; c * taps];
        for ch in 0..c {
            let (block, lane) = (ch / BLOCK, ch % BLOCK);
            for t in 0..taps {
                dw[ch * taps + t] = dwt[(block * taps + t) * BLOCK + lane];
            }
        }
        return (dx, dw);
    }
    let planes = Planes::new(&mut dx, in_plane);
    let mut dw = vec![0.0f32; c * taps];
    dw.par_chunks_mut(BLOCK * taps)
        .enumerate()
        .for_each(|(block, dw)| {
            let first = block * BLOCK;
            let mut sums = vec![0.0f64; dw.len()];
            for n in 0..s.batch {
                for (i, sums) in sums.chunks_exact_mut(taps).enumerate() {
                    let ch = first + i;
                    let plane =
                        read_plane(x, channel_map(map, ch), (n * c + ch) * in_plane, in_plane);
                    let g = &dy[(n * c + ch) * out_plane..][..out_plane];
                    let filter = &w[ch * taps..][..taps];
                    let (mut dplane, mut dtaps) = ([0.0f32; MAX_PIXELS], [0.0f32; 49]);
                    for t in &list {
                        dplane[t.input] += filter[t.tap] * g[t.output];
                        dtaps[t.tap] += g[t.output] * plane[t.input];
                    }
                    for (sum, d) in sums.iter_mut().zip(&dtaps[..taps]) {
                        *sum += *d as f64;
                    }
                    // SAFETY: this task alone owns the planes of its channels.
                    unsafe { planes.get(n * c + ch) }.copy_from_slice(&dplane[..in_plane]);
                }
            }
            for (out, sum) in dw.iter_mut().zip(sums) {
                *out = sum as f32;
            }
        });
    (dx, dw)
}

/// Every channel's map as three arrays (identity without maps), padded to whole blocks.
#[cfg(target_arch = "x86_64")]
fn map_vectors(map: Option<InputMap<'_>>, channels: usize) -> (Vec<f32>, Vec<f32>, Option<bool>) {
    let padded = channels.div_ceil(BLOCK) * BLOCK;
    let (mut scale, mut shift) = (vec![1.0f32; padded], vec![0.0f32; padded]);
    let relu = map.map(|m| {
        scale[..channels].copy_from_slice(m.scale);
        shift[..channels].copy_from_slice(m.shift);
        m.relu
    });
    (scale, shift, relu)
}

/// The filters `C x taps` as `taps` rows of channels, padded to whole blocks with zeros.
#[cfg(target_arch = "x86_64")]
fn transposed_filters(w: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let padded = channels.div_ceil(BLOCK) * BLOCK;
    let mut wt = vec![0.0f32; taps * padded];
    for c in 0..channels {
        for t in 0..taps {
            wt[t * padded + c] = w[c * taps + t];
        }
    }
    wt
}

/// An output written by the tasks at disjoint channels.
#[cfg(target_arch = "x86_64")]
struct SharedOut(*mut f32);
// SAFETY: each task writes the planes of its own block of channels only.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for SharedOut {}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{SharedOut, Triple, BLOCK, MAX_PIXELS};
    use crate::ops::conv2d::Conv2dShape;

    /// Per-channel scale and shift arrays and the ReLU flag (`None`: no map).
    pub(super) type Maps<'a> = (&'a [f32], &'a [f32], Option<bool>);

    /// The mask of the block's channels that exist, and the lane offsets of their planes.
    #[inline(always)]
    fn lanes(channels: usize, first: usize, plane: usize) -> (__mmask16, __m512i) {
        let count = (channels - first).min(BLOCK);
        let mask = if count == BLOCK {
            0xFFFF
        } else {
            ((1u32 << count) - 1) as __mmask16
        };
        let offsets: [i32; BLOCK] = std::array::from_fn(|lane| (lane * plane) as i32);
        // SAFETY: a 16-int array.
        (mask, unsafe { _mm512_loadu_si512(offsets.as_ptr().cast()) })
    }

    /// The block's 16 planes of image `n` of `x`, pixel by pixel, mapped, into `v[..pixels]`
    /// (in place: a returned array of 256 vectors would be zeroed and copied every image).
    ///
    /// # Safety
    /// AVX-512F; `base` points at the block's first plane of the image inside `x`.
    #[inline(always)]
    unsafe fn gather_planes(
        base: *const f32,
        pixels: usize,
        mask: __mmask16,
        offsets: __m512i,
        (scale, shift, relu): (__m512, __m512, Option<bool>),
        v: &mut [__m512],
    ) {
        for (i, v) in v[..pixels].iter_mut().enumerate() {
            // SAFETY: lanes of the mask read pixel i of existing planes.
            let raw = unsafe {
                _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, offsets, base.add(i))
            };
            *v = match relu {
                None => raw,
                // Mul then add then max: batch norm's own output expression, bit for bit.
                Some(relu) => {
                    let y = _mm512_add_ps(_mm512_mul_ps(raw, scale), shift);
                    if relu {
                        _mm512_max_ps(y, _mm512_setzero_ps())
                    } else {
                        y
                    }
                }
            };
        }
    }

    /// # Safety
    /// AVX-512F; `first` a block start inside the shape's channels; no other task writes
    /// these channels' planes of `out`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward(
        s: &Conv2dShape,
        list: &[Triple],
        x: &[f32],
        wt: &[f32],
        (scale, shift, relu): Maps<'_>,
        first: usize,
        out: &SharedOut,
    ) {
        let c = s.in_channels;
        let (in_plane, out_plane) = (s.in_height * s.in_width, s.out_height * s.out_width);
        let padded = wt.len() / (s.kernel_height * s.kernel_width);
        let (mask, in_offsets) = lanes(c, first, in_plane);
        let (_, out_offsets) = lanes(c, first, out_plane);
        // SAFETY: the padded per-channel arrays hold whole blocks.
        let map = unsafe {
            (
                _mm512_loadu_ps(scale.as_ptr().add(first)),
                _mm512_loadu_ps(shift.as_ptr().add(first)),
                relu,
            )
        };
        // Buffers of vectors for the whole task, used up to the plane sizes.
        let (mut xv, mut acc) = (
            [_mm512_setzero_ps(); MAX_PIXELS],
            [_mm512_setzero_ps(); MAX_PIXELS],
        );
        for n in 0..s.batch {
            // SAFETY: the block's planes of image n lie inside x and out.
            unsafe {
                gather_planes(
                    x.as_ptr().add((n * c + first) * in_plane),
                    in_plane,
                    mask,
                    in_offsets,
                    map,
                    &mut xv,
                );
                acc[..out_plane].fill(_mm512_setzero_ps());
                for t in list {
                    let w = _mm512_loadu_ps(wt.as_ptr().add(t.tap * padded + first));
                    acc[t.output] = _mm512_fmadd_ps(w, xv[t.input], acc[t.output]);
                }
                let base = out.0.add((n * c + first) * out_plane);
                for (o, acc) in acc.iter().enumerate().take(out_plane) {
                    _mm512_mask_i32scatter_ps::<4>(base.add(o), mask, out_offsets, *acc);
                }
            }
        }
    }

    /// Both gradients of a block: dx planes scattered into `out`, and the block's weight
    /// gradient in `dwt` (`taps` rows of 16 channels), summed over the images in order.
    ///
    /// # Safety
    /// As [`forward`]; `dwt` holds `taps x 16` values.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn backward(
        s: &Conv2dShape,
        list: &[Triple],
        runs: &[(usize, std::ops::Range<usize>)],
        x: &[f32],
        wt: &[f32],
        dy: &[f32],
        (scale, shift, relu): Maps<'_>,
        first: usize,
        out: &SharedOut,
        dwt: &mut [f32],
    ) {
        let c = s.in_channels;
        let (in_plane, out_plane) = (s.in_height * s.in_width, s.out_height * s.out_width);
        let taps = s.kernel_height * s.kernel_width;
        let padded = wt.len() / taps;
        let (mask, in_offsets) = lanes(c, first, in_plane);
        let (_, out_offsets) = lanes(c, first, out_plane);
        // SAFETY: the padded per-channel arrays hold whole blocks.
        let map = unsafe {
            (
                _mm512_loadu_ps(scale.as_ptr().add(first)),
                _mm512_loadu_ps(shift.as_ptr().add(first)),
                relu,
            )
        };
        let mut dtaps = [_mm512_setzero_ps(); 49];
        // Buffers of vectors for the whole task, used up to the plane sizes.
        let mut xv = [_mm512_setzero_ps(); MAX_PIXELS];
        let mut gv = [_mm512_setzero_ps(); MAX_PIXELS];
        let mut dplane = [_mm512_setzero_ps(); MAX_PIXELS];
        for n in 0..s.batch {
            // SAFETY: the block's planes of image n lie inside x, dy and out.
            unsafe {
                gather_planes(
                    x.as_ptr().add((n * c + first) * in_plane),
                    in_plane,
                    mask,
                    in_offsets,
                    map,
                    &mut xv,
                );
                gather_planes(
                    dy.as_ptr().add((n * c + first) * out_plane),
                    out_plane,
                    mask,
                    out_offsets,
                    (map.0, map.1, None),
                    &mut gv,
                );
                dplane[..in_plane].fill(_mm512_setzero_ps());
                for (tap, range) in runs {
                    let w = _mm512_loadu_ps(wt.as_ptr().add(tap * padded + first));
                    // Four sums in turn: one chain of multiply-adds would wait on each other.
                    let mut sums = [_mm512_setzero_ps(); 4];
                    for (j, t) in list[range.clone()].iter().enumerate() {
                        dplane[t.input] = _mm512_fmadd_ps(w, gv[t.output], dplane[t.input]);
                        sums[j % 4] = _mm512_fmadd_ps(gv[t.output], xv[t.input], sums[j % 4]);
                    }
                    let total = _mm512_add_ps(
                        _mm512_add_ps(sums[0], sums[1]),
                        _mm512_add_ps(sums[2], sums[3]),
                    );
                    dtaps[*tap] = _mm512_add_ps(dtaps[*tap], total);
                }
                let base = out.0.add((n * c + first) * in_plane);
                for (i, d) in dplane.iter().enumerate().take(in_plane) {
                    _mm512_mask_i32scatter_ps::<4>(base.add(i), mask, in_offsets, *d);
                }
            }
        }
        for (t, d) in dtaps.iter().enumerate().take(taps) {
            // SAFETY: dwt holds taps rows of 16.
            unsafe { _mm512_storeu_ps(dwt.as_mut_ptr().add(t * BLOCK), *d) };
        }
    }
}
