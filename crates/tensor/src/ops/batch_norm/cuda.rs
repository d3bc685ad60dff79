//! CUDA launches of batch norm (kernels/batch_norm.cu): split reductions for the per-channel
//! sums, a per-channel finalize, and one element-wise pass that applies the fused ReLU.

use cudarc::driver::CudaSlice;

use super::{BatchNormConfig, BatchNormStats, Normalized};
use crate::cuda::abi::PlaneShape;
use crate::cuda::kernels::Kernel;
use crate::cuda::{grid_1d, launch, THREADS};
use crate::{Result, Tensor};

#[allow(clippy::too_many_arguments)]
pub(super) fn train_forward(
    x: &Tensor,
    dims: [usize; 4],
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    config: BatchNormConfig,
    relu: bool,
) -> Result<(Normalized, BatchNormStats)> {
    let BatchNormConfig { momentum, eps } = config;
    const OP: &str = "batch_norm2d_train";
    let s = PlaneShape::of(dims);
    let xs = x.cuda(OP)?;
    let dev = xs.device.clone();
    let channels = s.channels;
    let splits = dev.reduction_splits(channels, s.batch * s.plane);
    let mut partial = dev.zeros_f64(splits * channels * 2)?;
    let cfg = crate::cuda::grid_2d(channels, splits, THREADS, 0);
    launch!(
        dev,
        OP,
        Kernel::BatchNormPartialSums,
        cfg,
        [&s, &xs.slice, &mut partial, &splits]
    )?;
    let (mut mean, mut inv_std) = (dev.alloc(channels)?, dev.alloc(channels)?);
    let (mut scale, mut shift) = (dev.alloc(channels)?, dev.alloc(channels)?);
    {
        let (w, b) = (&weight.cuda(OP)?.slice, &bias.cuda(OP)?.slice);
        let rm = running_mean.cuda_mut(OP)?;
        let rv = running_var.cuda_mut(OP)?;
        launch!(
            dev,
            OP,
            Kernel::BatchNormFinalize,
            grid_1d(channels),
            [
                &s,
                &partial,
                &splits,
                &xs.slice,
                w,
                b,
                &mut mean,
                &mut inv_std,
                &mut scale,
                &mut shift,
                rm,
                rv,
                &momentum,
                &eps,
            ]
        )?;
    }
    let stats = BatchNormStats {
        mean: Tensor::from_cuda(mean, dev.clone(), &[channels]),
        inv_std: Tensor::from_cuda(inv_std, dev.clone(), &[channels]),
        bias: bias.clone(),
        training: true,
        relu,
    };
    let normalized = Normalized {
        x: x.clone(),
        scale: Tensor::from_cuda(scale, dev.clone(), &[channels]),
        shift: Tensor::from_cuda(shift, dev, &[channels]),
        relu,
    };
    Ok((normalized, stats))
}

/// `y = x * scale + shift` per channel, then `max(y, 0)` when `relu` (`batch_norm_apply_f32`).
pub(super) fn apply(
    op: &'static str,
    x: &Tensor,
    dims: [usize; 4],
    scale: &Tensor,
    shift: &Tensor,
    relu: bool,
) -> Result<Tensor> {
    let s = PlaneShape::of(dims);
    let xs = x.cuda(op)?;
    let dev = xs.device.clone();
    let mut y = dev.alloc(s.len())?;
    let relu_flag = relu as i32;
    let (scale, shift) = (&scale.cuda(op)?.slice, &shift.cuda(op)?.slice);
    launch!(
        dev,
        op,
        Kernel::BatchNormApply,
        grid_1d(s.len()),
        [&s, &xs.slice, scale, shift, &relu_flag, &mut y]
    )?;
    Ok(Tensor::from_cuda(y, dev, x.shape()))
}

/// Inference batch norm as per-channel constants: `y = x * scale + shift`.
pub(crate) struct EvalAffine {
    pub inv_std: CudaSlice<f32>,
    pub scale: CudaSlice<f32>,
    pub shift: CudaSlice<f32>,
}

