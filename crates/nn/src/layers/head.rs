//! The head: 1x1 conv -> BN -> ReLU -> global average pool -> linear (with bias) to the classes.

use eatnas_tensor::{global_avg_pool, global_avg_pool_backward, linear, linear_backward, Tensor};
use rand::Rng;

use super::conv_bn::{input_grad, ConvBn, ConvSpec};
use super::{Mode, Param, Slot, Visitor};
use crate::init::Init;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct HeadLayer {
    pub conv: ConvBn,
    pub classifier_weight: Param,
    pub classifier_bias: Param,
    saved: Option<([usize; 4], Tensor)>,
}

impl HeadLayer {
    /// The 1x1 convolution and the classifier drawn as `init` says.
    pub fn new(
        cin: usize,
        channels: usize,
        classes: usize,
        init: &Init,
        rng: &mut impl Rng,
    ) -> Result<HeadLayer> {
        let conv = ConvBn::new(ConvSpec::pointwise(cin, channels), init, rng)?;
        let (weight, bias) = init.classifier(classes, channels, rng);
        Ok(HeadLayer {
            conv,
            classifier_weight: Param::new(Tensor::from_vec(weight, &[classes, channels])?),
            classifier_bias: Param::new(Tensor::from_vec(bias, &[classes])?),
            saved: None,
        })
    }

    /// # Shapes
    /// `x`: (N, Cin, H, W); returns logits (N, classes)
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let features = self.conv.forward(x, mode)?;
        let dims = features.dims4("head", "features")?;
        let pooled = global_avg_pool(&features)?;
        let logits = linear(
            &pooled,
            &self.classifier_weight.value,
            &self.classifier_bias.value,
        )?;
        self.saved = Some((dims, pooled));
        Ok(logits)
    }

    /// # Shapes
    /// `dlogits`: (N, classes); returns (N, Cin, H, W)
    pub fn backward(&mut self, dlogits: &Tensor) -> Result<Tensor> {
        let (dims, pooled) = self.saved.take().ok_or_else(|| {
            Error::Network("HeadLayer::backward called without a forward pass".into())
        })?;
        let (dpooled, dweight, dbias) =
            linear_backward(&pooled, &self.classifier_weight.value, dlogits)?;
        self.classifier_weight.grad = Some(dweight);
        self.classifier_bias.grad = Some(dbias);
        let dfeatures = global_avg_pool_backward(&dpooled, dims)?;
        input_grad(self.conv.backward(&dfeatures)?)
    }

    /// Names `head.conv.*`, `head.bn.*`, `classifier.weight`, `classifier.bias`.
    pub fn visit(&mut self, f: &mut Visitor<'_>) {
        self.conv.visit("head", f);
        f(
            "classifier.weight".into(),
            Slot::Param(&mut self.classifier_weight),
        );
        f(
            "classifier.bias".into(),
            Slot::Param(&mut self.classifier_bias),
        );
    }
}
