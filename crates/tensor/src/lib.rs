//! eatnas-tensor: float32 NCHW tensors on a CPU or CUDA device, and the operations of the
//! EAT-NAS search space (convolutions, batch norm, ReLU, pooling, linear, cross-entropy), each
//! with its backward.
//!
//! Every operation checks its operands' shapes and devices and returns an [`Error`] that names
//! what was expected and what arrived; none panics on bad input.

mod cpu;
mod cuda;
mod device;
mod error;
pub mod ops;
mod storage;
mod tensor;

/// The CPU workspace (see `cpu::workspace`): empty it, or read how much it holds.
pub use cpu::workspace::{held_bytes as workspace_bytes, release as release_workspace};
pub use device::Device;
pub use error::{Error, Result};
pub use ops::batch_norm::{
    batch_norm2d_backward, batch_norm2d_eval, batch_norm2d_eval_act, batch_norm2d_eval_deferred,
    batch_norm2d_train, batch_norm2d_train_act, batch_norm2d_train_deferred, BatchNormConfig,
    BatchNormStats, Normalized,
};
pub use ops::conv2d::{
    conv2d, conv2d_backward, conv2d_backward_weight, conv2d_normalized, conv2d_normalized_backward,
    conv_output_size, Conv2dParams, Conv2dShape,
};
pub use ops::cross_entropy::{softmax_cross_entropy, CrossEntropy};
pub use ops::elementwise::{add, relu, relu_backward};
pub use ops::linear::{linear, linear_backward};
pub use ops::mbconv::{mbconv_inference, BnInference, MbconvWeights};
pub use ops::pool::{global_avg_pool, global_avg_pool_backward};
pub use ops::sgd::{sgd_step, SgdStep};
pub use tensor::Tensor;

/// The vector instructions the CPU backend uses here: `avx512`, `avx2` or `portable`
/// (`EATNAS_SIMD` can lower it). Speeds measured on one level do not hold on another.
pub fn cpu_simd() -> &'static str {
    match cpu::simd::level() {
        cpu::simd::Level::Avx512 => "avx512",
        cpu::simd::Level::Avx2 => "avx2",
        cpu::simd::Level::Portable => "portable",
    }
}

/// The sha256 of the CUDA kernel sources (`kernels/*.cu`) the embedded PTX was built from: it
/// names the kernels a measurement ran on.
pub fn kernel_sources_sha256() -> &'static str {
    include_str!("../../../kernels/ptx/SOURCES.sha256")
        .lines()
        .next()
        .unwrap_or("")
        .trim()
}
