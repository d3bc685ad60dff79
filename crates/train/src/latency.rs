//! Measured latency on the device a network runs on: a table of every piece a search space can
//! produce (the stem, each layer configuration at its input size, the head), each timed alone on
//! eatnas's own kernels in inference and as a training step against a fixed metronome layer,
//! and a network's latency predicted by a line, fitted on whole networks, at the sum of its
//! pieces.
//!
//! A table holds where it was measured (device, threads, eatnas version, kernel sources' hash,
//! resolution, batch); [`LatencyTable::check_fits`] refuses it anywhere else, and a piece missing
//! from it is an error naming the piece, never a zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use eatnas_nn::layers::{ConvBn, ConvSpec, HeadLayer, Layer, Mode, Visitor};
use eatnas_nn::{Arch, Init, LayerSpec, Network, Op};
use eatnas_tensor::{conv_output_size, softmax_cross_entropy, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{train_step, Error, Result, Sgd, StepError};

/// The format tag of a table file.
pub const FORMAT: &str = "eatnas-latency/2";

/// The fixed layer every timed run is paired with (see [`LatencyTable::metronome_ms`]): an
/// MBConv (expansion 6, 3x3) of 16 channels at 14x14, at the table's batch size.
pub fn metronome() -> Piece {
    Piece::Layer {
        op: Op::Mb6,
        kernel: 3,
        stride: 1,
        in_channels: 16,
        out_channels: 16,
        residual: true,
        resolution: 14,
    }
}

/// What names the kernels a table was measured on: the eatnas version says the CPU kernels, the
/// sha256 of the CUDA kernel sources the embedded PTX came from says the GPU's, and the CPU's
/// vector instructions which CPU path ran.
pub fn kernels_hash() -> String {
    format!(
        "cuda:{} cpu:{}",
        eatnas_tensor::kernel_sources_sha256(),
        eatnas_tensor::cpu_simd()
    )
}

/// The device's name: the GPU's, or the CPU's model from /proc/cpuinfo.
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
            })
            .unwrap_or_else(|| "cpu".into()),
        Device::Cuda(_) => device.name(),
    }
}

/// One piece of a network at its input size: what a table entry times.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "piece", rename_all = "snake_case")]
pub enum Piece {
    /// The stem convolution (+ BN + ReLU) on `resolution` x `resolution` images.
    Stem {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        resolution: usize,
    },
    /// One layer of a block, on `resolution` x `resolution` inputs.
    Layer {
        op: Op,
        kernel: usize,
        stride: usize,
        in_channels: usize,
        out_channels: usize,
        residual: bool,
        resolution: usize,
    },
    /// The head (1x1 conv, BN, ReLU, pool, classifier; the loss too when training).
    Head {
        in_channels: usize,
        channels: usize,
        classes: usize,
        resolution: usize,
    },
}

impl std::fmt::Display for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Piece::Stem {
                in_channels,
                out_channels,
                kernel,
                stride,
                resolution,
            } => write!(
                f,
                "stem {in_channels}->{out_channels} k{kernel} s{stride} at {resolution}x{resolution}"
            ),
            Piece::Layer {
                op,
                kernel,
                stride,
                in_channels,
                out_channels,
                residual,
                resolution,
            } => write!(
                f,
                "{} k{kernel} s{stride} {in_channels}->{out_channels}{} at {resolution}x{resolution}",
                op.name(),
                if *residual { " +skip" } else { "" }
            ),
            Piece::Head {
                in_channels,
                channels,
                classes,
                resolution,
            } => write!(
                f,
                "head {in_channels}->{channels}->{classes} classes at {resolution}x{resolution}"
            ),
        }
    }
}

impl Piece {
    /// The channels and the side of the piece's input.
    pub fn input(&self) -> (usize, usize) {
        match *self {
            Piece::Stem {
                in_channels,
                resolution,
                ..
            }
            | Piece::Layer {
                in_channels,
                resolution,
                ..
            }
            | Piece::Head {
                in_channels,
                resolution,
                ..
            } => (in_channels, resolution),
        }
    }
}

