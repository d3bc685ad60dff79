//! CUDA launches of the convolution (kernels/depthwise.cu, gemm.cu, conv2d.cu), picked like the
//! CPU side: the depthwise kernels for kernels 3, 5, 7 at strides 1, 2; 1x1 as a matrix product
//! straight over NCHW; implicit GEMM for everything else.

use cudarc::driver::CudaSlice;

use super::Conv2dShape;
use crate::cuda::abi::{DepthwiseTile, GemmShape};
use crate::cuda::gemm::{gemm, sum_slices_into};
use crate::cuda::kernels::{DepthwisePass, Kernel};
use crate::cuda::{launch, CudaDevice};
use crate::{Result, Tensor};

/// The specialised depthwise kernel of `pass` for `s`, if there is one (square 3x3, 5x5, 7x7 at
/// stride 1 or 2: the kernel table of `Kernel::depthwise` says which).
fn depthwise_kernel(s: &Conv2dShape, pass: DepthwisePass) -> Option<Kernel> {
    let square = s.kernel_height == s.kernel_width;
    if !(s.is_depthwise() && square) {
        return None;
    }
    Kernel::depthwise(s.kernel_height, s.stride, pass)
}

/// 256 threads over `planes` planes of a tile_h x tile_w tile each, so that 7x7 and smaller
/// planes still fill a block.
fn tile_for(height: usize, width: usize, planes_of_one: bool) -> DepthwiseTile {
    let (tile_h, tile_w, planes) = if width >= 24 {
        (8, 32, 1)
    } else if width >= 12 {
        (16, 16, 1)
    } else if width >= 6 || planes_of_one {
        (8, 8, if planes_of_one { 1 } else { 4 })
    } else {
        (4, 4, 16)
    };
    DepthwiseTile {
        tile_h,
        tile_w,
        planes,
        tiles_y: height.div_ceil(tile_h),
        tiles_x: width.div_ceil(tile_w),
    }
}

fn blocks(s: &Conv2dShape, t: &DepthwiseTile) -> u32 {
    ((s.batch * s.in_channels).div_ceil(t.planes) * t.tiles_y * t.tiles_x) as u32
}

fn config(blocks: u32, t: &DepthwiseTile, shared_floats: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: ((t.tile_h * t.tile_w * t.planes) as u32, 1, 1),
        shared_mem_bytes: (shared_floats * 4) as u32,
    }
}

/// Sums `splits` partial weight gradients of `len` values each into a new buffer.
fn sum_partials(
    dev: &CudaDevice,
    partial: &CudaSlice<f32>,
    splits: usize,
    len: usize,
) -> Result<CudaSlice<f32>> {
    let mut out = dev.alloc(len)?;
    sum_slices_into(
        dev,
        "conv2d_backward_weight",
        partial,
        splits,
        len,
        &mut out,
    )?;
    Ok(out)
}

