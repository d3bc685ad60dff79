//! Model files whose description does not fit what they hold are refused before a network is
//! built from them (the checkpoint fuzz target's invariant: nothing is allocated that the file's
//! size does not justify).

use eatnas_testkit::TestDir;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eatnas_data::Normalize;
use eatnas_nn::{Arch, Network};
use eatnas_train::checkpoint::{decode, encode};
use eatnas_train::{load_model, save_model, ModelInfo};

const ARCH: &str = r#"{"format":"eatnas-arch/1","name":"micro","stem":{"channels":4,"kernel":3,"stride":2},
 "blocks":[{"op":"mb3","kernel":3,"skip":true,"layers":1,"width":1.0,"base_channels":4,"stride":1}],
 "head":{"channels":8}}"#;

/// A freshly initialised network saved in a new folder: the folder (hold it while the file is
/// used), the file's path and what it describes.
fn saved(name: &str) -> (TestDir, PathBuf, ModelInfo) {
    let dir = TestDir::new(&format!("checkpoint-{name}"));
    let info = ModelInfo {
        arch: Arch::from_json(ARCH, "micro").unwrap(),
        in_channels: 1,
        classes: 10,
        resolution: 12,
        normalize: Normalize {
            mean: vec![0.5],
            std: vec![0.25],
        },
    };
    let path = dir.join("model.safetensors");
    let mut net = Network::new(&info.arch, 1, 10, 0).unwrap();
    save_model(&path, &mut net, &info).unwrap();
    (dir, path, info)
}

/// Rewrites the file's description with `change` applied to its JSON.
fn describe(path: &Path, change: impl Fn(&mut serde_json::Value)) {
    let (tensors, metadata) = decode(path).unwrap();
    let mut description: serde_json::Value =
        serde_json::from_str(&metadata["eatnas_model"]).unwrap();
    change(&mut description);
    let metadata = HashMap::from([("eatnas_model".to_string(), description.to_string())]);
    std::fs::write(path, encode(&tensors, metadata).unwrap()).unwrap();
}

fn load_error(path: &Path) -> String {
    match load_model(path, None) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_description_out_of_range_is_refused() {
    for (field, value, needle) in [
        (
            "classes",
            1_000_000_000u64,
            "describes 1000000000 classes; expected 1 to 1048576",
        ),
        ("in_channels", 0, "describes 0 input channels"),
        ("resolution", 1 << 40, "resolution; expected 1 to 8192"),
    ] {
        let (_dir, path, _) = saved(field);
        describe(&path, |d| d[field] = value.into());
        let e = load_error(&path);
        assert!(e.contains(needle), "{field} = {value}: {e}");
    }
}

#[test]
fn a_description_of_a_larger_network_is_refused_by_its_parameter_count() {
    let (_dir, path, _) = saved("larger");
    describe(&path, |d| {
        d["classes"] = 100_000.into();
        d["arch"]["head"]["channels"] = 8192.into();
    });
    let e = load_error(&path);
    assert!(
        e.contains(
            "does not fit architecture `micro`: it needs 819349456 parameters, the file holds 442"
        ),
        "{e}"
    );
}

#[test]
fn a_normalisation_of_another_channel_count_is_refused() {
    let (_dir, path, _) = saved("normalize");
    describe(&path, |d| {
        d["normalize"]["mean"] = serde_json::json!([0.1, 0.2, 0.3])
    });
    let e = load_error(&path);
    assert!(
        e.contains("3 mean(s) and 1 standard deviation(s) for 1 input channel(s)"),
        "{e}"
    );
    describe(&path, |d| {
        d["normalize"]["mean"] = serde_json::json!([0.1]);
        d["normalize"]["std"] = serde_json::json!([0.0]);
    });
    let e = load_error(&path);
    assert!(e.contains("not finite and positive"), "{e}");
}

#[test]
fn an_unchanged_file_loads() {
    let (_dir, path, info) = saved("unchanged");
    let (_, loaded) = load_model(&path, None).unwrap();
    assert_eq!(loaded, info);
}
