//! Element-wise ops: ReLU and the residual addition.

use crate::tensor::common_device;
use crate::{Device, Error, Result, Tensor};

/// `max(x, 0)`.
///
/// # Shapes
/// any shape; returns the same shape
pub fn relu(x: &Tensor) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => Tensor::from_vec(cpu::map(x.cpu_data()?, |v| v.max(0.0)), x.shape()),
        Device::Cuda(_) => cuda::unary(x, "relu"),
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
        Device::Cuda(_) => cuda::binary(y, dy, "relu_backward"),
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
        Device::Cuda(_) => cuda::binary(a, b, "add"),
    }
}

mod cpu {
    use rayon::prelude::*;

    const GRAIN: usize = 1 << 14;

    use crate::cpu::workspace;

    // Outputs come from the workspace and are written once, with no zero-fill first.
    pub(super) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
        let mut out = workspace::take(x.len());
        out.par_iter_mut()
            .zip(x)
            .with_min_len(GRAIN)
            .for_each(|(o, &v)| *o = f(v));
        out
    }

    pub(super) fn zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
        let mut out = workspace::take(a.len());
        out.par_iter_mut()
            .zip(a.par_iter().zip(b))
            .with_min_len(GRAIN)
            .for_each(|(o, (&a, &b))| *o = f(a, b));
        out
    }
}

mod cuda {
    use crate::cuda::kernels::Kernel;
    use crate::cuda::{grid_1d, launch};
    use crate::{Result, Tensor};

    /// `relu` (kernels/elementwise.cu `relu_f32`).
    pub(super) fn unary(x: &Tensor, op: &'static str) -> Result<Tensor> {
        let xs = x.cuda(op)?;
        let dev = &xs.device;
        let len = x.elem_count();
        let mut y = dev.alloc(len)?;
        launch!(
            dev,
            op,
            Kernel::Relu,
            grid_1d(len),
            [&xs.slice, &mut y, &len]
        )?;
        Ok(Tensor::from_cuda(y, dev.clone(), x.shape()))
    }

    /// `relu_backward` and `add`: two operands of one shape.
    pub(super) fn binary(a: &Tensor, b: &Tensor, op: &'static str) -> Result<Tensor> {
        let (sa, sb) = (a.cuda(op)?, b.cuda(op)?);
        let dev = &sa.device;
        let len = a.elem_count();
        let mut y = dev.alloc(len)?;
        let cfg = grid_1d(len);
        match op {
            "add" => launch!(
                dev,
                op,
                Kernel::Add,
                cfg,
                [&sa.slice, &sb.slice, &mut y, &len]
            )?,
            _ => launch!(
                dev,
                op,
                Kernel::ReluBackward,
                cfg,
                [&sa.slice, &sb.slice, &mut y, &len]
            )?,
        }
        Ok(Tensor::from_cuda(y, dev.clone(), a.shape()))
    }
}