/// The implicit-GEMM kernels' grid: 64x64 tiles of a rows x columns product, `z` of them
/// (groups, times the splits of a reduction); 256 threads (kernels/tile_gemm.cuh).
fn tile_grid(rows: usize, columns: usize, z: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (
            columns.div_ceil(64) as u32,
            rows.div_ceil(64) as u32,
            z as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// y[n] (Cout x HW) = w (Cout x Cin) . x[n] (Cin x HW)
fn pointwise_forward_shape(s: &Conv2dShape) -> GemmShape {
    let (cin, cout, hw) = (s.in_channels, s.out_channels, s.out_height * s.out_width);
    GemmShape::row_major(cout, hw, cin)
        .with_batch(s.batch)
        .with_shared_a()
}

pub(super) fn forward(x: &Tensor, w: &Tensor, s: &Conv2dShape) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let (xs, ws) = (x.cuda(OP)?, w.cuda(OP)?);
    let dev = &xs.device;
    let mut y = dev.alloc(s.output_dims().iter().product())?;
    if let Some(kernel) = depthwise_kernel(s, DepthwisePass::Forward) {
        let (k, stride) = (s.kernel_height, s.stride);
        let t = tile_for(s.out_height, s.out_width, false);
        let shared = t.planes * ((t.tile_h - 1) * stride + k) * ((t.tile_w - 1) * stride + k);
        let cfg = config(blocks(s, &t), &t, shared);
        launch!(dev, OP, kernel, cfg, [s, &t, &xs.slice, &ws.slice, &mut y])?;
    } else if s.is_pointwise() {
        gemm(
            dev,
            pointwise_forward_shape(s),
            &ws.slice,
            &xs.slice,
            &mut y,
        )?;
    } else {
        let cfg = tile_grid(
            s.out_channels / s.groups,
            s.batch * s.out_height * s.out_width,
            s.groups,
        );
        launch!(
            dev,
            OP,
            Kernel::Conv2dForward,
            cfg,
            [s, &xs.slice, &ws.slice, &mut y]
        )?;
    }
    Ok(Tensor::from_cuda(y, dev.clone(), &s.output_dims()))
}

/// The input gradient.
pub(super) fn backward_input(w: &Tensor, dy: &Tensor, s: &Conv2dShape) -> Result<Tensor> {
    const OP: &str = "conv2d_backward";
    let (ws, gs) = (w.cuda(OP)?, dy.cuda(OP)?);
    let dev = &ws.device;
    let len: usize = s.input_dims().iter().product();
    let mut dx = dev.alloc(len)?;
    if let Some(kernel) = depthwise_kernel(s, DepthwisePass::BackwardInput) {
        let (k, stride) = (s.kernel_height, s.stride);
        let t = tile_for(s.in_height, s.in_width, false);
        let rows = (t.tile_h + k - 2) / stride + 2;
        let cols = (t.tile_w + k - 2) / stride + 2;
        let cfg = config(blocks(s, &t), &t, t.planes * rows * cols);
        launch!(dev, OP, kernel, cfg, [s, &t, &gs.slice, &ws.slice, &mut dx])?;
    } else if s.is_pointwise() {
        let (cin, cout, hw) = (s.in_channels, s.out_channels, s.out_height * s.out_width);
        // dx[n] (Cin x HW) = w^T (Cin x Cout) . dy[n] (Cout x HW)
        let shape = GemmShape::row_major(cin, hw, cout)
            .with_a_transposed()
            .with_batch(s.batch)
            .with_shared_a();
        gemm(dev, shape, &ws.slice, &gs.slice, &mut dx)?;
    } else {
        let cfg = tile_grid(
            s.in_channels / s.groups,
            s.batch * s.in_height * s.in_width,
            s.groups,
        );
        launch!(
            dev,
            OP,
            Kernel::Conv2dBackwardInput,
            cfg,
            [s, &gs.slice, &ws.slice, &mut dx]
        )?;
    }
    Ok(Tensor::from_cuda(dx, dev.clone(), &s.input_dims()))
}

pub(super) fn backward_weight(x: &Tensor, dy: &Tensor, s: &Conv2dShape) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    let (xs, gs) = (x.cuda(OP)?, dy.cuda(OP)?);
    let dev = &xs.device;
    let len: usize = s.weight_dims().iter().product();
    let pixels = s.batch * s.out_height * s.out_width;
    let dw = if let Some(kernel) = depthwise_kernel(s, DepthwisePass::BackwardWeight) {
        let (k, stride) = (s.kernel_height, s.stride);
        let t = tile_for(s.out_height, s.out_width, true);
        let splits = dev.reduction_splits(s.in_channels, pixels).min(s.batch);
        let mut partial = dev.alloc(splits * len)?;
        let shared = ((t.tile_h - 1) * stride + k) * ((t.tile_w - 1) * stride + k);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (s.in_channels as u32, splits as u32, 1),
            block_dim: ((t.tile_h * t.tile_w) as u32, 1, 1),
            shared_mem_bytes: (shared * 4) as u32,
        };
        launch!(
            dev,
            OP,
            kernel,
            cfg,
            [s, &t, &xs.slice, &gs.slice, &mut partial, &splits]
        )?;
        sum_partials(dev, &partial, splits, len)?
    } else if s.is_pointwise() {
        let (cin, cout, hw) = (s.in_channels, s.out_channels, s.out_height * s.out_width);
        // dw (Cout x Cin) = sum over images of dy[n] (Cout x HW) . x[n]^T (HW x Cin)
        let shape = GemmShape::row_major(cout, cin, hw)
            .with_b_transposed()
            .with_batch(s.batch)
            .with_batch_summed();
        let mut dw = dev.alloc(len)?;
        gemm(dev, shape, &gs.slice, &xs.slice, &mut dw)?;
        dw
    } else {
        let cout_g = s.out_channels / s.groups;
        let k_total = (s.in_channels / s.groups) * s.kernel_height * s.kernel_width;
        let tiles = cout_g.div_ceil(64) * k_total.div_ceil(64) * s.groups;
        let splits = dev.reduction_splits(tiles, pixels);
        let mut partial = dev.alloc(splits * len)?;
        let cfg = tile_grid(cout_g, k_total, s.groups * splits);
        launch!(
            dev,
            OP,
            Kernel::Conv2dBackwardWeight,
            cfg,
            [s, &xs.slice, &gs.slice, &mut partial, &splits]
        )?;
        sum_partials(dev, &partial, splits, len)?
    };
    Ok(Tensor::from_cuda(dw, dev.clone(), &s.weight_dims()))
}
