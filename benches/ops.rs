//! Benchmarks of the CPU kernels at the shapes of the speed table (`cargo bench --bench ops`);
//! `cargo xtask bench cpu` runs them beside PyTorch and prints the table.
//!
//! Every row is declared once, in [`rows`], with the flops and bytes of its floor. The binary
//! has five modes:
//! - plain (criterion): times every row (criterion's filters and flags apply);
//! - `EATNAS_BENCH_LIST=1`: prints the rows as JSON lines (name, flops, bytes, trains);
//! - `EATNAS_BENCH_CEILINGS=1`: measures this machine's float32 matrix-product rate and memory
//!   bandwidth (read + write), the two limits the table's floors are taken against;
//! - `EATNAS_BENCH_QUICK=PATTERN`: min and median of 15 runs of the rows whose name contains
//!   PATTERN, without criterion (a quick look while developing);
//! - `EATNAS_BENCH_MEMORY=NAME`: runs one row three times and prints its peak resident memory
//!   and the resident memory just before the first run, as JSON (what `xtask` compares with
//!   PyTorch's).

use std::path::Path;

use criterion::Criterion;
use eatnas_nn::layers::Layer;
use eatnas_nn::{Arch, LayerSpec, Mode, Network, Op};
use eatnas_tensor::{conv2d, Conv2dParams, Tensor};
use eatnas_train::Sgd;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The allocator of `eatnas-cli`, so that the rows measure what the product's binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One run of a row, with its inputs and parameters already in place.
type Run = Box<dyn FnMut()>;

struct Row {
    name: String,
    /// Floating-point operations of one run (a multiply-add is two).
    flops: f64,
    /// Bytes one run must move at least: every tensor it reads or writes, once.
    bytes: f64,
    /// Whether the row trains (forward and backward): those also report peak memory.
    trains: bool,
    build: Box<dyn Fn() -> Run>,
}

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(), shape).unwrap()
}

fn shared() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

/// A forward convolution of `n x cin x size x size` to `cout` channels.
fn conv_row(
    name: &str,
    n: usize,
    cin: usize,
    size: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> Row {
    let out = size.div_ceil(stride);
    let outputs = (n * cout * out * out) as f64;
    Row {
        name: name.into(),
        flops: 2.0 * outputs * (cin / groups * k * k) as f64,
        bytes: 4.0 * ((n * cin * size * size) as f64 + outputs),
        trains: false,
        build: Box::new(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x = random(&[n, cin, size, size], &mut rng);
            let w = random(&[cout, cin / groups, k, k], &mut rng);
            let p = Conv2dParams {
                stride,
                padding: k / 2,
                groups,
            };
            Box::new(move || drop(conv2d(&x, &w, p).unwrap()))
        }),
    }
}

/// Training-mode forward and backward of one stride-1 MBConv6 block with its shortcut.
fn mbconv_row(n: usize, c: usize, size: usize, kernel: usize) -> Row {
    let spec = LayerSpec {
        op: Op::Mb6,
        kernel,
        stride: 1,
        in_channels: c,
        out_channels: c,
        residual: true,
    };
    let (pixels, hidden) = ((n * size * size) as f64, (6 * c) as f64);
    // Forward: 1x1 (c -> 6c), depthwise, 1x1 (6c -> c); backward: twice that (input and weight).
    let forward = pixels * (2.0 * c as f64 * hidden + hidden * (kernel * kernel) as f64);
    // The chain's tensors (x, expanded, depthwise out, block out) each written and read once
    // forward, and once more read (saved) plus a gradient written and read backward.
    let activations = pixels * (c as f64 + hidden + hidden + c as f64);
    Row {
        name: format!("mbconv6_k{kernel}_fwdbwd_{n}x{c}x{size}x{size}"),
        flops: 3.0 * 2.0 * forward,
        bytes: 4.0 * 5.0 * activations,
        trains: true,
        build: Box::new(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut block = Layer::new(&spec, &eatnas_nn::Init::default(), &mut rng).unwrap();
            let x = random(&[n, c, size, size], &mut rng);
            let dy = random(&[n, c, size, size], &mut rng);
            Box::new(move || {
                block.forward(&x, Mode::Train).unwrap();
                drop(block.backward(&dy).unwrap());
            })
        }),
    }
}

/// Output elements of every convolution of `arch` for one image (what training saves).
fn activations_per_image(arch: &Arch, resolution: usize) -> f64 {
    let mut size = resolution.div_ceil(arch.stem.stride);
    let mut total = arch.stem.channels * size * size;
    for layer in arch.layers().iter().flatten() {
        let out = size.div_ceil(layer.stride);
        total += match layer.op.expansion() {
            Some(t) => {
                let hidden = layer.in_channels * t;
                hidden * size * size + hidden * out * out + layer.out_channels * out * out
            }
            None => layer.in_channels * out * out + layer.out_channels * out * out,
        };
        size = out;
    }
    (total + arch.head.channels * size * size) as f64
}

