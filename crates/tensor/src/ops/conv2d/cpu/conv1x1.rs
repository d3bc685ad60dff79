//! 1x1, stride-1 convolution as matrix products over NCHW (1x1 planes: the batch is the
//! matrix, one product), otherwise cut one of three ways:
//! - on AVX-512 with planes of 16+ pixels, `y[n] = W * x[n]` for every image by the
//!   register-tiled kernels of [`avx512`] (forward, input gradient, and the weight gradient
//!   from 7x7 planes up);
//! - per image, `y[n] (Cout x HW) = W (Cout x Cin) * x[n] (Cin x HW)`, straight over NCHW with
//!   no copies, images in parallel, when the planes are large (`gemm`, without AVX-512);
//! - one product for the whole batch, `Y (Cout x N*HW) = W * X (Cin x N*HW)`, when the planes
//!   are small (late layers, 7x7 down to 2x2): there a per-image product would have a handful
//!   of columns and run at a fraction of the machine's rate, so the operands are first packed
//!   channel-major (one copy of each, small next to the product's work); the product itself is
//!   [`avx512`]'s where it runs, else `gemm`.

use rayon::prelude::*;

use crate::cpu::gemm::{matmul, threads_for, Mat};
use crate::cpu::workspace::{self, HostBuffer};
use crate::cpu::{copy_row, ordered_sum};
use crate::ops::conv2d::Conv2dShape;

use super::InputMap;

mod avx512;

/// Planes of fewer pixels than this take the whole-batch product.
const PACK_BELOW: usize = 64;

fn whole_batch(s: &Conv2dShape) -> bool {
    pixels(s) < PACK_BELOW && s.batch > 1
}

/// `(N, C, HW)` -> `(C, N*HW)`, into a workspace buffer.
fn pack(src: &[f32], n: usize, c: usize, hw: usize) -> HostBuffer {
    let mut dst = HostBuffer::new(workspace::take(n * c * hw));
    dst.par_chunks_mut(n * hw)
        .enumerate()
        .for_each(|(ch, row)| {
            for (i, out) in row.chunks_exact_mut(hw).enumerate() {
                copy_row(out, &src[(i * c + ch) * hw..][..hw]);
            }
        });
    dst
}

/// `(C, N*HW)` -> `(N, C, HW)`.
fn unpack(src: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut dst = workspace::take(n * c * hw);
    dst.par_chunks_mut(c * hw)
        .enumerate()
        .for_each(|(i, image)| {
            for (ch, out) in image.chunks_exact_mut(hw).enumerate() {
                copy_row(out, &src[ch * n * hw + i * hw..][..hw]);
            }
        });
    dst
}

/// `out[n] (Cout' x HW) = weight (Cout' x Cin') * input[n] (Cin' x HW)` for every image: the
/// forward pass (`weight` = W) and the input gradient (`weight` = W^T) alike.
fn product(weight: Mat<'_>, input: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if pixels(s) == 1 {
        // 1x1 planes: the batch is already an N x Cin' matrix, and out = input * weight^T is
        // N x Cout' in NCHW order: one product, no copies.
        let (cin, cout) = (weight.cols(), weight.rows());
        let mut out = workspace::take(s.batch * cout);
        // out (N x Cout') = input (N x Cin') * weight^T, the batch as the kernel's rows, when
        // weight^T lies row after row in memory (the input gradient: it is W). For the forward
        // pass a transposed copy of W cost as much as the product: `gemm` takes it as a view.
        if let Some(weight_t) = weight.transpose().row_major_data() {
            if avx512::usable(cout) {
                let rows = Mat::row_major(input, s.batch, cin);
                avx512::product(rows, weight_t, cout, &mut out);
                return out;
            }
        }
        let flops = 2 * s.batch * cin * cout;
        matmul(
            &mut out,
            Mat::row_major(input, s.batch, cin),
            weight.transpose(),
            false,
            threads_for(flops),
        );
        return out;
    }
    if avx512::usable(pixels(s)) {
        let m = weight.rows();
        let mut out = workspace::take(s.batch * m * pixels(s));
        avx512::product(weight, input, pixels(s), &mut out);
        return out;
    }
    if whole_batch(s) {
        return packed_product(weight, &pack(input, s.batch, weight.cols(), pixels(s)), s);
    }
    let (cin, cout, pixels) = (weight.cols(), weight.rows(), pixels(s));
    let mut out = workspace::take(s.batch * cout * pixels);
    out.par_chunks_mut(cout * pixels)
        .zip(input.par_chunks(cin * pixels))
        .for_each(|(out, input)| {
            matmul(out, weight, Mat::row_major(input, cin, pixels), false, 1);
        });
    out
}

