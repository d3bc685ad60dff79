//! 1x1, stride-1 convolution: per image, `y[n] (Cout x HW) = W (Cout x Cin) * x[n] (Cin x HW)`,
//! straight over NCHW with no copies.

use rayon::prelude::*;

use crate::cpu::gemm::{matmul, Mat};
use crate::cpu::{ordered_sum, pool};
use crate::ops::conv2d::Conv2dShape;

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (cin, cout) = (s.in_channels, s.out_channels);
    let mut y = pool::take(s.batch * cout * pixels);
    let weight = Mat::row_major(w, cout, cin);
    y.par_chunks_mut(cout * pixels)
        .zip(x.par_chunks(cin * pixels))
        .for_each(|(y, x)| {
            matmul(y, weight, Mat::row_major(x, cin, pixels), false, 1);
        });
    y
}

pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (cin, cout) = (s.in_channels, s.out_channels);
    let mut dx = pool::take(s.batch * cin * pixels);
    let weight_t = Mat::transposed(w, cin, cout);
    dx.par_chunks_mut(cin * pixels)
        .zip(dy.par_chunks(cout * pixels))
        .for_each(|(dx, dy)| {
            matmul(dx, weight_t, Mat::row_major(dy, cout, pixels), false, 1);
        });
    dx
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let pixels = s.in_height * s.in_width;
    let (cin, cout) = (s.in_channels, s.out_channels);
    // dW = sum over images of dy[n] (Cout x HW) * x[n]^T (HW x Cin).
    ordered_sum(s.batch, cout * cin, |images, dw| {
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
