//! Export to the ecosystem: a standalone PyTorch module that loads an eatnas checkpoint as it is
//! ([`pytorch_module`]), and an ONNX model for inference runtimes ([`onnx_model`]).

mod onnx;
pub mod onnx_proto;
mod pytorch;

pub use onnx::{fold_batch_norm, onnx_model, INPUT, IR_VERSION, OPSET, OUTPUT};
pub use pytorch::pytorch_module;
