// Depthwise convolution (one filter per channel), kernels 3, 5, 7 and strides 1, 2, forward and
// both gradients. A block owns `planes` (image, channel) planes and one tile_h x tile_w tile of
// each; the input tile with its halo is staged in shared memory once, then every thread computes
// one output from it with the K*K taps unrolled (no padding branch: the halo is zero-filled).
// The tile shape is chosen per layer by the host (DepthwiseTile) so that small planes still fill
// the block (several 7x7 planes per block).
#include "common.cuh"

// Mirrored by DepthwiseTile in crates/tensor/src/cuda/abi.rs.
struct DepthwiseTile {
    u64 tile_h, tile_w, planes, tiles_y, tiles_x;
};

__device__ __forceinline__ i64 floor_div(i64 a, i64 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Which planes (`group` of t.planes) and which tile (top-left `y0`, `x0`) this block owns.
struct BlockTile {
    u64 group, y0, x0;
};

__device__ __forceinline__ BlockTile block_tile(const DepthwiseTile& t) {
    const u64 tiles = t.tiles_y * t.tiles_x;
    const u64 tile_index = blockIdx.x % tiles;
    return BlockTile{blockIdx.x / tiles, (tile_index / t.tiles_x) * t.tile_h, (tile_index % t.tiles_x) * t.tile_w};
}

// Stages rows x cols of each of the block's planes of `src` (height x width planes), starting
// at (y0, x0) (negative: above or left of the plane), into `tile`, zero outside the planes.
__device__ __forceinline__ void stage_planes(float* tile, const float* src, const DepthwiseTile& t, u64 group,
                                             u64 planes_total, u64 height, u64 width, i64 y0, i64 x0, int rows,
                                             int cols) {
    const int per_plane = rows * cols;
    for (int e = threadIdx.x; e < (int)t.planes * per_plane; e += blockDim.x) {
        const u64 plane = group * t.planes + e / per_plane;
        const int r = e % per_plane;
        const i64 y = y0 + r / cols, x = x0 + r % cols;
        float v = 0.0f;
        if (plane < planes_total && y >= 0 && x >= 0 && y < (i64)height && x < (i64)width)
            v = src[(plane * height + y) * width + x];
        tile[e] = v;
    }
    __syncthreads();
}

// This thread's plane of the block and its position in the tile.
struct ThreadPosition {
    int local_plane, ty, tx;
};

__device__ __forceinline__ ThreadPosition thread_position(const DepthwiseTile& t) {
    const int per_tile = (int)(t.tile_h * t.tile_w);
    const int r = threadIdx.x % per_tile;
    return ThreadPosition{(int)threadIdx.x / per_tile, r / (int)t.tile_w, r % (int)t.tile_w};
}

// Grid: ceil(N*C / planes) * tiles_y * tiles_x blocks of tile_h * tile_w * planes threads;
// dynamic shared memory: planes * ((tile_h-1)*S+K) * ((tile_w-1)*S+K) floats.
template <int K, int S>
__device__ __forceinline__ void depthwise_forward(const Conv2dShape& s, const DepthwiseTile& t,
                                                  const float* x, const float* w, float* y) {
    extern __shared__ float tile[];
    const int in_h = (int)((t.tile_h - 1) * S + K), in_w = (int)((t.tile_w - 1) * S + K);
    const int per_plane = in_h * in_w;
    const BlockTile b = block_tile(t);
    const u64 planes_total = s.batch * s.in_channels;
    stage_planes(tile, x, t, b.group, planes_total, s.in_height, s.in_width, (i64)(b.y0 * S) - (i64)s.padding,
                 (i64)(b.x0 * S) - (i64)s.padding, in_h, in_w);
    const auto [local_plane, ty, tx] = thread_position(t);
    const u64 plane = b.group * t.planes + local_plane;
    const u64 oh = b.y0 + ty, ow = b.x0 + tx;
    if (plane >= planes_total || oh >= s.out_height || ow >= s.out_width) return;
    const float* wc = w + (plane % s.in_channels) * (K * K);
    float taps[K * K];
#pragma unroll
    for (int i = 0; i < K * K; ++i) taps[i] = wc[i];
    const float* src = tile + local_plane * per_plane + ty * S * in_w + tx * S;
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < K; ++kh)
#pragma unroll
        for (int kw = 0; kw < K; ++kw) acc = fmaf(taps[kh * K + kw], src[kh * in_w + kw], acc);
    y[(plane * s.out_height + oh) * s.out_width + ow] = acc;
}

