//! The SGD update with (Nesterov) momentum and weight decay, PyTorch's formulation.

use crate::tensor::common_device;
use crate::{Device, Error, Result, Tensor};

/// Hyper-parameters of one SGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    /// L2 penalty added to the gradient (0 for BN parameters and biases).
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// One in-place step: `g = grad + wd p; buf = momentum buf + g; p -= lr (g + momentum buf)`
/// with Nesterov, else `p -= lr buf`. A zero `buf` on the first step gives PyTorch's
/// `buf = g` initialisation (no dampening).
///
/// # Shapes
/// `param`, `grad`, `momentum_buffer`: one shape
pub fn sgd_step(
    param: &mut Tensor,
    grad: &Tensor,
    momentum_buffer: &mut Tensor,
    step: SgdStep,
) -> Result<()> {
    const OP: &str = "sgd_step";
    grad.expect_shape(OP, "gradient", param.shape())?;
    momentum_buffer.expect_shape(OP, "momentum buffer", param.shape())?;
    if !step.lr.is_finite() || step.lr < 0.0 {
        return Err(Error::argument(
            OP,
            format!(
                "learning rate must be finite and non-negative, got {}",
                step.lr
            ),
        ));
    }
    match common_device(OP, &[param, grad, momentum_buffer])? {
        Device::Cpu => {
            let grad = grad.cpu_data()?;
            let buffer = momentum_buffer.cpu_data_mut()?;
            let param = param.cpu_data_mut()?;
            for ((p, &g), b) in param.iter_mut().zip(grad).zip(buffer.iter_mut()) {
                let g = g + step.weight_decay * *p;
                *b = step.momentum * *b + g;
                *p -= step.lr
                    * if step.nesterov {
                        g + step.momentum * *b
                    } else {
                        *b
                    };
            }
            Ok(())
        }
        Device::Cuda(_) => cuda::step(param, grad, momentum_buffer, step),
    }
}

mod cuda {
    use super::SgdStep;
    use crate::cuda::abi::SgdParams;
    use crate::cuda::kernels::Kernel;
    use crate::cuda::{grid_1d, launch};
    use crate::{Result, Tensor};

    pub(super) fn step(
        param: &mut Tensor,
        grad: &Tensor,
        buffer: &mut Tensor,
        step: SgdStep,
    ) -> Result<()> {
        const OP: &str = "sgd_step";
        let len = param.elem_count();
        let dev = grad.cuda(OP)?.device.clone();
        let params = SgdParams {
            len,
            lr: step.lr,
            momentum: step.momentum,
            weight_decay: step.weight_decay,
            nesterov: step.nesterov as i32,
        };
        let g = &grad.cuda(OP)?.slice;
        let b = buffer.cuda_mut(OP)?;
        let p = param.cuda_mut(OP)?;
        launch!(dev, OP, Kernel::SgdStep, grid_1d(len), [&params, p, g, b])
    }
}
