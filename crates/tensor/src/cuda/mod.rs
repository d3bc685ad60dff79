//! The CUDA backend: hand-written kernels (`kernels/*.cu`, compiled to the committed PTX in
//! `kernels/ptx/`) launched through cudarc on one stream per device. The ops' CUDA halves live
//! beside their CPU halves (`ops/<op>/cuda.rs` or a `mod cuda` next to `mod cpu`); this module
//! holds what they share: the device cache, the embedded PTX, the by-value structs and the
//! launch helpers.

pub(crate) mod abi;
mod device;
pub(crate) mod gemm;
pub(crate) mod kernels;

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchConfig};

pub(crate) use device::{device, CudaDevice};

use crate::Device;

/// Device memory of one tensor, and the device it lives on. The slice may be longer than the
/// tensor (a zero-length tensor keeps one element); the tensor's shape is the truth.
#[derive(Debug)]
pub(crate) struct CudaStorage {
    pub(crate) slice: CudaSlice<f32>,
    pub(crate) device: Arc<CudaDevice>,
}

impl CudaStorage {
    pub(crate) fn device(&self) -> Device {
        self.device.device()
    }
}

/// Threads per block of the element-wise and reduction kernels.
pub(crate) const THREADS: u32 = 256;

/// A grid-stride launch over `len` elements: enough blocks to fill a large GPU, no more.
pub(crate) fn grid_1d(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(THREADS as usize).clamp(1, 32 * 1024) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per item of a (x, y) grid, with `shared` bytes of dynamic shared memory.
pub(crate) fn grid_2d(x: usize, y: usize, threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// Launches `$kernel` (a [`kernels::Kernel`]) on `$dev`'s stream with the arguments in order; a
/// driver failure becomes an error naming `$op`. The one way a kernel is launched: each kernel
/// family's Rust function (`ops/<op>/cuda.rs`, `cuda/gemm.rs`) builds its parameter struct and
/// grid, then calls this.
///
/// Every kernel indexes its buffers only through the shape arguments it is given, and every
/// caller builds those from shapes it has checked against the buffers' lengths: that is the
/// safety argument of each launch.
macro_rules! launch {
    ($dev:expr, $op:expr, $kernel:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let dev: &$crate::cuda::CudaDevice = &$dev;
        let kernel: $crate::cuda::kernels::Kernel = $kernel;
        let f = dev.function(kernel)?;
        let mut builder = dev.stream.launch_builder(&f);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, $arg); )*
        // SAFETY: see the macro's documentation.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| dev.error($op, e))
    }};
}
pub(crate) use launch;
