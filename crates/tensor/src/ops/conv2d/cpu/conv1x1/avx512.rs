//! The 1x1 convolution's two products, register-tiled for AVX-512 straight over NCHW (no
//! packing, no copies):
//! - [`product`]: `out[n] (M x P) = A (M x K) * x[n] (K x P)` for every image (the forward
//!   pass; the input gradient with `A = W^T`; whole-batch products where the "image" is the
//!   packed batch or, at 1x1 planes, `A` is an activation read in place);
//! - [`weight_gradient`]: `dW (M x K) = sum over n of dy[n] (M x P) * x[n]^T (P x K)`.
//!
//! Both can apply a per-channel map to `x` as it is loaded ([`InputMap`]: the previous layer's batch
//! norm and ReLU, never written out).
//!
//! Why not the `gemm` crate here: a 1x1 convolution of this search space multiplies a small
//! matrix (K = 8 to 480 input channels) by a wide one, image after image. `gemm` packs both
//! operands on every call and, on stable Rust, runs AVX2 kernels; with K this small the packing
//! and the per-call set-up cost as much as the product (measured 21-45 GFLOP/s on the 28x28
//! layers of fmnist-ref, 2-3x their memory floor). Here `A` is read in place through its
//! strides, and each tile of 8 output channels x 3 pixel vectors (16 pixels each) keeps its 24
//! sums in registers across the whole K loop: per input channel, 3 loads of `x`, 8 broadcasts
//! of `A`, 24 fused multiply-adds.
//!
//! The pixel vectors of a tile may belong to different images (a 4x4 plane is one vector), so
//! small planes fill the tiles too; a plane's last vector is masked. Planes of fewer than 16
//! pixels would waste most of each vector: [`usable`] says no, and the caller packs the batch
//! into one plane instead.

use rayon::prelude::*;

use crate::cpu::gemm::Mat;
use crate::cpu::ordered_sum;
use crate::cpu::simd::{level, Level};
use crate::ops::conv2d::cpu::InputMap;

/// Pixels per vector.
const LANES: usize = 16;
/// Output channels per tile.
const ROWS: usize = 8;
/// Pixel vectors per tile.
const VECS: usize = 3;

/// Whether this kernel runs here: AVX-512, and planes of at least one whole vector.
pub(super) fn usable(pixels: usize) -> bool {
    cfg!(target_arch = "x86_64") && level() == Level::Avx512 && pixels >= LANES
}

/// `out[n] = A * x[n]` for every image: `a` is the `M x K` matrix `A` at any strides (the
/// weight, its transpose, or an activation read in place), `x` is (N, K, P), `out` (N, M, P).
///
/// # Panics
/// When the lengths disagree with `a`'s shape and `p`, or [`usable`] is false.
pub(super) fn product(a: Mat<'_>, x: &[f32], p: usize, out: &mut [f32]) {
    product_mapped(a, x, None, p, out)
}

/// [`product`] of `map(x)`, the map applied channel by channel as `x` is loaded.
///
/// # Panics
/// As [`product`], or when the map does not hold K channels.
pub(super) fn product_mapped(
    a: Mat<'_>,
    x: &[f32],
    map: Option<InputMap<'_>>,
    p: usize,
    out: &mut [f32],
) {
    assert!(
        usable(p),
        "conv1x1::avx512::product needs AVX-512 and planes of 16+ pixels"
    );
    let (m, k) = (a.rows(), a.cols());
    assert!(
        m > 0 && k > 0 && x.len().is_multiple_of(k * p),
        "input of (N, {k}, {p})"
    );
    let images = x.len() / (k * p);
    assert_eq!(out.len(), images * m * p, "output of ({images}, {m}, {p})");
    let per_image = p.div_ceil(LANES);
    let vectors = images * per_image;
    // About 256K multiply-adds a job: small layers are not cut finer than it pays.
    let vectors_per_job = (256 * 1024 / (LANES * m * k).max(1)).clamp(VECS, 1 << 20) / VECS * VECS;
    let vector_jobs = vectors.div_ceil(vectors_per_job);
    // Few pixel vectors (a 1x1-plane layer has one row of them): the rows are cut too, so that
    // both cores get work.
    let row_blocks = m.div_ceil(ROWS);
    let row_jobs = if vector_jobs >= 8 {
        1
    } else {
        8usize.div_ceil(vector_jobs).min(row_blocks)
    };
    let rows_per_job = row_blocks.div_ceil(row_jobs) * ROWS;
    if let Some(map) = map {
        assert!(
            map.scale.len() == k && map.shift.len() == k,
            "map of {k} channels"
        );
    }
    let geometry = Geometry {
        m,
        k,
        p,
        map,
        per_image,
    };
    let out_ptr = SharedOut(out.as_mut_ptr());
    (0..vector_jobs * row_jobs).into_par_iter().for_each(|job| {
        let (vj, rj) = (job / row_jobs, job % row_jobs);
        let first = vj * vectors_per_job;
        let vectors = first..(first + vectors_per_job).min(vectors);
        let rows = (rj * rows_per_job).min(m)..((rj + 1) * rows_per_job).min(m);
        // SAFETY: AVX-512F was detected (`usable`); each job writes only its own rows of its
        // own pixel vectors of `out` (disjoint between jobs), within the lengths checked above;
        // `a`'s view was bounds-checked when it was made.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            intrinsics::run(&geometry, a, x, &out_ptr, vectors, rows)
        };
    });
}

