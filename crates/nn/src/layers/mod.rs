//! The layers of the search space. Each keeps what its backward needs from its last forward, and
//! its backward writes the gradients of its parameters (overwriting the previous ones).

mod conv_bn;
mod head;
mod layer;

pub use conv_bn::{BatchNorm, ConvBn, ConvSpec};
pub use head::HeadLayer;
pub use layer::{Layer, MbConv, SepConv};

use eatnas_tensor::Tensor;

/// Training mode (batch statistics, running statistics updated) or inference mode (running
/// statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A learnable tensor and the gradient the last backward pass wrote for it.
#[derive(Clone, Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Option<Tensor>,
}

impl Param {
    pub fn new(value: Tensor) -> Param {
        Param { value, grad: None }
    }
}

/// One named tensor of a network: a parameter, or a buffer (BN running statistics).
pub enum Slot<'a> {
    Param(&'a mut Param),
    Buffer(&'a mut Tensor),
}

/// The visitor every layer calls for each of its named tensors.
pub type Visitor<'v> = dyn FnMut(String, Slot<'_>) + 'v;