/// The pieces of `arch` on `resolution` x `resolution` images of `in_channels` channels, in order.
pub fn pieces(
    arch: &Arch,
    in_channels: usize,
    resolution: usize,
    classes: usize,
) -> Result<Vec<Piece>> {
    let out = |size: usize, kernel: usize, stride: usize| {
        conv_output_size(size, kernel, stride, kernel / 2).ok_or_else(|| {
            Error::Latency(format!(
                "`{}`: a {kernel}x{kernel} convolution at stride {stride} leaves nothing of a \
                 {size}x{size} input",
                arch.name
            ))
        })
    };
    let mut pieces = vec![Piece::Stem {
        in_channels,
        out_channels: arch.stem.channels,
        kernel: arch.stem.kernel,
        stride: arch.stem.stride,
        resolution,
    }];
    let mut size = out(resolution, arch.stem.kernel, arch.stem.stride)?;
    for layer in arch.layers().iter().flatten() {
        let LayerSpec {
            op,
            kernel,
            stride,
            in_channels,
            out_channels,
            residual,
        } = *layer;
        pieces.push(Piece::Layer {
            op,
            kernel,
            stride,
            in_channels,
            out_channels,
            residual,
            resolution: size,
        });
        size = out(size, kernel, stride)?;
    }
    pieces.push(Piece::Head {
        in_channels: arch.last_channels(),
        channels: arch.head.channels,
        classes,
        resolution: size,
    });
    Ok(pieces)
}

/// Milliseconds of one inference pass and of one training step (forward in training mode,
/// backward, the SGD update; for a whole network also the loss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub inference_ms: f64,
    pub training_ms: f64,
}

impl std::ops::Add for Timing {
    type Output = Timing;
    fn add(self, other: Timing) -> Timing {
        Timing {
            inference_ms: self.inference_ms + other.inference_ms,
            training_ms: self.training_ms + other.training_ms,
        }
    }
}

/// How the pieces are timed.
#[derive(Clone, Copy, Debug)]
pub struct Measure {
    pub device: Device,
    pub batch: usize,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Timed runs, each followed by one run of the [`metronome`]; the median of their ratios to
    /// it is kept.
    pub repeats: usize,
    /// Rounds over the whole set of pieces (or networks), each item timed once a round; an
    /// item's time is its median over the rounds. A shared host's slow spells last longer than
    /// one item's repeats, so medians within one visit keep them; rounds minutes apart do not.
    pub passes: usize,
}

/// Where a table was measured: it is refused anywhere else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The CPU model (and its SIMD level) or the GPU's name.
    pub device_name: String,
    /// Worker threads of the CPU backend (rayon's pool).
    pub threads: usize,
    pub eatnas_version: String,
    /// [`kernels_hash`] when measured.
    pub kernels: String,
    pub resolution: usize,
    pub batch: usize,
    pub in_channels: usize,
    pub classes: usize,
}

impl Provenance {
    /// This process's provenance for measuring on `device` with these input dimensions.
    pub fn here(
        device: Device,
        resolution: usize,
        batch: usize,
        in_channels: usize,
        classes: usize,
    ) -> Provenance {
        Provenance {
            device: device.to_string(),
            device_name: device_name(device),
            threads: rayon::current_num_threads(),
            eatnas_version: env!("CARGO_PKG_VERSION").into(),
            kernels: kernels_hash(),
            resolution,
            batch,
            in_channels,
            classes,
        }
    }
}

/// One measured piece.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub piece: Piece,
    #[serde(flatten)]
    pub timing: Timing,
}

/// A latency table (`eatnas-cli latency build`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub format: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    /// A whole network's time against the sum of its pieces, fitted on the calibration
    /// networks: what the pieces timed alone do not account for (a network's fixed cost: the
    /// loss, the optimizer's bookkeeping; and a piece's cost in a network against alone: caches
    /// warm or cold, threads awake).
    pub correction: Correction,
    pub calibration_networks: usize,
    /// The layer every timed run was paired with ([`metronome`]).
    pub metronome: Piece,
    /// The metronome's median inference time over the build. Every time in the table is a
    /// median of (run / the metronome run right after it) times this: the pieces in the host's
    /// typical speed of the build, whatever spells of another tenant's load or of a frequency
    /// change each piece fell in. `latency check` expresses its measurements the same way.
    pub metronome_ms: f64,
    pub entries: Vec<Entry>,
}

/// A whole network's time as a line in the sum of its pieces' times: `intercept_ms + slope *
/// sum`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub intercept_ms: f64,
    pub slope: f64,
}

impl Line {
    /// The sum of the pieces itself.
    pub const IDENTITY: Line = Line {
        intercept_ms: 0.0,
        slope: 1.0,
    };

