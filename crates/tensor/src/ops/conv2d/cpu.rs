//! CPU kernels of the convolution: a direct depthwise kernel, 1x1 as a matrix product straight
//! over NCHW, and im2col + GEMM for everything else (the stem, grouped convolutions).

mod channel_mix;
mod depthwise;
mod im2col;
mod pointwise;

use super::Conv2dShape;

pub(crate) use depthwise::ChannelMap;

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if s.is_depthwise() {
        depthwise::forward(x, None, w, s)
    } else if s.is_pointwise() {
        pointwise::forward(x, w, s)
    } else {
        im2col::forward(x, w, s)
    }
}

pub(super) fn backward(x: &[f32], w: &[f32], dy: &[f32], s: &Conv2dShape) -> (Vec<f32>, Vec<f32>) {
    if s.is_depthwise() {
        depthwise::backward(x, None, w, dy, s)
    } else if s.is_pointwise() {
        pointwise::backward(x, w, dy, s)
    } else {
        im2col::backward(x, w, dy, s, true)
    }
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if s.is_depthwise() {
        depthwise::backward_weight(x, None, dy, s)
    } else if s.is_pointwise() {
        pointwise::backward_weight(x, dy, s)
    } else {
        // The weight is not read when only dweight is wanted; an empty slice stands in.
        im2col::backward(x, &[], dy, s, false).1
    }
}

/// A depthwise convolution of `maps[c](x)`, the input mapped as it is read.
pub(super) fn depthwise_mapped(
    x: &[f32],
    maps: &[ChannelMap],
    w: &[f32],
    s: &Conv2dShape,
) -> Vec<f32> {
    depthwise::forward(x, Some(maps), w, s)
}

/// Both gradients of [`depthwise_mapped`]: dx of the mapped input, and dw.
pub(super) fn depthwise_mapped_backward(
    x: &[f32],
    maps: &[ChannelMap],
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    depthwise::backward(x, Some(maps), w, dy, s)
}

/// Whether a 1x1 convolution of a mapped input reads the map as it loads (see
/// [`pointwise_mapped`]); otherwise the caller writes the mapped input out.
pub(super) fn pointwise_reads_mapped(s: &Conv2dShape) -> bool {
    s.is_pointwise() && pointwise::reads_mapped(s)
}

/// A 1x1 convolution of `max(x * scale + shift, 0)` (no max without `relu`), per channel.
pub(super) fn pointwise_mapped(
    x: &[f32],
    (scale, shift, relu): (&[f32], &[f32], bool),
    w: &[f32],
    s: &Conv2dShape,
) -> Vec<f32> {
    let map = channel_mix::XMap { scale, shift, relu };
    pointwise::forward_mapped(x, map, w, s)
}

/// Both gradients of [`pointwise_mapped`]: dx of the mapped input, and dw.
pub(super) fn pointwise_mapped_backward(
    x: &[f32],
    (scale, shift, relu): (&[f32], &[f32], bool),
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    let map = channel_mix::XMap { scale, shift, relu };
    pointwise::backward_mapped(x, map, w, dy, s)
}

/// For a kernel offset `tap`, the output positions `lo..hi` whose input position
/// `o * stride + tap - padding` falls inside `0..in_len`: computed once per tap, so the inner
/// loops carry no padding branch.
pub(super) fn valid_outputs(
    out_len: usize,
    in_len: usize,
    tap: usize,
    stride: usize,
    padding: usize,
) -> (usize, usize) {
    let lo = if padding > tap {
        (padding - tap).div_ceil(stride)
    } else {
        0
    };
    let hi = if in_len + padding > tap {
        ((in_len - 1 + padding - tap) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}
