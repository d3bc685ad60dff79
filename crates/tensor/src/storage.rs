//! One storage enum behind every tensor: the CPU's `Vec<f32>` or a CUDA allocation.

use crate::cuda::CudaStorage;
use crate::Device;

#[derive(Clone, Debug)]
pub(crate) enum Storage {
    Cpu(Vec<f32>),
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
