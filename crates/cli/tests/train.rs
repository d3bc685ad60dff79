//! `eatnas-cli train`, `eval` and `export` end to end on the embedded demo data: learning, resume
//! after kill -9, divergence, and bad input.

use eatnas_testkit::{sigterm, TestDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = r#"{"format":"eatnas-arch/1","name":"tiny","stem":{"channels":8,"kernel":3,"stride":1},
 "blocks":[{"op":"mb3","kernel":3,"skip":true,"layers":1,"width":1.0,"base_channels":8,"stride":2},
           {"op":"sep","kernel":5,"skip":true,"layers":2,"width":1.0,"base_channels":16,"stride":2}],
 "head":{"channels":32}}"#;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("cli-train-{name}"))
}

fn tiny_arch(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.json");
    std::fs::write(&path, TINY).unwrap();
    path
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
}

/// A short training run on part of the demo data at 14x14.
fn train_args(arch: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--arch",
        arch.to_str().unwrap(),
        "--data",
        "fashion-mnist",
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "14",
        "--data-fraction",
        "0.25",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--lr",
        "0.2",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn last_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "last line not JSON ({e}); stdout {stdout}; stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn succeed(args: &[String]) -> Output {
    let output = cli().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn fail(args: &[String]) -> String {
    let output = cli().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_training_that_learns_nothing_says_so() {
    // A learning rate of 1e-9 leaves the network where it started: it scores what always
    // answering one class does, with a finite loss, so nothing fails.
    let dir = temp_dir("nothing");
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    let output = succeed(&train_args(
        &arch,
        &out,
        &["--epochs", "1", "--data-fraction", "0.1", "--lr", "1e-9"],
    ));
    let summary = last_json(&output);
    let top1 = summary["test_top1"].as_f64().unwrap();
    assert!(top1 < 0.12, "test top-1 {top1}");
    assert_eq!(summary["learned_nothing"], true, "{summary}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: this training learned nothing")
            && stderr.contains("(10.00% of 2000 test images)"),
        "{stderr}"
    );
}

#[test]
fn trains_well_above_chance_then_evaluates_and_exports() {
    let dir = temp_dir("learn");
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    let output = succeed(&train_args(&arch, &out, &[]));
    let summary = last_json(&output);
    let top1 = summary["test_top1"].as_f64().unwrap();
    assert!(top1 > 0.55, "test top-1 {top1} (chance is 0.1)");
    assert_eq!(
        summary["test_chance"],
        serde_json::json!({"images": 2000, "majority_top1": 0.1}),
        "the demo's test set: 10 balanced classes"
    );
    assert_eq!(summary["learned_nothing"], false, "{summary}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("learned nothing"), "{stderr}");
    let epochs: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("\"epoch\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 2);
    for key in [
        "train_loss",
        "val_top1",
        "val_top5",
        "images_per_second",
        "lr",
        "elapsed_seconds",
    ] {
        assert!(epochs[1][key].is_number(), "epoch line lacks {key}");
    }
    for file in [
        "model.safetensors",
        "arch.json",
        "train_state.safetensors",
        "metrics.jsonl",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }

    let eval = succeed(
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--data",
            "fashion-mnist",
            "--json",
        ]
        .map(String::from),
    );
    assert_eq!(
        last_json(&eval)["test_top1"],
        summary["test_top1"],
        "eval agrees with the training summary"
    );

    let module = dir.join("model.py");
    succeed(
        &[
            "export",
            "--checkpoint",
            out.to_str().unwrap(),
            "--format",
            "pytorch",
            "--out",
            module.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let source = std::fs::read_to_string(&module).unwrap();
    assert!(source.contains("class EatNet(nn.Module)") && source.contains("\"name\":\"tiny\""));

    // ONNX: the model file, and the clear errors of weights it cannot describe.
    let onnx = dir.join("model.onnx");
    let export_onnx = |checkpoint: &Path, extra: &[&str]| {
        let mut args: Vec<String> = [
            "export",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--format",
            "onnx",
            "--out",
            onnx.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let said = String::from_utf8_lossy(&succeed(&export_onnx(&out, &[])).stdout).into_owned();
    assert!(said.contains("input `input` (batch, 1, 14, 14)"), "{said}");
    let written = std::fs::read(&onnx).unwrap();
    assert!(written.len() > 4 * 2000, "{} bytes", written.len());
    // Weights without eatnas's description (as PyTorch saves them), with and without --arch.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let loaded = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bare = dir.join("bare.safetensors");
    safetensors::serialize_to_file(loaded.tensors(), None, &bare).unwrap();
    std::fs::remove_file(&onnx).unwrap();
    let e = fail(&export_onnx(&bare, &[]));
    assert!(e.contains("no eatnas description"), "{e}");
    assert!(!onnx.exists(), "a failed export leaves no file");
    let other = dir.join("other.json");
    std::fs::write(&other, TINY.replace("\"channels\":32", "\"channels\":24")).unwrap();
    let e = fail(&export_onnx(
        &bare,
        &["--arch", other.to_str().unwrap(), "--resolution", "14"],
    ));
    assert!(
        e.contains("does not fit architecture `tiny`: it needs") && e.contains("parameters"),
        "{e}"
    );
    // With its architecture it exports; the normalisation is then estimated from the data, so
    // only the metadata may differ from the first file.
    succeed(&export_onnx(
        &bare,
        &["--arch", arch.to_str().unwrap(), "--resolution", "14"],
    ));
    let foreign = std::fs::read(&onnx).unwrap();
    assert!(
        foreign.len().abs_diff(written.len()) < 64,
        "{} bytes against {}",
        foreign.len(),
        written.len()
    );

    // The same folder again is refused, and nothing in it is overwritten.
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let e = fail(&train_args(&arch, &out, &[]));
    assert!(e.contains("already holds a training run; resume it"), "{e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );

    // A checkpoint evaluated as another architecture.
    let e = fail(
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--arch",
            other.to_str().unwrap(),
            "--resolution",
            "14",
        ]
        .map(String::from),
    );
    assert!(e.contains("does not fit"), "{e}");
}

/// Reads the global step of the training state in `dir`, if one has been written.
/// The largest |difference| between two checkpoints' learned weights (not the running
/// statistics).
fn max_weight_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
    );
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut largest = 0.0f32;
    for (name, tensor) in a.tensors() {
        if name.contains("running_") {
            continue;
        }
        let other = b.tensor(&name).unwrap_or_else(|_| panic!("{name} missing"));
        for (x, y) in floats(tensor.data()).iter().zip(floats(other.data())) {
            largest = largest.max((x - y).abs());
        }
    }
    largest
}

fn saved_step(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join("train_state.safetensors")).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let state: serde_json::Value =
        serde_json::from_str(meta.metadata().as_ref()?.get("eatnas_state")?).ok()?;
    state["position"]["global_step"].as_u64()
}

#[test]
fn resume_after_kill_9_gives_the_same_final_weights() {
    let dir = temp_dir("resume");
    let arch = tiny_arch(&dir);
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    let extra = ["--checkpoint-every", "4", "--epochs", "3"];
    succeed(&train_args(&arch, &whole, &extra));

    let mut child = cli()
        .args(train_args(&arch, &killed, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while saved_step(&killed).is_none_or(|s| s < 8) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let step = saved_step(&killed).unwrap();
    assert!(step < 3 * 31, "killed at step {step}, before the end");

    succeed(&["train", "--resume", killed.to_str().unwrap(), "--json"].map(String::from));
    let (a, b) = (
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(killed.join("model.safetensors")).unwrap(),
    );
    assert!(
        a == b,
        "resumed run's weights differ from the uninterrupted run's (killed at step {step})"
    );

    // SIGTERM (or Ctrl-C): a checkpoint at the step it came, then the same end on resume.
    let terminated = dir.join("terminated");
    let mut child = cli()
        .args(train_args(&arch, &terminated, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while saved_step(&terminated).is_none_or(|s| s < 8) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its step-8 checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = sigterm(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let step = saved_step(&terminated).unwrap();
    assert!(
        !output.status.success()
            && stderr.contains(&format!("stopped after {step} training steps"))
            && stderr.contains("continue with `eatnas-cli train --resume"),
        "SIGTERM did not checkpoint the step it came at ({step}): {stderr}"
    );
    succeed(&["train", "--resume", terminated.to_str().unwrap(), "--json"].map(String::from));
    assert!(
        std::fs::read(terminated.join("model.safetensors")).unwrap() == a,
        "the weights of the run resumed after SIGTERM (at step {step}) differ from the uninterrupted run's"
    );
}

#[test]
fn a_diverging_run_stops_and_says_so() {
    let dir = temp_dir("diverge");
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    let e = fail(&train_args(
        &arch,
        &out,
        &["--lr", "1e30", "--momentum", "0.99"],
    ));
    assert!(e.contains("training diverged at epoch 1"), "{e}");
}

#[test]
fn bad_training_input_is_an_error() {
    let dir = temp_dir("bad");
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    assert!(
        fail(&train_args(&arch, &out, &["--data", "mnist"])).contains("unknown dataset `mnist`")
    );
    assert!(
        fail(&train_args(&arch, &out, &["--data", "idx:/no/such/dir"])).contains("no IDX file")
    );
    assert!(fail(&train_args(&arch, &out, &["--val-fraction", "1.5"])).contains("val_fraction"));
    assert!(fail(&train_args(&arch, &out, &["--device", "cuda:0"])).contains("cuda:0"));
    // A step that cannot fit in memory is refused with the numbers, before allocating.
    let e = fail(&train_args(&arch, &out, &["--batch-size", "1000000000"]));
    assert!(
        e.contains("at batch 1000000000 and 14x14 needs about") && e.contains("GiB free"),
        "{e}"
    );
    assert!(
        fail(&["train", "--resume", dir.to_str().unwrap()].map(String::from))
            .contains("no train_state.safetensors")
    );

    // A training state whose momentum does not fit its parameter is refused on resume (it
    // failed only at the first step before).
    succeed(&train_args(&arch, &out, &["--epochs", "1"]));
    let state_path = out.join("train_state.safetensors");
    let bytes = std::fs::read(&state_path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let victim = "momentum.stem.conv.weight";
    let short = vec![0u8; 4 * 3];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != victim)
        .collect();
    tensors.push((
        victim.to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &short).unwrap(),
    ));
    let metadata: Option<std::collections::HashMap<String, String>> = metadata.metadata().clone();
    safetensors::serialize_to_file(tensors, metadata, &state_path).unwrap();
    let e = fail(&["train", "--resume", out.to_str().unwrap()].map(String::from));
    assert!(
        e.contains("momentum of `stem.conv.weight` has shape [3]; the parameter has [8, 1, 3, 3]"),
        "{e}"
    );
}

#[test]
fn an_image_folder_trains_the_same_way() {
    use eatnas_data::DataSpec;
    let dir = temp_dir("folder");
    let demo = DataSpec::Demo.open(None).unwrap();
    // 40 training and 10 validation PNGs of each class, written from the demo data.
    let mut written = [0usize; 10];
    let mut pixels = vec![0u8; 28 * 28];
    for i in 0..demo.train.len() {
        let label = demo.train.label(i);
        if written[label] >= 50 {
            continue;
        }
        let split = if written[label] < 40 { "train" } else { "val" };
        let class_dir = dir.join("images").join(split).join(format!("class{label}"));
        std::fs::create_dir_all(&class_dir).unwrap();
        demo.train.read(i, &mut pixels).unwrap();
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(class_dir.join(format!("{i}.png")))
            .unwrap();
        written[label] += 1;
    }
    let arch = tiny_arch(&dir);
    let out = dir.join("run");
    let data = format!("folder:{}", dir.join("images").display());
    let output = succeed(&train_args(
        &arch,
        &out,
        &[
            "--data",
            &data,
            "--data-fraction",
            "1.0",
            "--batch-size",
            "32",
            "--epochs",
            "3",
        ],
    ));
    let summary = last_json(&output);
    assert!(summary["test_top1"].as_f64().unwrap() > 0.2, "{summary}");
    assert!(out.join("model.safetensors").exists());
}

/// `--init` picks the scheme (another scheme gives other initial weights and so another run),
/// `--initial-weights` starts from a given file (a run's own final weights trained one more
/// epoch at a tiny learning rate stay next to them), and bad values of either are clear errors.
#[test]
fn initialisation_is_chosen_or_given() {
    let dir = temp_dir("init");
    let arch = tiny_arch(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = train_args(&arch, &out, &["--epochs", "1"]);
        args.extend(extra.iter().map(|s| s.to_string()));
        (last_json(&succeed(&args)), out)
    };
    let (default, default_out) = run("default", &[]);
    let (pytorch, _) = run("pytorch", &["--init", "pytorch"]);
    let (torchvision, torchvision_out) = run("torchvision", &["--init", "torchvision"]);
    assert_eq!(
        default["final_train_loss"], pytorch["final_train_loss"],
        "the default is pytorch"
    );
    assert_ne!(
        pytorch["final_train_loss"], torchvision["final_train_loss"],
        "two schemes gave the same run"
    );

    let weights = default_out.join("model.safetensors");
    let (again, again_out) = run(
        "again",
        &[
            "--initial-weights",
            weights.to_str().unwrap(),
            "--lr",
            "1e-6",
        ],
    );
    // At lr 1e-6 the learned weights stay where they started (the batch-norm running statistics
    // do not: an epoch in training mode re-estimates them, so accuracy is no measure here).
    let weights_moved = max_weight_difference(&default_out, &again_out);
    assert!(
        weights_moved < 1e-2,
        "from the trained weights at lr 1e-6 the weights moved by up to {weights_moved}"
    );
    let other_start = max_weight_difference(&default_out, &torchvision_out);
    assert!(
        other_start > 0.1,
        "another initialisation ended only {other_start} away: the comparison shows nothing"
    );
    assert!(again["test_top1"].as_f64().unwrap() > 0.2, "{again}");

    let out = dir.join("bad");
    let e = fail(&train_args(&arch, &out, &["--init", "kaiming"]));
    assert!(e.contains("kaiming") && e.contains("torchvision"), "{e}");
    let e = fail(&train_args(
        &arch,
        &out,
        &["--initial-weights", "/no/such/file.safetensors"],
    ));
    assert!(e.contains("/no/such/file.safetensors"), "{e}");
    let other = dir.join("other.json");
    std::fs::write(&other, TINY.replace("\"channels\":8", "\"channels\":4")).unwrap();
    let e = fail(&train_args(
        &other,
        &out,
        &["--initial-weights", weights.to_str().unwrap()],
    ));
    assert!(
        e.contains("does not fit"),
        "a file of another architecture: {e}"
    );
    let e = fail(&train_args(
        &arch,
        &out,
        &[
            "--initial-weights",
            weights.to_str().unwrap(),
            "--init",
            "torchvision",
        ],
    ));
    assert!(e.contains("cannot be used with"), "{e}");
}
