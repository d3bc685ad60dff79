//! The tensor: a shape and shared, device-tagged storage of float32 values (row-major, NCHW for
//! images).

use std::sync::Arc;

use crate::cpu::workspace::HostBuffer;
use crate::storage::Storage;
use crate::{Device, Error, Result};

/// A float32 tensor. Cloning shares the storage; writing through [`Tensor::cpu_data_mut`]
/// copies it first when it is shared, so a clone never changes under its holder.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
}

impl Tensor {
    /// A CPU tensor over `data`, which must hold exactly `shape`'s element count.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        if data.len() != count {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!("element count for shape {shape:?}"),
                count,
                data.len(),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Cpu(HostBuffer::new(data))),
        })
    }

    /// A tensor of zeros on `device`.
    pub fn zeros(shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    /// A tensor with every element `value`, on `device`.
    pub fn full(shape: &[usize], value: f32, device: Device) -> Result<Tensor> {
        let count = shape.iter().product();
        Tensor::from_vec(vec![value; count], shape)?.to_device(device)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The same data under another shape of the same element count (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        if count != self.elem_count() {
            return Err(Error::shape(
                "reshape",
                format!("element count of {shape:?}"),
                self.elem_count(),
                count,
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }

    /// A copy on `device` (a cheap clone when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        match device {
            Device::Cpu => Tensor::from_vec(self.to_vec()?, &self.shape),
            Device::Cuda(ordinal) => {
                let dev = crate::cuda::device(ordinal)?;
                let host = self.to_vec()?;
                let slice = dev.upload(&host)?;
                Ok(Tensor::from_cuda(slice, dev, &self.shape))
            }
        }
    }

    /// The values, copied to the host, row-major (waits for the GPU's pending work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &*self.storage {
            Storage::Cpu(data) => Ok(data.to_vec()),
            Storage::Cuda(s) => s.device.download(&s.slice, self.elem_count()),
        }
    }

    /// The host values without a copy; an error for a tensor on a GPU.
    pub fn cpu_data(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(data) => Ok(data),
            Storage::Cuda(s) => Err(Error::NotOnHost {
                op: "cpu_data",
                device: s.device(),
            }),
        }
    }

    /// The host values for writing (copied first if another tensor shares them).
    pub fn cpu_data_mut(&mut self) -> Result<&mut [f32]> {
        match self.unique_storage()? {
            Storage::Cpu(data) => Ok(data),
            Storage::Cuda(s) => Err(Error::NotOnHost {
                op: "cpu_data_mut",
                device: s.device(),
            }),
        }
    }

    /// A copy with its own storage on the same device (a device-to-device copy on a GPU).
    pub fn deep_copy(&self) -> Result<Tensor> {
        Ok(Tensor {
            shape: self.shape.clone(),
            storage: Arc::new(self.storage.try_clone()?),
        })
    }

    /// This tensor's storage, made its own first (copy-on-write) when a clone shares it.
    fn unique_storage(&mut self) -> Result<&mut Storage> {
        if Arc::get_mut(&mut self.storage).is_none() {
            self.storage = Arc::new(self.storage.try_clone()?);
        }
        Ok(Arc::get_mut(&mut self.storage).expect("just made unique"))
    }

    /// A tensor over device memory `slice` (at least `shape`'s element count long).
    pub(crate) fn from_cuda(
        slice: cudarc::driver::CudaSlice<f32>,
        device: Arc<crate::cuda::CudaDevice>,
        shape: &[usize],
    ) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Cuda(crate::cuda::CudaStorage { slice, device })),
        }
    }

    /// The device memory and device of a GPU tensor (`op` names the caller in the error).
    pub(crate) fn cuda(&self, op: &'static str) -> Result<&crate::cuda::CudaStorage> {
        match &*self.storage {
            Storage::Cuda(s) => Ok(s),
            Storage::Cpu(_) => Err(Error::argument(
                op,
                "expected a tensor on a CUDA device, got one on the CPU",
            )),
        }
    }

    /// The device memory of a GPU tensor for writing in place (copied first if shared).
    pub(crate) fn cuda_mut(
        &mut self,
        op: &'static str,
    ) -> Result<&mut cudarc::driver::CudaSlice<f32>> {
        match self.unique_storage()? {
            Storage::Cuda(s) => Ok(&mut s.slice),
            Storage::Cpu(_) => Err(Error::argument(
                op,
                "expected a tensor on a CUDA device, got one on the CPU",
            )),
        }
    }

    /// The four dimensions of an NCHW tensor, or an error naming `op` and `what` it is.
    pub fn dims4(&self, op: &'static str, what: &str) -> Result<[usize; 4]> {
        match self.shape[..] {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::shape(
                op,
                format!("{what} rank"),
                "4 (N, C, H, W)",
                format!("{:?}", self.shape),
            )),
        }
    }

    /// The two dimensions of a matrix.
    pub fn dims2(&self, op: &'static str, what: &str) -> Result<[usize; 2]> {
        match self.shape[..] {
            [r, c] => Ok([r, c]),
            _ => Err(Error::shape(
                op,
                format!("{what} rank"),
                "2",
                format!("{:?}", self.shape),
            )),
        }
    }

    /// Checks that the tensor has exactly `expected` as its shape.
    pub fn expect_shape(&self, op: &'static str, what: &str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::shape(
                op,
                format!("{what} shape"),
                format!("{expected:?}"),
                format!("{:?}", self.shape),
            ));
        }
        Ok(())
    }
}

/// The one device every operand of `op` lives on, or a device-mismatch error.
pub(crate) fn common_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let first = tensors.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    for t in tensors {
        if t.device() != first {
            return Err(Error::DeviceMismatch {
                op,
                left: first,
                right: t.device(),
            });
        }
    }
    Ok(first)
}
