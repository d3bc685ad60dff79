//! Every PyTorch fixture in `$EATNAS_TORCH_FIXTURES` (default `../shared/fixtures/torch`), on
//! every available device, compared as `shared/fixtures/README.md` says. The set of files is
//! open: cases are recognised by their `op` metadata, never by their file names.

mod common;

use std::collections::BTreeMap;

use common::{compare, fixtures_dir, Fixture, FORWARD, GRADIENT};
use eatnas_nn::{layers::Layer, Arch, LayerSpec, Mode, Network, Op, Slot};
use eatnas_tensor::{
    batch_norm2d_backward, batch_norm2d_train, conv2d, conv2d_backward, global_avg_pool,
    global_avg_pool_backward, linear, linear_backward, softmax_cross_entropy, BatchNormConfig,
    Conv2dParams, Device, Tensor,
};

/// Compares `got` with the fixture's tensor `want`, recording the worst ratio.
struct Checker<'a> {
    fixture: &'a Fixture,
    worst: f64,
    failures: Vec<String>,
}

impl<'a> Checker<'a> {
    fn check(&mut self, got: &Tensor, want: &str, tolerance: (f64, f64)) {
        match self.fixture.floats.get(want) {
            None => self
                .failures
                .push(format!("fixture has no tensor `{want}`")),
            Some((shape, values)) => match compare(want, got, shape, values, tolerance) {
                Ok(ratio) => self.worst = self.worst.max(ratio),
                Err(e) => self.failures.push(e),
            },
        }
    }
}

type CaseResult = Result<(), String>;

fn conv2d_case(f: &Fixture, device: Device, c: &mut Checker) -> CaseResult {
    let params = Conv2dParams {
        stride: f.meta_usize("stride")?,
        padding: f.meta_usize("padding")?,
        groups: f.meta_usize("groups")?,
    };
    let (x, w, dy) = (
        f.tensor("x", device)?,
        f.tensor("weight", device)?,
        f.tensor("dy", device)?,
    );
    let s = |e: eatnas_tensor::Error| e.to_string();
    c.check(&conv2d(&x, &w, params).map_err(s)?, "y", FORWARD);
    let (dx, dw) = conv2d_backward(&x, &w, &dy, params).map_err(s)?;
    c.check(&dx, "dx", GRADIENT);
    c.check(&dw, "dweight", GRADIENT);
    Ok(())
}

fn batchnorm_case(f: &Fixture, device: Device, c: &mut Checker) -> CaseResult {
    if !f.meta_bool("training")? {
        return Err("only training-mode batch-norm fixtures are defined".into());
    }
    let (momentum, eps) = (f.meta_f64("momentum")? as f32, f.meta_f64("eps")? as f32);
    let (x, w, b, dy) = (
        f.tensor("x", device)?,
        f.tensor("weight", device)?,
        f.tensor("bias", device)?,
        f.tensor("dy", device)?,
    );
    let (mut rm, mut rv) = (
        f.tensor("running_mean", device)?,
        f.tensor("running_var", device)?,
    );
    let s = |e: eatnas_tensor::Error| e.to_string();
    let (y, stats) = batch_norm2d_train(
        &x,
        &w,
        &b,
        &mut rm,
        &mut rv,
        BatchNormConfig { momentum, eps },
    )
    .map_err(s)?;
    c.check(&y, "y", FORWARD);
    c.check(&rm, "running_mean_out", FORWARD);
    c.check(&rv, "running_var_out", FORWARD);
    let (dx, dw, db) = batch_norm2d_backward(&x, &w, &stats, &dy).map_err(s)?;
    c.check(&dx, "dx", GRADIENT);
    c.check(&dw, "dweight", GRADIENT);
    c.check(&db, "dbias", GRADIENT);
    Ok(())
}

fn pool_linear_ce_case(f: &Fixture, device: Device, c: &mut Checker) -> CaseResult {
    let smoothing = f.meta_f64("label_smoothing")? as f32;
    let (x, w, b) = (
        f.tensor("x", device)?,
        f.tensor("weight", device)?,
        f.tensor("bias", device)?,
    );
    let labels = f.labels("labels")?;
    let s = |e: eatnas_tensor::Error| e.to_string();
    let dims = x.dims4("fixture", "x").map_err(s)?;
    let pooled = global_avg_pool(&x).map_err(s)?;
    let logits = linear(&pooled, &w, &b).map_err(s)?;
    c.check(&logits, "logits", FORWARD);
    let ce = softmax_cross_entropy(&logits, &labels, smoothing).map_err(s)?;
    c.check(
        &Tensor::from_vec(vec![ce.loss], &[1]).map_err(s)?,
        "loss",
        FORWARD,
    );
    let (dpooled, dw, db) = linear_backward(&pooled, &w, &ce.dlogits).map_err(s)?;
    c.check(
        &global_avg_pool_backward(&dpooled, dims).map_err(s)?,
        "dx",
        GRADIENT,
    );
    c.check(&dw, "dweight", GRADIENT);
    c.check(&db, "dbias", GRADIENT);
    Ok(())
}

