//! The search space (ARCH.md, after MnasNet's factorised hierarchical space): per block, five
//! searched choices; per task, a macro (stem, base channels, strides, head) that turns a genome
//! into an architecture file.

use eatnas_nn::{Arch, Block, Head, Op, Stem};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The allowed values of each searched field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceConfig {
    pub ops: Vec<Op>,
    pub kernels: Vec<usize>,
    pub skips: Vec<bool>,
    pub layers: Vec<usize>,
    pub widths: Vec<f64>,
}

impl Default for SpaceConfig {
    fn default() -> Self {
        SpaceConfig {
            ops: Op::ALL.to_vec(),
            kernels: eatnas_nn::arch::KERNELS.to_vec(),
            skips: vec![false, true],
            layers: vec![1, 2, 3, 4],
            widths: eatnas_nn::arch::WIDTHS.to_vec(),
        }
    }
}

impl SpaceConfig {
    pub fn validate(&self) -> Result<()> {
        let empty = |field: &str| {
            Err(Error::invalid(
                format!("space.{field}"),
                "the list of allowed values is empty",
            ))
        };
        if self.ops.is_empty() {
            return empty("ops");
        }
        if self.kernels.is_empty() {
            return empty("kernels");
        }
        if self.skips.is_empty() {
            return empty("skips");
        }
        if self.layers.is_empty() {
            return empty("layers");
        }
        if self.widths.is_empty() {
            return empty("widths");
        }
        if let Some(k) = self
            .kernels
            .iter()
            .find(|k| !eatnas_nn::arch::KERNELS.contains(k))
        {
            return Err(Error::invalid(
                "space.kernels",
                format!("{k} is not allowed; expected values among 3, 5, 7"),
            ));
        }
        if let Some(w) = self
            .widths
            .iter()
            .find(|w| !eatnas_nn::arch::WIDTHS.contains(w))
        {
            return Err(Error::invalid(
                "space.widths",
                format!("{w} is not allowed; expected values among 0.5, 1.0, 1.5, 2.0"),
            ));
        }
        if self.layers.contains(&0) {
            return Err(Error::invalid(
                "space.layers",
                "0 is not allowed; expected counts of at least 1",
            ));
        }
        Ok(())
    }

    fn sorted_widths(&self) -> Vec<f64> {
        let mut w = self.widths.clone();
        w.sort_by(f64::total_cmp);
        w.dedup();
        w
    }

    fn sorted_layers(&self) -> Vec<usize> {
        let mut l = self.layers.clone();
        l.sort_unstable();
        l.dedup();
        l
    }
}

/// A task's macro: what is fixed while the blocks' five fields are searched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MacroConfig {
    pub stem_channels: usize,
    pub stem_kernel: usize,
    pub stem_stride: usize,
    /// One entry per block (MobileNet-V2's widths by default).
    pub base_channels: Vec<usize>,
    /// One entry per block: the first layer's stride.
    pub strides: Vec<usize>,
    pub head_channels: usize,
    /// Scales the stem, base and head channels (rounded, at least 2), so CPU proxies stay small.
    pub width_multiplier: f64,
}

impl Default for MacroConfig {
    /// The small-image macro of ARCH.md (32x32 and below): stem stride 1, block strides
    /// 1, 1, 2, 2, 1, 2, 1.
    fn default() -> Self {
        MacroConfig {
            stem_channels: 32,
            stem_kernel: 3,
            stem_stride: 1,
            base_channels: vec![16, 24, 32, 64, 96, 160, 320],
            strides: vec![1, 1, 2, 2, 1, 2, 1],
            head_channels: 1280,
            width_multiplier: 1.0,
        }
    }
}

impl MacroConfig {
    /// ARCH.md's ImageNet macro: stem stride 2, block strides 1, 2, 2, 2, 1, 2, 1.
    pub fn imagenet() -> MacroConfig {
        MacroConfig {
            stem_stride: 2,
            strides: vec![1, 2, 2, 2, 1, 2, 1],
            ..MacroConfig::default()
        }
    }

    pub fn blocks(&self) -> usize {
        self.base_channels.len()
    }

