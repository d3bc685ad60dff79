//! The vector loops of the CPU kernels, compiled three times: for AVX-512, for AVX2 with FMA,
//! and for any x86-64 (or other) CPU; [`level`] picks one at run time.
//!
//! Each loop body is written once, `#[inline(always)]`, over fixed-size chunks that LLVM keeps
//! in vector registers, and instantiated inside `#[target_feature]` functions so that it is
//! compiled with the wider instructions. `EATNAS_SIMD=portable|avx2|avx512` caps the level (the
//! tests run every path the machine has).

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Portable,
    Avx2,
    Avx512,
}

fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

fn detected_level() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detected)
}

/// The widest level this CPU has, capped by `EATNAS_SIMD`.
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("EATNAS_SIMD").as_deref() {
            Ok("portable") => Level::Portable,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected_level().min(cap)
    })
}

/// `w * x + acc`, fused where the level has FMA.
#[inline(always)]
fn madd<const FMA: bool>(w: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        w.mul_add(x, acc)
    } else {
        w * x + acc
    }
}

/// Picks the instantiation of a body for the running CPU. The `#[target_feature]` wrappers are
/// only called when [`level`] found those features.
macro_rules! dispatch {
    ($level:expr, $body:ident, $chunk512:literal, $chunk256:literal, $chunk:literal, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512(args: Args<'_>) { $body::<$chunk512, true>(args) }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(args: Args<'_>) { $body::<$chunk256, true>(args) }
            match $level {
                // SAFETY: `level` returns these only after detecting the features, and `at`
                // arguments are capped by it.
                Level::Avx512 => unsafe { avx512(($($arg),*)) },
                Level::Avx2 => unsafe { avx2(($($arg),*)) },
                Level::Portable => $body::<$chunk, false>(($($arg),*)),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $level;
            $body::<$chunk, false>(($($arg),*))
        }
    }};
}

/// Defines a function whose body is compiled three times (AVX-512, AVX2 + FMA, portable) and
/// runs the widest one the CPU has. For kernels whose loops vectorise by themselves; helpers
/// they call must be `#[inline(always)]` to be compiled with the wider instructions too.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) -> $ret { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) -> $ret { body($($arg),*) }
                match $crate::cpu::simd::level() {
                    // SAFETY: `level` returns these only after detecting the features.
                    $crate::cpu::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::cpu::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::simd::Level::Portable => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `out[i] = sum over taps of weight * src[offset + i]`: a depthwise convolution on rows laid
/// out so that every tap is a shift of one buffer.
///
/// # Panics
/// When a tap's `offset + out.len()` passes the end of `src`.
pub(crate) fn weighted_shifts(out: &mut [f32], src: &[f32], taps: &[(usize, f32)]) {
    weighted_shifts_at(level(), out, src, taps)
}

fn weighted_shifts_at(level: Level, out: &mut [f32], src: &[f32], taps: &[(usize, f32)]) {
    for &(offset, _) in taps {
        assert!(
            offset + out.len() <= src.len(),
            "tap at {offset} + {} past {}",
            out.len(),
            src.len()
        );
    }
    type Args<'a> = (&'a mut [f32], &'a [f32], &'a [(usize, f32)]);
    dispatch!(
        level.min(detected_level()),
        weighted_shifts_body,
        64,
        32,
        16,
        (out, src, taps)
    )
}

#[inline(always)]
fn weighted_shifts_body<const CHUNK: usize, const FMA: bool>(
    (out, src, taps): (&mut [f32], &[f32], &[(usize, f32)]),
) {
    // Wide chunks, then 8-wide ones, then single elements: a plane's tail is not left to
    // scalar code (up to CHUNK - 1 elements times every tap).
    let i = weighted_shift_chunks::<CHUNK, FMA>(out, src, taps, 0);
    let i = weighted_shift_chunks::<8, FMA>(out, src, taps, i);
    weighted_shift_chunks::<1, FMA>(out, src, taps, i);
}

