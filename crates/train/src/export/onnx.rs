//! Export to ONNX for inference: the network as a graph of standard operators (opset
//! [`OPSET`]), each batch norm folded into the convolution before it, the weights stored in the
//! file.
//!
//! The graph: `input` (batch, C, R, R) float, normalised as the metadata's `eatnas.normalize`
//! says -> stem Conv+Relu -> per layer Conv(+Relu) ... (+ Add for a shortcut) -> head Conv+Relu ->
//! GlobalAveragePool -> Flatten -> Gemm -> `logits` (batch, classes). The batch axis is free
//! (`dim_param` "batch"). Every value is named after the eatnas layer that writes it (`stem`,
//! `blocks.2.0.expand`, ...), so a node of the graph is found from a parameter name of ARCH.md.

use std::collections::BTreeMap;

use eatnas_tensor::{BatchNormConfig, Tensor};
use prost::Message;

use super::onnx_proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, FLOAT,
};
use crate::checkpoint::ModelInfo;
use crate::{Error, Result};

/// The default domain's operator set the graph uses (Conv, Relu, Add, GlobalAveragePool,
/// Flatten, Gemm: unchanged since opset 13).
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`] (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// The graph's input and output names.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

/// The ONNX model (serialised `ModelProto`) of a network described by `info`, whose parameters
/// and buffers are `state` (the names of ARCH.md, as `Network::state` gives them).
pub fn onnx_model(info: &ModelInfo, state: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut graph = Graph::new(state);
    let arch = &info.arch;
    let mut x = graph.conv_bn("stem", INPUT, arch.stem.stride, 1, true)?;
    for (b, layers) in arch.layers().iter().enumerate() {
        for (l, spec) in layers.iter().enumerate() {
            let prefix = format!("blocks.{b}.{l}");
            let y = match spec.op.expansion() {
                Some(t) => {
                    let h = graph.conv_bn(&format!("{prefix}.expand"), &x, 1, 1, true)?;
                    let hidden = spec.in_channels * t;
                    let h = graph.conv_bn(
                        &format!("{prefix}.depthwise"),
                        &h,
                        spec.stride,
                        hidden,
                        true,
                    )?;
                    graph.conv_bn(&format!("{prefix}.project"), &h, 1, 1, false)?
                }
                None => {
                    let h = graph.conv_bn(
                        &format!("{prefix}.depthwise"),
                        &x,
                        spec.stride,
                        spec.in_channels,
                        true,
                    )?;
                    graph.conv_bn(&format!("{prefix}.pointwise"), &h, 1, 1, true)?
                }
            };
            x = if spec.residual {
                graph.node("Add", &[&y, &x], &prefix, vec![])
            } else {
                y
            };
        }
    }
    let features = graph.conv_bn("head", &x, 1, 1, true)?;
    let pooled = graph.node("GlobalAveragePool", &[&features], "head.pool", vec![]);
    let flat = graph.node("Flatten", &[&pooled], "head.flatten", vec![int("axis", 1)]);
    graph.initializer("classifier.weight", graph.tensor("classifier.weight")?)?;
    graph.initializer("classifier.bias", graph.tensor("classifier.bias")?)?;
    let logits = graph.node(
        "Gemm",
        &[&flat, "classifier.weight", "classifier.bias"],
        OUTPUT,
        vec![int("transB", 1)],
    );
    debug_assert_eq!(logits, OUTPUT);

    let image = [
        Size::Free("batch"),
        Size::Fixed(info.in_channels),
        Size::Fixed(info.resolution),
        Size::Fixed(info.resolution),
    ];
    let logits_shape = [Size::Free("batch"), Size::Fixed(info.classes)];
    let arch_json = serde_json::to_string(arch).map_err(|e| Error::Export(e.to_string()))?;
    let normalize_json =
        serde_json::to_string(&info.normalize).map_err(|e| Error::Export(e.to_string()))?;
    let metadata = [
        ("eatnas.input", INPUT.to_string()),
        (
            "eatnas.input_shape",
            format!(
                "[batch, {}, {}, {}]",
                info.in_channels, info.resolution, info.resolution
            ),
        ),
        ("eatnas.output", OUTPUT.to_string()),
        ("eatnas.classes", info.classes.to_string()),
        ("eatnas.resolution", info.resolution.to_string()),
        ("eatnas.normalize", normalize_json),
        ("eatnas.arch", arch_json),
    ];
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("eatnas".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "{} (eatnas-arch/1) for inference. Input `{INPUT}`: (batch, {}, {r}, {r}) float \
             pixels in [0, 1], minus the mean and divided by the standard deviation per channel \
             of eatnas.normalize. Output `{OUTPUT}`: (batch, {}) class logits.",
            arch.name,
            info.in_channels,
            info.classes,
            r = info.resolution,
        )),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: Some(arch.name.clone()),
            initializer: graph.initializers,
            doc_string: None,
            input: vec![value_info(INPUT, &image)],
            output: vec![value_info(OUTPUT, &logits_shape)],
            value_info: vec![],
        }),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.into()),
                value: Some(value),
            })
            .collect(),
    };
    Ok(model.encode_to_vec())
}

/// The graph under construction: nodes in topological order and the weights they read.
struct Graph<'s> {
    state: &'s BTreeMap<String, Tensor>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl<'s> Graph<'s> {
    fn new(state: &'s BTreeMap<String, Tensor>) -> Graph<'s> {
        Graph {
            state,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// The network's tensor `name` as (shape, values).
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.state.get(name).ok_or_else(|| {
            Error::Export(format!(
                "the network has no tensor `{name}` (its state does not match its architecture)"
            ))
        })?;
        Ok((t.shape().to_vec(), t.to_vec()?))
    }

    /// The eatnas ConvBn `prefix` (`{prefix}.conv.weight`, `{prefix}.bn.*`) reading `input`,
    /// as one Conv with the batch norm folded into its weight and bias, then a Relu when
    /// `relu`. Returns the name of its output, `prefix`.
    fn conv_bn(
        &mut self,
        prefix: &str,
        input: &str,
        stride: usize,
        groups: usize,
        relu: bool,
    ) -> Result<String> {
        let (shape, weight) = self.tensor(&format!("{prefix}.conv.weight"))?;
        let [cout, _, kernel, _] = shape[..] else {
            return Err(Error::Export(format!(
                "`{prefix}.conv.weight` has shape {shape:?}, expected (out, in / groups, k, k)"
            )));
        };
        let bn = |field: &str| -> Result<Vec<f32>> {
            let (bn_shape, values) = self.tensor(&format!("{prefix}.bn.{field}"))?;
            if bn_shape != [cout] {
                return Err(Error::Export(format!(
                    "`{prefix}.bn.{field}` has shape {bn_shape:?}, expected [{cout}]"
                )));
            }
            Ok(values)
        };
        let (gamma, beta, mean, var) = (
            bn("weight")?,
            bn("bias")?,
            bn("running_mean")?,
            bn("running_var")?,
        );
        let (folded_weight, folded_bias) = fold_batch_norm(&weight, &gamma, &beta, &mean, &var);
        let weight_name = format!("{prefix}.conv.weight");
        let bias_name = format!("{prefix}.conv.bias");
        self.initializer(&weight_name, (shape, folded_weight))?;
        self.initializer(&bias_name, (vec![cout], folded_bias))?;
        let pad = (kernel / 2) as i64;
        let (k, s) = (kernel as i64, stride as i64);
        let conv_name = if relu {
            format!("{prefix}.conv")
        } else {
            prefix.to_string()
        };
        let out = self.node(
            "Conv",
            &[input, &weight_name, &bias_name],
            &conv_name,
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("dilations", &[1, 1]),
                int("group", groups as i64),
            ],
        );
        Ok(if relu {
            self.node("Relu", &[&out], prefix, vec![])
        } else {
            out
        })
    }

    /// Appends a node named `output` writing the value `output`; returns that name.
    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(output.to_string()),
            op_type: Some(op_type.to_string()),
            domain: None,
            attribute,
            doc_string: None,
        });
        output.to_string()
    }

    fn initializer(&mut self, name: &str, (shape, values): (Vec<usize>, Vec<f32>)) -> Result<()> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::Export(format!(
                "`{name}`: {} values for shape {shape:?}",
                values.len()
            )));
        }
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            doc_string: None,
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
        Ok(())
    }
}

/// A convolution `weight` (out, ...) followed by inference-mode batch norm, as one convolution
/// with a bias: `w' = w * g / sqrt(var + eps)`, `b' = beta - mean * g / sqrt(var + eps)` per
/// output channel (eps [`BatchNormConfig::PYTORCH`]'s), computed in f64.
pub fn fold_batch_norm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let cout = gamma.len();
    let per_output = weight.len() / cout.max(1);
    let scale: Vec<f64> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g as f64 / (v as f64 + BatchNormConfig::PYTORCH.eps as f64).sqrt())
        .collect();
    let folded_weight = weight
        .chunks(per_output)
        .zip(&scale)
        .flat_map(|(row, &s)| row.iter().map(move |&w| (w as f64 * s) as f32))
        .collect();
    let folded_bias = (0..cout)
        .map(|o| (beta[o] as f64 - mean[o] as f64 * scale[o]) as f32)
        .collect();
    (folded_weight, folded_bias)
}

/// One axis of a graph input or output.
enum Size {
    Fixed(usize),
    Free(&'static str),
}

fn value_info(name: &str, shape: &[Size]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|size| Dimension {
            value: Some(match size {
                Size::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Size::Free(param) => dimension::Value::DimParam(param.to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}
