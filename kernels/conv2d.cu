// The general convolution (the stem, grouped convolutions) as implicit GEMM: the im2col matrix
// is never written, its elements are computed in the tile loaders. Per group g:
//   forward          y_g (Cout_g, N*OH*OW) = w_g (Cout_g, Cin_g*KH*KW) . im2col_g
//   weight gradient  dw_g = dy_g . im2col_g^T   (reduction over N*OH*OW, split across blocks)
//   input gradient   dx_g = w_g^T . cols(dy)_g, cols(dy) the output gradient gathered per tap.
#include "tile_gemm.cuh"

// Element (k, j) of the im2col matrix of group g: k = (ci, kh, kw), j = (n, oh, ow).
struct Im2col {
    const float* x; Conv2dShape s; u64 group, k_total, n_total;
    __device__ float operator()(u64 k, u64 j) const {
        if (j >= n_total || k >= k_total) return 0.0f;
        const u32 kw_ = (u32)s.kernel_width, taps = (u32)s.kernel_height * kw_;
        const u32 ci = (u32)k / taps, r = (u32)k - ci * taps;
        const u32 kh = r / kw_, kw = r - kh * kw_;
        const u32 ow_ = (u32)s.out_width, pix_count = (u32)s.out_height * ow_;
        const u32 n = (u32)j / pix_count, pix = (u32)j - n * pix_count;
        const u32 oh = pix / ow_, ow = pix - oh * ow_;
        const int ih = (int)(oh * (u32)s.stride + kh) - (int)s.padding;
        const int iw = (int)(ow * (u32)s.stride + kw) - (int)s.padding;
        if (ih < 0 || iw < 0 || ih >= (int)s.in_height || iw >= (int)s.in_width) return 0.0f;
        const u64 cin_g = s.in_channels / s.groups;
        return x[(((u64)n * s.in_channels + group * cin_g + ci) * s.in_height + ih) * s.in_width + iw];
    }
};

struct GroupWeight {
    const float* w; u64 rows, k_total, group;
    __device__ float operator()(u64 i, u64 k) const {
        return i < rows ? w[(group * rows + i) * k_total + k] : 0.0f;
    }
};

// Grid: (ceil(N*OH*OW / 64), ceil(Cout_g / 64), groups); 256 threads.
extern "C" __global__ void __launch_bounds__(256) conv2d_forward_f32(Conv2dShape s, const float* x, const float* w, float* y) {
    const u64 g = blockIdx.z;
    const u64 cout_g = s.out_channels / s.groups;
    const u64 k_total = (s.in_channels / s.groups) * s.kernel_height * s.kernel_width;
    const u64 pix_count = s.out_height * s.out_width;
    const u64 n_total = s.batch * pix_count;
    const u64 row0 = (u64)blockIdx.y * TILE_M, col0 = (u64)blockIdx.x * TILE_N;
    TileAcc acc;
    tile_clear(acc);
    tile_product(GroupWeight{w, cout_g, k_total, g}, Im2col{x, s, g, k_total, n_total}, row0, col0, 0,
                 k_total, true, true, acc);
    tile_store(acc, row0, col0, cout_g, n_total, [&](u64 i, u64 j, float v) {
        const u32 n = (u32)j / (u32)pix_count, pix = (u32)j - n * (u32)pix_count;
        y[((u64)n * s.out_channels + g * cout_g + i) * pix_count + pix] = v;
    });
}

// dy of group g as the (Cout_g, N*OH*OW) matrix.
struct GroupOutput {
    const float* dy; Conv2dShape s; u64 group, rows, n_total;
    __device__ float operator()(u64 i, u64 j) const {
        if (i >= rows || j >= n_total) return 0.0f;
        const u32 pix_count = (u32)(s.out_height * s.out_width);
        const u32 n = (u32)j / pix_count, pix = (u32)j - n * pix_count;
        return dy[((u64)n * s.out_channels + group * rows + i) * pix_count + pix];
    }
};

// The transpose of Im2col: element (j, k).
struct Im2colT {
    Im2col inner;
    __device__ float operator()(u64 j, u64 k) const { return inner(k, j); }
};

