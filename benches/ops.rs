//! Criterion benchmarks of the CPU kernels at the shapes of the speed issue's table
//! (`cargo bench --bench ops`). PyTorch's side of the table comes from `cargo xtask bench cpu`.

use criterion::{criterion_group, criterion_main, Criterion};
use eatnas_nn::layers::Block;
use std::path::Path;

use eatnas_nn::{Arch, LayerSpec, Mode, Network, Op};
use eatnas_tensor::{conv2d, Conv2dParams, Tensor};
use eatnas_train::Sgd;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(), shape).unwrap()
}

fn convolutions(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = random(&[32, 144, 56, 56], &mut rng);
    for kernel in [3, 5, 7] {
        let w = random(&[144, 1, kernel, kernel], &mut rng);
        let p = Conv2dParams::depthwise(144, kernel, 1);
        c.bench_function(&format!("dwconv{kernel}x{kernel}_fwd_32x144x56x56"), |b| {
            b.iter(|| conv2d(&x, &w, p).unwrap())
        });
    }
    let x = random(&[32, 24, 56, 56], &mut rng);
    let w = random(&[144, 24, 1, 1], &mut rng);
    c.bench_function("pwconv_fwd_32x24x56x56_to144", |b| {
        b.iter(|| conv2d(&x, &w, Conv2dParams::same(1, 1)).unwrap())
    });
    let x = random(&[32, 3, 224, 224], &mut rng);
    let w = random(&[32, 3, 3, 3], &mut rng);
    c.bench_function("conv3x3s2_fwd_32x3x224x224_to32", |b| {
        b.iter(|| conv2d(&x, &w, Conv2dParams::same(3, 2)).unwrap())
    });
}

fn mbconv(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (op, kernel, n, ch, size) in [(Op::Mb6, 3, 32, 24, 56), (Op::Mb6, 5, 64, 40, 16)] {
        let spec = LayerSpec {
            op,
            kernel,
            stride: 1,
            in_channels: ch,
            out_channels: ch,
            residual: true,
        };
        let mut block = Block::new(&spec, &mut rng).unwrap();
        let x = random(&[n, ch, size, size], &mut rng);
        let dy = random(&[n, ch, size, size], &mut rng);
        c.bench_function(
            &format!("mbconv6_k{kernel}_fwdbwd_{n}x{ch}x{size}x{size}"),
            |b| {
                b.iter(|| {
                    block.forward(&x, Mode::Train).unwrap();
                    block.backward(&dy).unwrap()
                })
            },
        );
    }
}

/// One SGD step (forward, backward, update) of a whole network at a batch.
fn train_steps(c: &mut Criterion) {
    let fmnist_ref =
        Arch::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/fmnist-ref.json"))
            .unwrap();
    let counts = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torch/counts.json"),
    )
    .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&counts).unwrap();
    let mobilenet_v2 = Arch::from_json(&rows[0]["arch"].to_string(), "counts.json row 0").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (name, arch, n, channels, size) in [
        ("fmnist_ref_trainstep_128x1x28x28", &fmnist_ref, 128, 1, 28),
        ("mobilenetv2_trainstep_64x3x32x32", &mobilenet_v2, 64, 3, 32),
    ] {
        let mut net = Network::new(arch, channels, 10, 0).unwrap();
        let mut sgd = Sgd::new(0.9, 5e-4, true);
        let x = random(&[n, channels, size, size], &mut rng);
        let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
        c.bench_function(name, |b| {
            b.iter(|| {
                net.loss_and_backward(&x, &labels, 0.1).unwrap();
                sgd.step(&mut net, 0.01).unwrap();
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = convolutions, mbconv, train_steps
}
criterion_main!(benches);
