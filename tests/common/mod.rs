//! Helpers shared by the end-to-end tests: fixture loading and the fixtures' comparison rule.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use eatnas_tensor::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// The fixture folder: `$EATNAS_TORCH_FIXTURES`, else `../shared/fixtures/torch` beside the
/// checkout.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("EATNAS_TORCH_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torch"),
    }
}

/// One conformance case: its metadata (JSON-decoded) and tensors.
pub struct Fixture {
    pub name: String,
    pub meta: HashMap<String, Value>,
    pub floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub ints: HashMap<String, Vec<i64>>,
}

impl Fixture {
    pub fn load(path: &std::path::Path) -> Result<Fixture, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (_, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = metadata
            .metadata()
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            serde_json::from_str(v).map_err(|e| format!("metadata {k}: {e}"))?,
                        ))
                    })
                    .collect::<Result<HashMap<_, _>, String>>()
            })
            .transpose()?
            .unwrap_or_default();
        let tensors =
            SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut floats, mut ints) = (HashMap::new(), HashMap::new());
        for (name, view) in tensors.tensors() {
            match view.dtype() {
                Dtype::F32 => {
                    let values = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    floats.insert(name, (view.shape().to_vec(), values));
                }
                Dtype::I64 => {
                    let values = view
                        .data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    ints.insert(name, values);
                }
                other => {
                    return Err(format!(
                        "{}: tensor {name} has dtype {other:?}, expected F32 or I64",
                        path.display()
                    ))
                }
            }
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        Ok(Fixture {
            name,
            meta,
            floats,
            ints,
        })
    }

    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor, String> {
        let (shape, values) = self
            .floats
            .get(name)
            .ok_or_else(|| format!("{}: no tensor `{name}`", self.name))?;
        Tensor::from_vec(values.clone(), shape)
            .and_then(|t| t.to_device(device))
            .map_err(|e| e.to_string())
    }

    pub fn labels(&self, name: &str) -> Result<Vec<usize>, String> {
        let values = self
            .ints
            .get(name)
            .ok_or_else(|| format!("{}: no int64 tensor `{name}`", self.name))?;
        Ok(values.iter().map(|&v| v as usize).collect())
    }

    pub fn meta_str(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: metadata `{key}` is not a string", self.name))
    }

    pub fn meta_usize(&self, key: &str) -> Result<usize, String> {
        self.meta
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("{}: metadata `{key}` is not a count", self.name))
    }

    pub fn meta_f64(&self, key: &str) -> Result<f64, String> {
        self.meta
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{}: metadata `{key}` is not a number", self.name))
    }

    pub fn meta_bool(&self, key: &str) -> Result<bool, String> {
        self.meta
            .get(key)
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("{}: metadata `{key}` is not a boolean", self.name))
    }
}

/// Forward values, running statistics and losses.
pub const FORWARD: (f64, f64) = (1e-4, 1e-6);
/// Gradients.
pub const GRADIENT: (f64, f64) = (1e-3, 1e-5);

/// The fixtures' rule: `||got - want|| <= rtol ||want|| + atol sqrt(n)` (L2 over the tensor);
/// NaN never passes. Returns the error-to-bound ratio (below 1 passes) or why it fails.
pub fn compare(
    what: &str,
    got: &Tensor,
    want_shape: &[usize],
    want: &[f32],
    (rtol, atol): (f64, f64),
) -> Result<f64, String> {
    if got.shape() != want_shape {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.shape(),
            want_shape
        ));
    }
    let got = got.to_vec().map_err(|e| e.to_string())?;
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        if g.is_nan() {
            return Err(format!("{what}: NaN in the result"));
        }
        diff += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    let bound = rtol * norm.sqrt() + atol * (want.len() as f64).sqrt();
    let ratio = diff.sqrt() / bound;
    if ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err(format!(
            "{what}: error {:.3e} exceeds bound {bound:.3e} ({ratio:.2}x)",
            diff.sqrt()
        ))
    }
}
