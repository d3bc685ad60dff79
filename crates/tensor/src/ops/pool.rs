//! Global average pooling.

use crate::{Device, Result, Tensor};

/// Mean over each plane.
///
/// # Shapes
/// `x`: (N, C, H, W); returns (N, C)
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = x.dims4("global_avg_pool", "input")?;
    match x.device() {
        Device::Cpu => Tensor::from_vec(cpu::forward(x.cpu_data()?, h * w), &[n, c]),
        Device::Cuda(_) => cuda::forward(x, [n, c, h, w]),
    }
}

/// Spreads each pooled gradient evenly over its plane.
///
/// # Shapes
/// `dy`: (N, C); `input_dims`: the pooled input's (N, C, H, W); returns (N, C, H, W)
pub fn global_avg_pool_backward(dy: &Tensor, input_dims: [usize; 4]) -> Result<Tensor> {
    let [n, c, h, w] = input_dims;
    dy.expect_shape("global_avg_pool_backward", "output gradient", &[n, c])?;
    match dy.device() {
        Device::Cpu => Tensor::from_vec(cpu::backward(dy.cpu_data()?, h * w), &input_dims),
        Device::Cuda(_) => cuda::backward(dy, input_dims),
    }
}

mod cpu {
    use rayon::prelude::*;

    pub(super) fn forward(x: &[f32], plane: usize) -> Vec<f32> {
        x.par_chunks(plane.max(1))
            .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
            .collect()
    }

    pub(super) fn backward(dy: &[f32], plane: usize) -> Vec<f32> {
        let mut dx = crate::cpu::workspace::take(dy.len() * plane);
        let scale = 1.0 / plane as f32;
        dx.par_chunks_mut(plane.max(1))
            .zip(dy.par_iter())
            .for_each(|(p, &g)| p.fill(g * scale));
        dx
    }
}

mod cuda {
    use crate::cuda::kernels::Kernel;
    use crate::cuda::{grid_1d, launch};
    use crate::{Result, Tensor};
    use cudarc::driver::LaunchConfig;

    pub(super) fn forward(x: &Tensor, [n, c, h, w]: [usize; 4]) -> Result<Tensor> {
        const OP: &str = "global_avg_pool";
        let xs = x.cuda(OP)?;
        let dev = &xs.device;
        let (planes, plane) = (n * c, h * w);
        let mut y = dev.alloc(planes)?;
        // One warp per plane, eight per block.
        let cfg = LaunchConfig {
            grid_dim: (planes.div_ceil(8).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            dev,
            OP,
            Kernel::GlobalAvgPoolForward,
            cfg,
            [&xs.slice, &mut y, &planes, &plane]
        )?;
        Ok(Tensor::from_cuda(y, dev.clone(), &[n, c]))
    }

    pub(super) fn backward(dy: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
        const OP: &str = "global_avg_pool_backward";
        let gs = dy.cuda(OP)?;
        let dev = &gs.device;
        let (planes, plane) = (dims[0] * dims[1], dims[2] * dims[3]);
        let mut dx = dev.alloc(planes * plane)?;
        launch!(
            dev,
            OP,
            Kernel::GlobalAvgPoolBackward,
            grid_1d(planes * plane),
            [&gs.slice, &mut dx, &planes, &plane]
        )?;
        Ok(Tensor::from_cuda(dx, dev.clone(), &dims))
    }
}