// Grid: (ceil(Cin_g*KH*KW / 64), ceil(Cout_g / 64), groups * splits); 256 threads. Block z
// = g * splits + split sums its share of the N*OH*OW columns into
// partial + split * (Cout * Cin_g*KH*KW) (the weight's layout); `sum_slices_f32` adds the splits.
extern "C" __global__ void __launch_bounds__(256) conv2d_backward_weight_f32(
    Conv2dShape s, const float* x, const float* dy, float* partial, u64 splits) {
    const u64 g = blockIdx.z / splits, split = blockIdx.z % splits;
    const u64 cout_g = s.out_channels / s.groups;
    const u64 k_total = (s.in_channels / s.groups) * s.kernel_height * s.kernel_width;
    const u64 n_total = s.batch * s.out_height * s.out_width;
    const u64 per = ((n_total + splits - 1) / splits + TILE_K - 1) / TILE_K * TILE_K;
    const u64 begin = min(n_total, split * per), end = min(n_total, begin + per);
    const u64 row0 = (u64)blockIdx.y * TILE_M, col0 = (u64)blockIdx.x * TILE_N;
    TileAcc acc;
    tile_clear(acc);
    tile_product(GroupOutput{dy, s, g, cout_g, n_total}, Im2colT{Im2col{x, s, g, k_total, n_total}}, row0,
                 col0, begin, end, true, false, acc);
    float* out = partial + split * (s.out_channels * k_total);
    tile_store(acc, row0, col0, cout_g, k_total, [&](u64 i, u64 k, float v) {
        out[(g * cout_g + i) * k_total + k] = v;
    });
}

// The input gradient as implicit GEMM too, per group g:
//   dx_g (Cin_g, N*H*W) = w_g^T (Cin_g, Cout_g*KH*KW) . cols(dy)_g
// where cols(dy) (k = (co, kh, kw), j = (n, ih, iw)) is dy at the output position whose tap
// (kh, kw) reads input (ih, iw), or 0 where there is none (stride not dividing, or outside).
struct GroupWeightT {
    const float* w; u64 cin_g, cout_g, taps, group;
    __device__ float operator()(u64 i, u64 k) const {
        if (i >= cin_g) return 0.0f;
        const u32 co = (u32)k / (u32)taps, tap = (u32)k - co * (u32)taps;
        return w[((group * cout_g + co) * cin_g + i) * taps + tap];
    }
};

struct OutputCols {
    const float* dy; Conv2dShape s; u64 group, k_total, n_total;
    __device__ float operator()(u64 k, u64 j) const {
        if (j >= n_total || k >= k_total) return 0.0f;
        const u32 kw_ = (u32)s.kernel_width, taps = (u32)s.kernel_height * kw_;
        const u32 co = (u32)k / taps, tap = (u32)k - co * taps;
        const u32 kh = tap / kw_, kw = tap - kh * kw_;
        const u32 w_ = (u32)s.in_width, plane = (u32)s.in_height * w_;
        const u32 n = (u32)j / plane, pix = (u32)j - n * plane;
        const u32 ih = pix / w_, iw = pix - ih * w_;
        const int stride = (int)s.stride;
        const int th = (int)(ih + s.padding) - (int)kh, tw = (int)(iw + s.padding) - (int)kw;
        if (th < 0 || tw < 0 || th % stride != 0 || tw % stride != 0) return 0.0f;
        const u32 oh = (u32)(th / stride), ow = (u32)(tw / stride);
        if (oh >= s.out_height || ow >= s.out_width) return 0.0f;
        const u64 cout_g = s.out_channels / s.groups;
        return dy[(((u64)n * s.out_channels + group * cout_g + co) * s.out_height + oh) * s.out_width + ow];
    }
};

// Grid: (ceil(N*H*W / 64), ceil(Cin_g / 64), groups); 256 threads.
extern "C" __global__ void __launch_bounds__(256) conv2d_backward_input_f32(Conv2dShape s, const float* dy, const float* w, float* dx) {
    const u64 g = blockIdx.z;
    const u64 cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
    const u64 taps = s.kernel_height * s.kernel_width;
    const u64 k_total = cout_g * taps;
    const u64 plane = s.in_height * s.in_width;
    const u64 n_total = s.batch * plane;
    const u64 row0 = (u64)blockIdx.y * TILE_M, col0 = (u64)blockIdx.x * TILE_N;
    TileAcc acc;
    tile_clear(acc);
    tile_product(GroupWeightT{w, cin_g, cout_g, taps, g}, OutputCols{dy, s, g, k_total, n_total}, row0, col0, 0,
                 k_total, true, true, acc);
    tile_store(acc, row0, col0, cin_g, n_total, [&](u64 i, u64 j, float v) {
        const u32 n = (u32)j / (u32)plane, pix = (u32)j - n * (u32)plane;
        dx[((u64)n * s.in_channels + g * cin_g + i) * plane + pix] = v;
    });
}
