//! GPU benchmarks of the CUDA backend (`scripts/device-check.sh` runs them on the lent GPU,
//! beside `benches/baselines/pytorch_cuda.py` on the same shapes).
//!
//!     EATNAS_BENCH_DEVICE=cuda:0 target/release/deps/cuda-*   (or `cargo bench --bench cuda`)
//!
//! Prints one JSON object per row: name, median ms over timed batches of runs (the GPU
//! synchronised around each batch), flop and byte counts of one run. Without a usable GPU it
//! says so and exits 0 (CI builds it, never runs it there).

use std::path::PathBuf;
use std::time::Instant;

use eatnas_nn::{layers::Layer, Arch, LayerSpec, Mode, Network, Op};
use eatnas_tensor::{
    conv2d, conv2d_backward, mbconv_inference, BnInference, Conv2dParams, Device, MbconvWeights,
    Tensor,
};
use eatnas_train::Sgd;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Run = Box<dyn FnMut()>;

struct Row {
    name: String,
    flops: f64,
    bytes: f64,
    build: Box<dyn Fn(Device) -> Run>,
}

fn shared() -> PathBuf {
    std::env::var_os("EATNAS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")))
}

fn random(shape: &[usize], rng: &mut ChaCha8Rng, device: Device) -> Tensor {
    let n = shape.iter().product();
    let values = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(values, shape)
        .unwrap()
        .to_device(device)
        .unwrap()
}

fn copy_row(mib: usize) -> Row {
    let len = mib * (1 << 20) / 4;
    Row {
        name: format!("copy_d2d_{mib}MiB"),
        flops: 0.0,
        bytes: 2.0 * 4.0 * len as f64,
        build: Box::new(move |device| {
            let x = Tensor::zeros(&[len], device).unwrap();
            Box::new(move || drop(x.deep_copy().unwrap()))
        }),
    }
}

/// Depthwise forward, or backward (input and weight gradients), of `n x c x size x size`.
fn depthwise_row(n: usize, c: usize, size: usize, k: usize, stride: usize, backward: bool) -> Row {
    let out = size.div_ceil(stride);
    let (inputs, outputs) = ((n * c * size * size) as f64, (n * c * out * out) as f64);
    let pass = if backward { "bwd" } else { "fwd" };
    let s = if stride == 1 {
        String::new()
    } else {
        format!("s{stride}")
    };
    Row {
        name: format!("dwconv{k}x{k}{s}_{pass}_{n}x{c}x{size}x{size}"),
        // Backward: both gradients, each as many multiply-adds as the forward pass.
        flops: 2.0 * outputs * (k * k) as f64 * if backward { 2.0 } else { 1.0 },
        // Forward reads x and writes y; backward reads x and dy and writes dx.
        bytes: 4.0
            * if backward {
                2.0 * inputs + outputs
            } else {
                inputs + outputs
            },
        build: Box::new(move |device| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x = random(&[n, c, size, size], &mut rng, device);
            let w = random(&[c, 1, k, k], &mut rng, device);
            let p = Conv2dParams::depthwise(c, k, stride);
            if backward {
                let dy = random(&[n, c, out, out], &mut rng, device);
                Box::new(move || drop(conv2d_backward(&x, &w, &dy, p).unwrap()))
            } else {
                Box::new(move || drop(conv2d(&x, &w, p).unwrap()))
            }
        }),
    }
}

fn conv_row(
    name: &str,
    n: usize,
    cin: usize,
    size: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> Row {
    let out = size.div_ceil(stride);
    let outputs = (n * cout * out * out) as f64;
    Row {
        name: name.into(),
        flops: 2.0 * outputs * (cin * k * k) as f64,
        bytes: 4.0 * ((n * cin * size * size) as f64 + outputs),
        build: Box::new(move |device| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x = random(&[n, cin, size, size], &mut rng, device);
            let w = random(&[cout, cin, k, k], &mut rng, device);
            let p = Conv2dParams::same(k, stride);
            Box::new(move || drop(conv2d(&x, &w, p).unwrap()))
        }),
    }
}

fn mb6(c: usize, kernel: usize) -> LayerSpec {
    LayerSpec {
        op: Op::Mb6,
        kernel,
        stride: 1,
        in_channels: c,
        out_channels: c,
        residual: true,
    }
}

fn mbconv_flops(n: usize, c: usize, size: usize, kernel: usize) -> f64 {
    let (pixels, hidden) = ((n * size * size) as f64, (6 * c) as f64);
    2.0 * pixels * (2.0 * c as f64 * hidden + hidden * (kernel * kernel) as f64)
}

/// Training-mode forward and backward of one stride-1 MBConv6 block (as the CPU rows).
fn mbconv_train_row(n: usize, c: usize, size: usize, kernel: usize) -> Row {
    let activations = (n * size * size) as f64 * (2 * c + 12 * c) as f64;
    Row {
        name: format!("mbconv6_k{kernel}_fwdbwd_{n}x{c}x{size}x{size}"),
        flops: 3.0 * mbconv_flops(n, c, size, kernel),
        bytes: 4.0 * 5.0 * activations,
        build: Box::new(move |device| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut block =
                Layer::new(&mb6(c, kernel), &eatnas_nn::Init::default(), &mut rng).unwrap();
            block.visit("b", &mut |_, slot| {
                let t = match slot {
                    eatnas_nn::Slot::Param(p) => &mut p.value,
                    eatnas_nn::Slot::Buffer(b) => b,
                };
                *t = t.to_device(device).unwrap();
            });
            let x = random(&[n, c, size, size], &mut rng, device);
            let dy = random(&[n, c, size, size], &mut rng, device);
            Box::new(move || {
                block.forward(&x, Mode::Train).unwrap();
                drop(block.backward(&dy).unwrap());
            })
        }),
    }
}

