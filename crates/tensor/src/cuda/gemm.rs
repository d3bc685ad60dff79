//! Matrix products on the GPU by strides (`kernels/gemm.cu`): float32 always, TF32 tensor cores
//! when the process opts in with `EATNAS_CUDA_MATH=tf32` (about 2^-11 relative error per product
//! instead of 2^-24; the fixtures' float32 tolerances are not promised in that mode).

use std::sync::OnceLock;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::abi::GemmShape;
use super::kernels::Module;
use super::CudaDevice;
use crate::Result;

/// Whether products run on TF32 tensor cores (`EATNAS_CUDA_MATH=tf32`), read once.
pub(crate) fn tf32() -> bool {
    static TF32: OnceLock<bool> = OnceLock::new();
    *TF32.get_or_init(|| {
        std::env::var("EATNAS_CUDA_MATH").is_ok_and(|v| v.eq_ignore_ascii_case("tf32"))
    })
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
    let tiles = s.m.div_ceil(64) * s.n.div_ceil(64);
    let (name, threads) = if tf32() {
        ("gemm_tf32", 128)
    } else {
        ("gemm_f32", 256)
    };
    let f = dev.function(Module::Gemm, name)?;
    let op = "gemm";
    if s.reduce_batch != 0 {
        // Split the batch across blocks when the tiles alone cannot fill the GPU.
        let splits = if s.beta == 0.0 {
            (2 * dev.sm_count / tiles.max(1)).min(s.batch).max(1)
        } else {
            1
        };
        if splits > 1 {
            let len = s.m * s.n;
            let mut partial = dev.alloc(splits * len)?;
            let mut ps = s;
            ps.c_m = s.n as isize;
            ps.c_n = 1;
            ps.c_batch = len as isize;
            let cfg = LaunchConfig {
                grid_dim: (
                    s.n.div_ceil(64) as u32,
                    s.m.div_ceil(64) as u32,
                    splits as u32,
                ),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the kernel reads m x k and k x n elements of a and b per batch entry and
            // writes splits * m * n partials, all inside the slices (checked by the callers' shapes).
            unsafe {
                dev.stream
                    .launch_builder(&f)
                    .arg(&ps)
                    .arg(a)
                    .arg(b)
                    .arg(&mut partial)
                    .launch(cfg)
            }
            .map_err(|e| dev.error(op, e))?;
            // Sum the partials into c: c is row-major m x n here (callers pass contiguous c).
            debug_assert!(
                s.c_m == s.n as isize && s.c_n == 1,
                "split-k needs a row-major C"
            );
            let sum = dev.function(Module::Gemm, "sum_slices_f32")?;
            let (slices, total) = (splits, len);
            // SAFETY: reads splits * len partials, writes len values of c.
            unsafe {
                dev.stream
                    .launch_builder(&sum)
                    .arg(&partial)
                    .arg(c)
                    .arg(&slices)
                    .arg(&total)
                    .launch(super::grid_1d(len))
            }
            .map_err(|e| dev.error(op, e))?;
            return Ok(());
        }
        s.batch = s.batch.max(1);
    }
    let z = if s.reduce_batch != 0 { 1 } else { s.batch };
    let cfg = LaunchConfig {
        grid_dim: (s.n.div_ceil(64) as u32, s.m.div_ceil(64) as u32, z as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above; the callers build the strides from checked tensor shapes.
    unsafe {
        dev.stream
            .launch_builder(&f)
            .arg(&s)
            .arg(a)
            .arg(b)
            .arg(c)
            .launch(cfg)
    }
    .map_err(|e| dev.error(op, e))?;
    Ok(())
}
