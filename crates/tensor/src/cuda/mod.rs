//! The CUDA backend's place in the tensor crate.
//!
//! This build carries no CUDA backend yet: [`CudaStorage`] has no values, so no tensor can live
//! on a GPU, every caller compiles everywhere, and `Device::cuda(i)` answers with an error. The
//! kernels and their launches slot in here without changing any caller.

use crate::{Device, Error};

/// Device memory of one tensor. Uninhabited until the CUDA backend lands.
#[derive(Clone, Debug)]
pub(crate) enum CudaStorage {}

impl CudaStorage {
    pub(crate) fn device(&self) -> Device {
        match *self {}
    }
}

/// The error an op returns when asked to run on a CUDA tensor in a build without the backend.
pub(crate) fn unavailable(op: &'static str, device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        message: format!("{op} has no CUDA kernel in this build"),
    }
}