/// [`product`] on an input already packed channel-major (`Cin' x N*HW`): one product over the
/// whole batch, unpacked to NCHW.
fn packed_product(weight: Mat<'_>, packed: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (cin, cout, n, pixels) = (weight.cols(), weight.rows(), s.batch, pixels(s));
    let mut out = HostBuffer::new(workspace::take(cout * n * pixels));
    if avx512::usable(n * pixels) {
        // The packed batch is one plane of N*HW pixels to the register-tiled kernel.
        avx512::product(weight, packed, n * pixels, &mut out);
    } else {
        let input = Mat::row_major(packed, cin, n * pixels);
        matmul(&mut out, weight, input, false, rayon::current_num_threads());
    }
    unpack(&out, n, cout, pixels)
}

fn pixels(s: &Conv2dShape) -> usize {
    s.in_height * s.in_width
}

/// Whether [`forward_mapped`] and [`backward_mapped`] run here: the register-tiled kernels
/// (AVX-512, planes of 16+ pixels) apply a map as they load; elsewhere the caller writes the
/// mapped input out first.
pub(super) fn reads_mapped(s: &Conv2dShape) -> bool {
    avx512::usable(pixels(s))
}

/// The forward pass of `map(x)`, the map applied channel by channel as `x` is loaded (the
/// MBConv block's projection reads its depthwise batch norm this way).
///
/// # Shapes
/// as [`forward`]
pub(super) fn forward_mapped(x: &[f32], map: InputMap<'_>, w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (cin, cout) = (s.in_channels, s.out_channels);
    let mut out = workspace::take(s.batch * cout * pixels(s));
    avx512::product_mapped(
        Mat::row_major(w, cout, cin),
        x,
        Some(map),
        pixels(s),
        &mut out,
    );
    out
}

/// Both gradients of [`forward_mapped`]: dx is the gradient of the mapped input.
///
/// # Shapes
/// as [`backward`]
pub(super) fn backward_mapped(
    x: &[f32],
    map: InputMap<'_>,
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    let (cin, cout, p) = (s.in_channels, s.out_channels, pixels(s));
    let dx = backward_input(w, dy, s);
    if p >= 32 {
        return (dx, avx512::weight_gradient(dy, cout, x, Some(map), cin, p));
    }
    // 4x4 planes take the packed weight gradient: the mapped input is written out for it.
    let mut mapped = HostBuffer::new(workspace::take(x.len()));
    mapped
        .par_chunks_mut(p)
        .zip(x.par_chunks(p))
        .enumerate()
        .for_each(|(plane, (out, x))| map.channel(plane % cin).apply(x, out));
    (dx, backward_weight(&mapped, dy, s))
}

/// # Shapes
/// `x`: (N, Cin, H, W), `w`: (Cout, Cin, 1, 1); returns (N, Cout, H, W)
pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    product(Mat::row_major(w, s.out_channels, s.in_channels), x, s)
}

/// # Shapes
/// `w`: (Cout, Cin, 1, 1), `dy`: (N, Cout, H, W); returns dx (N, Cin, H, W)
pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    product(Mat::transposed(w, s.in_channels, s.out_channels), dy, s)
}