/// [`weighted_shifts`] from `start` on, `CHUNK` elements at a time; returns where it stopped.
#[inline(always)]
fn weighted_shift_chunks<const CHUNK: usize, const FMA: bool>(
    out: &mut [f32],
    src: &[f32],
    taps: &[(usize, f32)],
    start: usize,
) -> usize {
    let mut i = start;
    // Each chunk of the output stays in registers across all taps: one load and one
    // multiply-add per tap and vector, one store per vector.
    while i + CHUNK <= out.len() {
        let mut acc = [0.0f32; CHUNK];
        for &(offset, w) in taps {
            // SAFETY: offset + i + CHUNK <= offset + out.len() <= src.len(), checked by the
            // caller.
            let s = unsafe { &*(src.as_ptr().add(offset + i) as *const [f32; CHUNK]) };
            for j in 0..CHUNK {
                acc[j] = madd::<FMA>(w, s[j], acc[j]);
            }
        }
        out[i..i + CHUNK].copy_from_slice(&acc);
        i += CHUNK;
    }
    i
}

/// `sums[t] += sum over i of a[i] * src[offset_t + i]` for every tap `t` (float32 lanes within
/// one call, added to float64 totals): the weight gradient of a depthwise convolution.
///
/// # Panics
/// When a tap's `offset + a.len()` passes the end of `src`, or `sums` is shorter than `offsets`.
pub(crate) fn shifted_dots(sums: &mut [f64], a: &[f32], src: &[f32], offsets: &[usize]) {
    shifted_dots_at(level(), sums, a, src, offsets)
}

fn shifted_dots_at(level: Level, sums: &mut [f64], a: &[f32], src: &[f32], offsets: &[usize]) {
    assert!(sums.len() >= offsets.len());
    for &offset in offsets {
        assert!(offset + a.len() <= src.len());
    }
    type Args<'a> = (&'a mut [f64], &'a [f32], &'a [f32], &'a [usize]);
    dispatch!(
        level.min(detected_level()),
        shifted_dots_body,
        32,
        16,
        8,
        (sums, a, src, offsets)
    )
}

#[inline(always)]
fn shifted_dots_body<const CHUNK: usize, const FMA: bool>(
    (sums, a, src, offsets): (&mut [f64], &[f32], &[f32], &[usize]),
) {
    let len = a.len();
    for (sum, &offset) in sums.iter_mut().zip(offsets) {
        let src = &src[offset..offset + len];
        let mut acc = [0.0f32; CHUNK];
        let (a_chunks, s_chunks) = (a.chunks_exact(CHUNK), src.chunks_exact(CHUNK));
        let tail: f32 = a_chunks
            .remainder()
            .iter()
            .zip(s_chunks.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a_chunks.zip(s_chunks) {
            for j in 0..CHUNK {
                acc[j] = madd::<FMA>(x[j], y[j], acc[j]);
            }
        }
        *sum += (acc.iter().sum::<f32>() + tail) as f64;
    }
}

/// Values summed in float32 lanes before the lanes go into the float64 totals of
/// [`shifted_sums`] and [`gated_sums`] (planes up to 112x112 at ImageNet's first layers).
const FLUSH: usize = 2048;

/// `(sum (x_i - k), sum (x_i - k)^2)` over one plane: batch norm's statistics, shifted by `k`
/// (a value near the mean) so that the two sums do not cancel. Float32 lanes, float64 totals.
pub(crate) fn shifted_sums(p: &[f32], k: f32) -> (f64, f64) {
    shifted_sums_at(level(), p, k)
}

fn shifted_sums_at(level: Level, p: &[f32], k: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_level()) == Level::Avx512 {
        // SAFETY: AVX-512F was detected.
        return unsafe { avx512::shifted_sums(p, k) };
    }
    let _ = level;
    lane_sums(p, p, (k, k), |v, _| v - k, |_, d| d * d)
}

