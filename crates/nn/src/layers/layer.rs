//! One layer of a block (`Layer`): the search space's two kinds, MBConv and the separable
//! convolution. (A block of an architecture file, `eatnas_nn::Block`, is a run of these.)

use eatnas_tensor::{add, mbconv_inference, Device, MbconvWeights, Tensor};
use rand::Rng;

use super::conv_bn::{input_grad, ConvBn, ConvSpec};
use super::{Mode, Visitor};
use crate::arch::{LayerSpec, Op};
use crate::init::Init;
use crate::Result;

/// MBConv with expansion t: 1x1 (cin -> cin*t) -> BN -> ReLU -> depthwise kxk -> BN -> ReLU ->
/// 1x1 (cin*t -> cout) -> BN, plus the input when `residual`.
#[derive(Clone, Debug)]
pub struct MbConv {
    pub expand: ConvBn,
    pub depthwise: ConvBn,
    pub project: ConvBn,
    pub residual: bool,
}

/// Depthwise kxk -> BN -> ReLU -> 1x1 (cin -> cout) -> BN -> ReLU, plus the input when `residual`.
#[derive(Clone, Debug)]
pub struct SepConv {
    pub depthwise: ConvBn,
    pub pointwise: ConvBn,
    pub residual: bool,
}

/// One layer of a block.
#[derive(Clone, Debug)]
pub enum Layer {
    MbConv(MbConv),
    Sep(SepConv),
}

impl Layer {
    pub fn new(spec: &LayerSpec, init: &Init, rng: &mut impl Rng) -> Result<Layer> {
        let LayerSpec {
            op,
            kernel,
            stride,
            in_channels: cin,
            out_channels: cout,
            residual,
        } = *spec;
        Ok(match op.expansion() {
            Some(t) => {
                let hidden = cin * t;
                let expand = ConvBn::new(ConvSpec::pointwise(cin, hidden), init, rng)?;
                let depthwise =
                    ConvBn::new(ConvSpec::depthwise(hidden, kernel, stride), init, rng)?;
                let mut project =
                    ConvBn::new(ConvSpec::pointwise(hidden, cout).linear(), init, rng)?;
                if residual && init.zero_residual_bn {
                    project.bn.weight.value = Tensor::zeros(&[cout], Device::Cpu)?;
                }
                Layer::MbConv(MbConv {
                    expand,
                    depthwise,
                    project,
                    residual,
                })
            }
            None => {
                debug_assert_eq!(op, Op::Sep);
                Layer::Sep(SepConv {
                    depthwise: ConvBn::new(ConvSpec::depthwise(cin, kernel, stride), init, rng)?,
                    pointwise: ConvBn::new(ConvSpec::pointwise(cin, cout), init, rng)?,
                    residual,
                })
            }
        })
    }

    /// # Shapes
    /// `x`: (N, Cin, H, W); returns (N, Cout, H / stride, W / stride) (rounded up)
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (out, residual) = match self {
            Layer::MbConv(b) => {
                // Each batch norm and ReLU inside the block is applied by the next convolution
                // as it reads (see `conv2d_normalized`): the expanded tensors are never written
                // out, and the backward pass keeps the convolutions' outputs only.
                let h = b.expand.forward_deferred(x, mode)?;
                let h = b.depthwise.forward_normalized_deferred(&h, mode)?;
                (b.project.forward_normalized(&h, mode)?, b.residual)
            }
            Layer::Sep(b) => {
                let h = b.depthwise.forward(x, mode)?;
                (b.pointwise.forward(&h, mode)?, b.residual)
            }
        };
        if residual {
            Ok(add(&out, x)?)
        } else {
            Ok(out)
        }
    }

    /// Inference only (running statistics, nothing kept for a backward pass): an MBConv block is
    /// one fused op (one kernel on a GPU), a separable convolution its two layers.
    ///
    /// # Shapes
    /// as [`Layer::forward`]
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::MbConv(b) => Ok(mbconv_inference(
                x,
                &MbconvWeights {
                    expand: (&b.expand.weight.value, b.expand.bn_inference()),
                    depthwise: (&b.depthwise.weight.value, b.depthwise.bn_inference()),
                    project: (&b.project.weight.value, b.project.bn_inference()),
                    stride: b.depthwise.params.stride,
                    residual: b.residual,
                },
            )?),
            Layer::Sep(b) => {
                let out = b.pointwise.infer(&b.depthwise.infer(x)?)?;
                if b.residual {
                    Ok(add(&out, x)?)
                } else {
                    Ok(out)
                }
            }
        }
    }

    /// # Shapes
    /// `dy`: the last output's shape; returns the last input's shape
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let (dx, residual) = match self {
            // Each gradient is overwritten, not shadowed, so that it is freed as soon as the
            // next one exists (a shadowed binding would live to the end of the block).
            Layer::MbConv(b) => {
                let mut d = input_grad(b.project.backward(dy)?)?;
                d = input_grad(b.depthwise.backward(&d)?)?;
                d = input_grad(b.expand.backward(&d)?)?;
                (d, b.residual)
            }
            Layer::Sep(b) => {
                let mut d = input_grad(b.pointwise.backward(dy)?)?;
                d = input_grad(b.depthwise.backward(&d)?)?;
                (d, b.residual)
            }
        };
        if residual {
            Ok(add(&dx, dy)?)
        } else {
            Ok(dx)
        }
    }

    /// Its convolutions, in order.
    pub fn conv_bns(&mut self) -> Vec<&mut ConvBn> {
        match self {
            Layer::MbConv(b) => vec![&mut b.expand, &mut b.depthwise, &mut b.project],
            Layer::Sep(b) => vec![&mut b.depthwise, &mut b.pointwise],
        }
    }

    /// Names relative to `prefix` (`blocks.b.l`): `expand`, `depthwise`, `project` or
    /// `depthwise`, `pointwise`.
    pub fn visit(&mut self, prefix: &str, f: &mut Visitor<'_>) {
        match self {
            Layer::MbConv(b) => {
                b.expand.visit(&format!("{prefix}.expand"), f);
                b.depthwise.visit(&format!("{prefix}.depthwise"), f);
                b.project.visit(&format!("{prefix}.project"), f);
            }
            Layer::Sep(b) => {
                b.depthwise.visit(&format!("{prefix}.depthwise"), f);
                b.pointwise.visit(&format!("{prefix}.pointwise"), f);
            }
        }
    }
}