// The input gradient: a block owns a tile of dx; the dy rows and columns that reach it are
// staged in shared memory; dx(ih, iw) = sum over taps with (ih + p - kh) divisible by S.
// Dynamic shared memory: planes * rows * cols floats with rows = (tile_h + K - 2) / S + 2 (cols
// likewise).
template <int K, int S>
__device__ __forceinline__ void depthwise_backward_input(const Conv2dShape& s, const DepthwiseTile& t,
                                                         const float* dy, const float* w, float* dx) {
    extern __shared__ float tile[];
    const int rows = (int)((t.tile_h + K - 2) / S + 2), cols = (int)((t.tile_w + K - 2) / S + 2);
    const int per_plane = rows * cols;
    const BlockTile b = block_tile(t);
    // The first output row/column whose taps can reach this tile.
    const i64 oh0 = floor_div((i64)(b.y0 + s.padding) - (K - 1), S);
    const i64 ow0 = floor_div((i64)(b.x0 + s.padding) - (K - 1), S);
    const u64 planes_total = s.batch * s.in_channels;
    stage_planes(tile, dy, t, b.group, planes_total, s.out_height, s.out_width, oh0, ow0, rows, cols);
    const auto [local_plane, ty, tx] = thread_position(t);
    const u64 plane = b.group * t.planes + local_plane;
    const u64 ih = b.y0 + ty, iw = b.x0 + tx;
    if (plane >= planes_total || ih >= s.in_height || iw >= s.in_width) return;
    const float* wc = w + (plane % s.in_channels) * (K * K);
    const float* src = tile + local_plane * per_plane;
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < K; ++kh) {
        const i64 th = (i64)(ih + s.padding) - kh;
        if (S > 1 && (th - oh0 * S) % S != 0) continue;
        const int sy = (int)(floor_div(th, S) - oh0);
#pragma unroll
        for (int kw = 0; kw < K; ++kw) {
            const i64 tw = (i64)(iw + s.padding) - kw;
            if (S > 1 && (tw - ow0 * S) % S != 0) continue;
            const int sx = (int)(floor_div(tw, S) - ow0);
            acc = fmaf(wc[kh * K + kw], src[sy * cols + sx], acc);
        }
    }
    dx[(plane * s.in_height + ih) * s.in_width + iw] = acc;
}

// The weight gradient: block (channel c, split) walks the images of its share of the batch and
// the tiles of each plane (one plane per block: t.planes is 1), each thread keeping K*K sums;
// partial + (split * C + c) * K*K gets the block's sums. `sum_slices_f32` adds the splits.
// Dynamic shared memory: as the forward kernel, plus 32 doubles.
template <int K, int S>
__device__ __forceinline__ void depthwise_backward_weight(const Conv2dShape& s, const DepthwiseTile& t,
                                                          const float* x, const float* dy, float* partial,
                                                          u64 splits) {
    extern __shared__ float tile[];
    __shared__ double scratch[32];
    const int in_h = (int)((t.tile_h - 1) * S + K), in_w = (int)((t.tile_w - 1) * S + K);
    const u64 c = blockIdx.x, split = blockIdx.y;
    const u64 per = (s.batch + splits - 1) / splits;
    const u64 n_begin = min(s.batch, split * per), n_end = min(s.batch, n_begin + per);
    const int ty = threadIdx.x / (int)t.tile_w, tx = threadIdx.x % (int)t.tile_w;
    float acc[K * K];
#pragma unroll
    for (int i = 0; i < K * K; ++i) acc[i] = 0.0f;
    for (u64 n = n_begin; n < n_end; ++n) {
        const u64 plane = n * s.in_channels + c;
        for (u64 ti = 0; ti < t.tiles_y * t.tiles_x; ++ti) {
            const u64 oh0 = (ti / t.tiles_x) * t.tile_h, ow0 = (ti % t.tiles_x) * t.tile_w;
            const i64 ih0 = (i64)(oh0 * S) - (i64)s.padding, iw0 = (i64)(ow0 * S) - (i64)s.padding;
            __syncthreads();
            for (int e = threadIdx.x; e < in_h * in_w; e += blockDim.x) {
                const i64 ih = ih0 + e / in_w, iw = iw0 + e % in_w;
                float v = 0.0f;
                if (ih >= 0 && iw >= 0 && ih < (i64)s.in_height && iw < (i64)s.in_width)
                    v = x[(plane * s.in_height + ih) * s.in_width + iw];
                tile[e] = v;
            }
            __syncthreads();
            const u64 oh = oh0 + ty, ow = ow0 + tx;
            if (oh < s.out_height && ow < s.out_width) {
                const float g = dy[(plane * s.out_height + oh) * s.out_width + ow];
                const float* src = tile + ty * S * in_w + tx * S;
#pragma unroll
                for (int kh = 0; kh < K; ++kh)
#pragma unroll
                    for (int kw = 0; kw < K; ++kw) acc[kh * K + kw] = fmaf(g, src[kh * in_w + kw], acc[kh * K + kw]);
            }
        }
    }
    float* out = partial + (split * s.in_channels + c) * (K * K);
#pragma unroll
    for (int i = 0; i < K * K; ++i) {
        const double total = block_sum((double)acc[i], scratch);
        if (threadIdx.x == 0) out[i] = (float)total;
    }
}

#define DEPTHWISE_ENTRIES(K, S)                                                                       \
    extern "C" __global__ void depthwise_k##K##s##S##_forward_f32(Conv2dShape s, DepthwiseTile t,     \
                                                                  const float* x, const float* w,     \
                                                                  float* y) {                         \
        depthwise_forward<K, S>(s, t, x, w, y);                                                       \
    }                                                                                                 \
    extern "C" __global__ void depthwise_k##K##s##S##_backward_input_f32(                             \
        Conv2dShape s, DepthwiseTile t, const float* dy, const float* w, float* dx) {                 \
        depthwise_backward_input<K, S>(s, t, dy, w, dx);                                              \
    }                                                                                                 \
    extern "C" __global__ void depthwise_k##K##s##S##_backward_weight_f32(                            \
        Conv2dShape s, DepthwiseTile t, const float* x, const float* dy, float* partial, u64 splits) { \
        depthwise_backward_weight<K, S>(s, t, x, dy, partial, splits);                                \
    }

DEPTHWISE_ENTRIES(3, 1)
DEPTHWISE_ENTRIES(3, 2)
DEPTHWISE_ENTRIES(5, 1)
DEPTHWISE_ENTRIES(5, 2)
DEPTHWISE_ENTRIES(7, 1)
DEPTHWISE_ENTRIES(7, 2)