    /// The line of `(sum of pieces, measured)` points by Theil and Sen's estimator, robust to
    /// the networks a busy host timed slow. Where the sums do not differ (one network), the
    /// line through the origin and their median ratio; without points, the identity.
    pub fn fit(points: &[(f64, f64)]) -> Line {
        let Some(&(first, _)) = points.first() else {
            return Line::IDENTITY;
        };
        if points.iter().any(|&(x, _)| x != first) {
            let (intercept_ms, slope) = theil_sen(points);
            Line {
                intercept_ms,
                slope,
            }
        } else {
            Line {
                intercept_ms: 0.0,
                slope: median(&mut points.iter().map(|(x, y)| y / x).collect::<Vec<_>>()),
            }
        }
    }

    pub fn at(&self, sum_ms: f64) -> f64 {
        self.intercept_ms + self.slope * sum_ms
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} x sum {:+.3} ms", self.slope, self.intercept_ms)
    }
}

/// The [`Line`]s of the inference pass and of the training step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub inference: Line,
    pub training: Line,
}

impl Default for Correction {
    fn default() -> Correction {
        Correction {
            inference: Line::IDENTITY,
            training: Line::IDENTITY,
        }
    }
}

impl Correction {
    /// An error unless both lines rise: a network's time that does not grow with its pieces'
    /// says the `networks` calibration networks were timed through a busy spell.
    pub fn check(&self, networks: usize) -> Result<()> {
        for (pass, line) in [("inference", self.inference), ("training", self.training)] {
            if !(line.slope > 0.0 && line.slope.is_finite() && line.intercept_ms.is_finite()) {
                return Err(Error::Latency(format!(
                    "the {networks} calibration networks' {pass} times do not grow with their \
                     pieces' sum (fitted {line}): the host was too busy to time them; build \
                     again on a quieter machine, with more --passes and --calibration networks"
                )));
            }
        }
        Ok(())
    }
}

/// A table indexed by piece, for predicting many networks (a search predicts every candidate).
#[derive(Clone, Debug)]
pub struct Predictor {
    provenance: Provenance,
    correction: Correction,
    index: BTreeMap<Piece, Timing>,
}

impl Predictor {
    /// Whether the table has `piece`.
    pub fn has(&self, piece: &Piece) -> bool {
        self.index.contains_key(piece)
    }

    /// The sum of `arch`'s pieces and their count, without the corrections; an error naming the
    /// first piece the table does not have.
    fn sum_of_pieces(&self, arch: &Arch) -> Result<(Timing, usize)> {
        let p = &self.provenance;
        let pieces = pieces(arch, p.in_channels, p.resolution, p.classes)?;
        let sum = pieces.iter().try_fold(Timing::default(), |sum, piece| {
            self.index.get(piece).map(|&t| sum + t).ok_or_else(|| {
                Error::Latency(format!(
                    "`{}` has a piece the table does not: {piece} (build the table for this \
                         search space and macro)",
                    arch.name
                ))
            })
        })?;
        Ok((sum, pieces.len()))
    }

    /// `arch`'s predicted latency: the table's correction [`Line`] at the sum of its pieces.
    /// An error when that is not a positive time: a line fitted on noisy calibration timings
    /// (its intercept can be negative) can outweigh a small network's pieces, and a search must
    /// not rank a network by a negative latency.
    pub fn predict(&self, arch: &Arch) -> Result<Timing> {
        let (sum, count) = self.sum_of_pieces(arch)?;
        let c = &self.correction;
        let predicted = Timing {
            inference_ms: c.inference.at(sum.inference_ms),
            training_ms: c.training.at(sum.training_ms),
        };
        for (pass, time, sum, line) in [
            (
                "an inference pass",
                predicted.inference_ms,
                sum.inference_ms,
                c.inference,
            ),
            (
                "a training step",
                predicted.training_ms,
                sum.training_ms,
                c.training,
            ),
        ] {
            // Written so that NaN fails it too.
            if !(time > 0.0 && time.is_finite()) {
                return Err(Error::Latency(format!(
                    "`{}`: the table predicts {pass} of {time:.3} ms, not a positive time: its \
                     {count} pieces sum to {sum:.3} ms, and the correction fitted on the \
                     calibration networks ({line}) outweighs them; rebuild the table on a \
                     quieter machine, with more --passes and --calibration networks",
                    arch.name
                )));
            }
        }
        Ok(predicted)
    }
}

/// Where a search means its networks to run: a table is used as the latency objective of a
/// stage only if it was measured there. Unlike [`Provenance`], the device need not be this
/// machine's: a search may run on CPUs and target a GPU with a table built on one.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Input resolution the table must have been measured at (`None`: the table's).
    pub resolution: Option<usize>,
    /// Batch size the table must have been measured at (`None`: the table's).
    pub batch: Option<usize>,
}

