//! One storage enum behind every tensor: host memory from the workspace, or a CUDA
//! allocation.

use crate::cpu::workspace::HostBuffer;
use crate::cuda::CudaStorage;
use crate::{Device, Result};

#[derive(Debug)]
pub(crate) enum Storage {
    /// Host memory, returned to the workspace when the last tensor over it is dropped.
    Cpu(HostBuffer),
    Cuda(CudaStorage),
}

impl Storage {
    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(storage) => storage.device(),
        }
    }

    /// A copy on the same device (for copy-on-write); fails only when device memory runs out.
    pub(crate) fn try_clone(&self) -> Result<Storage> {
        Ok(match self {
            Storage::Cpu(data) => Storage::Cpu(data.clone()),
            Storage::Cuda(s) => Storage::Cuda(CudaStorage {
                slice: s.device.copy(&s.slice)?,
                device: s.device.clone(),
            }),
        })
    }
}