/// `(sum g'_i, sum g'_i (x_i - m))` over one plane, with `g'` the output gradient `g` gated by
/// the forward pass's ReLU when `relu` (zero where `x * scale + shift` was not positive, NaN
/// included, computed exactly as the forward pass did): batch norm's backward reductions.
pub(crate) fn gated_sums(
    x: &[f32],
    g: &[f32],
    (scale, shift): (f32, f32),
    relu: bool,
    m: f32,
) -> (f64, f64) {
    gated_sums_at(level(), x, g, (scale, shift), relu, m)
}

fn gated_sums_at(
    level: Level,
    x: &[f32],
    g: &[f32],
    affine: (f32, f32),
    relu: bool,
    m: f32,
) -> (f64, f64) {
    assert_eq!(x.len(), g.len(), "plane lengths");
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_level()) == Level::Avx512 {
        // SAFETY: AVX-512F was detected; the lengths are equal.
        return unsafe { avx512::gated_sums(x, g, affine, relu, m) };
    }
    let _ = level;
    lane_sums(
        x,
        g,
        (m, 0.0),
        |v, g| gate(relu, affine, v, g),
        |v, gated| gated * (v - m),
    )
}

/// The output gradient behind batch norm's ReLU (see [`gated_sums`]), as a select.
#[inline(always)]
pub(crate) fn gate(relu: bool, (scale, shift): (f32, f32), v: f32, g: f32) -> f32 {
    // Branch-free, so that the loops around it vectorise into a compare and a blend.
    let keep = !relu | (v * scale + shift > 0.0);
    if keep {
        g
    } else {
        0.0
    }
}

/// The portable form of the two sums: `(sum u_i, sum h(a_i, u_i))` with `u_i = f(a_i, b_i)`,
/// 16 float32 lanes (the last row padded with `pad`, values giving zeros), flushed to float64
/// every [`FLUSH`] values.
#[inline(always)]
fn lane_sums(
    a: &[f32],
    b: &[f32],
    pad: (f32, f32),
    f: impl Fn(f32, f32) -> f32,
    h: impl Fn(f32, f32) -> f32,
) -> (f64, f64) {
    const LANES: usize = 16;
    let mut totals = (0.0f64, 0.0f64);
    let row = |ac: &[f32], bc: &[f32], lanes: &mut [[f32; LANES]; 2]| {
        for i in 0..LANES {
            let u = f(ac[i], bc[i]);
            lanes[0][i] += u;
            lanes[1][i] += h(ac[i], u);
        }
    };
    for (ab, bb) in a.chunks(FLUSH).zip(b.chunks(FLUSH)) {
        let mut lanes = [[0.0f32; LANES]; 2];
        let (ar, br) = (ab.chunks_exact(LANES), bb.chunks_exact(LANES));
        let (a_rest, b_rest) = (ar.remainder(), br.remainder());
        for (ac, bc) in ar.zip(br) {
            row(ac, bc, &mut lanes);
        }
        if !a_rest.is_empty() {
            let (mut ac, mut bc) = ([pad.0; LANES], [pad.1; LANES]);
            ac[..a_rest.len()].copy_from_slice(a_rest);
            bc[..b_rest.len()].copy_from_slice(b_rest);
            row(&ac, &bc, &mut lanes);
        }
        totals.0 += lanes[0].iter().sum::<f32>() as f64;
        totals.1 += lanes[1].iter().sum::<f32>() as f64;
    }
    totals
}

