//! Direct depthwise convolution (one filter per channel), one plane per task.
//!
//! Each plane is first copied into a zero-padded buffer (`Hp x Wp`, `Hp = H + 2p`,
//! `Wp = W + 2p`), so no loop carries a padding branch. At stride 1 the output is computed on
//! rows `Wp` wide: every kernel tap is then one long contiguous multiply-add over the whole
//! plane (`out[i] += w * padded[i + kh * Wp + kw]`), which vectorises whatever the image width,
//! and the `Wp - OW` extra columns are dropped at the end. Stride 2 walks rows with a step of 2.

use rayon::prelude::*;

use crate::cpu::pool;
use crate::ops::conv2d::Conv2dShape;

struct Geometry {
    h: usize,
    w: usize,
    hp: usize,
    wp: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    stride: usize,
}

impl Geometry {
    fn new(s: &Conv2dShape) -> Geometry {
        Geometry {
            h: s.in_height,
            w: s.in_width,
            hp: s.in_height + 2 * s.padding,
            wp: s.in_width + 2 * s.padding,
            oh: s.out_height,
            ow: s.out_width,
            kh: s.kernel_height,
            kw: s.kernel_width,
            pad: s.padding,
            stride: s.stride,
        }
    }

    /// The padded buffer's length: the plane plus `kw` zeros of slack, so that the last
    /// wide-row tap of a stride-1 pass stays in bounds.
    fn padded_len(&self) -> usize {
        self.hp * self.wp + self.kw
    }

    /// Length of a stride-1 pass over wide rows.
    fn wide_len(&self) -> usize {
        self.oh * self.wp
    }

    /// Lays an output-shaped plane (`OH x OW`) on rows `Wp` wide, zeros in the extra columns:
    /// the layout of a stride-1 pass.
    fn widen(&self, plane: &[f32], wide: &mut [f32]) {
        wide.fill(0.0);
        for oh in 0..self.oh {
            wide[oh * self.wp..][..self.ow].copy_from_slice(&plane[oh * self.ow..][..self.ow]);
        }
    }

    fn pad(&self, plane: &[f32], padded: &mut [f32]) {
        padded.fill(0.0);
        for y in 0..self.h {
            padded[(y + self.pad) * self.wp + self.pad..][..self.w]
                .copy_from_slice(&plane[y * self.w..][..self.w]);
        }
    }
}

/// `out[i] += a * x[i]`, vectorised.
#[inline]
fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// `sum(a[i] * b[i])` in eight float32 lanes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut y = pool::take(s.batch * s.out_channels * out_plane);
    y.par_chunks_mut(out_plane).enumerate().for_each_init(
        || (vec![0.0f32; g.padded_len()], vec![0.0f32; g.wide_len()]),
        |(padded, wide), (plane, y)| {
            let filter = &w[(plane % s.in_channels) * taps..][..taps];
            g.pad(&x[plane * in_plane..][..in_plane], padded);
            if g.stride == 1 {
                wide.fill(0.0);
                let len = wide.len();
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        axpy(
                            wide,
                            filter[kh * g.kw + kw],
                            &padded[kh * g.wp + kw..][..len],
                        );
                    }
                }
                for oh in 0..g.oh {
                    y[oh * g.ow..][..g.ow].copy_from_slice(&wide[oh * g.wp..][..g.ow]);
                }
            } else {
                y.fill(0.0);
                for oh in 0..g.oh {
                    let y_row = &mut y[oh * g.ow..][..g.ow];
                    for kh in 0..g.kh {
                        let row = &padded[(oh * g.stride + kh) * g.wp..][..g.wp];
                        for kw in 0..g.kw {
                            let weight = filter[kh * g.kw + kw];
                            for (out, v) in y_row.iter_mut().zip(row[kw..].iter().step_by(g.stride))
                            {
                                *out += weight * v;
                            }
                        }
                    }
                }
            }
        },
    );
    y
}

pub(super) fn backward_input(w: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dx = pool::take(s.batch * s.in_channels * in_plane);
    dx.par_chunks_mut(in_plane).enumerate().for_each_init(
        || (vec![0.0f32; g.padded_len()], vec![0.0f32; g.wide_len()]),
        |(dpadded, wide), (plane, dx)| {
            let filter = &w[(plane % s.in_channels) * taps..][..taps];
            let dy = &dy[plane * out_plane..][..out_plane];
            dpadded.fill(0.0);
            if g.stride == 1 {
                // The adjoint of the forward pass: scatter each tap back over the padded plane.
                g.widen(dy, wide);
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        let len = wide.len();
                        axpy(
                            &mut dpadded[kh * g.wp + kw..][..len],
                            filter[kh * g.kw + kw],
                            wide,
                        );
                    }
                }
            } else {
                for oh in 0..g.oh {
                    let dy_row = &dy[oh * g.ow..][..g.ow];
                    for kh in 0..g.kh {
                        let row = &mut dpadded[(oh * g.stride + kh) * g.wp..][..g.wp];
                        for kw in 0..g.kw {
                            let weight = filter[kh * g.kw + kw];
                            for (d, v) in row[kw..].iter_mut().step_by(g.stride).zip(dy_row) {
                                *d += weight * v;
                            }
                        }
                    }
                }
            }
            for y in 0..g.h {
                dx[y * g.w..][..g.w].copy_from_slice(&dpadded[(y + g.pad) * g.wp + g.pad..][..g.w]);
            }
        },
    );
    dx
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    let g = Geometry::new(s);
    let (in_plane, out_plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dw = vec![0.0f32; s.out_channels * taps];
    dw.par_chunks_mut(taps).enumerate().for_each_init(
        || (vec![0.0f32; g.padded_len()], vec![0.0f32; g.wide_len()]),
        |(padded, wide), (channel, dw)| {
            let mut sums = vec![0.0f64; taps];
            for image in 0..s.batch {
                let plane = image * s.in_channels + channel;
                g.pad(&x[plane * in_plane..][..in_plane], padded);
                let dy = &dy[plane * out_plane..][..out_plane];
                if g.stride == 1 {
                    // dw[t] = <dy on wide rows (zeros in the extra columns), padded shifted by t>.
                    g.widen(dy, wide);
                    for kh in 0..g.kh {
                        for kw in 0..g.kw {
                            sums[kh * g.kw + kw] +=
                                dot(wide, &padded[kh * g.wp + kw..][..wide.len()]) as f64;
                        }
                    }
                } else {
                    for kh in 0..g.kh {
                        for kw in 0..g.kw {
                            let mut sum = 0.0f32;
                            for oh in 0..g.oh {
                                let row = &padded[(oh * g.stride + kh) * g.wp..][..g.wp];
                                let dy_row = &dy[oh * g.ow..][..g.ow];
                                sum += dy_row
                                    .iter()
                                    .zip(row[kw..].iter().step_by(g.stride))
                                    .map(|(a, b)| a * b)
                                    .sum::<f32>();
                            }
                            sums[kh * g.kw + kw] += sum as f64;
                        }
                    }
                }
            }
            for (out, sum) in dw.iter_mut().zip(sums) {
                *out = sum as f32;
            }
        },
    );
    dw
}