/// Both gradients, `(dx, dw)`; on small planes the output gradient is packed once for the two.
///
/// # Shapes
/// `x`: (N, Cin, H, W), `w`: (Cout, Cin, 1, 1), `dy`: (N, Cout, H, W); returns (dx, dw)
pub(super) fn backward(x: &[f32], w: &[f32], dy: &[f32], s: &Conv2dShape) -> (Vec<f32>, Vec<f32>) {
    if !whole_batch(s) || avx512::usable(pixels(s)) || pixels(s) == 1 {
        return (backward_input(w, dy, s), backward_weight(x, dy, s));
    }
    let dyt = pack(dy, s.batch, s.out_channels, pixels(s));
    let weight_t = Mat::transposed(w, s.in_channels, s.out_channels);
    (
        packed_product(weight_t, &dyt, s),
        packed_weight_gradient(&dyt, x, s),
    )
}

/// dW = dY (Cout x N*HW) * X^T (N*HW x Cin), `dyt` packed: one product, the sum over the batch
/// inside it.
fn packed_weight_gradient(dyt: &[f32], x: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (n, cin, cout, pixels) = (s.batch, s.in_channels, s.out_channels, pixels(s));
    let mut dw = workspace::take(cout * cin);
    if avx512::usable(cin) {
        // dW = dY (Cout x N*HW, packed) * X^T, X^T laid out as N*HW rows of channels.
        let x_rows = positions_major(x, n, cin, pixels);
        let dy_mat = Mat::row_major(dyt, cout, n * pixels);
        avx512::product(dy_mat, &x_rows, cin, &mut dw);
        return dw;
    }
    let xt = pack(x, n, cin, pixels);
    let (dy_mat, x_t) = (
        Mat::row_major(dyt, cout, n * pixels),
        Mat::transposed(&xt, n * pixels, cin),
    );
    matmul(&mut dw, dy_mat, x_t, false, rayon::current_num_threads());
    dw
}

/// `(N, C, HW)` -> `(N*HW, C)`: each image's `C x HW` block transposed, into a workspace
/// buffer.
fn positions_major(src: &[f32], n: usize, c: usize, hw: usize) -> HostBuffer {
    let mut dst = HostBuffer::new(workspace::take(n * c * hw));
    dst.par_chunks_mut(c * hw)
        .zip(src.par_chunks(c * hw))
        .for_each(|(out, image)| {
            for (ch, plane) in image.chunks_exact(hw).enumerate() {
                for (p, &v) in plane.iter().enumerate() {
                    out[p * c + ch] = v;
                }
            }
        });
    dst
}

