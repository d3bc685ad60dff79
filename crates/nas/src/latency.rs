//! What a latency table of a task must hold: every piece (stem, layer at its input size, head)
//! that an architecture of the search space under the task's macro can have, the sampled
//! architectures the table's correction is calibrated on and its predictor checked against, and
//! the latency objective's predictor of a stage.

use std::collections::BTreeSet;
use std::path::Path;

use eatnas_nn::Arch;
use eatnas_train::latency::{pieces, LatencyTable, Piece, Predictor, Target};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::fitness::{LatencyObjective, LatencyPass};
use crate::space::{Gene, Genome, MacroConfig, SpaceConfig};
use crate::task::TaskConfig;
use crate::{Error, Result};

/// The copy of the latency table a stage predicts with, in its folder.
pub const STAGE_TABLE_FILE: &str = "latency-table.json";

/// A stage's latency objective, ready to predict its candidates.
pub struct StageLatency {
    predictor: Predictor,
    pass: LatencyPass,
    macro_config: MacroConfig,
}

impl StageLatency {
    /// The predictor of `objective` for a stage of `task` in `stage_dir`: the stage folder's
    /// copy of the table when it has one (a resumed stage), else the configured table, checked
    /// against the target and copied there. A table that lacks a piece the space can produce is
    /// refused now, naming the piece, rather than when a candidate first has it.
    pub fn open(
        objective: &LatencyObjective,
        space: &SpaceConfig,
        task: &TaskConfig,
        stage_dir: &Path,
    ) -> Result<StageLatency> {
        let copy = stage_dir.join(STAGE_TABLE_FILE);
        let from = if copy.is_file() {
            copy.clone()
        } else {
            objective.table.clone()
        };
        let table = LatencyTable::load(&from)?;
        let target = Target {
            device: objective.device.clone(),
            resolution: objective.resolution.or(task.resolution),
            batch: objective.batch,
        };
        let refuse = |message: String| {
            Error::refused(
                &from,
                format!("not a latency table for this stage: {message}"),
            )
        };
        table
            .check_target(&target)
            .map_err(|e| refuse(e.to_string()))?;
        let predictor = table.predictor();
        let p = &table.provenance;
        let needed = space_pieces(
            space,
            &task.macro_config,
            p.in_channels,
            p.resolution,
            p.classes,
        )?;
        if let Some(missing) = needed.iter().find(|piece| !predictor.has(piece)) {
            return Err(refuse(format!(
                "it has no entry for {missing}, which this search space can produce (build the \
                 table with this configuration: eatnas-cli latency build --config ...)"
            )));
        }
        if from != copy {
            std::fs::create_dir_all(stage_dir).map_err(|e| Error::io(stage_dir, e))?;
            table.save(&copy)?;
        }
        Ok(StageLatency {
            predictor,
            pass: objective.pass,
            macro_config: task.macro_config.clone(),
        })
    }

    /// `genome`'s predicted milliseconds (the objective's pass); an error names a piece the
    /// table lacks.
    pub fn predict_ms(&self, genome: &Genome) -> Result<f64> {
        let arch = genome.to_arch(&self.macro_config, "candidate")?;
        let timing = self.predictor.predict(&arch)?;
        Ok(match self.pass {
            LatencyPass::Inference => timing.inference_ms,
            LatencyPass::Training => timing.training_ms,
        })
    }
}

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
