//! General (grouped, strided, padded) convolution as im2col + GEMM, one image per task.
//!
//! The column matrix of one image is `(Cin * KH * KW) x (OH * OW)`, channel-major, so the rows
//! of group `g` are one contiguous block and each group is one matrix product.

use rayon::prelude::*;

use super::valid_outputs;
use crate::cpu::gemm::{matmul, Mat};
use crate::cpu::ordered_sum;
use crate::cpu::workspace::{self, HostBuffer};
use crate::ops::conv2d::Conv2dShape;

struct Sizes {
    in_image: usize,
    out_image: usize,
    pixels: usize,
    group_rows: usize,
    group_out: usize,
    taps: usize,
}

impl Sizes {
    fn new(s: &Conv2dShape) -> Sizes {
        let taps = s.kernel_height * s.kernel_width;
        Sizes {
            in_image: s.in_channels * s.in_height * s.in_width,
            out_image: s.out_channels * s.out_height * s.out_width,
            pixels: s.out_height * s.out_width,
            group_rows: s.in_channels / s.groups * taps,
            group_out: s.out_channels / s.groups,
            taps,
        }
    }
}

/// Fills `cols` ((Cin*KH*KW) x (OH*OW)) from one image `x` (Cin x H x W); padding reads as zero.
fn im2col(x: &[f32], cols: &mut [f32], s: &Conv2dShape) {
    let pixels = s.out_height * s.out_width;
    for channel in 0..s.in_channels {
        let plane = &x[channel * s.in_height * s.in_width..][..s.in_height * s.in_width];
        for kh in 0..s.kernel_height {
            let (oh_lo, oh_hi) = valid_outputs(s.out_height, s.in_height, kh, s.stride, s.padding);
            for kw in 0..s.kernel_width {
                let (lo, hi) = valid_outputs(s.out_width, s.in_width, kw, s.stride, s.padding);
                let row = ((channel * s.kernel_height + kh) * s.kernel_width + kw) * pixels;
                let row = &mut cols[row..][..pixels];
                row.fill(0.0);
                for oh in oh_lo..oh_hi {
                    let ih = oh * s.stride + kh - s.padding;
                    let x_row = &plane[ih * s.in_width..][..s.in_width];
                    let out = &mut row[oh * s.out_width..][..s.out_width];
                    if lo < hi {
                        let first = lo * s.stride + kw - s.padding;
                        for (c, v) in out[lo..hi]
                            .iter_mut()
                            .zip(x_row[first..].iter().step_by(s.stride))
                        {
                            *c = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the column-matrix gradient `cols` back into one image's gradient `dx` (the adjoint of
/// [`im2col`]).
fn col2im(cols: &[f32], dx: &mut [f32], s: &Conv2dShape) {
    let pixels = s.out_height * s.out_width;
    for channel in 0..s.in_channels {
        let plane = &mut dx[channel * s.in_height * s.in_width..][..s.in_height * s.in_width];
        for kh in 0..s.kernel_height {
            let (oh_lo, oh_hi) = valid_outputs(s.out_height, s.in_height, kh, s.stride, s.padding);
            for kw in 0..s.kernel_width {
                let (lo, hi) = valid_outputs(s.out_width, s.in_width, kw, s.stride, s.padding);
                if lo >= hi {
                    continue;
                }
                let row = &cols
                    [((channel * s.kernel_height + kh) * s.kernel_width + kw) * pixels..][..pixels];
                let first = lo * s.stride + kw - s.padding;
                for oh in oh_lo..oh_hi {
                    let ih = oh * s.stride + kh - s.padding;
                    let dx_row = &mut plane[ih * s.in_width..][..s.in_width];
                    let grads = &row[oh * s.out_width..][lo..hi];
                    for (d, g) in dx_row[first..].iter_mut().step_by(s.stride).zip(grads) {
                        *d += *g;
                    }
                }
            }
        }
    }
}

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let z = Sizes::new(s);
    let mut y = workspace::take(s.batch * z.out_image);
    y.par_chunks_mut(z.out_image)
        .zip(x.par_chunks(z.in_image))
        .for_each_init(
            || HostBuffer::zeroed(s.in_channels * z.taps * z.pixels),
            |cols, (y, x)| {
                im2col(x, cols, s);
                for g in 0..s.groups {
                    let weight = Mat::row_major(
                        &w[g * z.group_out * z.group_rows..],
                        z.group_out,
                        z.group_rows,
                    );
                    let cols = Mat::row_major(
                        &cols[g * z.group_rows * z.pixels..],
                        z.group_rows,
                        z.pixels,
                    );
                    matmul(
                        &mut y[g * z.group_out * z.pixels..][..z.group_out * z.pixels],
                        weight,
                        cols,
                        false,
                        1,
                    );
                }
            },
        );
    y
}

/// Returns `(dx, dweight)`; `dx` is empty unless `want_input_grad` (then `w` may be empty too).
pub(super) fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
    want_input_grad: bool,
) -> (Vec<f32>, Vec<f32>) {
    let z = Sizes::new(s);
    let col_len = s.in_channels * z.taps * z.pixels;
    let mut dx = Vec::new();
    if want_input_grad {
        // dcols = W_g^T (rows x Cout_g) * dy[n, g], then scattered back into the image.
        dx = workspace::zeroed(s.batch * z.in_image); // col2im accumulates
        dx.par_chunks_mut(z.in_image)
            .zip(dy.par_chunks(z.out_image))
            .for_each_init(
                || HostBuffer::zeroed(col_len),
                |dcols, (dx, dy)| {
                    for g in 0..s.groups {
                        let weight_t = Mat::transposed(
                            &w[g * z.group_out * z.group_rows..],
                            z.group_rows,
                            z.group_out,
                        );
                        let dy_g = Mat::row_major(
                            &dy[g * z.group_out * z.pixels..],
                            z.group_out,
                            z.pixels,
                        );
                        matmul(
                            &mut dcols[g * z.group_rows * z.pixels..][..z.group_rows * z.pixels],
                            weight_t,
                            dy_g,
                            false,
                            1,
                        );
                    }
                    col2im(dcols, dx, s);
                },
            );
    }
    // dW_g = sum over images of dy[n, g] (Cout_g x pixels) * cols_g^T (pixels x rows).
    let dw = ordered_sum(s.batch, s.out_channels * z.group_rows, |images, dw| {
        let mut cols = HostBuffer::zeroed(col_len);
        for n in images {
            im2col(&x[n * z.in_image..][..z.in_image], &mut cols, s);
            for g in 0..s.groups {
                let dy_g = Mat::row_major(
                    &dy[n * z.out_image + g * z.group_out * z.pixels..],
                    z.group_out,
                    z.pixels,
                );
                let cols_t =
                    Mat::transposed(&cols[g * z.group_rows * z.pixels..], z.pixels, z.group_rows);
                matmul(
                    &mut dw[g * z.group_out * z.group_rows..][..z.group_out * z.group_rows],
                    dy_g,
                    cols_t,
                    true,
                    1,
                );
            }
        }
    });
    (dx, dw)
}