/// Batch norm's per-plane reductions with AVX-512 intrinsics: the vectoriser turns the
/// portable form into lane shuffles on short planes (7x7, 4x4), and only AVX-512 has the
/// masked loads that take a plane's tail without a padded copy.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::FLUSH;

    /// The mask of the first `min(n, 16)` lanes.
    #[inline(always)]
    fn first_lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// [`super::every_second`], the last vector masked; returns how many it wrote (all).
    ///
    /// # Safety
    /// AVX-512F; `src.len() + 1 >= 2 * dst.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn every_second(dst: &mut [f32], src: &[f32]) -> usize {
        let evens: [i32; 16] = std::array::from_fn(|i| 2 * i as i32);
        // SAFETY: a 16-int array.
        let idx = unsafe { _mm512_loadu_si512(evens.as_ptr().cast()) };
        let mut i = 0;
        while i < dst.len() {
            let left = src.len() - 2 * i;
            // SAFETY: the masks keep the loads inside src[2i..] and the store inside dst[i..].
            unsafe {
                let a = _mm512_maskz_loadu_ps(first_lanes(left), src.as_ptr().add(2 * i));
                let b = _mm512_maskz_loadu_ps(
                    first_lanes(left.saturating_sub(16)),
                    src.as_ptr().add(2 * i + 16.min(left)),
                );
                let even = _mm512_permutex2var_ps(a, idx, b);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), first_lanes(dst.len() - i), even);
            }
            i += 16;
        }
        dst.len()
    }

    /// [`super::interleave`], the last pair of vectors masked; returns how many it wrote (all).
    ///
    /// # Safety
    /// AVX-512F; `even` and `odd` hold `dst`'s even and odd positions.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave(dst: &mut [f32], even: &[f32], odd: &[f32]) -> usize {
        let lo: [i32; 16] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i32);
        let hi: [i32; 16] = std::array::from_fn(|i| (8 + i / 2 + 16 * (i % 2)) as i32);
        // SAFETY: 16-int arrays.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr().cast()),
                _mm512_loadu_si512(hi.as_ptr().cast()),
            )
        };
        let mut i = 0;
        while 2 * i < dst.len() {
            let left = dst.len() - 2 * i;
            // SAFETY: the masks keep the loads inside even[i..] and odd[i..] (which hold
            // dst's positions) and the stores inside dst[2i..].
            unsafe {
                let e = _mm512_maskz_loadu_ps(first_lanes(left.div_ceil(2)), even.as_ptr().add(i));
                let o = _mm512_maskz_loadu_ps(first_lanes(left / 2), odd.as_ptr().add(i));
                let out = dst.as_mut_ptr().add(2 * i);
                _mm512_mask_storeu_ps(out, first_lanes(left), _mm512_permutex2var_ps(e, lo, o));
                if left > 16 {
                    _mm512_mask_storeu_ps(
                        out.add(16),
                        first_lanes(left - 16),
                        _mm512_permutex2var_ps(e, hi, o),
                    );
                }
            }
            i += 16;
        }
        dst.len()
    }

    /// The mask of the first `n < 16` lanes.
    #[inline(always)]
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn shifted_sums(p: &[f32], k: f32) -> (f64, f64) {
        let kv = _mm512_set1_ps(k);
        let mut totals = (0.0f64, 0.0f64);
        for block in p.chunks(FLUSH) {
            let (mut s1, mut s2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let rows = block.chunks_exact(16);
            let rest = rows.remainder();
            for row in rows {
                // SAFETY: a whole row of 16 values.
                let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(row.as_ptr()) }, kv);
                s1 = _mm512_add_ps(s1, d);
                s2 = _mm512_fmadd_ps(d, d, s2);
            }
            if !rest.is_empty() {
                let mask = tail_mask(rest.len());
                // SAFETY: the masked load reads only the `rest.len()` values that exist;
                // the masked-off lanes are zero after the subtraction.
                let v = unsafe { _mm512_maskz_loadu_ps(mask, rest.as_ptr()) };
                let d = _mm512_maskz_sub_ps(mask, v, kv);
                s1 = _mm512_add_ps(s1, d);
                s2 = _mm512_fmadd_ps(d, d, s2);
            }
            totals.0 += _mm512_reduce_add_ps(s1) as f64;
            totals.1 += _mm512_reduce_add_ps(s2) as f64;
        }
        totals
    }

    /// # Safety
    /// AVX-512F must be available; `x` and `g` must have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gated_sums(
        x: &[f32],
        g: &[f32],
        (scale, shift): (f32, f32),
        relu: bool,
        m: f32,
    ) -> (f64, f64) {
        let (sv, hv, mv, zero) = (
            _mm512_set1_ps(scale),
            _mm512_set1_ps(shift),
            _mm512_set1_ps(m),
            _mm512_setzero_ps(),
        );
        // Mul then add, not a fused multiply-add: the forward pass's exact expression.
        let gated = |xv: __m512, gv: __m512| {
            if relu {
                let y = _mm512_add_ps(_mm512_mul_ps(xv, sv), hv);
                _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), gv)
            } else {
                gv
            }
        };
        let mut totals = (0.0f64, 0.0f64);
        for (xb, gb) in x.chunks(FLUSH).zip(g.chunks(FLUSH)) {
            let (mut s1, mut s2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let (xr, gr) = (xb.chunks_exact(16), gb.chunks_exact(16));
            let (x_rest, g_rest) = (xr.remainder(), gr.remainder());
            for (xc, gc) in xr.zip(gr) {
                // SAFETY: whole rows of 16 values.
                let (xv, gv) =
                    unsafe { (_mm512_loadu_ps(xc.as_ptr()), _mm512_loadu_ps(gc.as_ptr())) };
                let gg = gated(xv, gv);
                s1 = _mm512_add_ps(s1, gg);
                s2 = _mm512_fmadd_ps(gg, _mm512_sub_ps(xv, mv), s2);
            }
            if !x_rest.is_empty() {
                let mask = tail_mask(x_rest.len());
                // SAFETY: the masked loads read only the values that exist; a zero gradient
                // adds zeros.
                let (xv, gv) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(mask, x_rest.as_ptr()),
                        _mm512_maskz_loadu_ps(mask, g_rest.as_ptr()),
                    )
                };
                let gg = gated(xv, gv);
                s1 = _mm512_add_ps(s1, gg);
                s2 = _mm512_fmadd_ps(gg, _mm512_sub_ps(xv, mv), s2);
            }
            totals.0 += _mm512_reduce_add_ps(s1) as f64;
            totals.1 += _mm512_reduce_add_ps(s2) as f64;
        }
        totals
    }
}