/// inv_std, scale and shift from the running statistics (`batch_norm_eval_affine_f32`), for the
/// inference op here and the fused MBConv block.
pub(crate) fn eval_affine(
    op: &'static str,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<EvalAffine> {
    let dev = &weight.cuda(op)?.device;
    let channels = weight.elem_count();
    let (mut inv_std, mut scale, mut shift) = (
        dev.alloc(channels)?,
        dev.alloc(channels)?,
        dev.alloc(channels)?,
    );
    launch!(
        dev,
        op,
        Kernel::BatchNormEvalAffine,
        grid_1d(channels),
        [
            &channels,
            &running_mean.cuda(op)?.slice,
            &running_var.cuda(op)?.slice,
            &weight.cuda(op)?.slice,
            &bias.cuda(op)?.slice,
            &eps,
            &mut inv_std,
            &mut scale,
            &mut shift,
        ]
    )?;
    Ok(EvalAffine {
        inv_std,
        scale,
        shift,
    })
}

pub(super) fn eval_forward(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<(Normalized, BatchNormStats)> {
    const OP: &str = "batch_norm2d_eval";
    let dev = x.cuda(OP)?.device.clone();
    let channels = weight.elem_count();
    let EvalAffine {
        inv_std,
        scale,
        shift,
    } = eval_affine(OP, weight, bias, running_mean, running_var, eps)?;
    let stats = BatchNormStats {
        mean: running_mean.clone(),
        inv_std: Tensor::from_cuda(inv_std, dev.clone(), &[channels]),
        bias: bias.clone(),
        training: false,
        relu,
    };
    let normalized = Normalized {
        x: x.clone(),
        scale: Tensor::from_cuda(scale, dev.clone(), &[channels]),
        shift: Tensor::from_cuda(shift, dev, &[channels]),
        relu,
    };
    Ok((normalized, stats))
}

pub(super) fn backward(
    x: &Tensor,
    dims: [usize; 4],
    weight: &Tensor,
    stats: &BatchNormStats,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm2d_backward";
    let s = PlaneShape::of(dims);
    let xs = x.cuda(OP)?;
    let dev = xs.device.clone();
    let channels = s.channels;
    let (g, w) = (&dy.cuda(OP)?.slice, &weight.cuda(OP)?.slice);
    let (mean, inv_std, b) = (
        &stats.mean.cuda(OP)?.slice,
        &stats.inv_std.cuda(OP)?.slice,
        &stats.bias.cuda(OP)?.slice,
    );
    let (relu, training) = (stats.relu as i32, stats.training as i32);
    let splits = dev.reduction_splits(channels, s.batch * s.plane);
    let mut partial = dev.zeros_f64(splits * channels * 2)?;
    let cfg = crate::cuda::grid_2d(channels, splits, THREADS, 0);
    launch!(
        dev,
        OP,
        Kernel::BatchNormBackwardPartialSums,
        cfg,
        [
            &s,
            &xs.slice,
            g,
            mean,
            inv_std,
            w,
            b,
            &relu,
            &mut partial,
            &splits,
        ]
    )?;
    let (mut dweight, mut dbias) = (dev.alloc(channels)?, dev.alloc(channels)?);
    launch!(
        dev,
        OP,
        Kernel::BatchNormBackwardFinalize,
        grid_1d(channels),
        [&s, &partial, &splits, inv_std, &mut dweight, &mut dbias,]
    )?;
    let mut dx = dev.alloc(s.len())?;
    launch!(
        dev,
        OP,
        Kernel::BatchNormBackwardApply,
        grid_1d(s.len()),
        [&s, &xs.slice, g, mean, inv_std, w, b, &dweight, &dbias, &relu, &training, &mut dx,]
    )?;
    Ok((
        Tensor::from_cuda(dx, dev.clone(), x.shape()),
        Tensor::from_cuda(dweight, dev.clone(), &[channels]),
        Tensor::from_cuda(dbias, dev, &[channels]),
    ))
}
