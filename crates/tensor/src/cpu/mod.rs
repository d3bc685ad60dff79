//! Helpers shared by the CPU kernels of every op.

pub(crate) mod gemm;
