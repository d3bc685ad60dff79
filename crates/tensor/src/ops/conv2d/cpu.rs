//! CPU kernels of the convolution: a direct depthwise kernel, 1x1 as a matrix product straight
//! over NCHW, and im2col + GEMM for everything else (the stem, grouped convolutions).

mod conv1x1;
mod depthwise;
mod im2col;

use super::Conv2dShape;

/// A per-channel map of a convolution's input, applied as the input is read:
/// `max(x * scale[c] + shift[c], 0)` (no max without `relu`). The batch norm (and ReLU) of the
/// layer before, never written out (see [`crate::Normalized`]).
#[derive(Clone, Copy)]
pub(crate) struct InputMap<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl InputMap<'_> {
    /// Channel `c`'s map.
    #[inline(always)]
    fn channel(&self, c: usize) -> ChannelMap {
        ChannelMap {
            scale: self.scale[c],
            shift: self.shift[c],
            relu: self.relu,
        }
    }
}

/// One channel of an [`InputMap`].
#[derive(Clone, Copy)]
struct ChannelMap {
    scale: f32,
    shift: f32,
    relu: bool,
}

impl ChannelMap {
    /// `out = max(x * scale + shift, 0)` (no max without ReLU): the very expression of batch
    /// norm's own output pass, so the result is the same bit for bit.
    #[inline(always)]
    fn apply(self, x: &[f32], out: &mut [f32]) {
        let (scale, shift) = (self.scale, self.shift);
        if self.relu {
            for (o, v) in out.iter_mut().zip(x) {
                *o = (v * scale + shift).max(0.0);
            }
        } else {
            for (o, v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }
}

pub(super) fn forward(x: &[f32], w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if s.is_depthwise() {
        depthwise::forward(x, None, w, s)
    } else if s.is_pointwise() {
        conv1x1::forward(x, w, s)
    } else {
        im2col::forward(x, w, s)
    }
}

pub(super) fn backward(x: &[f32], w: &[f32], dy: &[f32], s: &Conv2dShape) -> (Vec<f32>, Vec<f32>) {
    if s.is_depthwise() {
        depthwise::backward(x, None, w, dy, s)
    } else if s.is_pointwise() {
        conv1x1::backward(x, w, dy, s)
    } else {
        im2col::backward(x, w, dy, s, true)
    }
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if s.is_depthwise() {
        depthwise::backward_weight(x, None, dy, s)
    } else if s.is_pointwise() {
        conv1x1::backward_weight(x, dy, s)
    } else {
        // The weight is not read when only dweight is wanted; an empty slice stands in.
        im2col::backward(x, &[], dy, s, false).1
    }
}

/// Whether [`forward_mapped`] and [`backward_mapped`] apply the map as they read: depthwise
/// convolutions, and 1x1 ones on AVX-512 with planes of 16+ pixels. Otherwise the caller writes
/// the mapped input out first.
pub(super) fn reads_mapped(s: &Conv2dShape) -> bool {
    s.is_depthwise() || (s.is_pointwise() && conv1x1::reads_mapped(s))
}

/// The convolution of `map(x)`, the map applied as the input is read ([`reads_mapped`]).
pub(super) fn forward_mapped(x: &[f32], map: InputMap<'_>, w: &[f32], s: &Conv2dShape) -> Vec<f32> {
    if s.is_depthwise() {
        depthwise::forward(x, Some(map), w, s)
    } else {
        conv1x1::forward_mapped(x, map, w, s)
    }
}

/// Both gradients of [`forward_mapped`]: dx of the mapped input, and dw.
pub(super) fn backward_mapped(
    x: &[f32],
    map: InputMap<'_>,
    w: &[f32],
    dy: &[f32],
    s: &Conv2dShape,
) -> (Vec<f32>, Vec<f32>) {
    if s.is_depthwise() {
        depthwise::backward(x, Some(map), w, dy, s)
    } else {
        conv1x1::backward_mapped(x, map, w, dy, s)
    }
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
