//! The ONNX export read back: the decoded model is well formed (inputs defined before use, the
//! batch axis free, the description in the metadata), and the graph, run by a small interpreter
//! over eatnas's own ops, gives the network's logits: the wiring and the batch-norm folding are
//! checked here without Python (`scripts/check-export.py` runs the file in onnxruntime).

use std::collections::{BTreeMap, HashMap, HashSet};

use eatnas_data::Normalize;
use eatnas_nn::{Arch, Network};
use eatnas_tensor::{add, conv2d, global_avg_pool, linear, relu, Conv2dParams, Tensor};
use eatnas_train::export::onnx_proto::{
    tensor_shape_proto::dimension, type_proto, AttributeProto, ModelProto, NodeProto, TensorProto,
    FLOAT,
};
use eatnas_train::export::{onnx_model, INPUT, OPSET, OUTPUT};
use eatnas_train::{Error, ModelInfo};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// MBConv and separable layers with and without shortcuts, kernels 3/5/7, strides 1 and 2.
const ARCH: &str = r#"{"format":"eatnas-arch/1","name":"mix","stem":{"channels":8,"kernel":3,"stride":1},
 "blocks":[{"op":"sep","kernel":3,"skip":true,"layers":2,"width":0.5,"base_channels":16,"stride":1},
           {"op":"mb3","kernel":7,"skip":true,"layers":2,"width":0.5,"base_channels":24,"stride":2},
           {"op":"mb6","kernel":5,"skip":false,"layers":1,"width":1.0,"base_channels":16,"stride":2}],
 "head":{"channels":24}}"#;

fn info() -> ModelInfo {
    ModelInfo {
        arch: Arch::from_json(ARCH, "mix").unwrap(),
        in_channels: 2,
        classes: 5,
        resolution: 12,
        normalize: Normalize {
            mean: vec![0.5, 0.4],
            std: vec![0.25, 0.3],
        },
    }
}

/// A network whose batch norms are far from the identity (random scale, shift and running
/// statistics), so that folding them is exercised.
fn network(info: &ModelInfo) -> Network {
    let mut net = Network::new(&info.arch, info.in_channels, info.classes, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let state: BTreeMap<String, Tensor> = net
        .state()
        .into_iter()
        .map(|(name, t)| {
            let mut values = t.to_vec().unwrap();
            let field = name.rsplit('.').next().unwrap();
            if name.contains(".bn.") {
                for v in &mut values {
                    *v = match field {
                        "weight" => rng.gen_range(0.5..1.5),
                        "bias" | "running_mean" => rng.gen_range(-0.3..0.3),
                        _ => rng.gen_range(0.5..2.0),
                    };
                }
            }
            (name, Tensor::from_vec(values, t.shape()).unwrap())
        })
        .collect();
    net.load(&state).unwrap();
    net
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("the export decodes as an ONNX ModelProto")
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn tensor(t: &TensorProto) -> Tensor {
    assert_eq!(t.data_type, Some(FLOAT), "{:?} is not float", t.name);
    let values: Vec<f32> = t
        .raw_data
        .as_deref()
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    Tensor::from_vec(values, &dims).unwrap()
}

/// Adds `bias[c]` to channel `c` of a (N, C, H, W) tensor.
fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Tensor {
    let [_, c, h, w] = x.dims4("test", "conv output").unwrap();
    let b = bias.to_vec().unwrap();
    let mut v = x.to_vec().unwrap();
    for (i, value) in v.iter_mut().enumerate() {
        *value += b[(i / (h * w)) % c];
    }
    Tensor::from_vec(v, x.shape()).unwrap()
}

/// Runs the graph on `input` with eatnas's ops, supporting exactly the operators the exporter
/// writes (anything else fails the test, naming it).
fn interpret(model: &ModelProto, input: &Tensor) -> Tensor {
    let graph = model.graph.as_ref().unwrap();
    let mut values: HashMap<String, Tensor> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap(), tensor(t)))
        .collect();
    values.insert(INPUT.into(), input.clone());
    for node in &graph.node {
        let arg = |i: usize| &values[&node.input[i]];
        let out = match node.op_type.as_deref().unwrap() {
            "Conv" => {
                let ints = |name| attribute(node, name).unwrap().ints.clone();
                let pads = ints("pads");
                let strides = ints("strides");
                assert!(pads.iter().all(|&p| p == pads[0]) && strides[0] == strides[1]);
                assert_eq!(ints("dilations"), [1, 1]);
                let params = Conv2dParams {
                    stride: strides[0] as usize,
                    padding: pads[0] as usize,
                    groups: attribute(node, "group").unwrap().i.unwrap() as usize,
                };
                add_channel_bias(&conv2d(arg(0), arg(1), params).unwrap(), arg(2))
            }
            "Relu" => relu(arg(0)).unwrap(),
            "Add" => add(arg(0), arg(1)).unwrap(),
            "GlobalAveragePool" => {
                let pooled = global_avg_pool(arg(0)).unwrap();
                let [n, c] = [pooled.shape()[0], pooled.shape()[1]];
                pooled.reshape(&[n, c, 1, 1]).unwrap()
            }
            "Flatten" => {
                assert_eq!(attribute(node, "axis").unwrap().i, Some(1));
                let shape = arg(0).shape();
                arg(0)
                    .reshape(&[shape[0], shape[1..].iter().product()])
                    .unwrap()
            }
            "Gemm" => {
                assert_eq!(attribute(node, "transB").unwrap().i, Some(1));
                linear(arg(0), arg(1), arg(2)).unwrap()
            }
            other => panic!("the exporter wrote operator {other}, which this test does not know"),
        };
        values.insert(node.output[0].clone(), out);
    }
    values.remove(OUTPUT).expect("the graph writes its output")
}

