//! Batch normalisation over the channels of NCHW tensors, in training mode (batch statistics,
//! running statistics updated as PyTorch does) and in inference mode (running statistics).

mod cpu;
pub(crate) mod cuda;

use crate::tensor::common_device;
use crate::{Device, Error, Result, Tensor};

/// What the backward pass needs from the forward pass: the per-channel mean and 1/sqrt(var+eps)
/// that normalised the input, and whether they were batch statistics (training) or running ones.
#[derive(Clone, Debug)]
pub struct BatchNormStats {
    /// (C,)
    pub mean: Tensor,
    /// (C,)
    pub inv_std: Tensor,
    /// (C,): the bias the forward pass added (the backward pass recomputes the ReLU mask).
    pub bias: Tensor,
    pub training: bool,
    /// Whether a ReLU followed the normalisation in the same pass.
    pub relu: bool,
}

/// A batch norm's output not yet written out: `y = x * scale + shift` per channel, then
/// `max(y, 0)` when `relu`. A consumer that reads its input once (the depthwise convolution of
/// an MBConv block) applies the map as it reads, so the normalised tensor never exists in
/// memory; [`Normalized::materialize`] writes it for every other consumer.
#[derive(Clone, Debug)]
pub struct Normalized {
    /// (N, C, H, W): the batch norm's input.
    pub x: Tensor,
    /// (C,)
    pub scale: Tensor,
    /// (C,)
    pub shift: Tensor,
    pub relu: bool,
}

impl Normalized {
    /// The normalised tensor, shaped as `x`: one streaming pass.
    pub fn materialize(&self) -> Result<Tensor> {
        const OP: &str = "batch_norm2d_apply";
        let dims = check(
            OP,
            &self.x,
            &[("scale", &self.scale), ("shift", &self.shift)],
        )?;
        match common_device(OP, &[&self.x, &self.scale, &self.shift])? {
            Device::Cpu => {
                let affine = self.host_affine()?;
                let y = cpu::normalize(self.x.cpu_data()?, dims, &affine, self.relu);
                Tensor::from_vec(y, self.x.shape())
            }
            Device::Cuda(_) => cuda::apply(OP, &self.x, dims, &self.scale, &self.shift, self.relu),
        }
    }

    /// `(scale, shift)` of every channel, from host tensors.
    pub(crate) fn host_affine(&self) -> Result<Vec<(f32, f32)>> {
        let (scale, shift) = (self.scale.cpu_data()?, self.shift.cpu_data()?);
        Ok(scale.iter().copied().zip(shift.iter().copied()).collect())
    }

    /// (N, C, H, W) of the normalised tensor.
    pub fn shape(&self) -> &[usize] {
        self.x.shape()
    }
}

fn check(op: &'static str, x: &Tensor, per_channel: &[(&str, &Tensor)]) -> Result<[usize; 4]> {
    let dims = x.dims4(op, "input")?;
    for (what, t) in per_channel {
        t.expect_shape(op, what, &[dims[1]])?;
    }
    Ok(dims)
}

/// A batch norm's settings: `eps` is added to the variance; in training the running statistics
/// move by `momentum` towards the batch's. [`Default`] is PyTorch's BatchNorm2d (0.1, 1e-5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNormConfig {
    pub const PYTORCH: BatchNormConfig = BatchNormConfig {
        momentum: 0.1,
        eps: 1e-5,
    };
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig::PYTORCH
    }
}

/// Training-mode batch norm: normalises with the batch mean and biased variance, and moves the
/// running mean and running (unbiased) variance by `config.momentum` towards the batch's.
///
/// # Shapes
/// - `x`: (N, C, H, W); `weight`, `bias`, `running_mean`, `running_var`: (C,)
/// - returns `y` shaped as `x` and the statistics for [`batch_norm2d_backward`]
pub fn batch_norm2d_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    config: BatchNormConfig,
) -> Result<(Tensor, BatchNormStats)> {
    batch_norm2d_train_act(x, weight, bias, running_mean, running_var, config, false)
}

/// [`batch_norm2d_train`] followed by a ReLU when `relu` (the statistics in one sweep, the
/// normalisation and the ReLU in a second).
///
/// # Shapes
/// as [`batch_norm2d_train`]
pub fn batch_norm2d_train_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    config: BatchNormConfig,
    relu: bool,
) -> Result<(Tensor, BatchNormStats)> {
    let (normalized, stats) =
        batch_norm2d_train_deferred(x, weight, bias, running_mean, running_var, config, relu)?;
    Ok((normalized.materialize()?, stats))
}

