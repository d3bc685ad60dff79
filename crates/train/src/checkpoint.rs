//! Checkpoints: `model.safetensors` (parameters and BN buffers under the names of ARCH.md, so
//! PyTorch's `load_state_dict` takes it as it is), `arch.json`, and `train_state.safetensors`
//! (the model again, the optimizer's momenta and the training position, from which a run
//! resumes). Every file is written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use eatnas_data::Normalize;
use eatnas_nn::{Arch, Counts, Network};
use eatnas_tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::fs::write_atomic;
use crate::{Error, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const ARCH_FILE: &str = "arch.json";
/// The metadata key under which a model file describes itself.
const MODEL_KEY: &str = "eatnas_model";

/// What, besides the weights, evaluating a model needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub arch: Arch,
    pub in_channels: usize,
    pub classes: usize,
    pub resolution: usize,
    pub normalize: Normalize,
}

/// Serialises named float32 tensors with string metadata.
pub fn encode(
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let host: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.shape().to_vec(), t.to_vec()?)))
        .collect::<Result<_>>()?;
    let views = host
        .iter()
        .map(|(name, shape, values)| {
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(values),
            )
            .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("cannot encode tensors: {e}")))?;
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Config(format!("cannot encode tensors: {e}")))
}

/// Reads a safetensors file: its float32 tensors (PyTorch's integer `num_batches_tracked`
/// buffers are left out) and its metadata.
pub fn decode(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Checkpoint {
        path: path.into(),
        message: e.to_string(),
    })?;
    let bad = |message: String| Error::Checkpoint {
        path: path.into(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}; expected F32",
                view.dtype()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, Tensor::from_vec(values, view.shape())?);
    }
    Ok((tensors, metadata))
}

/// Writes `net`'s parameters and buffers, described by `info`, to `path` atomically.
pub fn save_model(path: &Path, net: &mut Network, info: &ModelInfo) -> Result<()> {
    let metadata = HashMap::from([(
        MODEL_KEY.to_string(),
        serde_json::to_string(info).expect("model info serialises"),
    )]);
    write_atomic(path, &encode(&net.state(), metadata)?)
}

/// The model file of a checkpoint given as the file itself or as its folder.
pub fn model_path(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.join(MODEL_FILE)
    } else {
        checkpoint.to_path_buf()
    }
}

/// Loads a model file. Its own description is used unless `override_info` is given (weights
/// trained elsewhere, e.g. in PyTorch, carry none). Every parameter and buffer of the network
/// must be in the file and nothing else: a checkpoint of another architecture is an error.
pub fn load_model(path: &Path, override_info: Option<ModelInfo>) -> Result<(Network, ModelInfo)> {
    let (tensors, metadata) = decode(path)?;
    let info = match override_info {
        Some(info) => info,
        None => {
            let text = metadata.get(MODEL_KEY).ok_or_else(|| Error::Checkpoint {
                path: path.into(),
                message: "no eatnas description in the metadata (weights from elsewhere?): give the architecture, resolution and dataset".into(),
            })?;
            serde_json::from_str(text).map_err(|e| Error::Checkpoint {
                path: path.into(),
                message: format!("bad eatnas description: {e}"),
            })?
        }
    };
    check_description(&info, &tensors, path)?;
    let mut net = Network::new(&info.arch, info.in_channels, info.classes, 0)?;
    load_exact(&mut net, &tensors, path)?;
    Ok((net, info))
}

/// The most input channels and classes a model file may describe.
const MAX_INPUT_CHANNELS: usize = 64;
const MAX_CLASSES: usize = 1 << 20;
const MAX_RESOLUTION: usize = 8192;

/// Checks a file's description against what it holds before a network is built from it: the
/// values in range, the normalisation one mean and one standard deviation per input channel,
/// and the parameter count that the architecture implies equal to the file's (so that a
/// description claiming a huge network is refused before anything is allocated for it).
pub fn check_description(
    info: &ModelInfo,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let bad = |message: String| Error::Checkpoint {
        path: path.into(),
        message,
    };
    info.arch
        .validate()
        .map_err(|e| bad(format!("the architecture it describes is invalid: {e}")))?;
    for (what, value, max) in [
        ("input channels", info.in_channels, MAX_INPUT_CHANNELS),
        ("classes", info.classes, MAX_CLASSES),
        ("resolution", info.resolution, MAX_RESOLUTION),
    ] {
        if !(1..=max).contains(&value) {
            return Err(bad(format!(
                "describes {value} {what}; expected 1 to {max}"
            )));
        }
    }
    let Normalize { mean, std } = &info.normalize;
    if mean.len() != info.in_channels || std.len() != info.in_channels {
        return Err(bad(format!(
            "its normalisation has {} mean(s) and {} standard deviation(s) for {} input channel(s)",
            mean.len(),
            std.len(),
            info.in_channels
        )));
    }
    if !mean.iter().all(|m| m.is_finite()) || !std.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(bad(format!(
            "its normalisation is not finite and positive: mean {mean:?}, std {std:?}"
        )));
    }
    let expected = Counts::new(&info.arch, info.in_channels, info.resolution, info.classes)?.params;
    let held: u64 = tensors
        .iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum();
    if expected != held {
        return Err(bad(format!(
            "does not fit architecture `{}`: it needs {expected} parameters, the file holds {held}",
            info.arch.name
        )));
    }
    Ok(())
}

/// Loads `tensors` into `net`, requiring exactly the network's names and shapes.
pub fn load_exact(
    net: &mut Network,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let expected = net.state();
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !tensors.contains_key(*k))
        .collect();
    let unknown: Vec<&String> = tensors
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let list = |v: &[&String]| {
            v.iter()
                .take(3)
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::Checkpoint {
            path: path.into(),
            message: format!(
                "does not fit architecture `{}`: {} name(s) missing ({}), {} unexpected ({})",
                net.arch().name,
                missing.len(),
                list(&missing),
                unknown.len(),
                list(&unknown)
            ),
        });
    }
    let name = net.arch().name.clone();
    net.load(tensors).map_err(|e| Error::Checkpoint {
        path: path.into(),
        message: format!("does not fit architecture `{name}`: {e}"),
    })
}