    pub fn validate(&self, name: &str) -> Result<()> {
        let fail = |field: &str, message: String| {
            Err(Error::invalid(format!("{name}.macro.{field}"), message))
        };
        if self.base_channels.is_empty() {
            return fail("base_channels", "expected at least one block".into());
        }
        if self.strides.len() != self.base_channels.len() {
            return fail(
                "strides",
                format!(
                    "{} entries for {} blocks; expected one stride per block",
                    self.strides.len(),
                    self.base_channels.len()
                ),
            );
        }
        if let Some(s) = self
            .strides
            .iter()
            .chain([&self.stem_stride])
            .find(|s| !matches!(s, 1 | 2))
        {
            return fail("strides", format!("{s} is not allowed; expected 1 or 2"));
        }
        if self.stem_kernel % 2 == 0 {
            return fail(
                "stem_kernel",
                format!("expected an odd size, got {}", self.stem_kernel),
            );
        }
        if !(self.width_multiplier > 0.0 && self.width_multiplier.is_finite()) {
            return fail(
                "width_multiplier",
                format!("expected a positive number, got {}", self.width_multiplier),
            );
        }
        Ok(())
    }

    fn scaled(&self, channels: usize) -> usize {
        ((channels as f64 * self.width_multiplier).round() as usize).max(2)
    }
}

/// The five searched choices of one block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gene {
    pub op: Op,
    pub kernel: usize,
    pub skip: bool,
    pub layers: usize,
    pub width: f64,
}

/// One point of the search space: a gene per block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genome {
    pub blocks: Vec<Gene>,
}

/// A value of `values` other than `current`, if there is one.
fn other<T: Clone + PartialEq>(values: &[T], current: &T, rng: &mut impl Rng) -> Option<T> {
    let others: Vec<&T> = values.iter().filter(|v| *v != current).collect();
    others.choose(rng).map(|v| (*v).clone())
}

/// Which field a mutation changes.
const FIELDS: [&str; 5] = ["op", "kernel", "skip", "layers", "width"];

impl Genome {
    /// A uniformly random genome of `blocks` blocks.
    pub fn random(space: &SpaceConfig, blocks: usize, rng: &mut impl Rng) -> Genome {
        let gene = |rng: &mut _| Gene {
            op: *space.ops.choose(rng).expect("validated non-empty"),
            kernel: *space.kernels.choose(rng).expect("validated non-empty"),
            skip: *space.skips.choose(rng).expect("validated non-empty"),
            layers: *space.layers.choose(rng).expect("validated non-empty"),
            width: *space.widths.choose(rng).expect("validated non-empty"),
        };
        Genome {
            blocks: (0..blocks).map(|_| gene(rng)).collect(),
        }
    }

    /// A canonical text form: equal genomes, equal keys (the cache's key).
    pub fn key(&self) -> String {
        self.blocks
            .iter()
            .map(|g| {
                format!(
                    "{}-k{}-{}-l{}-w{:?}",
                    g.op.name(),
                    g.kernel,
                    if g.skip { "skip" } else { "noskip" },
                    g.layers,
                    g.width
                )
            })
            .collect::<Vec<_>>()
            .join("|")
    }

    /// One mutation: one field of one block changes to another allowed value. Returns the
    /// genome unchanged only when the space allows a single value everywhere.
    pub fn mutate(&self, space: &SpaceConfig, rng: &mut impl Rng) -> Genome {
        let mut child = self.clone();
        let options: Vec<(usize, &str)> = (0..self.blocks.len())
            .flat_map(|b| FIELDS.iter().map(move |f| (b, *f)))
            .filter(|(_, f)| match *f {
                "op" => space.ops.len() > 1,
                "kernel" => space.kernels.len() > 1,
                "skip" => space.skips.len() > 1,
                "layers" => space.layers.len() > 1,
                _ => space.widths.len() > 1,
            })
            .collect();
        // Pick a block, then one of its mutable fields (uniform over the pairs is the same).
        let Some(&(b, field)) = options.choose(rng) else {
            return child;
        };
        let gene = &mut child.blocks[b];
        match field {
            "op" => gene.op = other(&space.ops, &gene.op, rng).unwrap_or(gene.op),
            "kernel" => {
                gene.kernel = other(&space.kernels, &gene.kernel, rng).unwrap_or(gene.kernel)
            }
            "skip" => gene.skip = other(&space.skips, &gene.skip, rng).unwrap_or(gene.skip),
            "layers" => {
                gene.layers = other(&space.layers, &gene.layers, rng).unwrap_or(gene.layers)
            }
            _ => gene.width = other(&space.widths, &gene.width, rng).unwrap_or(gene.width),
        }
        child
    }

