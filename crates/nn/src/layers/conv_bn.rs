//! Convolution -> batch norm -> optional ReLU: the unit every layer of the space is made of.

use eatnas_tensor::{
    batch_norm2d_backward, batch_norm2d_eval_act, batch_norm2d_eval_deferred,
    batch_norm2d_train_deferred, conv2d, conv2d_backward, conv2d_backward_weight,
    conv2d_normalized, conv2d_normalized_backward, BatchNormConfig, BatchNormStats, BnInference,
    Conv2dParams, Device, Normalized, Tensor,
};
use rand::Rng;

use super::{Mode, Param, Slot, Visitor};
use crate::init::Init;
use crate::{Error, Result};

/// BatchNorm2d, by default with PyTorch's eps 1e-5 and momentum 0.1 ([`BatchNormConfig`]).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub config: BatchNormConfig,
}

impl BatchNorm {
    /// Weight 1, bias 0, running mean 0, running variance 1, PyTorch's settings.
    pub fn new(channels: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            weight: Param::new(Tensor::full(&[channels], 1.0, Device::Cpu)?),
            bias: Param::new(Tensor::zeros(&[channels], Device::Cpu)?),
            running_mean: Tensor::zeros(&[channels], Device::Cpu)?,
            running_var: Tensor::full(&[channels], 1.0, Device::Cpu)?,
            config: BatchNormConfig::PYTORCH,
        })
    }

    /// Normalises `x` (then a ReLU when `relu`), the output left as a map for its reader to
    /// apply or to write out ([`Normalized::materialize`]).
    fn forward_deferred(
        &mut self,
        x: &Tensor,
        mode: Mode,
        relu: bool,
    ) -> Result<(Normalized, BatchNormStats)> {
        Ok(match mode {
            Mode::Train => batch_norm2d_train_deferred(
                x,
                &self.weight.value,
                &self.bias.value,
                &mut self.running_mean,
                &mut self.running_var,
                self.config,
                relu,
            )?,
            Mode::Eval => batch_norm2d_eval_deferred(
                x,
                &self.weight.value,
                &self.bias.value,
                &self.running_mean,
                &self.running_var,
                self.config,
                relu,
            )?,
        })
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor<'_>) {
        f(format!("{prefix}.weight"), Slot::Param(&mut self.weight));
        f(format!("{prefix}.bias"), Slot::Param(&mut self.bias));
        f(
            format!("{prefix}.running_mean"),
            Slot::Buffer(&mut self.running_mean),
        );
        f(
            format!("{prefix}.running_var"),
            Slot::Buffer(&mut self.running_var),
        );
    }
}

/// What the backward pass of a [`ConvBn`] needs from its forward pass (not the output: the
/// ReLU's mask is recomputed from the convolution's output and the statistics).
#[derive(Clone, Debug)]
struct Saved {
    input: Input,
    conv_out: Tensor,
    stats: BatchNormStats,
}

/// What a layer's convolution read: a tensor, or the previous layer's batch norm applied as
/// it was read (never written out).
#[derive(Clone, Debug)]
enum Input {
    Plain(Tensor),
    Normalized(Normalized),
}

/// What a [`ConvBn`] computes: a bias-free `kernel x kernel` convolution (padding `kernel / 2`)
/// from `in_channels` to `out_channels` in `groups` groups, then batch norm, then a ReLU when
/// `relu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub relu: bool,
}

impl ConvSpec {
    /// A dense `kernel x kernel` convolution with its ReLU (the stem).
    pub fn dense(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups: 1,
            relu: true,
        }
    }

    /// A 1x1 convolution with its ReLU (an expansion, a separable block's pointwise, the head's).
    pub fn pointwise(in_channels: usize, out_channels: usize) -> Self {
        ConvSpec::dense(in_channels, out_channels, 1, 1)
    }

    /// A depthwise `kernel x kernel` convolution of `channels` channels with its ReLU.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            groups: channels,
            ..ConvSpec::dense(channels, channels, kernel, stride)
        }
    }

    /// The same without the ReLU (an MBConv block's linear projection).
    pub fn linear(self) -> Self {
        ConvSpec {
            relu: false,
            ..self
        }
    }
}

/// Bias-free convolution (padding `kernel / 2`) -> BN -> ReLU when `relu`.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub weight: Param,
    pub params: Conv2dParams,
    pub bn: BatchNorm,
    pub relu: bool,
    /// False for the first layer of a network, whose input needs no gradient.
    pub input_grad: bool,
    saved: Option<Saved>,
}

