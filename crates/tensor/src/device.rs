//! Where a tensor's data lives.

use std::fmt;

use crate::{Error, Result};

/// A compute device. `Cuda(i)` names the i-th NVIDIA GPU; whether it can be used is decided at
/// run time by [`Device::cuda`], never at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// The i-th CUDA device, opened (context, stream, kernel modules on first use), or an
    /// error that says why it cannot be used: no driver library, no such GPU, a card older than
    /// Ampere. Never panics.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        crate::cuda::device(ordinal).map(|d| d.device())
    }

    /// How many CUDA devices this process can use (0 without a driver).
    pub fn cuda_count() -> usize {
        (0..).take_while(|&i| Device::cuda(i).is_ok()).count()
    }

    /// Every device this process can compute on, the CPU first. Tests run one body per entry.
    pub fn available() -> Vec<Device> {
        let mut devices = vec![Device::Cpu];
        if let Ok(cuda) = Device::cuda(0) {
            devices.push(cuda);
        }
        devices
    }

    /// The GPU's name (`NVIDIA H100 80GB HBM3`...), or `cpu`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => crate::cuda::device(*i)
                .map(|d| d.name.clone())
                .unwrap_or_else(|e| e.to_string()),
        }
    }

    /// Bytes of memory free for new tensors: the kernel's `MemAvailable` for the CPU (`None`
    /// where it cannot be read), the driver's free device memory for a GPU.
    pub fn available_memory(&self) -> Result<Option<u64>> {
        match self {
            Device::Cpu => Ok(std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("MemAvailable:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                        .map(|kib| kib * 1024)
                })),
            Device::Cuda(i) => Ok(Some(crate::cuda::device(*i)?.free_memory()? as u64)),
        }
    }

    /// Waits for every op queued on the device (a no-op on the CPU): for timing.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => crate::cuda::device(*i)?.synchronize(),
        }
    }

    /// Parses `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU if one is usable, else the CPU).
    pub fn parse(text: &str) -> Result<Device> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::cuda(0).unwrap_or(Device::Cpu)),
            "cuda" => Device::cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Device::cuda(ordinal),
                _ => Err(Error::argument(
                    "device",
                    format!("unknown device `{other}`; expected one of cpu, cuda, cuda:N, auto"),
                )),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
