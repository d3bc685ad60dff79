//! The structs kernels take by value, `#[repr(C)]` and field for field the same as in
//! `kernels/common.cuh` (and the headers of `depthwise.cu`, `mbconv.cu`). `usize` is the
//! kernels' `u64` (every supported host is 64-bit).

use cudarc::driver::DeviceRepr;

use crate::Conv2dShape;

// SAFETY: plain-old-data structs with the C layout the kernels declare.
unsafe impl DeviceRepr for Conv2dShape {}
unsafe impl DeviceRepr for PlaneShape {}
unsafe impl DeviceRepr for GemmShape {}
unsafe impl DeviceRepr for SgdParams {}
unsafe impl DeviceRepr for DepthwiseTile {}
unsafe impl DeviceRepr for MbconvShape {}

/// An NCHW tensor seen as (batch, channels, plane = H * W).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaneShape {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl PlaneShape {
    pub(crate) fn of(dims: [usize; 4]) -> PlaneShape {
        PlaneShape {
            batch: dims[0],
            channels: dims[1],
            plane: dims[2] * dims[3],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }
}

/// `C = alpha op(A) op(B) + beta C` by element strides; see `GemmShape` in `common.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a_m: isize,
    pub a_k: isize,
    pub a_batch: isize,
    pub b_k: isize,
    pub b_n: isize,
    pub b_batch: isize,
    pub c_m: isize,
    pub c_n: isize,
    pub c_batch: isize,
    pub alpha: f32,
    pub beta: f32,
    pub reduce_batch: i32,
    pub pad: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdParams {
    pub len: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: i32,
}

/// How a depthwise launch tiles the planes: `planes` planes of `tile_h x tile_w` outputs (or
/// input-gradient positions) per block.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepthwiseTile {
    pub tile_h: usize,
    pub tile_w: usize,
    pub planes: usize,
    pub tiles_y: usize,
    pub tiles_x: usize,
}

/// The fused MBConv inference kernel's shape and tiling.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MbconvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub hidden: usize,
    pub out_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub tile: usize,
    pub chunk: usize,
    pub tiles_y: usize,
    pub tiles_x: usize,
    pub expand: i32,
    pub residual: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    // The C side's sizes, counted from common.cuh / depthwise.cu / mbconv.cu.
    #[test]
    fn layouts_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<Conv2dShape>(), 12 * 8);
        assert_eq!(std::mem::size_of::<PlaneShape>(), 3 * 8);
        assert_eq!(std::mem::size_of::<GemmShape>(), 13 * 8 + 2 * 4 + 2 * 4);
        assert_eq!(std::mem::size_of::<SgdParams>(), 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<DepthwiseTile>(), 5 * 8);
        assert_eq!(std::mem::size_of::<MbconvShape>(), 15 * 8 + 2 * 4);
    }
}