/// One SGD step (forward, backward, update) of a whole network on 10 classes.
fn trainstep_row(name: &str, arch: Arch, n: usize, channels: usize, size: usize) -> Row {
    let madds = eatnas_nn::Counts::new(&arch, channels, size, 10)
        .unwrap()
        .madds as f64;
    let activations = activations_per_image(&arch, size) * n as f64;
    Row {
        name: name.into(),
        flops: 3.0 * 2.0 * madds * n as f64,
        bytes: 4.0 * 5.0 * activations,
        trains: true,
        build: Box::new(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let mut net = Network::new(&arch, channels, 10, 0).unwrap();
            let mut sgd = Sgd::new(0.9, 5e-4, true);
            let x = random(&[n, channels, size, size], &mut rng);
            let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
            Box::new(move || {
                net.loss_and_backward(&x, &labels, 0.1).unwrap();
                sgd.step(&mut net, 0.01).unwrap();
            })
        }),
    }
}

fn rows() -> Vec<Row> {
    let fmnist_ref = Arch::load(&shared().join("spec/fmnist-ref.json")).unwrap();
    let counts = std::fs::read_to_string(shared().join("fixtures/torch/counts.json")).unwrap();
    let counts: Vec<serde_json::Value> = serde_json::from_str(&counts).unwrap();
    let mobilenet_v2 =
        Arch::from_json(&counts[0]["arch"].to_string(), "counts.json row 0").unwrap();
    vec![
        conv_row("dwconv3x3_fwd_32x144x56x56", 32, 144, 56, 144, 3, 1, 144),
        conv_row("dwconv5x5_fwd_32x144x56x56", 32, 144, 56, 144, 5, 1, 144),
        conv_row("dwconv7x7_fwd_32x144x56x56", 32, 144, 56, 144, 7, 1, 144),
        conv_row("pwconv_fwd_32x24x56x56_to144", 32, 24, 56, 144, 1, 1, 1),
        conv_row("conv3x3s2_fwd_32x3x224x224_to32", 32, 3, 224, 32, 3, 2, 1),
        mbconv_row(32, 24, 56, 3),
        mbconv_row(64, 40, 16, 5),
        trainstep_row("mobilenetv2_trainstep_64x3x32x32", mobilenet_v2, 64, 3, 32),
        trainstep_row("fmnist_ref_trainstep_128x1x28x28", fmnist_ref, 128, 1, 28),
    ]
}

/// Resident memory of this process now, in MiB.
fn resident_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// Peak resident memory of this process so far, in MiB (VmHWM).
fn peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `runs` timings of `f` after one warm-up run, in seconds, sorted.
fn sorted_seconds(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// Median of `runs` timings of `f`, in seconds.
fn median_seconds(runs: usize, f: impl FnMut()) -> f64 {
    sorted_seconds(runs, f)[runs / 2]
}

/// (GFLOP/s of a 2048-cube float32 matrix product, GB/s of a 256 MiB copy), on every rayon
/// thread.
fn ceilings() -> (f64, f64) {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads();
    let seconds = median_seconds(5, || unsafe {
        // SAFETY: three distinct n x n row-major buffers.
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    });
    let gflops = 2.0 * (n * n * n) as f64 / seconds / 1e9;
    use rayon::prelude::*;
    let len = 64 << 20;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let seconds = median_seconds(7, || {
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s))
    });
    let gbps = 2.0 * (len * 4) as f64 / seconds / 1e9;
    (gflops, gbps)
}

fn main() {
    if std::env::var_os("EATNAS_BENCH_CEILINGS").is_some() {
        let (gflops, gbps) = ceilings();
        println!("{}", serde_json::json!({"gflops": gflops, "gbps": gbps}));
        return;
    }
    let rows = rows();
    if std::env::var_os("EATNAS_BENCH_LIST").is_some() {
        for row in &rows {
            let line = serde_json::json!({
                "name": row.name, "flops": row.flops, "bytes": row.bytes, "trains": row.trains,
            });
            println!("{line}");
        }
        return;
    }
    if let Ok(name) = std::env::var("EATNAS_BENCH_MEMORY") {
        let Some(row) = rows.iter().find(|r| r.name == name) else {
            eprintln!("no benchmark row named {name:?}");
            std::process::exit(2);
        };
        let mut run = (row.build)();
        let base = resident_mb();
        for _ in 0..3 {
            run();
        }
        let line = serde_json::json!({"name": name, "peak_mb": peak_mb(), "base_mb": base});
        println!("{line}");
        return;
    }
    // A quick look while developing: min and median of 15 runs of matching rows.
    if let Ok(pattern) = std::env::var("EATNAS_BENCH_QUICK") {
        for row in rows.iter().filter(|r| r.name.contains(&pattern)) {
            let times = sorted_seconds(15, (row.build)());
            println!(
                "{:<34} min {:>8.2} ms  median {:>8.2} ms",
                row.name,
                times[0] * 1e3,
                times[7] * 1e3
            );
        }
        return;
    }
    let mut criterion = Criterion::default().sample_size(10).configure_from_args();
    for row in &rows {
        // Built on the first call, so rows that criterion's filter leaves out cost nothing,
        // and once: criterion calls the closure again for every sample.
        let mut run: Option<Run> = None;
        criterion.bench_function(&row.name, |b| {
            let run = run.get_or_insert_with(|| (row.build)());
            b.iter(run)
        });
    }
    criterion.final_summary();
}