/// # Shapes
/// `x`: (N, Cin, H, W), `dy`: (N, Cout, H, W); returns dw (Cout, Cin, 1, 1)
pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (n, cin, cout, pixels) = (s.batch, s.in_channels, s.out_channels, pixels(s));
    if pixels == 1 {
        // dW (Cout x Cin) = dY^T (Cout x N) * X (N x Cin), straight over the NCHW buffers.
        let mut dw = workspace::take(cout * cin);
        if avx512::usable(cin) {
            avx512::product(Mat::transposed(dy, cout, n), x, cin, &mut dw);
            return dw;
        }
        matmul(
            &mut dw,
            Mat::transposed(dy, cout, n),
            Mat::row_major(x, n, cin),
            false,
            threads_for(2 * n * cin * cout),
        );
        return dw;
    }
    // On 4x4 planes a dot-product tile does one vector step per image: the packed product
    // below measured faster there (7.6 against 4.7 ms for fmnist-ref's 480 -> 160 layer).
    if avx512::usable(pixels) && pixels >= 32 {
        return avx512::weight_gradient(dy, cout, x, None, cin, pixels);
    }
    if whole_batch(s) {
        return packed_weight_gradient(&pack(dy, n, cout, pixels), x, s);
    }
    // dW = sum over images of dy[n] (Cout x HW) * x[n]^T (HW x Cin).
    ordered_sum(n, cout * cin, |images, dw| {
        for n in images {
            let x = &x[n * cin * pixels..][..cin * pixels];
            let dy = &dy[n * cout * pixels..][..cout * pixels];
            matmul(
                dw,
                Mat::row_major(dy, cout, pixels),
                Mat::transposed(x, pixels, cin),
                true,
                1,
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut (1x1 planes, packed, register-tiled or per image) against the definition.
    #[test]
    fn every_plane_size_matches_the_definition() {
        for (n, cin, cout, size) in [
            (5, 7, 20, 1),
            (3, 17, 5, 2),
            (2, 6, 9, 4),
            (3, 5, 18, 7),
            (2, 4, 3, 9),
        ] {
            let (s, x, w, dy) = case(n, cin, cout, size);
            let p = size * size;
            let mut y = vec![0.0f32; n * cout * p];
            let mut dx = vec![0.0f32; n * cin * p];
            let mut dw = vec![0.0f32; cout * cin];
            for i in 0..n {
                for o in 0..cout {
                    for c in 0..cin {
                        for q in 0..p {
                            let (xi, yi) = ((i * cin + c) * p + q, (i * cout + o) * p + q);
                            y[yi] += w[o * cin + c] * x[xi];
                            dx[xi] += w[o * cin + c] * dy[yi];
                            dw[o * cin + c] += dy[yi] * x[xi];
                        }
                    }
                }
            }
            let (got_dx, got_dw) = backward(&x, &w, &dy, &s);
            let what = format!("n{n} {cin}->{cout} {size}x{size}");
            for (name, got, want) in [
                ("y", forward(&x, &w, &s), y),
                ("dx", got_dx, dx),
                ("dw", got_dw, dw.clone()),
                ("dw only", backward_weight(&x, &dy, &s), dw.clone()),
            ] {
                assert_eq!(got.len(), want.len(), "{name} {what}");
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{name} {what}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// A 1x1 case: its shape and deterministic `x`, `w` and `dy`.
    fn case(
        n: usize,
        cin: usize,
        cout: usize,
        size: usize,
    ) -> (Conv2dShape, Vec<f32>, Vec<f32>, Vec<f32>) {
        let s = Conv2dShape {
            batch: n,
            in_channels: cin,
            in_height: size,
            in_width: size,
            out_channels: cout,
            out_height: size,
            out_width: size,
            kernel_height: 1,
            kernel_width: 1,
            stride: 1,
            padding: 0,
            groups: 1,
        };
        let p = size * size;
        let value = |i: usize, m: usize| ((i * 7919 % m) as f32 / m as f32) - 0.5;
        let x = (0..n * cin * p).map(|i| value(i, 97)).collect();
        let w = (0..cout * cin).map(|i| value(i, 31)).collect();
        let dy = (0..n * cout * p).map(|i| value(i, 89)).collect();
        (s, x, w, dy)
    }

    #[test]
    fn a_mapped_input_matches_the_input_written_out() {
        if !avx512::usable(16) {
            eprintln!("pointwise: no AVX-512 here, the mapped kernels do not run");
            return;
        }
        // 4x4 (weight gradient through the written-out input) and 7x7 (read through the map).
        for (n, cin, cout, size) in [(3, 5, 18, 4), (2, 7, 9, 7)] {
            let (s, x, w, dy) = case(n, cin, cout, size);
            let p = size * size;
            let scale: Vec<f32> = (0..cin).map(|c| 0.5 + c as f32 * 0.25).collect();
            let shift: Vec<f32> = (0..cin).map(|c| 0.1 - c as f32 * 0.05).collect();
            for relu in [false, true] {
                let map = InputMap {
                    scale: &scale,
                    shift: &shift,
                    relu,
                };
                let mapped: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let c = (i / p) % cin;
                        let y = v * scale[c] + shift[c];
                        if relu {
                            y.max(0.0)
                        } else {
                            y
                        }
                    })
                    .collect();
                let what = format!("n{n} {cin}->{cout} {size}x{size} relu {relu}");
                let close = |a: &[f32], b: &[f32]| {
                    a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
                };
                assert!(
                    close(&forward_mapped(&x, map, &w, &s), &forward(&mapped, &w, &s)),
                    "y {what}"
                );
                let (dx, dw) = backward_mapped(&x, map, &w, &dy, &s);
                let (dx_want, dw_want) = backward(&mapped, &w, &dy, &s);
                assert!(close(&dx, &dx_want), "dx {what}");
                assert!(close(&dw, &dw_want), "dw {what}");
            }
        }
    }
}
