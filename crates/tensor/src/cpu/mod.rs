//! Helpers shared by the CPU kernels of every op.

pub(crate) mod gemm;

use std::ops::Range;

use rayon::prelude::*;

/// Sums `len`-long partial results over `items` (images) so that the result does not depend on
/// how rayon schedules the work: the items are cut into at most 16 contiguous runs, one task
/// computes each run's partial with `partial(run, accumulator)`, and the partials are added in
/// order. (Training must be bit-for-bit repeatable for resume to reproduce a run.)
pub(crate) fn ordered_sum(
    items: usize,
    len: usize,
    partial: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    const RUNS: usize = 16;
    let run = items.div_ceil(RUNS).max(1);
    let partials: Vec<Vec<f32>> = (0..items.div_ceil(run))
        .into_par_iter()
        .map(|r| {
            let mut acc = vec![0.0f32; len];
            partial(r * run..((r + 1) * run).min(items), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0f32; len];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

use std::mem::MaybeUninit;

/// A `len`-long vector whose `chunk`-long pieces are written in parallel by
/// `fill(piece_index, piece)`, without zero-filling it first. `fill` must write every element
/// of its piece.
pub(crate) fn par_fill(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, piece)| fill(i, piece));
    // SAFETY: the pieces cover 0..len and `fill` wrote every element of each (its contract).
    unsafe { out.set_len(len) };
    out
}