#[test]
fn the_graph_gives_the_networks_logits() {
    let info = info();
    let mut net = network(&info);
    let model = decode(&onnx_model(&info, &net.state()).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for batch in [1, 5] {
        let x: Vec<f32> = (0..batch * 2 * 12 * 12)
            .map(|_| rng.gen_range(-2.0..2.0))
            .collect();
        let x = Tensor::from_vec(x, &[batch, 2, 12, 12]).unwrap();
        let expected = net.predict(&x).unwrap().to_vec().unwrap();
        let got = interpret(&model, &x);
        assert_eq!(got.shape(), [batch, 5], "logits' shape at batch {batch}");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .to_vec()
            .unwrap()
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "batch {batch}: max |onnx - eatnas| = {diff} (max |logit| {scale})"
        );
    }
}

#[test]
fn the_model_is_well_formed_and_describes_itself() {
    let info = info();
    let mut net = network(&info);
    let model = decode(&onnx_model(&info, &net.state()).unwrap());
    assert_eq!(model.opset_import[0].version, Some(OPSET));
    assert!(model.ir_version.unwrap() >= 7);
    let graph = model.graph.as_ref().unwrap();

    let dims: Vec<_> = match &graph.input[0].r#type.as_ref().unwrap().value {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().unwrap().dim.clone(),
        None => panic!("the input has no tensor type"),
    };
    let dims: Vec<String> = dims
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            dimension::Value::DimValue(v) => v.to_string(),
            dimension::Value::DimParam(p) => p.clone(),
        })
        .collect();
    assert_eq!(graph.input[0].name.as_deref(), Some(INPUT));
    assert_eq!(dims, ["batch", "2", "12", "12"], "input shape");
    assert_eq!(graph.output[0].name.as_deref(), Some(OUTPUT));

    let meta: HashMap<&str, &str> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.as_deref().unwrap(), p.value.as_deref().unwrap()))
        .collect();
    assert_eq!(meta["eatnas.input"], INPUT);
    assert_eq!(meta["eatnas.classes"], "5");
    assert_eq!(meta["eatnas.input_shape"], "[batch, 2, 12, 12]");
    assert_eq!(
        Arch::from_json(meta["eatnas.arch"], "metadata").unwrap(),
        info.arch,
        "the architecture in the metadata"
    );
    assert!(meta["eatnas.normalize"].contains("0.25"));

    // Every node reads values written before it, and writes a new one.
    let mut defined: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    defined.insert(INPUT);
    for node in &graph.node {
        for input in &node.input {
            assert!(
                defined.contains(input.as_str()),
                "{:?} reads undefined {input}",
                node.name
            );
        }
        assert!(
            defined.insert(&node.output[0]),
            "{} written twice",
            node.output[0]
        );
    }
    // One Conv per ConvBn (stem, 2 + 2 sep, 3 + 3 + 3 MBConv, head), no batch norm left.
    let count = |op: &str| {
        graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some(op))
            .count()
    };
    assert_eq!(count("Conv"), 1 + 4 + 9 + 1);
    assert_eq!(count("BatchNormalization"), 0);
    // Shortcuts: both separable layers (8 -> 8) and the second MBConv layer.
    assert_eq!(count("Add"), 3);
}

#[test]
fn a_state_that_does_not_fit_is_an_error_naming_the_tensor() {
    let info = info();
    let mut state = network(&info).state();
    state.remove("blocks.1.0.depthwise.bn.running_var");
    match onnx_model(&info, &state) {
        Err(Error::Export(message)) => {
            assert!(
                message.contains("blocks.1.0.depthwise.bn.running_var"),
                "{message}"
            )
        }
        other => panic!("expected an export error, got {:?}", other.map(|b| b.len())),
    }
}
