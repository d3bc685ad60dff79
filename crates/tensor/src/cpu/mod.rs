//! Helpers shared by the CPU kernels of every op.

pub(crate) mod gemm;
pub(crate) mod simd;
pub(crate) mod workspace;

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
    let partials: Vec<workspace::HostBuffer> = (0..items.div_ceil(run))
        .into_par_iter()
        .map(|r| {
            let mut acc = workspace::HostBuffer::zeroed(len);
            partial(r * run..((r + 1) * run).min(items), &mut acc);
            acc
        })
        .collect();
    let mut total = workspace::zeroed(len);
    for p in partials {
        for (t, v) in total.iter_mut().zip(p.iter()) {
            *t += v;
        }
    }
    total
}

/// Rayon items per job when each item touches `values_per_item` values: enough for about 16K
/// values a job, so that a small layer (late layers, 1x1 planes) is not cut into jobs that cost
/// more to hand to a thread than to run.
pub(crate) fn items_per_job(values_per_item: usize) -> usize {
    (16 * 1024 / values_per_item.max(1)).max(1)
}

/// The planes of an (N, C, plane) tensor, handed out so that tasks working on different
/// (image, channel) pairs write disjoint planes in parallel.
pub(crate) struct Planes {
    ptr: *mut f32,
    plane: usize,
    count: usize,
}

// SAFETY: `Planes` only hands out disjoint planes, each to the one task that owns its (image,
// channel) pair (see `Planes::get`).
unsafe impl Sync for Planes {}

impl Planes {
    pub(crate) fn new(data: &mut [f32], plane: usize) -> Planes {
        Planes {
            ptr: data.as_mut_ptr(),
            plane,
            count: data.len() / plane.max(1),
        }
    }

    /// Plane `index` for writing.
    ///
    /// # Safety
    /// No two live slices may come from the same `index`: the tasks of one op partition the
    /// (image, channel) pairs, so each index is taken by exactly one task.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get(&self, index: usize) -> &mut [f32] {
        assert!(index < self.count, "plane {index} of {}", self.count);
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(index * self.plane), self.plane) }
    }
}

/// `dst.copy_from_slice(src)` for rows of any length: short rows (the 1x1 to 4x4 planes of late
/// layers) element by element, where `copy_from_slice` would call `memmove` for a few bytes.
#[inline(always)]
pub(crate) fn copy_row(dst: &mut [f32], src: &[f32]) {
    if src.len() < 16 {
        assert_eq!(dst.len(), src.len(), "row lengths");
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v;
        }
    } else {
        dst.copy_from_slice(src);
    }
}