/// A network's latency against its prediction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Measured against the metronome and expressed in the table's milliseconds (the ratio to
    /// the metronome times the table's `metronome_ms`): what the prediction is checked against.
    pub measured: Timing,
    /// The medians of the raw times, at whatever speed the host had during the check.
    pub timed: Timing,
    pub predicted: Timing,
}

/// The networks of a [`LatencyTable::compare`] and the host's speed while they were timed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub networks: Vec<Comparison>,
    /// The metronome's median time during the check (the table's `metronome_ms` when the host
    /// runs as fast as during the build).
    pub metronome_ms: f64,
}

impl LatencyTable {
    /// Times every piece of `pieces` (duplicates once), then the whole networks of
    /// `calibration` to fit the [`Correction`]. `progress(done, total)` after each.
    pub fn build(
        pieces: impl IntoIterator<Item = Piece>,
        calibration: &[Arch],
        provenance: Provenance,
        measure: Measure,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LatencyTable> {
        let mut unique: Vec<Piece> = pieces.into_iter().collect();
        unique.sort();
        unique.dedup();
        let passes = measure.passes.max(1);
        let total = passes * (unique.len() + calibration.len());
        let mut clock = Clock::new(measure)?;
        let readings = in_passes(
            &unique,
            &mut clock,
            |clock, piece| time_piece(piece, clock),
            &mut |i| progress(i, total),
        )?;
        let pieces_done = passes * unique.len();
        let wholes = in_passes(
            calibration,
            &mut clock,
            |clock, arch| time_network(arch, &provenance, clock),
            &mut |i| progress(pieces_done + i, total),
        )?;
        // The metronome's typical time over the whole build, pieces and networks.
        let metronome_ms = clock.metronome_ms();
        let entries: Vec<Entry> = unique
            .into_iter()
            .zip(readings)
            .map(|(piece, r)| Entry {
                piece,
                timing: r.at(metronome_ms),
            })
            .collect();
        let mut table = LatencyTable {
            format: FORMAT.into(),
            provenance,
            correction: Correction::default(),
            calibration_networks: calibration.len(),
            metronome: metronome(),
            metronome_ms,
            entries,
        };
        // Per calibration network: the sum of its pieces, and its measured time.
        let (mut inference, mut training) = (Vec::new(), Vec::new());
        let predictor = table.predictor();
        for (arch, whole) in calibration.iter().zip(wholes) {
            let whole = whole.at(metronome_ms);
            let (sum, _) = predictor.sum_of_pieces(arch)?;
            inference.push((sum.inference_ms, whole.inference_ms));
            training.push((sum.training_ms, whole.training_ms));
        }
        table.correction = Correction {
            inference: Line::fit(&inference),
            training: Line::fit(&training),
        };
        table.correction.check(calibration.len())?;
        Ok(table)
    }

    /// The table indexed by piece.
    pub fn predictor(&self) -> Predictor {
        Predictor {
            provenance: self.provenance.clone(),
            correction: self.correction,
            index: self
                .entries
                .iter()
                .map(|e| (e.piece.clone(), e.timing))
                .collect(),
        }
    }

    /// `arch`'s predicted latency (see [`Predictor::predict`]).
    pub fn predict(&self, arch: &Arch) -> Result<Timing> {
        self.predictor().predict(arch)
    }

    /// Each of `archs` timed whole (as in [`LatencyTable::build`]'s calibration, over
    /// `measure.passes` rounds, against the metronome) beside its prediction; `progress` gets
    /// (timings done, of total).
    pub fn compare(
        &self,
        archs: &[Arch],
        measure: Measure,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Check> {
        let total = measure.passes.max(1) * archs.len();
        let predicted = archs
            .iter()
            .map(|arch| self.predict(arch))
            .collect::<Result<Vec<_>>>()?;
        let mut clock = Clock::new(measure)?;
        let readings = in_passes(
            archs,
            &mut clock,
            |clock, arch| time_network(arch, &self.provenance, clock),
            &mut |done| progress(done, total),
        )?;
        Ok(Check {
            networks: predicted
                .into_iter()
                .zip(readings)
                .map(|(predicted, r)| Comparison {
                    predicted,
                    measured: r.at(self.metronome_ms),
                    timed: r.raw(),
                })
                .collect(),
            metronome_ms: clock.metronome_ms(),
        })
    }

    /// An error unless this table was measured for `wanted` (device, version, kernels,
    /// resolution, batch, input channels and classes; the device's name and threads too).
    pub fn check_fits(&self, wanted: &Provenance) -> Result<()> {
        let fields: [(&str, fn(&Provenance) -> String); 9] = [
            ("device", |p| p.device.clone()),
            ("device name", |p| p.device_name.clone()),
            ("threads", |p| p.threads.to_string()),
            ("eatnas version", |p| p.eatnas_version.clone()),
            ("kernels", |p| p.kernels.clone()),
            ("resolution", |p| p.resolution.to_string()),
            ("batch", |p| p.batch.to_string()),
            ("input channels", |p| p.in_channels.to_string()),
            ("classes", |p| p.classes.to_string()),
        ];
        let mut differences: Vec<String> = fields
            .iter()
            .filter_map(|(what, of)| {
                let (have, want) = (of(&self.provenance), of(wanted));
                (have != want).then(|| format!("{what} {have} (wanted {want})"))
            })
            .collect();
        if self.metronome != metronome() {
            differences.push(format!(
                "metronome {} (wanted {})",
                self.metronome,
                metronome()
            ));
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::Latency(format!(
                "the table was measured with {}: build one here with `eatnas-cli latency build`",
                differences.join(", ")
            )))
        }
    }

    /// An error unless this table was measured on `target`'s device (at its resolution and
    /// batch when it names them) with this eatnas version and, for a GPU, the CUDA kernels
    /// this build embeds. The CPU model and thread count are the target's own and not checked.
    pub fn check_target(&self, target: &Target) -> Result<()> {
        let p = &self.provenance;
        let mut differences = Vec::new();
        let mut differ = |what: &str, have: String, want: String| {
            if have != want {
                differences.push(format!("{what} {have} (wanted {want})"));
            }
        };
        differ("device", p.device.clone(), target.device.clone());
        differ(
            "eatnas version",
            p.eatnas_version.clone(),
            env!("CARGO_PKG_VERSION").into(),
        );
        if p.device.starts_with("cuda") {
            let cuda = |kernels: &str| kernels.split(' ').next().unwrap_or_default().to_string();
            differ("CUDA kernels", cuda(&p.kernels), cuda(&kernels_hash()));
        }
        if let Some(resolution) = target.resolution {
            differ(
                "resolution",
                p.resolution.to_string(),
                resolution.to_string(),
            );
        }
        if let Some(batch) = target.batch {
            differ("batch", p.batch.to_string(), batch.to_string());
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::Latency(format!(
                "the table was measured with {}: build one on the target with `eatnas-cli \
                 latency build`",
                differences.join(", ")
            )))
        }
    }

