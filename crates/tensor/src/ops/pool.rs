//! Global average pooling.

use crate::{cuda, Device, Result, Tensor};

/// Mean over each plane.
///
/// # Shapes
/// `x`: (N, C, H, W); returns (N, C)
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = x.dims4("global_avg_pool", "input")?;
    match x.device() {
        Device::Cpu => Tensor::from_vec(cpu::forward(x.cpu_data()?, h * w), &[n, c]),
        device => Err(cuda::unavailable("global_avg_pool", device)),
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
        device => Err(cuda::unavailable("global_avg_pool_backward", device)),
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
        let mut dx = crate::cpu::pool::take(dy.len() * plane);
        let scale = 1.0 / plane as f32;
        dx.par_chunks_mut(plane.max(1))
            .zip(dy.par_iter())
            .for_each(|(p, &g)| p.fill(g * scale));
        dx
    }
}
