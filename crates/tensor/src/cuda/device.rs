//! One CUDA device: its context, the one stream every op of this process runs on (so ops are
//! ordered without events), and the kernel modules, loaded once and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use super::kernels::{Kernel, Module};
use crate::{Device, Error, Result};

pub(crate) struct CudaDevice {
    pub(crate) ordinal: usize,
    pub(crate) stream: Arc<CudaStream>,
    /// Streaming multiprocessors, read when the device opens: launches that split work across
    /// blocks size the split to fill them.
    pub(crate) sm_count: usize,
    pub(crate) name: String,
    modules: Mutex<HashMap<Module, Arc<CudaModule>>>,
    functions: Mutex<HashMap<Kernel, CudaFunction>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}, {})", self.ordinal, self.name)
    }
}

/// The device `ordinal`, opened on first use and shared after; an error (never a panic) when the
/// driver library is missing, there is no such GPU, or the card is older than Ampere.
pub(crate) fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(device) = devices.get(&ordinal) {
        return Ok(device.clone());
    }
    let device = Arc::new(open(ordinal)?);
    devices.insert(ordinal, device.clone());
    Ok(device)
}

fn unavailable(ordinal: usize, message: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        message: message.into(),
    }
}

fn open(ordinal: usize) -> Result<CudaDevice> {
    // SAFETY: only probes whether the driver library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(unavailable(
            ordinal,
            "no CUDA driver library (libcuda.so) on this machine; use --device cpu",
        ));
    }
    // cudarc panics (inside a lazily loaded symbol table) when libcuda lacks a symbol it wants;
    // turn that into an error too.
    let opened = std::panic::catch_unwind(|| -> std::result::Result<_, DriverError> {
        let count = CudaContext::device_count()?;
        if ordinal >= count.max(0) as usize {
            return Ok(Err(count));
        }
        let ctx = CudaContext::new(ordinal)?;
        Ok(Ok(ctx))
    })
    .map_err(|_| {
        unavailable(
            ordinal,
            "the CUDA driver library could not be used (missing symbols?)",
        )
    })?
    .map_err(|e| unavailable(ordinal, format!("CUDA driver: {e}")))?;
    let ctx = match opened {
        Ok(ctx) => ctx,
        Err(count) => {
            return Err(unavailable(
                ordinal,
                format!("this machine has {count} CUDA device(s)"),
            ))
        }
    };
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| unavailable(ordinal, format!("reading the compute capability: {e}")))?;
    if major < 8 {
        return Err(unavailable(
            ordinal,
            format!("compute capability {major}.{minor}: the kernels need 8.0 (Ampere) or newer"),
        ));
    }
    let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
    let sm_count = ctx
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .map_err(|e| unavailable(ordinal, format!("reading the multiprocessor count: {e}")))?;
    if sm_count < 1 {
        return Err(unavailable(
            ordinal,
            format!("the driver reports {sm_count} multiprocessors"),
        ));
    }
    let sm_count = sm_count as usize;
    // One stream per device: its ops are ordered by the stream, so the per-slice events cudarc
    // would record for multi-stream use are only overhead.
    // SAFETY: no other stream of this context is ever created by this crate.
    unsafe { ctx.disable_event_tracking() };
    Ok(CudaDevice {
        ordinal,
        stream: ctx.default_stream(),
        sm_count,
        name,
        modules: Mutex::default(),
        functions: Mutex::default(),
    })
}

impl CudaDevice {
    /// How many blocks share a reduction of `count` values per item over `items` items so that
    /// the GPU (8 blocks per multiprocessor) is full and each block still reduces at least 16K
    /// values.
    pub(crate) fn reduction_splits(&self, items: usize, count: usize) -> usize {
        let wanted = (8 * self.sm_count).div_ceil(items.max(1));
        wanted.min(count.div_ceil(16 * 1024)).max(1)
    }

    pub(crate) fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// The error of a failed driver call made by `op`.
    pub(crate) fn error(&self, op: &str, e: DriverError) -> Error {
        Error::Driver {
            device: self.device(),
            message: format!("{op}: {e}"),
        }
    }

    /// `kernel`'s function, its module loaded on first use.
    pub(crate) fn function(&self, kernel: Kernel) -> Result<CudaFunction> {
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kernel)
        {
            return Ok(f.clone());
        }
        let (module, name) = (kernel.module(), kernel.name());
        let module_handle = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(&module) {
                Some(m) => m.clone(),
                None => {
                    let loaded = self
                        .stream
                        .context()
                        .load_module(Ptx::from_src(module.ptx()))
                        .map_err(|e| {
                            self.error(&format!("loading kernels/ptx/{}.ptx", module.stem()), e)
                        })?;
                    modules.insert(module, loaded.clone());
                    loaded
                }
            }
        };
        let f = module_handle
            .load_function(name)
            .map_err(|e| self.error(&format!("finding {name}"), e))?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kernel, f.clone());
        Ok(f)
    }

    /// The kernels divide in 32 bits (kernels/common.cuh): no buffer they index may reach 2^31
    /// elements. Every device buffer comes from `alloc` or `upload`, which check.
    fn check_indexable(&self, len: usize) -> Result<()> {
        if len >= 1 << 31 {
            return Err(Error::argument(
                "cuda",
                format!("a tensor of {len} elements: the CUDA kernels index at most 2^31 - 1; use a smaller batch"),
            ));
        }
        Ok(())
    }

    /// `len` floats of device memory, not initialised: every caller writes all of it.
    pub(crate) fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.check_indexable(len)?;
        // SAFETY: f32 has no invalid bit patterns; callers overwrite the values before reading.
        unsafe { self.stream.alloc::<f32>(len.max(1)) }
            .map_err(|e| self.error(&format!("allocating {len} floats"), e))
    }

    pub(crate) fn zeros_f64(&self, len: usize) -> Result<CudaSlice<f64>> {
        self.stream
            .alloc_zeros::<f64>(len.max(1))
            .map_err(|e| self.error(&format!("allocating {len} doubles"), e))
    }

    pub(crate) fn upload<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.check_indexable(data.len())?;
        if data.is_empty() {
            // A zero-length allocation is not portable; keep one element that is never read.
            // SAFETY: never read.
            return unsafe { self.stream.alloc::<T>(1) }.map_err(|e| self.error("allocating", e));
        }
        self.stream
            .clone_htod(data)
            .map_err(|e| self.error(&format!("copying {} values to the device", data.len()), e))
    }

    /// The first `len` values of `slice`, on the host (waits for the stream).
    pub(crate) fn download(&self, slice: &CudaSlice<f32>, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.stream
            .clone_dtoh(&slice.slice(..len))
            .map_err(|e| self.error(&format!("copying {len} values to the host"), e))
    }

    pub(crate) fn copy(&self, slice: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        let mut out = self.alloc(slice.len())?;
        self.stream
            .memcpy_dtod(slice, &mut out)
            .map_err(|e| self.error("copying on the device", e))?;
        Ok(out)
    }

    /// Bytes of device memory free now.
    pub(crate) fn free_memory(&self) -> Result<usize> {
        let (free, _total) = self
            .stream
            .context()
            .mem_get_info()
            .map_err(|e| self.error("cuMemGetInfo", e))?;
        Ok(free)
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.error("synchronize", e))
    }
}
