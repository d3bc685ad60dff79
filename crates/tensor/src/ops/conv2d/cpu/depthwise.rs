//! Direct depthwise convolution (one filter per channel), one plane per task.

use rayon::prelude::*;

use super::valid_outputs;
use crate::ops::conv2d::Conv2dShape;

/// Valid output ranges per kernel row (over output rows) and per kernel column (over output
/// columns).
struct Taps {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
}

impl Taps {
    fn new(s: &Conv2dShape) -> Taps {
        Taps {
            rows: (0..s.kernel_height).map(|k| valid_outputs(s.out_height, s.in_height, k, s.stride, s.padding)).collect(),
            cols: (0..s.kernel_width).map(|k| valid_outputs(s.out_width, s.in_width, k, s.stride, s.padding)).collect(),
        }
    }
}

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (in_plane, out_plane, taps_per_filter) =
        (s.in_height * s.in_width, s.out_height * s.out_width, s.kernel_height * s.kernel_width);
    let taps = Taps::new(s);
    let mut y = vec![0.0f32; s.batch * s.out_channels * out_plane];
    y.par_chunks_mut(out_plane).enumerate().for_each(|(plane, y)| {
        let channel = plane % s.in_channels;
        let x = &x[plane * in_plane..][..in_plane];
        let filter = &w[channel * taps_per_filter..][..taps_per_filter];
        for kh in 0..s.kernel_height {
            let (oh_lo, oh_hi) = taps.rows[kh];
            for oh in oh_lo..oh_hi {
                let ih = oh * s.stride + kh - s.padding;
                let x_row = &x[ih * s.in_width..][..s.in_width];
                let y_row = &mut y[oh * s.out_width..][..s.out_width];
                for kw in 0..s.kernel_width {
                    let weight = filter[kh * s.kernel_width + kw];
                    let (lo, hi) = taps.cols[kw];
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * s.stride + kw - s.padding;
                    if s.stride == 1 {
                        for (out, input) in y_row[lo..hi].iter_mut().zip(&x_row[first..first + (hi - lo)]) {
                            *out += weight * input;
                        }
                    } else {
                        for (out, input) in y_row[lo..hi].iter_mut().zip(x_row[first..].iter().step_by(s.stride)) {
                            *out += weight * input;
                        }
                    }
                }
            }
        }
    });
    y
}

pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (in_plane, out_plane, taps_per_filter) =
        (s.in_height * s.in_width, s.out_height * s.out_width, s.kernel_height * s.kernel_width);
    let taps = Taps::new(s);
    let mut dx = vec![0.0f32; s.batch * s.in_channels * in_plane];
    dx.par_chunks_mut(in_plane).enumerate().for_each(|(plane, dx)| {
        let channel = plane % s.in_channels;
        let dy = &dy[plane * out_plane..][..out_plane];
        let filter = &w[channel * taps_per_filter..][..taps_per_filter];
        for kh in 0..s.kernel_height {
            let (oh_lo, oh_hi) = taps.rows[kh];
            for oh in oh_lo..oh_hi {
                let ih = oh * s.stride + kh - s.padding;
                let dy_row = &dy[oh * s.out_width..][..s.out_width];
                let dx_row = &mut dx[ih * s.in_width..][..s.in_width];
                for kw in 0..s.kernel_width {
                    let weight = filter[kh * s.kernel_width + kw];
                    let (lo, hi) = taps.cols[kw];
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * s.stride + kw - s.padding;
                    if s.stride == 1 {
                        for (grad, upstream) in dx_row[first..first + (hi - lo)].iter_mut().zip(&dy_row[lo..hi]) {
                            *grad += weight * upstream;
                        }
                    } else {
                        for (grad, upstream) in dx_row[first..].iter_mut().step_by(s.stride).zip(&dy_row[lo..hi]) {
                            *grad += weight * upstream;
                        }
                    }
                }
            }
        }
    });
    dx
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let (in_plane, out_plane, taps_per_filter) =
        (s.in_height * s.in_width, s.out_height * s.out_width, s.kernel_height * s.kernel_width);
    let taps = Taps::new(s);
    let mut dw = vec![0.0f32; s.out_channels * taps_per_filter];
    dw.par_chunks_mut(taps_per_filter).enumerate().for_each(|(channel, dw)| {
        let mut sums = vec![0.0f64; taps_per_filter];
        for image in 0..s.batch {
            let plane = image * s.in_channels + channel;
            let x = &x[plane * in_plane..][..in_plane];
            let dy = &dy[plane * out_plane..][..out_plane];
            for kh in 0..s.kernel_height {
                let (oh_lo, oh_hi) = taps.rows[kh];
                for kw in 0..s.kernel_width {
                    let (lo, hi) = taps.cols[kw];
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * s.stride + kw - s.padding;
                    let mut sum = 0.0f32;
                    for oh in oh_lo..oh_hi {
                        let ih = oh * s.stride + kh - s.padding;
                        let x_row = &x[ih * s.in_width..][..s.in_width];
                        let dy_row = &dy[oh * s.out_width..][lo..hi];
                        sum += dy_row.iter().zip(x_row[first..].iter().step_by(s.stride)).map(|(g, v)| g * v).sum::<f32>();
                    }
                    sums[kh * s.kernel_width + kw] += sum as f64;
                }
            }
        }
        for (out, sum) in dw.iter_mut().zip(sums) {
            *out = sum as f32;
        }
    });
    dw
}
