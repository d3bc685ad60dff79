//! Every op, forward and backward, on every available device with one body, compared with the
//! CPU's results: the CUDA kernels' shapes here are chosen to reach each launch path (tile
//! shapes of the depthwise kernels, split reductions, split-k products, the fused MBConv block).
//! On a machine without a GPU only the CPU runs (against itself) and the test says so.

use eatnas_tensor::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Named results of one run of every op.
type Results = Vec<(String, Vec<f32>)>;

struct Run {
    device: Device,
    rng: ChaCha8Rng,
    out: Results,
}

impl Run {
    fn randn(&mut self, shape: &[usize]) -> Tensor {
        let count = shape.iter().product();
        let values = (0..count)
            .map(|_| self.rng.gen_range(-1.0f32..1.0))
            .collect();
        Tensor::from_vec(values, shape)
            .unwrap()
            .to_device(self.device)
            .unwrap()
    }

    fn keep(&mut self, name: impl Into<String>, t: &Tensor) {
        assert_eq!(t.device(), self.device, "result left its device");
        self.out.push((name.into(), t.to_vec().unwrap()));
    }
}

fn conv_cases(r: &mut Run) {
    // (n, cin, cout, size, kernel, stride, groups)
    let mut shapes = vec![
        (2, 3, 8, 17, 3, 2, 1),  // stem: implicit GEMM
        (2, 4, 6, 9, 3, 1, 2),   // grouped
        (8, 3, 4, 64, 3, 1, 1),  // weight gradient split over blocks
        (3, 6, 8, 10, 1, 1, 1),  // 1x1: split-k weight gradient
        (2, 16, 70, 5, 1, 1, 1), // 1x1: more than one 64-row tile
        (8, 2, 2, 64, 3, 1, 2),  // depthwise, split weight gradient
    ];
    for k in [3, 5, 7] {
        for s in [1, 2] {
            // Plane sizes that take each depthwise tiling: 8x32, 16x16, 8x8 x4 planes, 4x4 x16.
            for (n, c, size) in [(2, 4, 30), (2, 8, 20), (3, 5, 7), (4, 6, 3)] {
                shapes.push((n, c, c, size, k, s, c));
            }
        }
    }
    for (n, cin, cout, size, kernel, stride, groups) in shapes {
        let what = format!("conv n{n} {cin}->{cout} {size} k{kernel} s{stride} g{groups}");
        let params = Conv2dParams {
            stride,
            padding: kernel / 2,
            groups,
        };
        let x = r.randn(&[n, cin, size, size]);
        let w = r.randn(&[cout, cin / groups, kernel, kernel]);
        let y = conv2d(&x, &w, params).unwrap();
        let dy = r.randn(y.shape());
        let (dx, dw) = conv2d_backward(&x, &w, &dy, params).unwrap();
        let dw_only = conv2d_backward_weight(&x, &w, &dy, params).unwrap();
        r.keep(format!("{what} y"), &y);
        r.keep(format!("{what} dx"), &dx);
        r.keep(format!("{what} dw"), &dw);
        r.keep(format!("{what} dw only"), &dw_only);
    }
}

fn batch_norm_cases(r: &mut Run) {
    for (dims, relu) in [
        ([8, 3, 64, 64], true),
        ([4, 5, 7, 7], false),
        ([2, 70, 3, 3], true),
    ] {
        let what = format!("bn {dims:?} relu {relu}");
        let c = dims[1];
        let x = r.randn(&dims);
        let w = r.randn(&[c]);
        let b = r.randn(&[c]);
        let mut rm = r.randn(&[c]);
        let mut rv = Tensor::full(&[c], 1.5, r.device).unwrap();
        let (y, stats) = batch_norm2d_train_act(
            &x,
            &w,
            &b,
            &mut rm,
            &mut rv,
            BatchNormConfig::default(),
            relu,
        )
        .unwrap();
        let dy = r.randn(&dims);
        let (dx, dw, db) = batch_norm2d_backward(&x, &w, &stats, &dy).unwrap();
        for (name, t) in [
            ("y", &y),
            ("mean", &stats.mean),
            ("inv_std", &stats.inv_std),
            ("dx", &dx),
            ("dw", &dw),
            ("db", &db),
            ("running_mean", &rm),
            ("running_var", &rv),
        ] {
            r.keep(format!("{what} train {name}"), t);
        }
        let (y, stats) =
            batch_norm2d_eval_act(&x, &w, &b, &rm, &rv, BatchNormConfig::default(), relu).unwrap();
        let (dx, dw, db) = batch_norm2d_backward(&x, &w, &stats, &dy).unwrap();
        for (name, t) in [("y", &y), ("dx", &dx), ("dw", &dw), ("db", &db)] {
            r.keep(format!("{what} eval {name}"), t);
        }
    }
}