    /// Reads a table file; an error names the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<LatencyTable> {
        let bad = |message: String| Error::Latency(format!("{}: {message}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a latency table: {e}")))?;
        // The format first: an earlier table lacks fields, and that is what to say.
        let format = value
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or("none");
        if format != FORMAT {
            return Err(bad(format!(
                "format `{format}`, expected `{FORMAT}` (a table of another eatnas: rebuild it \
                 with `eatnas-cli latency build`)"
            )));
        }
        let table: LatencyTable =
            serde_json::from_value(value).map_err(|e| bad(format!("not a latency table: {e}")))?;
        if !(table.metronome_ms > 0.0 && table.metronome_ms.is_finite()) {
            return Err(bad(format!(
                "metronome_ms {} is not a positive time",
                table.metronome_ms
            )));
        }
        if let Some(e) = table
            .entries
            .iter()
            .find(|e| !(e.timing.inference_ms >= 0.0 && e.timing.training_ms >= 0.0))
        {
            return Err(bad(format!(
                "{} has a time that is not a non-negative number",
                e.piece
            )));
        }
        Ok(table)
    }

    /// Writes the table (to a temporary file, then renamed).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Latency(format!("serialising the table: {e}")))?;
        crate::fs::write_atomic(path, text.as_bytes())
    }
}

