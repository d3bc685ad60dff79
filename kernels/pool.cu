// Global average pooling: one warp per plane forward, element-wise backward.
#include "common.cuh"

// x (planes, plane) -> y (planes). Blocks of 256 threads: 8 planes per block.
extern "C" __global__ void global_avg_pool_forward_f32(const float* x, float* y, u64 planes, u64 plane) {
    const u64 p = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (p >= planes) return;
    const float* src = x + p * plane;
    float s = 0.0f;
    for (u64 i = lane; i < plane; i += 32) s += src[i];
    s = warp_sum(s);
    if (lane == 0) y[p] = s / (float)plane;
}

// dy (planes) -> dx (planes, plane), each plane filled with dy / plane.
extern "C" __global__ void global_avg_pool_backward_f32(const float* dy, float* dx, u64 planes, u64 plane) {
    const u64 len = planes * plane;
    const float scale = 1.0f / (float)plane;
    for (u64 i = global_index(); i < len; i += global_stride()) dx[i] = dy[(u32)i / (u32)plane] * scale;
}
