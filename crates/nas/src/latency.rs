//! What a latency table of a task must hold: every piece (stem, layer at its input size, head)
//! that an architecture of the search space under the task's macro can have, and the sampled
//! architectures the table's overhead is calibrated on and its predictor checked against.

use std::collections::BTreeSet;

use eatnas_nn::Arch;
use eatnas_train::latency::{pieces, Piece};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::space::{Gene, Genome, MacroConfig, SpaceConfig};
use crate::Result;

/// Every piece an architecture of `space` under `macro_config` can have on `resolution` x
/// `resolution` images of `in_channels` channels with `classes` classes.
///
/// A layer's configuration depends on its own block's genes and, through its input channels, on
/// the previous block's width alone (the input size is fixed by the macro's strides), so it is
/// enough to vary each block's genes against each width of the block before it.
pub fn space_pieces(
    space: &SpaceConfig,
    macro_config: &MacroConfig,
    in_channels: usize,
    resolution: usize,
    classes: usize,
) -> Result<Vec<Piece>> {
    space.validate()?;
    let blocks = macro_config.blocks();
    let layers = *space.layers.iter().max().expect("validated non-empty");
    let base = Gene {
        op: space.ops[0],
        kernel: space.kernels[0],
        skip: false,
        layers,
        width: space.widths[0],
    };
    let mut all = BTreeSet::new();
    for b in 0..blocks {
        let previous_widths: &[f64] = if b == 0 {
            &space.widths[..1]
        } else {
            &space.widths
        };
        for &previous in previous_widths {
            for &op in &space.ops {
                for &kernel in &space.kernels {
                    for &skip in &space.skips {
                        for &width in &space.widths {
                            let mut genome = Genome {
                                blocks: vec![base.clone(); blocks],
                            };
                            if b > 0 {
                                genome.blocks[b - 1].width = previous;
                            }
                            genome.blocks[b] = Gene {
                                op,
                                kernel,
                                skip,
                                layers,
                                width,
                            };
                            let arch = genome.to_arch(macro_config, "cover")?;
                            all.extend(pieces(&arch, in_channels, resolution, classes)?);
                        }
                    }
                }
            }
        }
    }
    Ok(all.into_iter().collect())
}

/// `count` architectures drawn uniformly from the space with `seed`, named `sample-I`.
pub fn sample_archs(
    space: &SpaceConfig,
    macro_config: &MacroConfig,
    count: usize,
    seed: u64,
) -> Result<Vec<Arch>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            Genome::random(space, macro_config.blocks(), &mut rng)
                .to_arch(macro_config, &format!("sample-{i}"))
        })
        .collect()
}
