//! 1x1, stride-1 convolution as matrix products straight over NCHW, with no copies, cut one of
//! two ways:
//! - per image, `y[n] (Cout x HW) = W (Cout x Cin) * x[n] (Cin x HW)`, images in parallel,
//!   when the planes are large;
//! - per pixel, `y[:, :, p] (N x Cout) = x[:, :, p] (N x Cin) * W^T`, strided views, when the
//!   planes are small (late layers: 7x7 down to 1x1): there a per-image product would have a
//!   handful of columns and run at a fraction of the machine's rate.

use rayon::prelude::*;

use crate::cpu::gemm::{matmul, matmul_strided, Mat};
use crate::cpu::{ordered_sum, pool};
use crate::ops::conv2d::Conv2dShape;

/// Planes of fewer pixels than this (and fewer than the batch) take the per-pixel products: a
/// pixel's view reads one element per cache line, so past a few pixels per line the per-image
/// products win again (measured: 7x7 planes at batch 128 ran 30% slower per pixel).
const SMALL_PLANE: usize = 5;

fn per_pixel(s: &Conv2dShape) -> bool {
    let pixels = s.in_height * s.in_width;
    pixels < SMALL_PLANE && pixels < s.batch
}

/// The (N x C) matrix of pixel `p` of an (N, C, HW) tensor.
fn pixel_view(data: &[f32], n: usize, c: usize, pixels: usize, p: usize) -> Mat<'_> {
    Mat::strided(&data[p..], n, c, c * pixels, pixels)
}

/// # Shapes
/// `x`: (N, Cin, H, W), `w`: (Cout, Cin, 1, 1); returns (N, Cout, H, W)
pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (n, cin, cout) = (s.batch, s.in_channels, s.out_channels);
    let mut y = pool::take(n * cout * pixels);
    if per_pixel(s) {
        let weight_t = Mat::transposed(w, cin, cout);
        for p in 0..pixels {
            let x_p = pixel_view(x, n, cin, pixels, p);
            let threads = rayon::current_num_threads();
            matmul_strided(
                &mut y[p..],
                (cout * pixels, pixels),
                x_p,
                weight_t,
                false,
                threads,
            );
        }
        return y;
    }
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
    let mut dx = pool::take(n * cin * pixels);
    if per_pixel(s) {
        let weight = Mat::row_major(w, cout, cin);
        for p in 0..pixels {
            let dy_p = pixel_view(dy, n, cout, pixels, p);
            let threads = rayon::current_num_threads();
            matmul_strided(
                &mut dx[p..],
                (cin * pixels, pixels),
                dy_p,
                weight,
                false,
                threads,
            );
        }
        return dx;
    }
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
    if per_pixel(s) {
        // dW = sum over pixels of dy_p^T (Cout x N) * x_p (N x Cin), accumulated in order.
        let mut dw = pool::zeroed(cout * cin);
        for p in 0..pixels {
            let dy_p_t = Mat::strided(&dy[p..], cout, n, pixels, cout * pixels);
            let x_p = pixel_view(x, n, cin, pixels, p);
            matmul(&mut dw, dy_p_t, x_p, true, rayon::current_num_threads());
        }
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