fn head_cases(r: &mut Run) {
    let x = r.randn(&[5, 7, 4, 3]);
    let dy = r.randn(&[5, 7, 4, 3]);
    let relu_y = relu(&x).unwrap();
    r.keep("relu", &relu_y);
    r.keep("relu_backward", &relu_backward(&relu_y, &dy).unwrap());
    r.keep("add", &add(&x, &dy).unwrap());
    let pooled = global_avg_pool(&x).unwrap();
    r.keep("pool", &pooled);
    let w = r.randn(&[3, 7]);
    let b = r.randn(&[3]);
    let logits = linear(&pooled, &w, &b).unwrap();
    r.keep("linear", &logits);
    let ce = softmax_cross_entropy(&logits, &[0, 2, 1, 1, 0], 0.1).unwrap();
    r.keep(
        "ce loss",
        &Tensor::from_vec(vec![ce.loss, ce.correct as f32], &[2])
            .unwrap()
            .to_device(r.device)
            .unwrap(),
    );
    r.keep("ce dlogits", &ce.dlogits);
    let (dx, dw, db) = linear_backward(&pooled, &w, &ce.dlogits).unwrap();
    r.keep("linear dx", &dx);
    r.keep("linear dw", &dw);
    r.keep("linear db", &db);
    r.keep(
        "pool backward",
        &global_avg_pool_backward(&dx, [5, 7, 4, 3]).unwrap(),
    );
    for nesterov in [true, false] {
        let mut p = r.randn(&[3, 7]);
        let mut buffer = Tensor::zeros(&[3, 7], r.device).unwrap();
        let step = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov,
        };
        sgd_step(&mut p, &dw, &mut buffer, step).unwrap();
        sgd_step(&mut p, &dw, &mut buffer, step).unwrap();
        r.keep(format!("sgd nesterov {nesterov} param"), &p);
        r.keep(format!("sgd nesterov {nesterov} buffer"), &buffer);
    }
}

fn mbconv_cases(r: &mut Run) {
    // (n, cin, expansion, cout, size, kernel, stride)
    for (n, cin, t, cout, size, kernel, stride) in [
        (2, 8, 6, 8, 9, 5, 1),
        (2, 8, 3, 16, 10, 7, 2),
        (3, 16, 6, 24, 7, 3, 2),
    ] {
        let hidden = cin * t;
        let bn = |c: usize, r: &mut Run| {
            let w = r.randn(&[c]);
            let b = r.randn(&[c]);
            let m = r.randn(&[c]);
            let v = Tensor::from_vec((0..c).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect(), &[c])
                .unwrap()
                .to_device(r.device)
                .unwrap();
            (w, b, m, v)
        };
        let (ew, eb, em, ev) = bn(hidden, r);
        let (dw_, db, dm, dv) = bn(hidden, r);
        let (pw, pb, pm, pv) = bn(cout, r);
        let x = r.randn(&[n, cin, size, size]);
        let we = r.randn(&[hidden, cin, 1, 1]);
        let wd = r.randn(&[hidden, 1, kernel, kernel]);
        let wp = r.randn(&[cout, hidden, 1, 1]);
        let block = MbconvWeights {
            expand: (
                &we,
                BnInference {
                    weight: &ew,
                    bias: &eb,
                    running_mean: &em,
                    running_var: &ev,
                    eps: 1e-5,
                },
            ),
            depthwise: (
                &wd,
                BnInference {
                    weight: &dw_,
                    bias: &db,
                    running_mean: &dm,
                    running_var: &dv,
                    eps: 1e-5,
                },
            ),
            project: (
                &wp,
                BnInference {
                    weight: &pw,
                    bias: &pb,
                    running_mean: &pm,
                    running_var: &pv,
                    eps: 1e-5,
                },
            ),
            stride,
            residual: stride == 1 && cin == cout,
        };
        let y = mbconv_inference(&x, &block).unwrap();
        r.keep(
            format!("mbconv n{n} {cin}x{t}->{cout} {size} k{kernel} s{stride}"),
            &y,
        );
    }
}

fn run_on(device: Device, cases: fn(&mut Run)) -> Results {
    let mut r = Run {
        device,
        rng: ChaCha8Rng::seed_from_u64(7),
        out: Vec::new(),
    };
    cases(&mut r);
    r.out
}

/// Runs one op family's `cases` on the CPU and on every other available device and compares the
/// results: the shared loop of the tests below, one test per family so that a failure names it.
fn gives_the_cpu_results_on_every_device(family: &str, cases: fn(&mut Run)) {
    let reference = run_on(Device::Cpu, cases);
    let devices = Device::available();
    if devices.len() == 1 {
        println!("devices {family}: no CUDA device available, skipped the CUDA device");
    }
    // With `EATNAS_CUDA_MATH=tf32` the GPU's products round their inputs to 10 mantissa bits.
    let tf32 = std::env::var("EATNAS_CUDA_MATH").is_ok_and(|v| v.eq_ignore_ascii_case("tf32"));
    let bound = if tf32 { 2e-2 } else { 2e-4 };
    let mut failures = Vec::new();
    for device in devices {
        let results = run_on(device, cases);
        assert_eq!(results.len(), reference.len());
        let mut worst = 0.0f64;
        for ((name, got), (_, want)) in results.iter().zip(&reference) {
            assert_eq!(got.len(), want.len(), "{name} [{device}]: length");
            // Error relative to the result's largest magnitude: accumulation orders differ.
            let scale = want.iter().fold(1e-3f64, |m, &v| m.max(v.abs() as f64));
            let err = got
                .iter()
                .zip(want)
                .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()))
                / scale;
            worst = worst.max(err);
            // Negated so that a NaN error fails too.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            if !(err < bound) {
                failures.push(format!("{name} [{device}]: relative error {err:.2e}"));
            }
        }
        println!(
            "devices {family}: {device} ({}){} worst relative error {worst:.2e} over {} results",
            device.name(),
            if tf32 && device != Device::Cpu {
                ", TF32 products"
            } else {
                ""
            },
            results.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn conv2d_gives_the_cpu_results_on_every_device() {
    gives_the_cpu_results_on_every_device("conv2d", conv_cases);
}

#[test]
fn batch_norm_gives_the_cpu_results_on_every_device() {
    gives_the_cpu_results_on_every_device("batch_norm2d", batch_norm_cases);
}

#[test]
fn head_gives_the_cpu_results_on_every_device() {
    gives_the_cpu_results_on_every_device("head", head_cases);
}

#[test]
fn mbconv_gives_the_cpu_results_on_every_device() {
    gives_the_cpu_results_on_every_device("mbconv", mbconv_cases);
}