/// Loads `param.<name>` for every parameter the layer visits (with `prefix.` removed from its
/// names), failing on a parameter the fixture lacks or a fixture parameter the layer lacks.
fn load_params(
    f: &Fixture,
    device: Device,
    visit: &mut dyn FnMut(&mut dyn FnMut(String, Slot<'_>)),
    strip: &str,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut error = None;
    visit(&mut |name, slot| {
        let name = name.strip_prefix(strip).unwrap_or(&name).to_string();
        if let Slot::Param(p) = slot {
            match f.tensor(&format!("param.{name}"), device) {
                Ok(t) if t.shape() == p.value.shape() => p.value = t,
                Ok(t) => {
                    error = Some(format!(
                        "param.{name}: fixture shape {:?}, layer shape {:?}",
                        t.shape(),
                        p.value.shape()
                    ))
                }
                Err(e) => error = Some(e),
            }
            names.push(name);
        } else if let Slot::Buffer(b) = slot {
            // The layer's own running statistics (fixtures start from PyTorch's defaults too),
            // on the device under test.
            match b.to_device(device) {
                Ok(moved) => *b = moved,
                Err(e) => error = Some(e.to_string()),
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let extra: Vec<_> = f
        .floats
        .keys()
        .filter_map(|k| k.strip_prefix("param."))
        .filter(|k| !names.iter().any(|n| n == k))
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "fixture parameters the layer does not have: {extra:?}"
        ));
    }
    Ok(names)
}

fn block_case(f: &Fixture, device: Device, c: &mut Checker) -> CaseResult {
    let op = match f.meta_str("block")? {
        "sep" => Op::Sep,
        "mb3" => Op::Mb3,
        "mb6" => Op::Mb6,
        other => return Err(format!("unknown block `{other}`")),
    };
    let spec = LayerSpec {
        op,
        kernel: f.meta_usize("kernel")?,
        stride: f.meta_usize("stride")?,
        in_channels: f.meta_usize("in_channels")?,
        out_channels: f.meta_usize("out_channels")?,
        residual: f.meta_bool("residual")?,
    };
    let expected_residual =
        f.meta_bool("skip")? && spec.stride == 1 && spec.in_channels == spec.out_channels;
    if spec.residual != expected_residual {
        return Err(format!(
            "residual {} disagrees with ARCH.md's rule ({expected_residual})",
            spec.residual
        ));
    }
    let mode = if f.meta_bool("training")? {
        Mode::Train
    } else {
        Mode::Eval
    };
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut block =
        Layer::new(&spec, &eatnas_nn::Init::default(), &mut rng).map_err(|e| e.to_string())?;
    let names = load_params(f, device, &mut |v| block.visit("b", v), "b.")?;
    let x = f.tensor("x", device)?;
    if mode == Mode::Eval {
        // The inference path (one fused op per MBConv block) against the same output.
        let inferred = block.infer(&x).map_err(|e| e.to_string())?;
        c.check(&inferred, "y", FORWARD);
    }
    let y = block.forward(&x, mode).map_err(|e| e.to_string())?;
    c.check(&y, "y", FORWARD);
    let dx = block
        .backward(&f.tensor("dy", device)?)
        .map_err(|e| e.to_string())?;
    c.check(&dx, "dx", GRADIENT);
    let grads = grads_of(&mut |v| block.visit("b", v), "b.");
    for name in names {
        let grad = grads
            .get(&name)
            .ok_or_else(|| format!("no gradient for {name}"))?;
        c.check(grad, &format!("grad.{name}"), GRADIENT);
    }
    Ok(())
}

fn grads_of(
    visit: &mut dyn FnMut(&mut dyn FnMut(String, Slot<'_>)),
    strip: &str,
) -> BTreeMap<String, Tensor> {
    let mut grads = BTreeMap::new();
    visit(&mut |name, slot| {
        if let Slot::Param(p) = slot {
            if let Some(g) = &p.grad {
                grads.insert(
                    name.strip_prefix(strip).unwrap_or(&name).to_string(),
                    g.clone(),
                );
            }
        }
    });
    grads
}

fn network_case(f: &Fixture, device: Device, c: &mut Checker) -> CaseResult {
    let arch_json = f.meta.get("arch").ok_or("no `arch` metadata")?.to_string();
    let arch = Arch::from_json(&arch_json, &f.name).map_err(|e| e.to_string())?;
    let mut net = Network::new(
        &arch,
        f.meta_usize("in_channels")?,
        f.meta_usize("classes")?,
        0,
    )
    .map_err(|e| e.to_string())?;
    let names = load_params(f, device, &mut |v| net.visit(v), "")?;
    if !f.meta_bool("training")? {
        return Err("only training-mode network fixtures are defined".into());
    }
    let x = f.tensor("x", device)?;
    let resolution = f.meta_usize("resolution")?;
    if x.shape()[2..] != [resolution, resolution] {
        return Err(format!(
            "x shape {:?} disagrees with resolution {resolution}",
            x.shape()
        ));
    }
    let labels = f.labels("labels")?;
    let logits = net.forward(&x, Mode::Train).map_err(|e| e.to_string())?;
    c.check(&logits, "logits", FORWARD);
    let ce = softmax_cross_entropy(&logits, &labels, 0.0).map_err(|e| e.to_string())?;
    c.check(
        &Tensor::from_vec(vec![ce.loss], &[1]).map_err(|e| e.to_string())?,
        "loss",
        FORWARD,
    );
    net.backward(&ce.dlogits).map_err(|e| e.to_string())?;
    let grads = net.gradients();
    for name in names {
        let grad = grads
            .get(&name)
            .ok_or_else(|| format!("no gradient for {name}"))?;
        c.check(grad, &format!("grad.{name}"), GRADIENT);
    }
    Ok(())
}

/// The fixture files, sorted, loaded (a file that does not load is an `Err` naming it).
fn fixtures() -> Vec<Result<Fixture, String>> {
    let dir = fixtures_dir();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "fixture folder {} cannot be read ({e}); set EATNAS_TORCH_FIXTURES",
                dir.display()
            )
        })
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no *.safetensors fixtures in {}",
        dir.display()
    );
    paths.iter().map(|p| Fixture::load(p)).collect()
}

type Case = fn(&Fixture, Device, &mut Checker) -> CaseResult;

/// Every fixture kind (the `op` of its metadata) and the check of that kind.
const KINDS: &[(&str, Case)] = &[
    ("conv2d", conv2d_case),
    ("batchnorm2d", batchnorm_case),
    ("pool_linear_ce", pool_linear_ce_case),
    ("block", block_case),
    ("network", network_case),
];

/// Checks every fixture of kind `op` on every available device: the shared loop of the tests
/// below, one test per fixture kind so that a failure names it.
fn fixtures_of_kind_match_on_every_device(op: &str) {
    let case = KINDS
        .iter()
        .find(|(kind, _)| *kind == op)
        .map(|&(_, case)| case)
        .unwrap_or_else(|| panic!("no check for fixture kind `{op}`"));
    let devices = Device::available();
    if !devices.iter().any(|d| matches!(d, Device::Cuda(_))) {
        println!("conformance {op}: no CUDA device available, skipped the CUDA device");
    }
    let mut failures = Vec::new();
    let mut files = 0;
    for fixture in fixtures().into_iter().flatten() {
        if fixture.meta_str("op").ok() != Some(op) {
            continue;
        }
        files += 1;
        for &device in &devices {
            let mut checker = Checker {
                fixture: &fixture,
                worst: 0.0,
                failures: Vec::new(),
            };
            if let Err(e) = case(&fixture, device, &mut checker) {
                checker.failures.push(e);
            }
            if checker.failures.is_empty() {
                println!(
                    "{} [{device}] ok, worst error {:.3} of the bound",
                    fixture.name, checker.worst
                );
            } else {
                for e in checker.failures {
                    failures.push(format!("{} [{device}]: {e}", fixture.name));
                }
            }
        }
    }
    println!("conformance {op}: {files} files");
    assert!(
        files > 0,
        "no `{op}` fixtures in {}",
        fixtures_dir().display()
    );
    assert!(
        failures.is_empty(),
        "{} `{op}` conformance failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every fixture file loads and is of a kind one of the tests below checks, so that none is
/// left unchecked.
#[test]
fn every_torch_fixture_is_of_a_checked_kind() {
    let mut failures = Vec::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for fixture in fixtures() {
        match fixture {
            Err(e) => failures.push(e),
            Ok(f) => match f.meta_str("op") {
                Ok(op) if KINDS.iter().any(|(kind, _)| *kind == op) => {
                    *kinds.entry(op.to_string()).or_default() += 1
                }
                Ok(op) => failures.push(format!("{}: unknown op `{op}`", f.name)),
                Err(e) => failures.push(format!("{}: {e}", f.name)),
            },
        }
    }
    println!("conformance: fixtures by kind {kinds:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn conv2d_fixtures_match_on_every_device() {
    fixtures_of_kind_match_on_every_device("conv2d");
}

#[test]
fn batchnorm2d_fixtures_match_on_every_device() {
    fixtures_of_kind_match_on_every_device("batchnorm2d");
}

#[test]
fn pool_linear_ce_fixtures_match_on_every_device() {
    fixtures_of_kind_match_on_every_device("pool_linear_ce");
}

#[test]
fn block_fixtures_match_on_every_device() {
    fixtures_of_kind_match_on_every_device("block");
}

#[test]
fn network_fixtures_match_on_every_device() {
    fixtures_of_kind_match_on_every_device("network");
}