impl ConvBn {
    /// The layer `spec` describes, its weight drawn as `init` says.
    pub fn new(spec: ConvSpec, init: &Init, rng: &mut impl Rng) -> Result<ConvBn> {
        let ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups,
            relu,
        } = spec;
        if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(Error::Network(format!(
                "a convolution from {in_channels} to {out_channels} channels cannot have {groups} groups"
            )));
        }
        let shape = [out_channels, in_channels / groups, kernel, kernel];
        let values = init.conv_weight(shape, groups, rng);
        Ok(ConvBn {
            weight: Param::new(Tensor::from_vec(values, &shape)?),
            params: Conv2dParams {
                stride,
                padding: kernel / 2,
                groups,
            },
            bn: BatchNorm::new(out_channels)?,
            relu,
            input_grad: true,
            saved: None,
        })
    }

    /// Inference only: running statistics, nothing kept for a backward pass.
    ///
    /// # Shapes
    /// as [`ConvBn::forward`]
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let conv_out = conv2d(x, &self.weight.value, self.params)?;
        let bn = &self.bn;
        Ok(batch_norm2d_eval_act(
            &conv_out,
            &bn.weight.value,
            &bn.bias.value,
            &bn.running_mean,
            &bn.running_var,
            bn.config,
            self.relu,
        )?
        .0)
    }

    /// This layer's batch norm as the fused inference op takes it.
    pub fn bn_inference(&self) -> BnInference<'_> {
        BnInference {
            weight: &self.bn.weight.value,
            bias: &self.bn.bias.value,
            running_mean: &self.bn.running_mean,
            running_var: &self.bn.running_var,
            eps: self.bn.config.eps,
        }
    }

    /// # Shapes
    /// `x`: (N, Cin, H, W); returns (N, Cout, H', W')
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_deferred(x, mode)?
            .materialize()
            .map_err(Into::into)
    }

    /// [`ConvBn::forward`] of the previous layer's output left as a map: the convolution
    /// applies it as it reads (see [`conv2d_normalized`]).
    ///
    /// # Shapes
    /// as [`ConvBn::forward`], `x.x` as `x`
    pub fn forward_normalized(&mut self, x: &Normalized, mode: Mode) -> Result<Tensor> {
        self.forward_normalized_deferred(x, mode)?
            .materialize()
            .map_err(Into::into)
    }

    /// [`ConvBn::forward_normalized`] with its own output left as a map as well: the depthwise
    /// layer of an MBConv block, whose output only the projection reads.
    ///
    /// # Shapes
    /// as [`ConvBn::forward`], `x.x` as `x`
    pub fn forward_normalized_deferred(
        &mut self,
        x: &Normalized,
        mode: Mode,
    ) -> Result<Normalized> {
        self.run(Input::Normalized(x.clone()), mode)
    }

    /// [`ConvBn::forward`] without writing its output: the batch norm's statistics, and the
    /// normalisation (and ReLU) as a map for the next layer to apply as it reads. For an
    /// MBConv block's expansion, whose output only its depthwise convolution reads.
    ///
    /// # Shapes
    /// as [`ConvBn::forward`]
    pub fn forward_deferred(&mut self, x: &Tensor, mode: Mode) -> Result<Normalized> {
        self.run(Input::Plain(x.clone()), mode)
    }

    /// The convolution of `input`, then its batch norm's statistics, keeping what the backward
    /// pass needs; the normalisation is returned as a map.
    fn run(&mut self, input: Input, mode: Mode) -> Result<Normalized> {
        let conv_out = match &input {
            Input::Plain(x) => conv2d(x, &self.weight.value, self.params)?,
            Input::Normalized(x) => conv2d_normalized(x, &self.weight.value, self.params)?,
        };
        let (output, stats) = self.bn.forward_deferred(&conv_out, mode, self.relu)?;
        self.saved = Some(Saved {
            input,
            conv_out,
            stats,
        });
        Ok(output)
    }

    /// Writes the gradients of the weight and of the BN parameters; returns the input's
    /// gradient unless `input_grad` is false (after [`ConvBn::forward_normalized`], the
    /// gradient of the normalised input).
    ///
    /// # Shapes
    /// `dy`: the last output's shape; returns the last input's shape
    pub fn backward(&mut self, dy: &Tensor) -> Result<Option<Tensor>> {
        let Saved {
            input,
            conv_out,
            stats,
        } = self.saved.take().ok_or_else(|| {
            Error::Network("ConvBn::backward called without a forward pass".into())
        })?;
        // Through the ReLU and the normalisation in one op.
        let (dconv, dgamma, dbeta) =
            batch_norm2d_backward(&conv_out, &self.bn.weight.value, &stats, dy)?;
        // Freed before the convolution's gradients are allocated: one activation less at the
        // step's peak (unless the next layer reads it through a map).
        drop(conv_out);
        self.bn.weight.grad = Some(dgamma);
        self.bn.bias.grad = Some(dbeta);
        let (w, params) = (&self.weight.value, self.params);
        let (dx, dweight) = match (&input, self.input_grad) {
            (Input::Plain(x), true) => {
                let (dx, dw) = conv2d_backward(x, w, &dconv, params)?;
                (Some(dx), dw)
            }
            (Input::Plain(x), false) => (None, conv2d_backward_weight(x, w, &dconv, params)?),
            (Input::Normalized(x), input_grad) => {
                let (dx, dw) = conv2d_normalized_backward(x, w, &dconv, params)?;
                (input_grad.then_some(dx), dw)
            }
        };
        self.weight.grad = Some(dweight);
        Ok(dx)
    }

    /// Names `{prefix}.conv.weight` and `{prefix}.bn.{weight,bias,running_mean,running_var}`.
    pub fn visit(&mut self, prefix: &str, f: &mut Visitor<'_>) {
        f(
            format!("{prefix}.conv.weight"),
            Slot::Param(&mut self.weight),
        );
        self.bn.visit(&format!("{prefix}.bn"), f);
    }
}

/// `backward` of a layer that always passes a gradient on.
pub(crate) fn input_grad(grad: Option<Tensor>) -> Result<Tensor> {
    grad.ok_or_else(|| {
        Error::Network("a layer inside the network was built without its input gradient".into())
    })
}
