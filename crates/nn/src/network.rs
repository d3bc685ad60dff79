//! A whole network built from an architecture file, with the parameter names of ARCH.md.

use std::collections::BTreeMap;

use eatnas_tensor::{softmax_cross_entropy, CrossEntropy, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::arch::Arch;
use crate::init::Init;
use crate::layers::{ConvBn, ConvSpec, HeadLayer, Layer, Mode, Slot};
use crate::{Error, Result};

/// stem -> blocks -> head, as `shared/spec/ARCH.md` defines them.
#[derive(Clone, Debug)]
pub struct Network {
    arch: Arch,
    in_channels: usize,
    classes: usize,
    stem: ConvBn,
    /// `blocks[b][l]`: layer `l` of block `b`.
    blocks: Vec<Vec<Layer>>,
    head: HeadLayer,
}

impl Network {
    /// Builds the network of `arch` for `in_channels` inputs and `classes` outputs, initialised
    /// with the default [`Init`]; the same seed gives the same weights.
    pub fn new(arch: &Arch, in_channels: usize, classes: usize, seed: u64) -> Result<Network> {
        Self::with_init(arch, in_channels, classes, &Init::default(), seed)
    }

    /// [`Network::new`] with the weights drawn as `init` says.
    pub fn with_init(
        arch: &Arch,
        in_channels: usize,
        classes: usize,
        init: &Init,
        seed: u64,
    ) -> Result<Network> {
        arch.validate().map_err(|message| Error::Arch {
            source_name: arch.name.clone(),
            message,
        })?;
        if in_channels == 0 || classes == 0 {
            return Err(Error::Network(format!(
                "a network needs at least one input channel and one class, got {in_channels} and {classes}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let stem_spec = ConvSpec::dense(
            in_channels,
            arch.stem.channels,
            arch.stem.kernel,
            arch.stem.stride,
        );
        let mut stem = ConvBn::new(stem_spec, init, &mut rng)?;
        stem.input_grad = false;
        let blocks = arch
            .layers()
            .iter()
            .map(|layers| {
                layers
                    .iter()
                    .map(|spec| Layer::new(spec, init, &mut rng))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let head = HeadLayer::new(
            arch.last_channels(),
            arch.head.channels,
            classes,
            init,
            &mut rng,
        )?;
        Ok(Network {
            arch: arch.clone(),
            in_channels,
            classes,
            stem,
            blocks,
            head,
        })
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Logits of a batch of images.
    ///
    /// # Shapes
    /// `x`: (N, in_channels, H, W); returns (N, classes)
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.check_input(x)?;
        // Batches arrive from the data loader on the host: move them to the network's device.
        let x = x.to_device(self.device())?;
        let mut h = self.stem.forward(&x, mode)?;
        for block in self.blocks.iter_mut().flatten() {
            h = block.forward(&h, mode)?;
        }
        self.head.forward(&h, mode)
    }

    /// An error unless `x` is a batch of images with this network's channel count.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let [_, channels, _, _] = x.dims4("network", "input images")?;
        if channels != self.in_channels {
            return Err(Error::Network(format!(
                "network `{}`: input has {channels} channels, expected {}",
                self.arch.name, self.in_channels
            )));
        }
        Ok(())
    }

    /// Logits in inference mode with nothing kept for a backward pass: the path evaluation
    /// takes, with each MBConv block as one fused op.
    ///
    /// # Shapes
    /// as [`Network::forward`]
    pub fn predict(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let x = x.to_device(self.device())?;
        let mut h = self.stem.infer(&x)?;
        for block in self.blocks.iter().flatten() {
            h = block.infer(&h)?;
        }
        self.head.forward(&h, Mode::Eval)
    }

    /// Back-propagates `dlogits` through the last forward pass and writes every parameter's
    /// gradient.
    ///
    /// # Shapes
    /// `dlogits`: (N, classes)
    pub fn backward(&mut self, dlogits: &Tensor) -> Result<()> {
        let mut d = self.head.backward(dlogits)?;
        for block in self.blocks.iter_mut().flatten().rev() {
            d = block.backward(&d)?;
        }
        self.stem.backward(&d)?;
        Ok(())
    }

    /// Forward in training mode, mean softmax cross-entropy, backward: one step's gradients.
    ///
    /// # Shapes
    /// `x`: (N, in_channels, H, W); `labels`: N class indices
    pub fn loss_and_backward(
        &mut self,
        x: &Tensor,
        labels: &[usize],
        label_smoothing: f32,
    ) -> Result<CrossEntropy> {
        let logits = self.forward(x, Mode::Train)?;
        let ce = softmax_cross_entropy(&logits, labels, label_smoothing)?;
        self.backward(&ce.dlogits)?;
        Ok(ce)
    }

    /// Calls `f` with the name and slot of every parameter and buffer, in the network's order.
    pub fn visit(&mut self, f: &mut dyn FnMut(String, Slot<'_>)) {
        self.stem.visit("stem", f);
        for (b, layers) in self.blocks.iter_mut().enumerate() {
            for (l, block) in layers.iter_mut().enumerate() {
                block.visit(&format!("blocks.{b}.{l}"), f);
            }
        }
        self.head.visit(f);
    }

    /// Every parameter's value by name.
    pub fn parameters(&mut self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        self.visit(&mut |name, slot| {
            if let Slot::Param(p) = slot {
                out.insert(name, p.value.clone());
            }
        });
        out
    }

    /// Every parameter's gradient from the last backward pass, by name.
    pub fn gradients(&mut self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        self.visit(&mut |name, slot| {
            if let Slot::Param(p) = slot {
                if let Some(g) = &p.grad {
                    out.insert(name, g.clone());
                }
            }
        });
        out
    }

    /// Parameters and buffers by name: what a checkpoint holds.
    pub fn state(&mut self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        self.visit(&mut |name, slot| {
            let value = match slot {
                Slot::Param(p) => p.value.clone(),
                Slot::Buffer(b) => b.clone(),
            };
            out.insert(name, value);
        });
        out
    }

    /// The device the network's tensors live on (that of the stem's weight: `to_device` moves
    /// every tensor together).
    pub fn device(&self) -> Device {
        self.stem.weight.value.device()
    }

    /// Moves every parameter and buffer to `device`, and drops the gradients (they belong to the
    /// last backward pass on the old device). On error nothing is changed.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        let moved: BTreeMap<String, Tensor> = self
            .state()
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        self.visit(&mut |name, slot| match slot {
            Slot::Param(p) => {
                p.value = moved[&name].clone();
                p.grad = None;
            }
            Slot::Buffer(b) => *b = moved[&name].clone(),
        });
        Ok(())
    }

    /// Replaces the parameters and buffers named in `values` (shapes must match; values on
    /// another device are copied to the network's); a name the network does not have is an
    /// error, and on any error nothing is changed.
    pub fn load(&mut self, values: &BTreeMap<String, Tensor>) -> Result<()> {
        let current = self.state();
        for (name, value) in values {
            let Some(existing) = current.get(name) else {
                return Err(Error::Network(format!(
                    "network `{}` has no parameter or buffer named `{name}`",
                    self.arch.name
                )));
            };
            if existing.shape() != value.shape() {
                return Err(Error::Network(format!(
                    "`{name}`: expected shape {:?}, got {:?}",
                    existing.shape(),
                    value.shape()
                )));
            }
        }
        let device = self.device();
        let values: BTreeMap<&String, Tensor> = values
            .iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        self.visit(&mut |name, slot| {
            if let Some(value) = values.get(&name) {
                match slot {
                    Slot::Param(p) => p.value = value.clone(),
                    Slot::Buffer(b) => *b = value.clone(),
                }
            }
        });
        Ok(())
    }

    /// Sets the running-statistics momentum of every batch norm (0.1 is PyTorch's default; 1/n
    /// for the n-th batch of a recalibration makes the running statistics the plain average of
    /// the n batches' statistics).
    pub fn set_batch_norm_momentum(&mut self, momentum: f32) {
        self.stem.bn.config.momentum = momentum;
        for block in self.blocks.iter_mut().flatten() {
            for conv in block.conv_bns() {
                conv.bn.config.momentum = momentum;
            }
        }
        self.head.conv.bn.config.momentum = momentum;
    }

    /// The number of learnable parameters (BN buffers excluded).
    pub fn num_params(&mut self) -> usize {
        let mut count = 0;
        self.visit(&mut |_, slot| {
            if let Slot::Param(p) = slot {
                count += p.value.elem_count();
            }
        });
        count
    }
}
