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
    /// The i-th CUDA device, or an error that says why it cannot be used.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Err(Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            message: "this build has no CUDA backend yet; use the CPU device".into(),
        })
    }

    /// Every device this process can compute on, the CPU first. Tests run one body per entry.
    pub fn available() -> Vec<Device> {
        let mut devices = vec![Device::Cpu];
        if let Ok(cuda) = Device::cuda(0) {
            devices.push(cuda);
        }
        devices
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
