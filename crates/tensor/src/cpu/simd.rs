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

/// Adds `x_i - k` to `lanes[0]` and `(x_i - k)^2` to `lanes[1]`, lane `i % 8`, over `p` (a
/// multiple of 8 long): the one-sweep statistics of batch norm. Written with AVX intrinsics
/// because the vectoriser pairs the two sums instead of the lanes; the same float32 operations
/// in the same order on every level, so the sums do not depend on the CPU.
///
/// # Panics
/// When `p.len()` is not a multiple of 8.
pub(crate) fn shifted_moments(lanes: &mut [[f32; 8]; 2], p: &[f32], k: f32) {
    assert!(
        p.len().is_multiple_of(8),
        "{} values are not whole lanes",
        p.len()
    );
    #[cfg(target_arch = "x86_64")]
    if level() >= Level::Avx2 {
        // SAFETY: AVX2 was detected by `level`.
        unsafe { shifted_moments_avx2(lanes, p, k) };
        return;
    }
    for c in p.chunks_exact(8) {
        for i in 0..8 {
            let d = c[i] - k;
            lanes[0][i] += d;
            lanes[1][i] += d * d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn shifted_moments_avx2(lanes: &mut [[f32; 8]; 2], p: &[f32], k: f32) {
    use std::arch::x86_64::*;
    // SAFETY (all intrinsics below): AVX2 is enabled on this function; the unaligned loads
    // and stores read and write whole 8-element arrays or chunks.
    let kv = _mm256_set1_ps(k);
    let mut s0 = _mm256_loadu_ps(lanes[0].as_ptr());
    let mut s1 = _mm256_loadu_ps(lanes[1].as_ptr());
    for c in p.chunks_exact(8) {
        let d = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), kv);
        s0 = _mm256_add_ps(s0, d);
        s1 = _mm256_add_ps(s1, _mm256_mul_ps(d, d));
    }
    _mm256_storeu_ps(lanes[0].as_mut_ptr(), s0);
    _mm256_storeu_ps(lanes[1].as_mut_ptr(), s1);
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_moments_match_the_definition() {
        let p: Vec<f32> = (0..64).map(|i| (i * 13 % 17) as f32 * 0.25).collect();
        let mut lanes = [[1.0f32; 8], [2.0f32; 8]];
        shifted_moments(&mut lanes, &p, 1.5);
        for i in 0..8 {
            let d: Vec<f32> = p.iter().skip(i).step_by(8).map(|v| v - 1.5).collect();
            let (mut a, mut b) = (1.0f32, 2.0f32);
            for d in d {
                a += d;
                b += d * d;
            }
            assert_eq!((lanes[0][i], lanes[1][i]), (a, b));
        }
    }

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
}