    /// Elastic perturbation (EAT-NAS's transfer): each block's width and depth move one step
    /// up or down the allowed values with probability `p` each, and its operation, kernel and
    /// skip change with probability `q` each.
    pub fn perturb(&self, space: &SpaceConfig, p: f64, q: f64, rng: &mut impl Rng) -> Genome {
        let (widths, layers) = (space.sorted_widths(), space.sorted_layers());
        fn step<T: PartialEq + Copy>(values: &[T], current: T, rng: &mut impl Rng) -> T {
            let Some(i) = values.iter().position(|v| *v == current) else {
                return current;
            };
            let up = rng.gen_bool(0.5);
            let j = if up {
                (i + 1).min(values.len() - 1)
            } else {
                i.saturating_sub(1)
            };
            values[j]
        }
        let mut child = self.clone();
        for gene in &mut child.blocks {
            if rng.gen_bool(p) {
                gene.width = step(&widths, gene.width, rng);
            }
            if rng.gen_bool(p) {
                gene.layers = step(&layers, gene.layers, rng);
            }
            if rng.gen_bool(q) {
                gene.op = other(&space.ops, &gene.op, rng).unwrap_or(gene.op);
            }
            if rng.gen_bool(q) {
                gene.kernel = other(&space.kernels, &gene.kernel, rng).unwrap_or(gene.kernel);
            }
            if rng.gen_bool(q) {
                gene.skip = other(&space.skips, &gene.skip, rng).unwrap_or(gene.skip);
            }
        }
        child
    }

    /// The architecture of this genome under `macro_config`.
    pub fn to_arch(&self, macro_config: &MacroConfig, name: &str) -> Result<Arch> {
        if self.blocks.len() != macro_config.blocks() {
            return Err(Error::Genome {
                genome: self.key(),
                message: format!(
                    "{} blocks under a macro of {} blocks",
                    self.blocks.len(),
                    macro_config.blocks()
                ),
            });
        }
        let arch = Arch {
            format: eatnas_nn::arch::FORMAT.into(),
            name: name.into(),
            stem: Stem {
                channels: macro_config.scaled(macro_config.stem_channels),
                kernel: macro_config.stem_kernel,
                stride: macro_config.stem_stride,
            },
            blocks: self
                .blocks
                .iter()
                .zip(macro_config.base_channels.iter().zip(&macro_config.strides))
                .map(|(g, (&base, &stride))| Block {
                    op: g.op,
                    kernel: g.kernel,
                    skip: g.skip,
                    layers: g.layers,
                    width: g.width,
                    base_channels: macro_config.scaled(base),
                    stride,
                })
                .collect(),
            head: Head {
                channels: macro_config.scaled(macro_config.head_channels),
            },
        };
        arch.validate().map_err(|message| Error::Genome {
            genome: self.key(),
            message: message.to_string(),
        })?;
        Ok(arch)
    }

    /// The genome of an architecture file, which must lie in `space` and have one block per
    /// block of the macro (base channels and strides come from the task's macro, not the file).
    pub fn from_arch(arch: &Arch, space: &SpaceConfig, blocks: usize) -> Result<Genome> {
        if arch.blocks.len() != blocks {
            return Err(Error::SeedArchitecture {
                name: arch.name.clone(),
                message: format!(
                    "has {} blocks; the search space has {blocks}",
                    arch.blocks.len()
                ),
            });
        }
        let mut genes = Vec::new();
        for (i, b) in arch.blocks.iter().enumerate() {
            let outside = |field: &str, value: String, allowed: String| {
                Err(Error::SeedArchitecture {
                    name: arch.name.clone(),
                    message: format!(
                        "blocks[{i}].{field} {value} is not in the search space (allowed: {allowed})"
                    ),
                })
            };
            let list = |v: Vec<String>| v.join(", ");
            if !space.ops.contains(&b.op) {
                return outside(
                    "op",
                    b.op.name().into(),
                    list(space.ops.iter().map(|o| o.name().to_string()).collect()),
                );
            }
            if !space.kernels.contains(&b.kernel) {
                return outside(
                    "kernel",
                    b.kernel.to_string(),
                    list(space.kernels.iter().map(|k| k.to_string()).collect()),
                );
            }
            if !space.skips.contains(&b.skip) {
                return outside(
                    "skip",
                    b.skip.to_string(),
                    list(space.skips.iter().map(|k| k.to_string()).collect()),
                );
            }
            if !space.layers.contains(&b.layers) {
                return outside(
                    "layers",
                    b.layers.to_string(),
                    list(space.layers.iter().map(|k| k.to_string()).collect()),
                );
            }
            if !space.widths.contains(&b.width) {
                return outside(
                    "width",
                    format!("{:?}", b.width),
                    list(space.widths.iter().map(|k| format!("{k:?}")).collect()),
                );
            }
            genes.push(Gene {
                op: b.op,
                kernel: b.kernel,
                skip: b.skip,
                layers: b.layers,
                width: b.width,
            });
        }
        Ok(Genome { blocks: genes })
    }
}
