//! A standalone PyTorch module whose `load_state_dict` takes an eatnas
//! `model.safetensors` as it is (same parameter names), and whose forward gives the same logits.

use crate::checkpoint::ModelInfo;

/// The Python source of a PyTorch module for `info`'s architecture, with the architecture, the
/// input normalisation and the class count embedded.
pub fn pytorch_module(info: &ModelInfo) -> String {
    let arch = serde_json::to_string(&info.arch).expect("an architecture serialises");
    let normalize = serde_json::to_string(&info.normalize).expect("normalisation serialises");
    TEMPLATE
        .replace("@ARCH@", &arch)
        .replace("@NORMALIZE@", &normalize)
        .replace("@IN_CHANNELS@", &info.in_channels.to_string())
        .replace("@CLASSES@", &info.classes.to_string())
        .replace("@RESOLUTION@", &info.resolution.to_string())
}

/// The module's source with `@ARCH@`, `@NORMALIZE@`, `@IN_CHANNELS@`, `@CLASSES@` and
/// `@RESOLUTION@` to fill in. It lives in its own file so that the PyTorch benchmark baselines
/// build their networks from the very same module.
const TEMPLATE: &str = include_str!("pytorch_module.py.in");
