// The fused MBConv block for inference: expand 1x1 + BN + ReLU, depthwise KxK + BN + ReLU,
// project 1x1 + BN (+ the residual), in one kernel. A block owns one image and one tile x tile
// output tile; it walks the hidden channels in chunks, keeping the chunk's expanded activations
// (over the tile's input halo) and depthwise outputs in shared memory, and accumulates the
// projection of every output channel in shared memory. The hidden activations never touch
// global memory. BN is folded into per-channel scale and shift by the host.
#include "common.cuh"

// Mirrored by MbconvShape in crates/tensor/src/cuda/abi.rs.
struct MbconvShape {
    u64 batch, in_channels, hidden, out_channels;
    u64 in_height, in_width, out_height, out_width;
    u64 kernel, stride, padding;
    u64 tile, chunk, tiles_y, tiles_x;
    int expand, residual;
};

// Grid: batch * tiles_y * tiles_x blocks of 256 threads. Dynamic shared memory (floats):
// chunk * halo^2 + chunk * tile^2 + out_channels * tile^2, halo = (tile - 1) * stride + kernel.
// Without `expand` (ratio 1) the hidden channels are the input's and the expand operands are unused.
extern "C" __global__ void __launch_bounds__(256) mbconv_inference_f32(
    MbconvShape s, const float* x, const float* w_expand, const float* expand_scale, const float* expand_shift,
    const float* w_depthwise, const float* depthwise_scale, const float* depthwise_shift, const float* w_project,
    const float* project_scale, const float* project_shift, float* y) {
    extern __shared__ float smem[];
    const int halo = (int)((s.tile - 1) * s.stride + s.kernel);
    const int halo_px = halo * halo, tile_px = (int)(s.tile * s.tile);
    const int chunk = (int)s.chunk, k = (int)s.kernel, stride = (int)s.stride;
    float* expanded = smem;                           // chunk x halo_px
    float* depthwise = expanded + chunk * halo_px;    // chunk x tile_px
    float* acc = depthwise + chunk * tile_px;         // out_channels x tile_px

    const u64 tiles = s.tiles_y * s.tiles_x;
    const u64 n = blockIdx.x / tiles, t = blockIdx.x % tiles;
    const i64 oh0 = (i64)((t / s.tiles_x) * s.tile), ow0 = (i64)((t % s.tiles_x) * s.tile);
    const i64 ih0 = oh0 * stride - (i64)s.padding, iw0 = ow0 * stride - (i64)s.padding;
    const u64 in_plane = s.in_height * s.in_width;
    const float* xn = x + n * s.in_channels * in_plane;

    for (int e = threadIdx.x; e < (int)s.out_channels * tile_px; e += blockDim.x) acc[e] = 0.0f;

    for (u64 h0 = 0; h0 < s.hidden; h0 += chunk) {
        const int hc = (int)min((u64)chunk, s.hidden - h0);
        __syncthreads();
        // 1. expanded activations over the halo; zero outside the image (the depthwise padding).
        for (int e = threadIdx.x; e < hc * halo_px; e += blockDim.x) {
            const int h = e / halo_px, p = e % halo_px;
            const i64 ih = ih0 + p / halo, iw = iw0 + p % halo;
            float v = 0.0f;
            if (ih >= 0 && iw >= 0 && ih < (i64)s.in_height && iw < (i64)s.in_width) {
                const u64 pix = (u64)ih * s.in_width + (u64)iw;
                if (s.expand) {
                    const float* wr = w_expand + (h0 + h) * s.in_channels;
                    float sum = 0.0f;
                    for (u64 ci = 0; ci < s.in_channels; ++ci) sum = fmaf(wr[ci], xn[ci * in_plane + pix], sum);
                    v = fmaxf(fmaf(sum, expand_scale[h0 + h], expand_shift[h0 + h]), 0.0f);
                } else {
                    v = xn[(h0 + h) * in_plane + pix];
                }
            }
            expanded[e] = v;
        }
        __syncthreads();
        // 2. depthwise + BN + ReLU for the tile's outputs.
        for (int e = threadIdx.x; e < hc * tile_px; e += blockDim.x) {
            const int h = e / tile_px, q = e % tile_px;
            const int ty = q / (int)s.tile, tx = q % (int)s.tile;
            const float* src = expanded + h * halo_px + ty * stride * halo + tx * stride;
            const float* wd = w_depthwise + (h0 + h) * k * k;
            float sum = 0.0f;
            for (int kh = 0; kh < k; ++kh)
                for (int kw = 0; kw < k; ++kw) sum = fmaf(wd[kh * k + kw], src[kh * halo + kw], sum);
            depthwise[e] = fmaxf(fmaf(sum, depthwise_scale[h0 + h], depthwise_shift[h0 + h]), 0.0f);
        }
        __syncthreads();
        // 3. the chunk's share of the projection.
        for (int e = threadIdx.x; e < (int)s.out_channels * tile_px; e += blockDim.x) {
            const int co = e / tile_px, q = e % tile_px;
            const float* wp = w_project + co * s.hidden + h0;
            float sum = acc[e];
            for (int h = 0; h < hc; ++h) sum = fmaf(wp[h], depthwise[h * tile_px + q], sum);
            acc[e] = sum;
        }
    }
    __syncthreads();
    const u64 out_plane = s.out_height * s.out_width;
    for (int e = threadIdx.x; e < (int)s.out_channels * tile_px; e += blockDim.x) {
        const int co = e / tile_px, q = e % tile_px;
        const u64 oh = (u64)oh0 + q / (int)s.tile, ow = (u64)ow0 + q % (int)s.tile;
        if (oh >= s.out_height || ow >= s.out_width) continue;
        float v = fmaf(acc[e], project_scale[co], project_shift[co]);
        const u64 pix = oh * s.out_width + ow;
        if (s.residual) v += xn[co * in_plane + pix];
        y[(n * s.out_channels + co) * out_plane + pix] = v;
    }
}
