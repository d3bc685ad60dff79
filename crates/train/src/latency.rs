//! Measured latency on the device a network runs on: a table of every piece a search space can
//! produce (the stem, each layer configuration at its input size, the head), each timed alone on
//! eatnas's own kernels in inference and as a training step, and a network's latency predicted
//! as the sum of its pieces plus a per-network and a per-piece correction fitted on whole
//! networks.
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
pub const FORMAT: &str = "eatnas-latency/1";

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
    /// Timed runs; the median is kept.
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
    /// Whole-network time the pieces do not account for (launches between layers, the loss and
    /// the optimizer's bookkeeping, cache effects): the intercept of the line fitted to the
    /// calibration networks' measured time less the pieces' sum, against their piece count.
    pub overhead: Timing,
    /// That line's slope: what a piece timed alone costs more (negative) or less than inside a
    /// network, per piece (a cold start that consecutive layers share). Absent in tables of
    /// eatnas before it: zero.
    #[serde(default)]
    pub per_piece: Timing,
    pub calibration_networks: usize,
    pub entries: Vec<Entry>,
}

/// A table indexed by piece, for predicting many networks (a search predicts every candidate).
#[derive(Clone, Debug)]
pub struct Predictor {
    provenance: Provenance,
    overhead: Timing,
    per_piece: Timing,
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

