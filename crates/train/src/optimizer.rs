//! SGD with Nesterov momentum; weight decay on convolution and classifier weights only.

use std::collections::BTreeMap;

use eatnas_nn::layers::Visitor;
use eatnas_nn::{Network, Slot};
use eatnas_tensor::{sgd_step, SgdStep, Tensor};

use crate::{Error, Result, TrainConfig};

#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// One momentum buffer per parameter name.
    pub buffers: BTreeMap<String, Tensor>,
}

/// Whether weight decay applies: weights of convolutions and of the classifier, not BN
/// parameters or biases.
pub fn decays(name: &str) -> bool {
    name.ends_with("conv.weight") || name == "classifier.weight"
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32, nesterov: bool) -> Sgd {
        Sgd {
            momentum,
            weight_decay,
            nesterov,
            buffers: BTreeMap::new(),
        }
    }

    /// The optimizer of `config`'s recipe (momentum, Nesterov, weight decay), no buffers yet.
    pub fn for_config(config: &TrainConfig) -> Sgd {
        Sgd::new(config.momentum, config.weight_decay, config.nesterov)
    }

    /// Updates every parameter of `net` from the gradients of its last backward pass, and
    /// clears those gradients.
    pub fn step(&mut self, net: &mut Network, lr: f32) -> Result<()> {
        self.step_visited(&mut |f| net.visit(f), lr)
    }

    /// [`Sgd::step`] over the parameters that `visit` hands its visitor (a network's, or one
    /// layer's when its cost is measured alone).
    pub fn step_visited(&mut self, visit: &mut dyn FnMut(&mut Visitor<'_>), lr: f32) -> Result<()> {
        let mut failure = None;
        let (momentum, weight_decay, nesterov) = (self.momentum, self.weight_decay, self.nesterov);
        let buffers = &mut self.buffers;
        visit(&mut |name, slot| {
            let Slot::Param(param) = slot else { return };
            if failure.is_some() {
                return;
            }
            // Taken, not borrowed: a step's gradients are freed once applied, so they do not sit
            // beside the next step's activations (PyTorch's `zero_grad(set_to_none=True)`).
            let Some(grad) = param.grad.take() else {
                failure = Some(Error::Config(format!(
                    "parameter `{name}` has no gradient: run a backward pass before the step"
                )));
                return;
            };
            let buffer = match buffers.get_mut(&name) {
                // A buffer restored from a checkpoint lives on the host: follow the parameter.
                Some(b) if b.device() != param.value.device() => {
                    match b.to_device(param.value.device()) {
                        Ok(moved) => {
                            *b = moved;
                            b
                        }
                        Err(e) => {
                            failure = Some(e.into());
                            return;
                        }
                    }
                }
                Some(b) => b,
                None => match Tensor::zeros(param.value.shape(), param.value.device()) {
                    Ok(zeros) => buffers.entry(name.clone()).or_insert(zeros),
                    Err(e) => {
                        failure = Some(e.into());
                        return;
                    }
                },
            };
            let step = SgdStep {
                lr,
                momentum,
                weight_decay: if decays(&name) { weight_decay } else { 0.0 },
                nesterov,
            };
            if let Err(e) = sgd_step(&mut param.value, &grad, buffer, step) {
                failure = Some(e.into());
            }
        });
        failure.map_or(Ok(()), Err)
    }
}