/// The line `y = a + b x` through `(x, y)` points by Theil and Sen's estimator: `b` the median
/// of the pairwise slopes, `a` the median of `y - b x`. Robust to the outliers a shared host's
/// timings have (up to 29% of the points). Returns `(a, b)`; `b = 0` when every x is the same.
pub fn theil_sen(points: &[(f64, f64)]) -> (f64, f64) {
    let mut slopes = Vec::new();
    for (i, &(x0, y0)) in points.iter().enumerate() {
        for &(x1, y1) in &points[i + 1..] {
            if x1 != x0 {
                slopes.push((y1 - y0) / (x1 - x0));
            }
        }
    }
    let b = median(&mut slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|&(x, y)| y - b * x).collect();
    (median(&mut intercepts), b)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A run's time: its ratio to the metronome run right after it, and in milliseconds as timed.
#[derive(Clone, Copy, Debug)]
struct Reading {
    relative: f64,
    ms: f64,
}

impl Reading {
    /// From (run, metronome run after it) times in milliseconds: the medians of their ratios
    /// and of the run's times.
    fn of(pairs: &[(f64, f64)]) -> Reading {
        Reading {
            relative: median(&mut pairs.iter().map(|(ms, tick)| ms / tick).collect::<Vec<_>>()),
            ms: median(&mut pairs.iter().map(|(ms, _)| *ms).collect::<Vec<_>>()),
        }
    }
}

/// An item's inference and training-step readings.
#[derive(Clone, Copy, Debug)]
struct Readings {
    inference: Reading,
    training: Reading,
}

impl Readings {
    /// The times at the host speed where the metronome takes `metronome_ms`.
    fn at(&self, metronome_ms: f64) -> Timing {
        Timing {
            inference_ms: self.inference.relative * metronome_ms,
            training_ms: self.training.relative * metronome_ms,
        }
    }

    /// The times as timed.
    fn raw(&self) -> Timing {
        Timing {
            inference_ms: self.inference.ms,
            training_ms: self.training.ms,
        }
    }
}

/// Times runs against the [`metronome`]. This project's shared 2-core host changes speed by
/// 20-30% within seconds (another tenant's load, the clock frequency): the median of raw times
/// of one network moved 22% on average (51% at worst) between rounds seconds apart, the minimum
/// 10% (27%). Each timed run is followed at once by one run of the metronome, and the run is
/// kept as its ratio to it, so a slow spell that slows both alike cancels: the same rounds moved
/// 5.5% (10.5%) so. A machine that holds its speed (a dedicated GPU) sees constant ratios.
struct Clock {
    measure: Measure,
    metronome: Module,
    input: Tensor,
    /// Every metronome run's time, in milliseconds.
    ticks: Vec<f64>,
}

impl Clock {
    fn new(measure: Measure) -> Result<Clock> {
        let piece = metronome();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut metronome = Module::new(&piece, &mut rng)?;
        move_to(&mut |f| metronome.visit(f), measure.device)?;
        let (channels, resolution) = piece.input();
        let input = random(
            &[measure.batch, channels, resolution, resolution],
            measure.device,
            &mut rng,
        )?;
        let mut clock = Clock {
            measure,
            metronome,
            input,
            ticks: Vec::new(),
        };
        for _ in 0..measure.warmup.max(1) {
            clock.tick()?;
        }
        clock.ticks.clear();
        Ok(clock)
    }

    /// One timed metronome run, in milliseconds, right after an untimed one. Timed straight
    /// after a network, the metronome's time depended on that network: 1.02 ms after one whose
    /// first block is an MBConv 3, 1.57 ms after the same with an MBConv 6 (what the network
    /// freed decides whether the metronome's buffers are reused or faulted in afresh), which
    /// biased each network's ratio by its own ops.
    fn tick(&mut self) -> Result<f64> {
        let (metronome, input) = (&mut self.metronome, &self.input);
        let ms = warm_ms(self.measure.device, || metronome.infer(input).map(drop))?;
        self.ticks.push(ms);
        Ok(ms)
    }

    /// `measure.repeats` timed runs of `run` ([`warm_ms`]), each followed by a metronome tick,
    /// after `measure.warmup` untimed ones; the medians of their ratios and of their times.
    fn time(&mut self, mut run: impl FnMut() -> Result<()>) -> Result<Reading> {
        for _ in 0..self.measure.warmup {
            run()?;
        }
        let repeats = self.measure.repeats.max(1);
        let mut pairs = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let ms = warm_ms(self.measure.device, &mut run)?;
            pairs.push((ms, self.tick()?));
        }
        Ok(Reading::of(&pairs))
    }

    /// The metronome's median time so far.
    fn metronome_ms(&self) -> f64 {
        median(&mut self.ticks.clone())
    }
}

