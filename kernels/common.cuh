// Shared by every kernel file: the by-value shape structs (mirrored by `#[repr(C)]` structs in
// crates/tensor/src/cuda/abi.rs, field for field), index helpers and block reductions.
#pragma once

typedef unsigned long long u64;
typedef long long i64;

// Same layout as eatnas_tensor::Conv2dShape (twelve usize).
struct Conv2dShape {
    u64 batch, in_channels, in_height, in_width;
    u64 out_channels, out_height, out_width;
    u64 kernel_height, kernel_width, stride, padding, groups;
};

// An NCHW tensor seen as (batch, channels, plane = H * W).
struct PlaneShape {
    u64 batch, channels, plane;
};

// C = alpha * sum_r A_r B_r + beta * C, or batched C_b = alpha * A_b B_b + beta * C_b.
// Element (i, j) of A_b is a[b * a_batch + i * a_m + j * a_k] (any layout, by strides).
// With reduce_batch != 0 the products of all `batch` pairs are summed into one C (grid.z = 1);
// else grid.z runs over the batch and each C_b is separate.
struct GemmShape {
    u64 m, n, k, batch;
    i64 a_m, a_k, a_batch;
    i64 b_k, b_n, b_batch;
    i64 c_m, c_n, c_batch;
    float alpha, beta;
    int reduce_batch, pad_;
};

struct SgdParams {
    u64 len;
    float lr, momentum, weight_decay;
    int nesterov;
};

typedef unsigned int u32;

// Index arithmetic inside the kernels is 32-bit where it divides: a 64-bit division costs about
// a hundred instructions, more than a memory-bound kernel's budget per element. The host refuses
// tensors of 2^31 or more elements (crates/tensor/src/cuda/mod.rs, `check_indexable`).

__device__ __forceinline__ u64 global_index() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ u64 global_stride() {
    return (u64)gridDim.x * blockDim.x;
}

// Sum over the block of one double per thread; every thread gets the result. `scratch` holds
// at least 32 doubles. blockDim.x must be a multiple of 32.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    double total = 0.0;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
