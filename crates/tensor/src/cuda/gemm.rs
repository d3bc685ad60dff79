//! Matrix products on the GPU by strides (`kernels/gemm.cu`): float32 always, TF32 tensor cores
//! when the process opts in with `EATNAS_CUDA_MATH=tf32` (about 2^-11 relative error per product
//! instead of 2^-24; the fixtures' float32 tolerances are not promised in that mode).

use std::sync::OnceLock;

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::abi::GemmShape;
use super::kernels::Kernel;
use super::{grid_1d, launch, CudaDevice};
use crate::Result;

/// Whether products run on TF32 tensor cores (`EATNAS_CUDA_MATH=tf32`), read once.
pub(crate) fn tf32() -> bool {
    static TF32: OnceLock<bool> = OnceLock::new();
    *TF32.get_or_init(|| {
        std::env::var("EATNAS_CUDA_MATH").is_ok_and(|v| v.eq_ignore_ascii_case("tf32"))
    })
}

/// The 64x64-tile grid of an m x n product, `z` deep (`kernels/gemm.cu`).
fn tile_grid(s: &GemmShape, z: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (s.n.div_ceil(64) as u32, s.m.div_ceil(64) as u32, z as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `c = alpha a b + beta c` (batched, or summed over the batch when `s.reduce_batch`), with
/// split-k over the batch when a summed product would leave the GPU mostly idle.
pub(crate) fn gemm(
    dev: &CudaDevice,
    mut s: GemmShape,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gemm";
    let (kernel, threads) = if tf32() {
        (Kernel::GemmTf32, 128)
    } else {
        (Kernel::GemmF32, 256)
    };
    if s.reduce_batch != 0 {
        // Split the batch across blocks when the tiles alone cannot fill the GPU.
        let tiles = s.m.div_ceil(64) * s.n.div_ceil(64);
        let splits = if s.beta == 0.0 {
            (2 * dev.sm_count / tiles.max(1)).min(s.batch).max(1)
        } else {
            1
        };
        if splits > 1 {
            // Each split writes its partial sum to its own row-major m x n slice; c is row-major
            // m x n here (the callers pass contiguous c).
            debug_assert!(
                s.c_m == s.n as isize && s.c_n == 1,
                "split-k needs a row-major C"
            );
            let len = s.m * s.n;
            let mut partial = dev.alloc(splits * len)?;
            let ps = GemmShape {
                c_m: s.n as isize,
                c_n: 1,
                c_batch: len as isize,
                ..s
            };
            launch!(
                dev,
                OP,
                kernel,
                tile_grid(&s, splits, threads),
                [&ps, a, b, &mut partial]
            )?;
            return sum_slices_into(dev, OP, &partial, splits, len, c);
        }
        s.batch = s.batch.max(1);
    }
    let z = if s.reduce_batch != 0 { 1 } else { s.batch };
    launch!(dev, OP, kernel, tile_grid(&s, z, threads), [&s, a, b, c])
}

/// `out` = the sum of the `slices` consecutive slices of `len` values in `partial`: the second
/// half of every split reduction (the gemm's split-k, the convolutions' weight gradients).
pub(crate) fn sum_slices_into(
    dev: &CudaDevice,
    op: &str,
    partial: &CudaSlice<f32>,
    slices: usize,
    len: usize,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    launch!(
        dev,
        op,
        Kernel::SumSlices,
        grid_1d(len),
        [partial, out, &slices, &len]
    )
}