/// One run of `run` timed right after an untimed one of its own, as in a loop of it, in
/// milliseconds, the device synchronised around it: a run straight after another item (a
/// piece, the metronome) would find the allocator's free blocks and the caches as that item
/// left them.
fn warm_ms(device: Device, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    device.synchronize()?;
    let start = Instant::now();
    run()?;
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Each of `items` timed by `time` once in each of `passes` rounds over all of them (the
/// clock's measure); per item, the median over the rounds of each reading. `progress` gets the
/// timings done.
fn in_passes<T>(
    items: &[T],
    clock: &mut Clock,
    mut time: impl FnMut(&mut Clock, &T) -> Result<Readings>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Readings>> {
    let passes = clock.measure.passes.max(1);
    let mut rounds: Vec<Vec<Readings>> = vec![Vec::with_capacity(passes); items.len()];
    for pass in 0..passes {
        for (i, item) in items.iter().enumerate() {
            rounds[i].push(time(clock, item)?);
            progress(pass * items.len() + i + 1);
        }
    }
    let over = |r: &[Readings], of: fn(&Readings) -> f64| {
        median(&mut r.iter().map(of).collect::<Vec<_>>())
    };
    Ok(rounds
        .iter()
        .map(|r| Readings {
            inference: Reading {
                relative: over(r, |r| r.inference.relative),
                ms: over(r, |r| r.inference.ms),
            },
            training: Reading {
                relative: over(r, |r| r.training.relative),
                ms: over(r, |r| r.training.ms),
            },
        })
        .collect())
}

fn random(shape: &[usize], device: Device, rng: &mut impl Rng) -> Result<Tensor> {
    let values = (0..shape.iter().product())
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    Ok(Tensor::from_vec(values, shape)?.to_device(device)?)
}

/// The parameters and buffers a visitor names, moved to `device`.
fn move_to(visit: &mut dyn FnMut(&mut Visitor<'_>), device: Device) -> Result<()> {
    let mut failure = None;
    visit(&mut |_, slot| {
        let tensor = match slot {
            eatnas_nn::Slot::Param(p) => &mut p.value,
            eatnas_nn::Slot::Buffer(b) => b,
        };
        match tensor.to_device(device) {
            Ok(moved) => *tensor = moved,
            Err(e) => failure = Some(e),
        }
    });
    failure.map_or(Ok(()), |e| Err(e.into()))
}

/// The module a piece is, built as `Network` builds it (default initialisation).
enum Module {
    Stem(ConvBn),
    Layer(Layer),
    Head(HeadLayer),
}

impl Module {
    fn new(piece: &Piece, rng: &mut ChaCha8Rng) -> Result<Module> {
        let init = Init::default();
        Ok(match *piece {
            Piece::Stem {
                in_channels,
                out_channels,
                kernel,
                stride,
                ..
            } => {
                let spec = ConvSpec::dense(in_channels, out_channels, kernel, stride);
                let mut stem = ConvBn::new(spec, &init, rng)?;
                stem.input_grad = false;
                Module::Stem(stem)
            }
            Piece::Layer {
                op,
                kernel,
                stride,
                in_channels,
                out_channels,
                residual,
                ..
            } => Module::Layer(Layer::new(
                &LayerSpec {
                    op,
                    kernel,
                    stride,
                    in_channels,
                    out_channels,
                    residual,
                },
                &init,
                rng,
            )?),
            Piece::Head {
                in_channels,
                channels,
                classes,
                ..
            } => Module::Head(HeadLayer::new(in_channels, channels, classes, &init, rng)?),
        })
    }

    fn visit(&mut self, f: &mut Visitor<'_>) {
        match self {
            Module::Stem(m) => m.visit("stem", f),
            Module::Layer(m) => m.visit("layer", f),
            Module::Head(m) => m.visit(f),
        }
    }

    fn infer(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Module::Stem(m) => m.infer(x)?,
            Module::Layer(m) => m.infer(x)?,
            Module::Head(m) => m.forward(x, Mode::Eval)?,
        })
    }

    /// Forward in training mode and backward from `dy` (from the loss of random labels, for
    /// the head).
    fn forward_backward(&mut self, x: &Tensor, dy: &Tensor, labels: &[usize]) -> Result<()> {
        match self {
            Module::Stem(m) => {
                m.forward(x, Mode::Train)?;
                m.backward(dy)?;
            }
            Module::Layer(m) => {
                m.forward(x, Mode::Train)?;
                m.backward(dy)?;
            }
            Module::Head(m) => {
                let logits = m.forward(x, Mode::Train)?;
                let ce = softmax_cross_entropy(&logits, labels, 0.0)?;
                m.backward(&ce.dlogits)?;
            }
        }
        Ok(())
    }
}

/// One piece timed alone on the clock's device.
fn time_piece(piece: &Piece, clock: &mut Clock) -> Result<Readings> {
    let measure = clock.measure;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut module = Module::new(piece, &mut rng)?;
    move_to(&mut |f| module.visit(f), measure.device)?;
    let (channels, resolution) = piece.input();
    let classes = match *piece {
        Piece::Head { classes, .. } => classes,
        _ => 1,
    };
    let x = random(
        &[measure.batch, channels, resolution, resolution],
        measure.device,
        &mut rng,
    )?;
    let y = module.infer(&x)?;
    let dy = random(y.shape(), measure.device, &mut rng)?;
    let labels: Vec<usize> = (0..measure.batch).map(|i| i % classes).collect();
    let inference = clock.time(|| module.infer(&x).map(drop))?;
    let mut sgd = Sgd::new(0.9, 4e-5, true);
    let training = clock.time(|| {
        module.forward_backward(&x, &dy, &labels)?;
        sgd.step_visited(&mut |f| module.visit(f), 1e-3)
    })?;
    Ok(Readings {
        inference,
        training,
    })
}

/// A whole network of `arch` timed: `Network::predict` on a batch, and `train_step`.
fn time_network(arch: &Arch, provenance: &Provenance, clock: &mut Clock) -> Result<Readings> {
    let measure = clock.measure;
    let p = provenance;
    let mut net = Network::new(arch, p.in_channels, p.classes, 0)?;
    net.to_device(measure.device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random(
        &[measure.batch, p.in_channels, p.resolution, p.resolution],
        measure.device,
        &mut rng,
    )?;
    let labels: Vec<usize> = (0..measure.batch).map(|i| i % p.classes).collect();
    let inference = clock.time(|| net.predict(&x).map(drop).map_err(Error::from))?;
    let mut sgd = Sgd::new(0.9, 4e-5, true);
    let training = clock.time(
        || match train_step(&mut net, &mut sgd, &x, &labels, 0.0, 1e-3) {
            Ok(_) => Ok(()),
            Err(StepError::Failed(e)) => Err(e),
            Err(StepError::Diverged(ce)) => Err(Error::Latency(format!(
                "timing `{}`: the loss of random data became {}",
                arch.name, ce.loss
            ))),
        },
    )?;
    Ok(Readings {
        inference,
        training,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correction_that_does_not_rise_is_refused() {
        let flat = Line {
            intercept_ms: 3.0,
            slope: 0.0,
        };
        let error = Correction {
            inference: Line::IDENTITY,
            training: flat,
        }
        .check(12)
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("12 calibration networks' training times do not grow"),
            "{error}"
        );
        assert!(Correction::default().check(12).is_ok());
    }

    fn reading(ms: f64) -> Reading {
        Reading {
            relative: ms / 2.0,
            ms,
        }
    }

    #[test]
    fn a_slow_spell_that_slows_the_metronome_alike_cancels() {
        // Four runs of a 3 ms piece with a 2 ms metronome; the host is 3x slower for the last
        // three (both the piece and the metronome right after it).
        let r = Reading::of(&[(3.0, 2.0), (9.0, 6.0), (9.0, 6.0), (9.0, 6.0)]);
        assert_eq!(r.relative, 1.5, "the ratio moved with the spell: {r:?}");
        assert_eq!(r.ms, 9.0, "the raw median is the slow time: {r:?}");
        let timing = Readings {
            inference: r,
            training: Reading::of(&[(4.0, 2.0)]),
        }
        .at(2.0);
        assert_eq!(timing.inference_ms, 3.0, "in the table's milliseconds");
        assert_eq!(timing.training_ms, 4.0, "in the table's milliseconds");
    }

    #[test]
    fn a_slow_round_does_not_reach_the_median_over_rounds() {
        let measure = Measure {
            device: Device::Cpu,
            batch: 1,
            warmup: 0,
            repeats: 1,
            passes: 3,
        };
        let mut clock = Clock::new(measure).unwrap();
        // Item 1's second round is five times slower (a slow spell of the host).
        let mut calls = 0;
        let mut done = Vec::new();
        let times = in_passes(
            &[1.0, 2.0],
            &mut clock,
            |_, &base| {
                calls += 1;
                let spell = if calls == 4 { 5.0 } else { 1.0 };
                Ok(Readings {
                    inference: reading(base * spell),
                    training: reading(2.0 * base * spell),
                })
            },
            &mut |n| done.push(n),
        )
        .unwrap();
        assert_eq!(calls, 6, "each item once a round");
        assert_eq!(done, [1, 2, 3, 4, 5, 6], "the progress reported");
        assert_eq!(times[0].inference.ms, 1.0, "{times:?}");
        assert_eq!(times[0].inference.relative, 0.5, "{times:?}");
        assert_eq!(times[1].training.ms, 4.0, "{times:?}");
    }
}