/// `dW (M x K) = sum over images of dy[n] (M x P) * x[n]^T`: `dy` is (N, M, P), `x` (N, K, P).
/// Each tile of 4 rows of `dy` x 6 rows of `x` keeps its 24 dot products in registers over
/// every pixel of a run of images (16 pixels per lane row, the plane's tail masked), so a
/// 7x7 plane costs no horizontal sum per image; runs are added in order ([`ordered_sum`]).
///
/// # Panics
/// When the lengths disagree with `m`, `k`, `p`, or [`usable`] is false.
pub(super) fn weight_gradient(
    dy: &[f32],
    m: usize,
    x: &[f32],
    map: Option<InputMap<'_>>,
    k: usize,
    p: usize,
) -> Vec<f32> {
    assert!(
        usable(p),
        "conv1x1::avx512::weight_gradient needs AVX-512 and planes of 16+ pixels"
    );
    assert!(
        m > 0 && k > 0 && dy.len().is_multiple_of(m * p),
        "output gradient of (N, {m}, {p})"
    );
    let images = dy.len() / (m * p);
    assert_eq!(x.len(), images * k * p, "input of ({images}, {k}, {p})");
    if let Some(map) = map {
        assert!(
            map.scale.len() == k && map.shift.len() == k,
            "map of {k} channels"
        );
    }
    let g = GradientGeometry { m, k, p, map };
    ordered_sum(images, m * k, |run, dw| {
        // SAFETY: AVX-512F was detected (`usable`); the images of `run` lie inside `dy` and
        // `x` (lengths checked above) and `dw` holds M x K values.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            intrinsics::weight_gradient(&g, dy, x, run, dw)
        };
    })
}

/// The output, written by the jobs at disjoint pixels.
struct SharedOut(*mut f32);
// SAFETY: jobs write disjoint (image, pixel) columns of the output (see `product`).
unsafe impl Sync for SharedOut {}

struct GradientGeometry<'a> {
    m: usize,
    k: usize,
    p: usize,
    map: Option<InputMap<'a>>,
}

struct Geometry<'a> {
    m: usize,
    k: usize,
    p: usize,
    map: Option<InputMap<'a>>,
    /// Vectors per image plane.
    per_image: usize,
}

