//! The operations, each with its forward and backward side by side.

pub mod batch_norm;
pub mod conv2d;
pub mod cross_entropy;
pub mod elementwise;
pub mod linear;
pub mod mbconv;
pub mod pool;
pub mod sgd;
