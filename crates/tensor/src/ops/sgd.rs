//! The SGD update with (Nesterov) momentum and weight decay, PyTorch's formulation.

use crate::tensor::common_device;
use crate::{cuda, Device, Error, Result, Tensor};

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
        device => Err(cuda::unavailable(OP, device)),
    }
}
