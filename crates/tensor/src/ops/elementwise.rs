//! Element-wise ops: ReLU and the residual addition.

use crate::tensor::common_device;
use crate::{cuda, Device, Error, Result, Tensor};

/// `max(x, 0)`.
///
/// # Shapes
/// any shape; returns the same shape
pub fn relu(x: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => Tensor::from_vec(cpu::map(x.cpu_data()?, |v| v.max(0.0)), x.shape()),
        device => Err(cuda::unavailable("relu", device)),
    }
}

/// ReLU backward from the ReLU's *output* `y`: `dx = dy` where `y > 0`, else 0.
///
/// # Shapes
/// `y`, `dy`: one shape; returns that shape
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    dy.expect_shape("relu_backward", "output gradient", y.shape())?;
    match common_device("relu_backward", &[y, dy])? {
        Device::Cpu => Tensor::from_vec(
            cpu::zip(
                y.cpu_data()?,
                dy.cpu_data()?,
                |y, g| if y > 0.0 { g } else { 0.0 },
            ),
            y.shape(),
        ),
        device => Err(cuda::unavailable("relu_backward", device)),
    }
}

/// `a + b` (the residual connection; its backward passes the gradient to both sides).
///
/// # Shapes
/// `a`, `b`: one shape; returns that shape
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            "second operand shape",
            format!("{:?}", a.shape()),
            format!("{:?}", b.shape()),
        ));
    }
    match common_device("add", &[a, b])? {
        Device::Cpu => Tensor::from_vec(
            cpu::zip(a.cpu_data()?, b.cpu_data()?, |a, b| a + b),
            a.shape(),
        ),
        device => Err(cuda::unavailable("add", device)),
    }
}

mod cpu {
    use rayon::prelude::*;

    const GRAIN: usize = 1 << 14;

    use crate::cpu::pool;

    // Outputs come from the workspace pool and are written once, with no zero-fill first.
    pub(super) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
        let mut out = pool::take(x.len());
        out.par_iter_mut()
            .zip(x)
            .with_min_len(GRAIN)
            .for_each(|(o, &v)| *o = f(v));
        out
    }

    pub(super) fn zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
        let mut out = pool::take(a.len());
        out.par_iter_mut()
            .zip(a.par_iter().zip(b))
            .with_min_len(GRAIN)
            .for_each(|(o, (&a, &b))| *o = f(a, b));
        out
    }
}