    /// `arch`'s predicted latency: the sum of its pieces, plus the per-network overhead, plus
    /// the per-piece correction times its piece count. An error when that is not a positive
    /// time: corrections fitted on noisy calibration timings (the line's intercept and slope can
    /// both be negative) can outweigh a small network's pieces, and a search must not rank a
    /// network by a negative latency.
    pub fn predict(&self, arch: &Arch) -> Result<Timing> {
        let (sum, count) = self.sum_of_pieces(arch)?;
        let n = count as f64;
        let predicted = Timing {
            inference_ms: sum.inference_ms
                + self.overhead.inference_ms
                + n * self.per_piece.inference_ms,
            training_ms: sum.training_ms
                + self.overhead.training_ms
                + n * self.per_piece.training_ms,
        };
        for (pass, time, sum, overhead, per_piece) in [
            (
                "an inference pass",
                predicted.inference_ms,
                sum.inference_ms,
                self.overhead.inference_ms,
                self.per_piece.inference_ms,
            ),
            (
                "a training step",
                predicted.training_ms,
                sum.training_ms,
                self.overhead.training_ms,
                self.per_piece.training_ms,
            ),
        ] {
            // Written so that NaN fails it too.
            if !(time > 0.0 && time.is_finite()) {
                return Err(Error::Latency(format!(
                    "`{}`: the table predicts {pass} of {time:.3} ms, not a positive time: its \
                     {count} pieces sum to {sum:.3} ms, and the corrections fitted on the \
                     calibration networks (overhead {overhead:.3} ms, {per_piece:.4} ms per \
                     piece) outweigh them; rebuild the table on a quieter machine, with more \
                     --passes",
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
    pub measured: Timing,
    pub predicted: Timing,
}

impl LatencyTable {
    /// Times every piece of `pieces` (duplicates once), then the whole networks of
    /// `calibration` to measure the per-network overhead. `progress(done, total)` after each.
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
        let timings = in_passes(
            &unique,
            measure,
            |piece| time_piece(piece, measure),
            &mut |i| progress(i, total),
        )?;
        let entries: Vec<Entry> = unique
            .into_iter()
            .zip(timings)
            .map(|(piece, timing)| Entry { piece, timing })
            .collect();
        let pieces_done = passes * entries.len();
        let mut table = LatencyTable {
            format: FORMAT.into(),
            provenance,
            overhead: Timing::default(),
            per_piece: Timing::default(),
            calibration_networks: calibration.len(),
            entries,
        };
        // Per calibration network: its piece count, and measured less summed time.
        let (mut inference, mut training) = (Vec::new(), Vec::new());
        let predictor = table.predictor();
        let wholes = in_passes(
            calibration,
            measure,
            |arch| time_network(arch, &table.provenance, measure),
            &mut |i| progress(pieces_done + i, total),
        )?;
        for (arch, whole) in calibration.iter().zip(wholes) {
            let (sum, count) = predictor.sum_of_pieces(arch)?;
            inference.push((count as f64, whole.inference_ms - sum.inference_ms));
            training.push((count as f64, whole.training_ms - sum.training_ms));
        }
        let (inference_overhead, inference_per_piece) = theil_sen(&inference);
        let (training_overhead, training_per_piece) = theil_sen(&training);
        table.overhead = Timing {
            inference_ms: inference_overhead,
            training_ms: training_overhead,
        };
        table.per_piece = Timing {
            inference_ms: inference_per_piece,
            training_ms: training_per_piece,
        };
        Ok(table)
    }

    /// The table indexed by piece.
    pub fn predictor(&self) -> Predictor {
        Predictor {
            provenance: self.provenance.clone(),
            overhead: self.overhead,
            per_piece: self.per_piece,
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
    /// `measure.passes` rounds) beside its prediction; `progress` gets (timings done, of total).
    pub fn compare(
        &self,
        archs: &[Arch],
        measure: Measure,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Comparison>> {
        let total = measure.passes.max(1) * archs.len();
        let predicted = archs
            .iter()
            .map(|arch| self.predict(arch))
            .collect::<Result<Vec<_>>>()?;
        let measured = in_passes(
            archs,
            measure,
            |arch| time_network(arch, &self.provenance, measure),
            &mut |done| progress(done, total),
        )?;
        Ok(predicted
            .into_iter()
            .zip(measured)
            .map(|(predicted, measured)| Comparison {
                predicted,
                measured,
            })
            .collect())
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
        let differences: Vec<String> = fields
            .iter()
            .filter_map(|(what, of)| {
                let (have, want) = (of(&self.provenance), of(wanted));
                (have != want).then(|| format!("{what} {have} (wanted {want})"))
            })
            .collect();
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
        let table: LatencyTable =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a latency table: {e}")))?;
        if table.format != FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{FORMAT}`",
                table.format
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

/// Each of `items` timed by `time` once in each of `measure.passes` rounds over all of them;
/// per item, the median over the rounds of each time. `progress` gets the timings done.
fn in_passes<T>(
    items: &[T],
    measure: Measure,
    mut time: impl FnMut(&T) -> Result<Timing>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Timing>> {
    let passes = measure.passes.max(1);
    let mut rounds: Vec<Vec<Timing>> = vec![Vec::with_capacity(passes); items.len()];
    for pass in 0..passes {
        for (i, item) in items.iter().enumerate() {
            rounds[i].push(time(item)?);
            progress(pass * items.len() + i + 1);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|r| {
            let inference_ms = median(&mut r.iter().map(|t| t.inference_ms).collect::<Vec<_>>());
            let training_ms = median(&mut r.iter().map(|t| t.training_ms).collect::<Vec<_>>());
            Timing {
                inference_ms,
                training_ms,
            }
        })
        .collect())
}

/// The median of `measure.repeats` timed runs of `run` after `measure.warmup` untimed ones, in
/// milliseconds; the device is synchronised around each timed run.
fn median_ms(measure: Measure, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..measure.warmup {
        run()?;
    }
    measure.device.synchronize()?;
    let mut times = Vec::with_capacity(measure.repeats.max(1));
    for _ in 0..measure.repeats.max(1) {
        let start = Instant::now();
        run()?;
        measure.device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut times))
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

/// One piece timed alone on `measure.device`.
pub fn time_piece(piece: &Piece, measure: Measure) -> Result<Timing> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut module = Module::new(piece, &mut rng)?;
    move_to(&mut |f| module.visit(f), measure.device)?;
    let (channels, resolution, classes) = match *piece {
        Piece::Stem {
            in_channels,
            resolution,
            ..
        }
        | Piece::Layer {
            in_channels,
            resolution,
            ..
        } => (in_channels, resolution, 1),
        Piece::Head {
            in_channels,
            resolution,
            classes,
            ..
        } => (in_channels, resolution, classes),
    };
    let x = random(
        &[measure.batch, channels, resolution, resolution],
        measure.device,
        &mut rng,
    )?;
    let y = module.infer(&x)?;
    let dy = random(y.shape(), measure.device, &mut rng)?;
    let labels: Vec<usize> = (0..measure.batch).map(|i| i % classes).collect();
    let inference_ms = median_ms(measure, || module.infer(&x).map(drop))?;
    let mut sgd = Sgd::new(0.9, 4e-5, true);
    let training_ms = median_ms(measure, || {
        module.forward_backward(&x, &dy, &labels)?;
        sgd.step_visited(&mut |f| module.visit(f), 1e-3)
    })?;
    Ok(Timing {
        inference_ms,
        training_ms,
    })
}

/// A whole network of `arch` timed: `Network::predict` on a batch, and `train_step`.
pub fn time_network(arch: &Arch, provenance: &Provenance, measure: Measure) -> Result<Timing> {
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
    let inference_ms = median_ms(measure, || net.predict(&x).map(drop).map_err(Error::from))?;
    let mut sgd = Sgd::new(0.9, 4e-5, true);
    let training_ms = median_ms(measure, || {
        match train_step(&mut net, &mut sgd, &x, &labels, 0.0, 1e-3) {
            Ok(_) => Ok(()),
            Err(StepError::Failed(e)) => Err(e),
            Err(StepError::Diverged(ce)) => Err(Error::Latency(format!(
                "timing `{}`: the loss of random data became {}",
                arch.name, ce.loss
            ))),
        }
    })?;
    Ok(Timing {
        inference_ms,
        training_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_round_does_not_reach_the_median_over_rounds() {
        let measure = Measure {
            device: Device::Cpu,
            batch: 1,
            warmup: 0,
            repeats: 1,
            passes: 3,
        };
        // Item 1's second round is five times slower (a slow spell of the host).
        let mut calls = 0;
        let mut done = Vec::new();
        let times = in_passes(
            &[1.0, 2.0],
            measure,
            |&base| {
                calls += 1;
                let spell = if calls == 4 { 5.0 } else { 1.0 };
                Ok(Timing {
                    inference_ms: base * spell,
                    training_ms: 2.0 * base * spell,
                })
            },
            &mut |n| done.push(n),
        )
        .unwrap();
        assert_eq!(calls, 6, "each item once a round");
        assert_eq!(done, [1, 2, 3, 4, 5, 6], "the progress reported");
        assert_eq!(times[0].inference_ms, 1.0, "{times:?}");
        assert_eq!(times[1].training_ms, 4.0, "{times:?}");
    }
}