type BnTensors = (Tensor, Tensor, Tensor, Tensor);

fn inf(b: &BnTensors) -> BnInference<'_> {
    BnInference {
        weight: &b.0,
        bias: &b.1,
        running_mean: &b.2,
        running_var: &b.3,
        eps: 1e-5,
    }
}

/// The fused inference block (one kernel on a GPU).
fn mbconv_infer_row(n: usize, c: usize, size: usize, kernel: usize) -> Row {
    Row {
        name: format!("mbconv6_k{kernel}_infer_{n}x{c}x{size}x{size}"),
        flops: mbconv_flops(n, c, size, kernel),
        // The fused kernel reads x and writes y only.
        bytes: 4.0 * 2.0 * (n * c * size * size) as f64,
        build: Box::new(move |device| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let hidden = 6 * c;
            let mut t = |shape: &[usize]| random(shape, &mut rng, device);
            let (we, wd, wp) = (
                t(&[hidden, c, 1, 1]),
                t(&[hidden, 1, kernel, kernel]),
                t(&[c, hidden, 1, 1]),
            );
            let bn = |ch: usize, t: &mut dyn FnMut(&[usize]) -> Tensor| {
                let ones = Tensor::full(&[ch], 1.0, device).unwrap();
                (t(&[ch]), t(&[ch]), t(&[ch]), ones)
            };
            let e = bn(hidden, &mut t);
            let d = bn(hidden, &mut t);
            let p = bn(c, &mut t);
            let x = t(&[n, c, size, size]);
            Box::new(move || {
                let block = MbconvWeights {
                    expand: (&we, inf(&e)),
                    depthwise: (&wd, inf(&d)),
                    project: (&wp, inf(&p)),
                    stride: 1,
                    residual: true,
                };
                drop(mbconv_inference(&x, &block).unwrap())
            })
        }),
    }
}

/// One SGD step of MobileNet-V2 (counts.json row 0) at 224x224 on 1000 classes.
fn mobilenet_row(n: usize) -> Row {
    let counts = std::fs::read_to_string(shared().join("fixtures/torch/counts.json")).unwrap();
    let counts: Vec<serde_json::Value> = serde_json::from_str(&counts).unwrap();
    let arch = Arch::from_json(&counts[0]["arch"].to_string(), "counts.json row 0").unwrap();
    let madds = eatnas_nn::Counts::new(&arch, 3, 224, 1000).unwrap().madds as f64;
    Row {
        name: format!("mobilenetv2_trainstep_{n}x3x224x224"),
        flops: 3.0 * 2.0 * madds * n as f64,
        bytes: 0.0,
        build: Box::new(move |device| {
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let mut net = Network::new(&arch, 3, 1000, 0).unwrap();
            net.to_device(device).unwrap();
            let mut sgd = Sgd::new(0.9, 4e-5, true);
            let x = random(&[n, 3, 224, 224], &mut rng, device);
            let labels: Vec<usize> = (0..n).map(|i| i % 1000).collect();
            Box::new(move || {
                net.loss_and_backward(&x, &labels, 0.1).unwrap();
                sgd.step(&mut net, 0.01).unwrap();
            })
        }),
    }
}

fn rows() -> Vec<Row> {
    let mut rows = vec![copy_row(1024)];
    for k in [3, 5, 7] {
        rows.push(depthwise_row(128, 144, 56, k, 1, false));
        rows.push(depthwise_row(128, 144, 56, k, 1, true));
    }
    rows.push(depthwise_row(128, 96, 112, 3, 2, false));
    rows.push(depthwise_row(128, 96, 112, 3, 2, true));
    rows.push(conv_row(
        "pwconv_fwd_128x24x56x56_to144",
        128,
        24,
        56,
        144,
        1,
        1,
    ));
    rows.push(conv_row(
        "conv3x3s2_fwd_128x3x224x224_to32",
        128,
        3,
        224,
        32,
        3,
        2,
    ));
    rows.push(mbconv_train_row(128, 24, 56, 3));
    rows.push(mbconv_train_row(128, 40, 16, 5));
    rows.push(mbconv_infer_row(128, 24, 56, 3));
    rows.push(mobilenet_row(128));
    rows
}

/// Median over `batches` of the mean time of `per_batch` runs, the GPU synchronised around each.
fn median_ms(device: Device, run: &mut Run, batches: usize, per_batch: usize) -> f64 {
    let mut times = Vec::with_capacity(batches);
    for _ in 0..batches {
        device.synchronize().unwrap();
        let t = Instant::now();
        for _ in 0..per_batch {
            run();
        }
        device.synchronize().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3 / per_batch as f64);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; a name filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let text = std::env::var("EATNAS_BENCH_DEVICE").unwrap_or_else(|_| "cuda:0".into());
    let device = match Device::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            println!("cuda bench: skipped ({e})");
            return;
        }
    };
    eprintln!("cuda bench on {device} ({})", device.name());
    for row in rows() {
        if filter
            .as_ref()
            .is_some_and(|f| !row.name.contains(f.as_str()))
        {
            continue;
        }
        let mut run = (row.build)(device);
        // Warm-up: module loading, the allocator's pool.
        run();
        run();
        let once = median_ms(device, &mut run, 1, 1);
        let per_batch = ((50.0 / once.max(1e-3)) as usize).clamp(1, 200);
        let ms = median_ms(device, &mut run, 7, per_batch);
        let line =
            serde_json::json!({"name": row.name, "ms": ms, "flops": row.flops, "bytes": row.bytes});
        println!("{line}");
    }
}