/// `dst[i] = src[2 i]`: one phase of a stride-2 row (the depthwise kernel's phase layout).
///
/// # Panics
/// When `src` is shorter than `2 * dst.len() - 1`.
pub(crate) fn every_second(dst: &mut [f32], src: &[f32]) {
    assert!(
        src.len() + 1 >= 2 * dst.len(),
        "{} values for {} of every second",
        src.len(),
        dst.len()
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        // SAFETY: AVX-512F was detected; the lengths were checked.
        done = unsafe { avx512::every_second(dst, src) };
    }
    for (i, d) in dst.iter_mut().enumerate().skip(done) {
        *d = src[2 * i];
    }
}

/// `dst[2 i] = even[i]`, `dst[2 i + 1] = odd[i]`: the inverse of two [`every_second`]s.
///
/// # Panics
/// When `even` and `odd` do not hold `dst`'s even and odd positions.
pub(crate) fn interleave(dst: &mut [f32], even: &[f32], odd: &[f32]) {
    assert!(
        even.len() >= dst.len().div_ceil(2) && odd.len() >= dst.len() / 2,
        "interleave lengths"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        // SAFETY: AVX-512F was detected; the lengths were checked.
        done = unsafe { avx512::interleave(dst, even, odd) };
    }
    for (i, d) in dst.iter_mut().enumerate().skip(done) {
        *d = if i % 2 == 0 { even[i / 2] } else { odd[i / 2] };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_matches_the_scalar_definition() {
        let src: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let taps = [(0, 0.5f32), (3, -1.25), (17, 2.0), (40, 0.125)];
        for (level, len) in [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= detected_level())
            .flat_map(|l| [0, 5, 16, 64, 100, 777].map(|len| (l, len)))
        {
            let want: Vec<f32> = (0..len)
                .map(|i| taps.iter().map(|&(o, w)| w * src[o + i]).sum())
                .collect();
            let mut out = vec![f32::NAN; len];
            weighted_shifts_at(level, &mut out, &src, &taps);
            for (o, w) in out.iter().zip(&want) {
                assert!((o - w).abs() <= 1e-5 * (1.0 + w.abs()), "{o} vs {w}");
            }
            let a = &src[..len];
            let offsets = [0, 3, 17, 40];
            let mut sums = [1.0f64; 4];
            shifted_dots_at(level, &mut sums, a, &src, &offsets);
            for (sum, &o) in sums.iter().zip(&offsets) {
                let want: f64 = 1.0 + (0..len).map(|i| (a[i] * src[o + i]) as f64).sum::<f64>();
                assert!(
                    (sum - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{sum} vs {want}"
                );
            }
        }
    }

    #[test]
    fn batch_norm_sums_match_the_definition_on_every_level() {
        let levels = [Level::Portable, Level::Avx2, Level::Avx512];
        // Lengths around the lane width and the flush length; some gates closed, one NaN.
        for len in [1, 4, 15, 16, 17, 49, 784, 2048 + 33, 5000] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.05)
                .collect();
            let mut g: Vec<f32> = (0..len)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.01)
                .collect();
            g[len / 2] = f32::NAN;
            let mut xn = x.clone();
            xn[len / 2] = f32::NAN;
            let (k, m, affine) = (0.3f32, -0.2f32, (1.5f32, -0.25f32));
            let want_shifted = x.iter().fold((0.0f64, 0.0f64), |(a, b), &v| {
                let d = (v - k) as f64;
                (a + d, b + d * d)
            });
            for relu in [false, true] {
                let want_gated = xn
                    .iter()
                    .zip(&g)
                    .fold((0.0f64, 0.0f64), |(a, b), (&v, &gv)| {
                        let gated = gate(relu, affine, v, gv) as f64;
                        (a + gated, b + gated * (v - m) as f64)
                    });
                for level in levels {
                    // NaN where the definition has NaN.
                    let near = |a: f64, c: f64| {
                        (a.is_nan() && c.is_nan()) || (a - c).abs() <= 1e-4 * (1.0 + c.abs())
                    };
                    let close = |(a, b): (f64, f64), (c, d): (f64, f64)| near(a, c) && near(b, d);
                    let got = shifted_sums_at(level, &x, k);
                    assert!(
                        close(got, want_shifted),
                        "shifted {len} {level:?}: {got:?} vs {want_shifted:?}"
                    );
                    let got = gated_sums_at(level, &xn, &g, affine, relu, m);
                    // The NaN gradient at len / 2 passes only where the gate keeps it.
                    assert!(
                        close(got, want_gated),
                        "gated {len} {level:?} relu {relu}: {got:?} vs {want_gated:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn stride_two_shuffles_match_the_definition() {
        for len in [0usize, 1, 5, 16, 31, 32, 33, 64, 77] {
            let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let mut evens = vec![-1.0; len.div_ceil(2)];
            let mut odds = vec![-1.0; len / 2];
            every_second(&mut evens, &src);
            if len > 1 {
                every_second(&mut odds, &src[1..]);
            }
            assert!(
                evens.iter().enumerate().all(|(i, &v)| v == (2 * i) as f32),
                "{len}"
            );
            assert!(
                odds.iter()
                    .enumerate()
                    .all(|(i, &v)| v == (2 * i + 1) as f32),
                "{len}"
            );
            let mut back = vec![-1.0; len];
            interleave(&mut back, &evens, &odds);
            assert_eq!(back, src, "{len}");
        }
    }
}
