use eatnas_tensor::*;
use std::time::Instant;
fn t(name: &str, bytes: f64, mut f: impl FnMut()) {
    f();
    f();
    let cold = std::env::var_os("COLD").is_some();
    let mut junk = vec![1.0f32; if cold { 128 << 20 } else { 1 }];
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            if cold {
                for v in junk.iter_mut() {
                    *v += 1.0;
                }
            }
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(&junk);
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:50} median {:7.3} ms  min {:7.3} ms  {:6.1} GB/s",
        v[7] * 1e3,
        v[0] * 1e3,
        bytes / v[7] / 1e9
    );
}
fn main() {
    for dims in [
        [128usize, 72, 28, 28],
        [128, 96, 14, 14],
        [128, 192, 7, 7],
        [128, 480, 4, 4],
    ] {
        let n: usize = dims.iter().product();
        let x = Tensor::from_vec(
            (0..n)
                .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
                .collect(),
            &dims,
        )
        .unwrap();
        let c = dims[1];
        let w = Tensor::full(&[c], 1.0, Device::Cpu).unwrap();
        let b = Tensor::zeros(&[c], Device::Cpu).unwrap();
        let mut rm = Tensor::zeros(&[c], Device::Cpu).unwrap();
        let mut rv = Tensor::full(&[c], 1.0, Device::Cpu).unwrap();
        let bytes = n as f64 * 8.0;
        t(&format!("bn fwd {dims:?}"), bytes, || {
            let _ = batch_norm2d_train_act(&x, &w, &b, &mut rm, &mut rv, 0.1, 1e-5, true).unwrap();
        });
        let (_, stats) =
            batch_norm2d_train_act(&x, &w, &b, &mut rm, &mut rv, 0.1, 1e-5, true).unwrap();
        t(&format!("bn bwd {dims:?}"), n as f64 * 12.0, || {
            let _ = batch_norm2d_backward(&x, &w, &stats, &x).unwrap();
        });
        t(&format!("bn eval {dims:?}"), bytes, || {
            let _ = batch_norm2d_eval_act(&x, &w, &b, &rm, &rv, 1e-5, true).unwrap();
        });
        t(&format!("add {dims:?}"), n as f64 * 12.0, || {
            let _ = add(&x, &x).unwrap();
        });
    }
}