/// [`batch_norm2d_train_act`] without the output pass: the batch statistics (and the running
/// ones updated), with the normalisation returned as a [`Normalized`] map for the consumer to
/// apply.
///
/// # Shapes
/// as [`batch_norm2d_train`]; the map's `x` is `x`
pub fn batch_norm2d_train_deferred(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    config: BatchNormConfig,
    relu: bool,
) -> Result<(Normalized, BatchNormStats)> {
    let BatchNormConfig { momentum, eps } = config;
    const OP: &str = "batch_norm2d_train";
    let dims = check(
        OP,
        x,
        &[
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let count = dims[0] * dims[2] * dims[3];
    if count < 2 {
        return Err(Error::argument(
            OP,
            format!("training needs more than one value per channel to estimate a variance, got input {:?}", x.shape()),
        ));
    }
    match common_device(OP, &[x, weight, bias, running_mean, running_var])? {
        Device::Cpu => {
            let (mean, var) = cpu::moments(x.cpu_data()?, dims);
            let inv_std: Vec<f32> = var.iter().map(|&v| cpu::inv_std(v, eps)).collect();
            let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            let affine = cpu::affine(&mean32, &inv_std, weight.cpu_data()?, bias.cpu_data()?);
            let unbias = count as f64 / (count - 1) as f64;
            let momentum64 = momentum as f64;
            for (r, m) in running_mean.cpu_data_mut()?.iter_mut().zip(&mean) {
                *r = ((1.0 - momentum64) * *r as f64 + momentum64 * m) as f32;
            }
            for (r, v) in running_var.cpu_data_mut()?.iter_mut().zip(&var) {
                *r = ((1.0 - momentum64) * *r as f64 + momentum64 * v * unbias) as f32;
            }
            let channels = [dims[1]];
            let stats = BatchNormStats {
                mean: Tensor::from_vec(mean32, &channels)?,
                inv_std: Tensor::from_vec(inv_std, &channels)?,
                bias: bias.clone(),
                training: true,
                relu,
            };
            Ok((host_normalized(x, &affine, relu)?, stats))
        }
        Device::Cuda(_) => cuda::train_forward(
            x,
            dims,
            weight,
            bias,
            running_mean,
            running_var,
            config,
            relu,
        ),
    }
}

/// A [`Normalized`] map over `x` from per-channel `(scale, shift)` pairs on the host.
fn host_normalized(x: &Tensor, affine: &[(f32, f32)], relu: bool) -> Result<Normalized> {
    let channels = [affine.len()];
    Ok(Normalized {
        x: x.clone(),
        scale: Tensor::from_vec(affine.iter().map(|a| a.0).collect(), &channels)?,
        shift: Tensor::from_vec(affine.iter().map(|a| a.1).collect(), &channels)?,
        relu,
    })
}

/// Inference-mode batch norm with the running statistics.
///
/// # Shapes
/// as [`batch_norm2d_train`]; the running statistics are only read.
pub fn batch_norm2d_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    config: BatchNormConfig,
) -> Result<(Tensor, BatchNormStats)> {
    batch_norm2d_eval_act(x, weight, bias, running_mean, running_var, config, false)
}

/// [`batch_norm2d_eval`] followed by a ReLU when `relu`, in one pass.
///
/// # Shapes
/// as [`batch_norm2d_train`]; the running statistics are only read.
pub fn batch_norm2d_eval_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    config: BatchNormConfig,
    relu: bool,
) -> Result<(Tensor, BatchNormStats)> {
    let (normalized, stats) =
        batch_norm2d_eval_deferred(x, weight, bias, running_mean, running_var, config, relu)?;
    Ok((normalized.materialize()?, stats))
}

/// [`batch_norm2d_eval_act`] as a [`Normalized`] map, for the consumer to apply.
///
/// # Shapes
/// as [`batch_norm2d_train`]; the running statistics are only read.
pub fn batch_norm2d_eval_deferred(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    config: BatchNormConfig,
    relu: bool,
) -> Result<(Normalized, BatchNormStats)> {
    const OP: &str = "batch_norm2d_eval";
    let eps = config.eps;
    check(
        OP,
        x,
        &[
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    match common_device(OP, &[x, weight, bias, running_mean, running_var])? {
        Device::Cpu => {
            let inv_std: Vec<f32> = running_var
                .cpu_data()?
                .iter()
                .map(|&v| cpu::inv_std(v as f64, eps))
                .collect();
            let mean = running_mean.cpu_data()?;
            let affine = cpu::affine(mean, &inv_std, weight.cpu_data()?, bias.cpu_data()?);
            let stats = BatchNormStats {
                mean: running_mean.clone(),
                inv_std: Tensor::from_vec(inv_std, &[affine.len()])?,
                bias: bias.clone(),
                training: false,
                relu,
            };
            Ok((host_normalized(x, &affine, relu)?, stats))
        }
        Device::Cuda(_) => {
            cuda::eval_forward(x, weight, bias, running_mean, running_var, eps, relu)
        }
    }
}

/// Batch norm backward (through the ReLU when the forward pass had one), in the mode the
/// statistics came from.
///
/// # Shapes
/// - `x`, `dy`: (N, C, H, W); `weight`: (C,)
/// - returns (`dx` shaped as `x`, `dweight` (C,), `dbias` (C,))
pub fn batch_norm2d_backward(
    x: &Tensor,
    weight: &Tensor,
    stats: &BatchNormStats,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm2d_backward";
    let dims = check(
        OP,
        x,
        &[
            ("weight", weight),
            ("mean", &stats.mean),
            ("inv_std", &stats.inv_std),
            ("bias", &stats.bias),
        ],
    )?;
    dy.expect_shape(OP, "output gradient", x.shape())?;
    match common_device(
        OP,
        &[x, weight, &stats.mean, &stats.inv_std, &stats.bias, dy],
    )? {
        Device::Cpu => {
            let (mean, inv_std) = (stats.mean.cpu_data()?, stats.inv_std.cpu_data()?);
            let affine = cpu::affine(mean, inv_std, weight.cpu_data()?, stats.bias.cpu_data()?);
            let (dx, dweight, dbias) = cpu::backward(
                x.cpu_data()?,
                dy.cpu_data()?,
                dims,
                mean,
                inv_std,
                weight.cpu_data()?,
                &affine,
                stats.training,
                stats.relu,
            );
            let channels = [dims[1]];
            Ok((
                Tensor::from_vec(dx, x.shape())?,
                Tensor::from_vec(dweight, &channels)?,
                Tensor::from_vec(dbias, &channels)?,
            ))
        }
        Device::Cuda(_) => cuda::backward(x, dims, weight, stats, dy),
    }
}
