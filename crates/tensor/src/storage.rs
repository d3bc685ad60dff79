//! One storage enum behind every tensor: the CPU's `Vec<f32>` or a CUDA allocation.

use crate::cpu::pool::HostBuffer;
use crate::cuda::CudaStorage;
use crate::Device;

#[derive(Clone, Debug)]
pub(crate) enum Storage {
    /// Host memory, returned to the workspace pool when the last tensor over it is dropped.
    Cpu(HostBuffer),
    #[allow(dead_code)] // constructed only by the CUDA backend
    Cuda(CudaStorage),
}

impl Storage {
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(storage) => storage.device(),
        }
    }
}
