//! The one error type of the tensor crate: every bad shape, device or argument ends here, never
//! in a panic.

use crate::Device;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operand's shape does not fit the operation.
    #[error("{op}: {what}: expected {expected}, got {got}")]
    Shape {
        op: &'static str,
        what: String,
        expected: String,
        got: String,
    },

    /// Two operands live on different devices.
    #[error(
        "{op}: operands on different devices ({left} and {right}); move them to one device first"
    )]
    DeviceMismatch {
        op: &'static str,
        left: Device,
        right: Device,
    },

    /// A parameter of the operation is outside what it supports.
    #[error("{op}: {message}")]
    Argument { op: &'static str, message: String },

    /// The requested device cannot be used on this machine or in this build.
    #[error("device {device}: {message}")]
    DeviceUnavailable { device: Device, message: String },

    /// A call into the GPU driver failed (out of device memory, a failed launch...).
    #[error("device {device}: {message}")]
    Driver { device: Device, message: String },

    /// Host values were asked of a tensor that lives on a GPU.
    #[error("{op}: the tensor is on {device}; copy it with `to_device(Device::Cpu)` first")]
    NotOnHost { op: &'static str, device: Device },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(
        op: &'static str,
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            op,
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    pub(crate) fn argument(op: &'static str, message: impl Into<String>) -> Self {
        Error::Argument {
            op,
            message: message.into(),
        }
    }
}
