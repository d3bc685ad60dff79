//! 1x1, stride-1 convolution as matrix products over NCHW, cut one of two ways:
//! - per image, `y[n] (Cout x HW) = W (Cout x Cin) * x[n] (Cin x HW)`, straight over NCHW with
//!   no copies, images in parallel, when the planes are large;
//! - one product for the whole batch, `Y (Cout x N*HW) = W * X (Cin x N*HW)`, when the planes
//!   are small (late layers, 7x7 down to 1x1): there a per-image product would have a handful
//!   of columns and run at a fraction of the machine's rate, so the operands are first packed
//!   channel-major (one copy of each, small next to the product's work).

use rayon::prelude::*;

use crate::cpu::gemm::{matmul, Mat};
use crate::cpu::pool::{self, HostBuffer};
use crate::cpu::{copy_row, ordered_sum};
use crate::ops::conv2d::Conv2dShape;

/// Planes of fewer pixels than this take the whole-batch product.
const PACK_BELOW: usize = 64;

fn whole_batch(s: &Conv2dShape) -> bool {
    s.in_height * s.in_width < PACK_BELOW && s.batch > 1
}

/// `(N, C, HW)` -> `(C, N*HW)`, into a workspace buffer.
fn pack(src: &[f32], n: usize, c: usize, hw: usize) -> HostBuffer {
    let mut dst = HostBuffer::new(pool::take(n * c * hw));
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
    let mut dst = pool::take(n * c * hw);
    dst.par_chunks_mut(c * hw)
        .enumerate()
        .for_each(|(i, image)| {
            for (ch, out) in image.chunks_exact_mut(hw).enumerate() {
                out.copy_from_slice(&src[ch * n * hw + i * hw..][..hw]);
            }
        });
    dst
}

/// # Shapes
/// `x`: (N, Cin, H, W), `w`: (Cout, Cin, 1, 1); returns (N, Cout, H, W)
pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (n, cin, cout) = (s.batch, s.in_channels, s.out_channels);
    let threads = rayon::current_num_threads();
    if whole_batch(s) {
        let xt = pack(x, n, cin, pixels);
        let mut yt = HostBuffer::new(pool::take(cout * n * pixels));
        let weight = Mat::row_major(w, cout, cin);
        matmul(
            &mut yt,
            weight,
            Mat::row_major(&xt, cin, n * pixels),
            false,
            threads,
        );
        return unpack(&yt, n, cout, pixels);
    }
    let mut y = pool::take(n * cout * pixels);
    let weight = Mat::row_major(w, cout, cin);
    y.par_chunks_mut(cout * pixels)
        .zip(x.par_chunks(cin * pixels))
        .for_each(|(y, x)| {
            matmul(y, weight, Mat::row_major(x, cin, pixels), false, 1);
        });
    y
}

/// # Shapes
/// `w`: (Cout, Cin, 1, 1), `dy`: (N, Cout, H, W); returns dx (N, Cin, H, W)
pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (n, cin, cout) = (s.batch, s.in_channels, s.out_channels);
    if whole_batch(s) {
        let dyt = pack(dy, n, cout, pixels);
        let mut dxt = HostBuffer::new(pool::take(cin * n * pixels));
        let weight_t = Mat::transposed(w, cin, cout);
        let threads = rayon::current_num_threads();
        matmul(
            &mut dxt,
            weight_t,
            Mat::row_major(&dyt, cout, n * pixels),
            false,
            threads,
        );
        return unpack(&dxt, n, cin, pixels);
    }
    let mut dx = pool::take(n * cin * pixels);
    let weight_t = Mat::transposed(w, cin, cout);
    dx.par_chunks_mut(cin * pixels)
        .zip(dy.par_chunks(cout * pixels))
        .for_each(|(dx, dy)| {
            matmul(dx, weight_t, Mat::row_major(dy, cout, pixels), false, 1);
        });
    dx
}

/// # Shapes
/// `x`: (N, Cin, H, W), `dy`: (N, Cout, H, W); returns dw (Cout, Cin, 1, 1)
pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (n, cin, cout) = (s.batch, s.in_channels, s.out_channels);
    if whole_batch(s) {
        // dW = dY (Cout x N*HW) * X^T (N*HW x Cin): one product, its sum over the batch inside.
        let (dyt, xt) = (pack(dy, n, cout, pixels), pack(x, n, cin, pixels));
        let mut dw = pool::take(cout * cin);
        let (dy_mat, x_t) = (
            Mat::row_major(&dyt, cout, n * pixels),
            Mat::transposed(&xt, n * pixels, cin),
        );
        matmul(&mut dw, dy_mat, x_t, false, rayon::current_num_threads());
        return dw;
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
