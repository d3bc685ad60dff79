//! Finite-difference checks of every op's backward, on several random small shapes per run,
//! one body per device. Float32 with central differences along a random direction:
//! `(L(x + e v) - L(x - e v)) / 2e` against `<dL/dx, v>`, where `L = sum(y * r)` for a fixed
//! random `r` (so the upstream gradient is `r`). The seed is printed; set EATNAS_TEST_SEED to
//! replay a run.

use eatnas_tensor::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEP: f32 = 1e-2;
const TOLERANCE: f64 = 2e-2;

fn seed() -> u64 {
    let seed = std::env::var("EATNAS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("EATNAS_TEST_SEED={seed}");
    seed
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], device: Device) -> Tensor {
    // Uniform in [-1, -0.1] u [0.1, 1]: values away from ReLU's kink so that x +- e v does not
    // cross it.
    let n = shape.iter().product();
    let values = (0..n)
        .map(|_| rng.gen_range(0.1f32..1.0) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_vec(values, shape)
        .unwrap()
        .to_device(device)
        .unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_vec()
        .unwrap()
        .iter()
        .zip(b.to_vec().unwrap())
        .map(|(&x, y)| x as f64 * y as f64)
        .sum()
}

fn axpy(x: &Tensor, alpha: f32, v: &Tensor) -> Tensor {
    let values = x
        .to_vec()
        .unwrap()
        .iter()
        .zip(v.to_vec().unwrap())
        .map(|(&a, b)| a + alpha * b)
        .collect();
    Tensor::from_vec(values, x.shape())
        .unwrap()
        .to_device(x.device())
        .unwrap()
}

/// Checks `grad` = dL/dx for the scalar `loss(x)` along a random direction.
fn check(
    what: &str,
    rng: &mut ChaCha8Rng,
    x: &Tensor,
    grad: &Tensor,
    loss: impl Fn(&Tensor) -> f64,
) {
    assert_eq!(grad.shape(), x.shape(), "{what}: gradient shape");
    let v = randn(rng, x.shape(), x.device());
    let numeric = (loss(&axpy(x, STEP, &v)) - loss(&axpy(x, -STEP, &v))) / (2.0 * STEP as f64);
    let analytic = dot(grad, &v);
    let error = (numeric - analytic).abs() / analytic.abs().max(numeric.abs()).max(1e-2);
    assert!(
        error < TOLERANCE,
        "{what}: numeric {numeric:.6} vs analytic {analytic:.6} (relative error {error:.2e})"
    );
}

fn conv_case(device: Device, rng: &mut ChaCha8Rng) {
    // (batch, cin, cout, size, kernel, stride, groups)
    let shapes = [
        (2, 3, 4, 7, 3, 1, 1),
        (1, 4, 6, 8, 3, 2, 2),
        (2, 5, 5, 9, 5, 1, 5),
        (2, 6, 6, 8, 7, 2, 6),
        (3, 4, 7, 5, 1, 1, 1),
        (2, 3, 5, 6, 1, 2, 1),
        (1, 2, 3, 6, 5, 2, 1),
        // 1x1 on small planes: the whole-batch product over packed operands.
        (5, 4, 6, 2, 1, 1, 1),
        (3, 3, 2, 1, 1, 1, 1),
        // Depthwise on tiny planes, both strides.
        (4, 3, 3, 2, 3, 1, 3),
        (3, 4, 4, 3, 5, 2, 4),
    ];
    // And random ones: standard, depthwise and grouped, every kernel and stride.
    let random = (0..6).map(|_| {
        let kernel = [1, 3, 5, 7][rng.gen_range(0..4)];
        let cin = rng.gen_range(1..=6);
        let groups = match rng.gen_range(0..3) {
            0 => 1,
            1 => cin,
            // Grouped proper: the largest divisor of cin below cin itself (1 for a prime).
            _ => (1..cin).rev().find(|g| cin % g == 0).unwrap_or(1),
        };
        let cout = if groups == cin && rng.gen_bool(0.5) {
            cin
        } else {
            groups * rng.gen_range(1..=3)
        };
        (
            rng.gen_range(1..=3),
            cin,
            cout,
            rng.gen_range(3..=9),
            kernel,
            rng.gen_range(1..=2),
            groups,
        )
    });
    let shapes: Vec<_> = shapes
        .into_iter()
        .chain(random.collect::<Vec<_>>())
        .collect();
    for (n, cin, cout, size, kernel, stride, groups) in shapes {
        let what = format!(
            "conv2d n{n} {cin}->{cout} {size}x{size} k{kernel} s{stride} g{groups} [{device}]"
        );
        let params = Conv2dParams {
            stride,
            padding: kernel / 2,
            groups,
        };
        let x = randn(rng, &[n, cin, size, size], device);
        let w = randn(rng, &[cout, cin / groups, kernel, kernel], device);
        let y = conv2d(&x, &w, params).unwrap();
        let r = randn(rng, y.shape(), device);
        let (dx, dw) = conv2d_backward(&x, &w, &r, params).unwrap();
        check(&format!("{what} dx"), rng, &x, &dx, |x| {
            dot(&conv2d(x, &w, params).unwrap(), &r)
        });
        check(&format!("{what} dweight"), rng, &w, &dw, |w| {
            dot(&conv2d(&x, w, params).unwrap(), &r)
        });
        let dw_only = conv2d_backward_weight(&x, &w, &r, params).unwrap();
        assert_eq!(
            dw_only.to_vec().unwrap(),
            dw.to_vec().unwrap(),
            "{what}: weight-only backward"
        );
    }
}

fn batch_norm_case(device: Device, rng: &mut ChaCha8Rng) {
    // Planes of 9 and 1 values take the small-plane path (vectorised across positions).
    for (n, c, h, w) in [(2, 3, 4, 5), (4, 2, 3, 3), (1, 5, 6, 2), (5, 3, 1, 1)] {
        let x = randn(rng, &[n, c, h, w], device);
        let gamma = randn(rng, &[c], device);
        let beta = randn(rng, &[c], device);
        let r = randn(rng, x.shape(), device);
        let train = |x: &Tensor, g: &Tensor, b: &Tensor| {
            let (mut rm, mut rv) = (
                Tensor::zeros(&[c], device).unwrap(),
                Tensor::full(&[c], 1.0, device).unwrap(),
            );
            batch_norm2d_train(x, g, b, &mut rm, &mut rv, BatchNormConfig::default()).unwrap()
        };
        let (_, stats) = train(&x, &gamma, &beta);
        let (dx, dg, db) = batch_norm2d_backward(&x, &gamma, &stats, &r).unwrap();
        let what = format!("batch_norm2d train {n}x{c}x{h}x{w} [{device}]");
        check(&format!("{what} dx"), rng, &x, &dx, |x| {
            dot(&train(x, &gamma, &beta).0, &r)
        });
        check(&format!("{what} dweight"), rng, &gamma, &dg, |g| {
            dot(&train(&x, g, &beta).0, &r)
        });
        check(&format!("{what} dbias"), rng, &beta, &db, |b| {
            dot(&train(&x, &gamma, b).0, &r)
        });

        let rm = randn(rng, &[c], device);
        let rv = Tensor::from_vec((0..c).map(|i| 0.5 + i as f32).collect(), &[c])
            .unwrap()
            .to_device(device)
            .unwrap();
        let eval = |x: &Tensor, g: &Tensor| {
            batch_norm2d_eval(x, g, &beta, &rm, &rv, BatchNormConfig::default()).unwrap()
        };
        let (_, stats) = eval(&x, &gamma);
        let (dx, dg, _) = batch_norm2d_backward(&x, &gamma, &stats, &r).unwrap();
        let what = format!("batch_norm2d eval {n}x{c}x{h}x{w} [{device}]");
        check(&format!("{what} dx"), rng, &x, &dx, |x| {
            dot(&eval(x, &gamma).0, &r)
        });
        check(&format!("{what} dweight"), rng, &gamma, &dg, |g| {
            dot(&eval(&x, g).0, &r)
        });
    }
}

/// Batch norm fused with its ReLU gives exactly what the two ops give one after the other,
/// forward and backward (the fused backward recomputes the ReLU mask from its input).
fn batch_norm_relu_case(device: Device, rng: &mut ChaCha8Rng) {
    for (n, c, h, w) in [(2, 3, 4, 5), (3, 4, 7, 7), (1, 5, 6, 2), (6, 3, 2, 2)] {
        let x = randn(rng, &[n, c, h, w], device);
        let gamma = randn(rng, &[c], device);
        let beta = randn(rng, &[c], device);
        let dy = randn(rng, x.shape(), device);
        let what = format!("batch_norm2d+relu {n}x{c}x{h}x{w} [{device}]");
        for training in [true, false] {
            let run = |relu: bool| {
                let (mut rm, mut rv) = (
                    Tensor::zeros(&[c], device).unwrap(),
                    Tensor::full(&[c], 1.5, device).unwrap(),
                );
                if training {
                    batch_norm2d_train_act(
                        &x,
                        &gamma,
                        &beta,
                        &mut rm,
                        &mut rv,
                        BatchNormConfig::default(),
                        relu,
                    )
                } else {
                    batch_norm2d_eval_act(
                        &x,
                        &gamma,
                        &beta,
                        &rm,
                        &rv,
                        BatchNormConfig::default(),
                        relu,
                    )
                }
                .unwrap()
            };
            let (fused, fused_stats) = run(true);
            let (plain, plain_stats) = run(false);
            let relu_out = relu(&plain).unwrap();
            assert_eq!(
                fused.to_vec().unwrap(),
                relu_out.to_vec().unwrap(),
                "{what}: forward"
            );
            let (dx, dg, db) = batch_norm2d_backward(&x, &gamma, &fused_stats, &dy).unwrap();
            let gated = relu_backward(&relu_out, &dy).unwrap();
            let (dx2, dg2, db2) = batch_norm2d_backward(&x, &gamma, &plain_stats, &gated).unwrap();
            assert_eq!(dx.to_vec().unwrap(), dx2.to_vec().unwrap(), "{what}: dx");
            assert_eq!(
                dg.to_vec().unwrap(),
                dg2.to_vec().unwrap(),
                "{what}: dweight"
            );
            assert_eq!(db.to_vec().unwrap(), db2.to_vec().unwrap(), "{what}: dbias");
        }
    }
}

fn elementwise_case(device: Device, rng: &mut ChaCha8Rng) {
    for shape in [[2, 3, 4, 5], [1, 7, 3, 3]] {
        let x = randn(rng, &shape, device);
        let r = randn(rng, &shape, device);
        let y = relu(&x).unwrap();
        let dx = relu_backward(&y, &r).unwrap();
        check(&format!("relu {shape:?} [{device}]"), rng, &x, &dx, |x| {
            dot(&relu(x).unwrap(), &r)
        });
        let b = randn(rng, &shape, device);
        // add passes the upstream gradient to both operands.
        check(&format!("add {shape:?} [{device}]"), rng, &x, &r, |x| {
            dot(&add(x, &b).unwrap(), &r)
        });
    }
}

fn pool_linear_ce_case(device: Device, rng: &mut ChaCha8Rng) {
    for (n, c, size, classes, smoothing) in
        [(3, 4, 3, 5, 0.0), (5, 6, 2, 3, 0.1), (2, 3, 1, 4, 0.2)]
    {
        let what =
            format!("pool/linear/ce n{n} c{c} {size}x{size} k{classes} ls{smoothing} [{device}]");
        let x = randn(rng, &[n, c, size, size], device);
        let pooled = global_avg_pool(&x).unwrap();
        let r = randn(rng, pooled.shape(), device);
        let dx = global_avg_pool_backward(&r, [n, c, size, size]).unwrap();
        check(&format!("{what} pool dx"), rng, &x, &dx, |x| {
            dot(&global_avg_pool(x).unwrap(), &r)
        });

        let w = randn(rng, &[classes, c], device);
        let b = randn(rng, &[classes], device);
        let r = randn(rng, &[n, classes], device);
        let (dp, dw, db) = linear_backward(&pooled, &w, &r).unwrap();
        check(&format!("{what} linear dx"), rng, &pooled, &dp, |p| {
            dot(&linear(p, &w, &b).unwrap(), &r)
        });
        check(&format!("{what} linear dweight"), rng, &w, &dw, |w| {
            dot(&linear(&pooled, w, &b).unwrap(), &r)
        });
        check(&format!("{what} linear dbias"), rng, &b, &db, |b| {
            dot(&linear(&pooled, &w, b).unwrap(), &r)
        });

        let logits = randn(rng, &[n, classes], device);
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..classes)).collect();
        let ce = softmax_cross_entropy(&logits, &labels, smoothing).unwrap();
        check(
            &format!("{what} cross-entropy dlogits"),
            rng,
            &logits,
            &ce.dlogits,
            |l| softmax_cross_entropy(l, &labels, smoothing).unwrap().loss as f64,
        );
    }
}

/// Runs one op family's `case` on every available device, each from the same seeded generator:
/// the shared loop of the tests below, one test per family so that a failure names it.
fn on_every_device(family: &str, case: fn(Device, &mut ChaCha8Rng)) {
    let seed = seed();
    let devices = Device::available();
    if devices.len() == 1 {
        println!("gradcheck {family}: no CUDA device available, skipped the CUDA device");
    }
    for device in devices {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        case(device, &mut rng);
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    on_every_device("conv2d", conv_case);
}

#[test]
fn batch_norm_backward_matches_finite_differences() {
    on_every_device("batch_norm2d", batch_norm_case);
}

#[test]
fn batch_norm_relu_backward_matches_the_unfused_ops() {
    on_every_device("batch_norm2d+relu", batch_norm_relu_case);
}

#[test]
fn elementwise_backward_matches_finite_differences() {
    on_every_device("elementwise", elementwise_case);
}

#[test]
fn pool_linear_cross_entropy_backward_matches_finite_differences() {
    on_every_device("pool+linear+cross_entropy", pool_linear_ce_case);
}