#[cfg(target_arch = "x86_64")]
mod intrinsics {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Geometry, GradientGeometry, InputMap, SharedOut, LANES, ROWS, VECS};
    use crate::cpu::gemm::Mat;

    /// `map(v)` for channel `c` (mul, add, max: batch norm's own output expression).
    ///
    /// # Safety
    /// AVX-512F must be available (inlined into the kernels that enable it).
    #[inline(always)]
    unsafe fn mapped(map: Option<InputMap<'_>>, c: usize, v: __m512) -> __m512 {
        match map {
            None => v,
            // SAFETY: AVX-512F, by the caller's contract.
            Some(m) => unsafe {
                let y = _mm512_add_ps(
                    _mm512_mul_ps(v, _mm512_set1_ps(m.scale[c])),
                    _mm512_set1_ps(m.shift[c]),
                );
                if m.relu {
                    _mm512_max_ps(y, _mm512_setzero_ps())
                } else {
                    y
                }
            },
        }
    }

    /// Rows of `dy` and of `x` per weight-gradient tile.
    const GRAD_ROWS: usize = 4;
    const GRAD_COLS: usize = 6;

    /// # Safety
    /// AVX-512F must be available; the images of `run` must lie inside `dy` (N, M, P) and `x`
    /// (N, K, P); `dw` must hold M x K values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_gradient(
        g: &GradientGeometry,
        dy: &[f32],
        x: &[f32],
        run: Range<usize>,
        dw: &mut [f32],
    ) {
        let (m, k, p) = (g.m, g.k, g.p);
        assert!(dw.len() >= m * k);
        let whole = p / LANES * LANES;
        let tail = if whole < p {
            ((1u32 << (p - whole)) - 1) as __mmask16
        } else {
            0
        };
        for o0 in (0..m).step_by(GRAD_ROWS) {
            for c0 in (0..k).step_by(GRAD_COLS) {
                // A short edge tile repeats its last row or column and drops those sums.
                let rows: [usize; GRAD_ROWS] = std::array::from_fn(|i| (o0 + i).min(m - 1));
                let cols: [usize; GRAD_COLS] = std::array::from_fn(|j| (c0 + j).min(k - 1));
                let mut acc = [[_mm512_setzero_ps(); GRAD_COLS]; GRAD_ROWS];
                for n in run.clone() {
                    // SAFETY: image n < N, rows < M, cols < K: inside dy and x.
                    let (dyp, xp) = unsafe {
                        (
                            rows.map(|r| dy.as_ptr().add((n * m + r) * p)),
                            cols.map(|c| x.as_ptr().add((n * k + c) * p)),
                        )
                    };
                    let mut step = |at: usize, mask: __mmask16| {
                        // SAFETY: pixels at..at + 16 of each row, masked to the plane.
                        let (dv, mut xv) = unsafe {
                            (
                                dyp.map(|q| _mm512_maskz_loadu_ps(mask, q.add(at))),
                                xp.map(|q| _mm512_maskz_loadu_ps(mask, q.add(at))),
                            )
                        };
                        // Masked-off lanes map to a finite value that meets a zero gradient.
                        for (j, v) in xv.iter_mut().enumerate() {
                            // SAFETY: AVX-512F is enabled on this kernel.
                            *v = unsafe { mapped(g.map, cols[j], *v) };
                        }
                        for i in 0..GRAD_ROWS {
                            for j in 0..GRAD_COLS {
                                acc[i][j] = _mm512_fmadd_ps(dv[i], xv[j], acc[i][j]);
                            }
                        }
                    };
                    for at in (0..whole).step_by(LANES) {
                        step(at, 0xFFFF);
                    }
                    if tail != 0 {
                        step(whole, tail);
                    }
                }
                for i in 0..GRAD_ROWS.min(m - o0) {
                    for j in 0..GRAD_COLS.min(k - c0) {
                        dw[(o0 + i) * k + c0 + j] += _mm512_reduce_add_ps(acc[i][j]);
                    }
                }
            }
        }
    }

    /// Where pixel vector `v` reads and writes: its image's offset plus its first pixel, and
    /// the mask of its pixels.
    #[inline(always)]
    fn vector(g: &Geometry, v: usize) -> (usize, usize, __mmask16) {
        let (image, q) = (v / g.per_image, v % g.per_image);
        let left = g.p - q * LANES;
        let mask = if left >= LANES {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as __mmask16
        };
        (image, q * LANES, mask)
    }

    /// # Safety
    /// AVX-512F must be available; `vectors` must lie inside the checked output, and no other
    /// thread may write the same vectors.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(
        g: &Geometry,
        a: Mat<'_>,
        x: &[f32],
        out: &SharedOut,
        vectors: Range<usize>,
        rows: Range<usize>,
    ) {
        let mut v = vectors.start;
        while v < vectors.end {
            let n = (vectors.end - v).min(VECS);
            let mut xs = [x.as_ptr(); VECS];
            let mut outs = [out.0; VECS];
            let mut masks = [0 as __mmask16; VECS];
            for j in 0..n {
                let (image, pixel, mask) = vector(g, v + j);
                // SAFETY: image < N and pixel < P: inside x and out (lengths checked by
                // `product`).
                unsafe {
                    xs[j] = x.as_ptr().add(image * g.k * g.p + pixel);
                    outs[j] = out.0.add(image * g.m * g.p + pixel);
                }
                masks[j] = mask;
            }
            let mut row = rows.start;
            while row < rows.end {
                let rows = (rows.end - row).min(ROWS);
                // SAFETY: as for `run`; `row + rows <= m`.
                unsafe {
                    match (n, rows) {
                        (3, 8) => tile::<3, 8>(g, a, row, &xs, &outs, &masks),
                        (2, 8) => tile::<2, 8>(g, a, row, &xs, &outs, &masks),
                        (1, 8) => tile::<1, 8>(g, a, row, &xs, &outs, &masks),
                        (_, r) => {
                            for j in 0..n {
                                let (x1, o1, m1) = ([xs[j]], [outs[j]], [masks[j]]);
                                match r {
                                    1 => tile::<1, 1>(g, a, row, &x1, &o1, &m1),
                                    2 => tile::<1, 2>(g, a, row, &x1, &o1, &m1),
                                    3 => tile::<1, 3>(g, a, row, &x1, &o1, &m1),
                                    4 => tile::<1, 4>(g, a, row, &x1, &o1, &m1),
                                    5 => tile::<1, 5>(g, a, row, &x1, &o1, &m1),
                                    6 => tile::<1, 6>(g, a, row, &x1, &o1, &m1),
                                    _ => tile::<1, 7>(g, a, row, &x1, &o1, &m1),
                                }
                            }
                        }
                    }
                }
                row += rows;
            }
            v += n;
        }
    }

    /// Output rows `row..row + R` of `V` pixel vectors: `R x V` sums in registers over all
    /// `K` input channels, then one masked store each.
    ///
    /// # Safety
    /// AVX-512F; the pointers and masks come from [`vector`] inside the checked lengths.
    #[inline(always)]
    unsafe fn tile<const V: usize, const R: usize>(
        g: &Geometry,
        a: Mat<'_>,
        row: usize,
        xs: &[*const f32],
        outs: &[*mut f32],
        masks: &[__mmask16],
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let (rs, cs) = (a.row_stride(), a.col_stride());
        // SAFETY: rows row..row + R of the view exist (row + R <= M).
        let a_rows: [*const f32; R] =
            std::array::from_fn(|r| unsafe { a.as_ptr().add((row + r) * rs) });
        for c in 0..g.k {
            let mut xv = [_mm512_setzero_ps(); V];
            for j in 0..V {
                // SAFETY: channel c of the vector's plane, masked to its pixels.
                xv[j] = unsafe { _mm512_maskz_loadu_ps(masks[j], xs[j].add(c * g.p)) };
                // Masked-off lanes are never stored.
                // SAFETY: AVX-512F, as for the whole tile.
                xv[j] = unsafe { mapped(g.map, c, xv[j]) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: c < K and row + r < M: inside the bounds-checked view of A.
                let wv = _mm512_set1_ps(unsafe { *a_rows[r].add(c * cs) });
                for j in 0..V {
                    acc_r[j] = _mm512_fmadd_ps(wv, xv[j], acc_r[j]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for j in 0..V {
                // SAFETY: output row `row + r` of the vector's image, masked to its pixels.
                unsafe { _mm512_mask_storeu_ps(outs[j].add((row + r) * g.p), masks[j], acc_r[j]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_gradient_matches_the_definition() {
        if !usable(LANES) {
            eprintln!("conv1x1::avx512: no AVX-512 here, nothing to test");
            return;
        }
        // Edge tiles in both directions, masked plane tails, several runs of images.
        for (images, m, k, p) in [
            (1, 4, 6, 16),
            (3, 5, 7, 49),
            (20, 9, 13, 17),
            (2, 1, 1, 196),
        ] {
            let value = |i: usize, md: usize| ((i * 7919 % md) as f32 / md as f32) - 0.5;
            let dy: Vec<f32> = (0..images * m * p).map(|i| value(i, 31)).collect();
            let x: Vec<f32> = (0..images * k * p).map(|i| value(i, 97)).collect();
            let dw = weight_gradient(&dy, m, &x, None, k, p);
            for r in 0..m {
                for c in 0..k {
                    let want: f64 = (0..images)
                        .flat_map(|n| (0..p).map(move |q| (n, q)))
                        .map(|(n, q)| (dy[(n * m + r) * p + q] * x[(n * k + c) * p + q]) as f64)
                        .sum();
                    let got = dw[r * k + c] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "({images}, {m}, {k}, {p}) at {r}, {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_the_definition_on_every_tile_shape() {
        if !usable(LANES) {
            eprintln!("conv1x1::avx512: no AVX-512 here, nothing to test");
            return;
        }
        // Row counts around the tile's 8, planes from one vector to several with a masked
        // tail, batches that end on a short tile.
        for (images, m, k, p) in [
            (1, 8, 3, 16),
            (3, 13, 5, 49),
            (2, 7, 12, 784),
            (5, 24, 1, 17),
            (4, 3, 33, 196),
            (1, 64, 40, 20),
        ] {
            let value = |i: usize, md: usize| ((i * 7919 % md) as f32 / md as f32) - 0.5;
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 31)).collect();
            let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let x: Vec<f32> = (0..images * k * p).map(|i| value(i, 97)).collect();
            // A row-major, and A read through its transpose's strides: the same products.
            let mut out = vec![f32::NAN; images * m * p];
            product(Mat::row_major(&a, m, k), &x, p, &mut out);
            let mut again = vec![f32::NAN; images * m * p];
            product(Mat::transposed(&a_t, m, k), &x, p, &mut again);
            assert_eq!(out, again, "({images}, {m}, {k}, {p}) strided A");
            for n in 0..images {
                for r in 0..m {
                    for q in 0..p {
                        let want: f32 = (0..k).map(|c| a[r * k + c] * x[(n * k + c) * p + q]).sum();
                        let got = out[(n * m + r) * p + q];
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "({images}, {m}, {k}, {p}) at image {n} row {r} pixel {q}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
