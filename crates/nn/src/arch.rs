//! Architecture files, format `eatnas-arch/1` (see `shared/spec/ARCH.md`).
//!
//! Parsing is strict: an unknown field, a missing field, a value outside what the format allows
//! or an empty block list is an error that names the field and the allowed values.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The format tag every architecture file carries.
pub const FORMAT: &str = "eatnas-arch/1";
/// Depthwise kernel sizes the format allows.
pub const KERNELS: [usize; 3] = [3, 5, 7];
/// Width multipliers the format allows.
pub const WIDTHS: [f64; 4] = [0.5, 1.0, 1.5, 2.0];
/// Bounds on what a file may ask for, far above any network of the space (7 blocks of at most
/// 4 layers, 640 channels) or of the MobileNet family, so that a file cannot make the counting
/// or the network builder allocate what its size does not justify.
pub const MAX_BLOCKS: usize = 64;
pub const MAX_LAYERS: usize = 64;
pub const MAX_CHANNELS: usize = 8192;
pub const MAX_STEM_KERNEL: usize = 15;

/// The operation of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Separable convolution: depthwise, then 1x1.
    Sep,
    /// MBConv with expansion 3.
    Mb3,
    /// MBConv with expansion 6.
    Mb6,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Sep, Op::Mb3, Op::Mb6];

    /// The MBConv expansion factor; `None` for `sep`.
    pub fn expansion(self) -> Option<usize> {
        match self {
            Op::Sep => None,
            Op::Mb3 => Some(3),
            Op::Mb6 => Some(6),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Sep => "sep",
            Op::Mb3 => "mb3",
            Op::Mb6 => "mb6",
        }
    }
}

/// The first convolution: conv kxk, stride s -> BN -> ReLU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stem {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

/// One block: `layers` repeats of one operation; only the first takes the block's stride.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub op: Op,
    pub kernel: usize,
    pub skip: bool,
    pub layers: usize,
    pub width: f64,
    pub base_channels: usize,
    pub stride: usize,
}

impl Block {
    /// `floor(base_channels * width)`.
    pub fn out_channels(&self) -> usize {
        (self.base_channels as f64 * self.width).floor() as usize
    }
}

/// The last layers: conv 1x1 -> BN -> ReLU -> global average pool -> linear to the classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub channels: usize,
}

/// A whole network apart from its input channels, classes and resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    pub format: String,
    pub name: String,
    pub stem: Stem,
    pub blocks: Vec<Block>,
    pub head: Head,
}

/// One layer of a block as the network builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub op: Op,
    pub kernel: usize,
    pub stride: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// The identity shortcut applies: `skip`, stride 1 and equal channel counts.
    pub residual: bool,
}

impl Arch {
    /// Parses and validates JSON text; `source_name` names it in errors (a path, or "<stdin>").
    pub fn from_json(text: &str, source_name: &str) -> Result<Arch> {
        let arch: Arch = serde_json::from_str(text).map_err(|e| Error::Arch {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        arch.validate().map_err(|message| Error::Arch {
            source_name: source_name.into(),
            message,
        })?;
        Ok(arch)
    }

    /// Reads, parses and validates an architecture file.
    pub fn load(path: &Path) -> Result<Arch> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Arch::from_json(&text, &path.display().to_string())
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("an architecture always serialises")
    }

    /// Checks every value against what the format allows; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format: expected \"{FORMAT}\", got \"{}\"",
                self.format
            ));
        }
        check_channels("stem.channels", self.stem.channels)?;
        if self.stem.kernel.is_multiple_of(2) || self.stem.kernel > MAX_STEM_KERNEL {
            return Err(format!(
                "stem.kernel: expected an odd kernel size up to {MAX_STEM_KERNEL} (1, 3, 5, 7, ...), got {}",
                self.stem.kernel
            ));
        }
        check_stride("stem.stride", self.stem.stride)?;
        if self.blocks.is_empty() || self.blocks.len() > MAX_BLOCKS {
            return Err(format!(
                "blocks: expected 1 to {MAX_BLOCKS} blocks, got {}",
                self.blocks.len()
            ));
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let field = |name: &str| format!("blocks[{i}].{name}");
            if !KERNELS.contains(&block.kernel) {
                return Err(format!(
                    "{}: {} is not allowed; expected one of 3, 5, 7",
                    field("kernel"),
                    block.kernel
                ));
            }
            if !WIDTHS.contains(&block.width) {
                return Err(format!(
                    "{}: {} is not allowed; expected one of 0.5, 1.0, 1.5, 2.0",
                    field("width"),
                    block.width
                ));
            }
            check_stride(&field("stride"), block.stride)?;
            if block.layers == 0 || block.layers > MAX_LAYERS {
                return Err(format!(
                    "{}: expected 1 to {MAX_LAYERS} layers, got {}",
                    field("layers"),
                    block.layers
                ));
            }
            check_channels(&field("base_channels"), block.base_channels)?;
            if block.out_channels() == 0 {
                return Err(format!(
                    "{}: base_channels {} x width {} rounds down to 0 channels; expected at least 1",
                    field("width"),
                    block.base_channels,
                    block.width
                ));
            }
            check_channels(&field("width"), block.out_channels())?;
        }
        check_channels("head.channels", self.head.channels)?;
        Ok(())
    }

    /// Every layer of every block, in order, with its channels and whether it has a shortcut.
    pub fn layers(&self) -> Vec<Vec<LayerSpec>> {
        let mut in_channels = self.stem.channels;
        self.blocks
            .iter()
            .map(|block| {
                let out_channels = block.out_channels();
                (0..block.layers)
                    .map(|l| {
                        let stride = if l == 0 { block.stride } else { 1 };
                        let layer = LayerSpec {
                            op: block.op,
                            kernel: block.kernel,
                            stride,
                            in_channels,
                            out_channels,
                            residual: block.skip && stride == 1 && in_channels == out_channels,
                        };
                        in_channels = out_channels;
                        layer
                    })
                    .collect()
            })
            .collect()
    }

    /// Channels entering the head (the last block's output).
    pub fn last_channels(&self) -> usize {
        self.blocks
            .last()
            .map_or(self.stem.channels, Block::out_channels)
    }
}

fn check_channels(field: &str, channels: usize) -> std::result::Result<(), String> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(format!(
            "{field}: expected 1 to {MAX_CHANNELS} channels, got {channels}"
        ))
    }
}

fn check_stride(field: &str, stride: usize) -> std::result::Result<(), String> {
    if stride == 1 || stride == 2 {
        Ok(())
    } else {
        Err(format!("{field}: {stride} is not allowed; expected 1 or 2"))
    }
}
