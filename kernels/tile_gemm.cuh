// One 64x64 output tile of a float32 matrix product C = A B, shared by the plain GEMM and the
// implicit-GEMM convolutions: the operands come through loader functors (a(i, k), b(k, j), which
// return 0 outside the matrix), staged through shared memory 16 deep in k; 256 threads, each
// holding a 4x4 block of accumulators at rows ty + 16 r and columns tx + 16 c (so a warp reads
// shared memory without bank conflicts).
#pragma once
#include "common.cuh"

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16

struct TileAcc {
    float v[4][4];
};

// a_k_contiguous / b_n_contiguous pick which index runs fastest across the threads while a tile
// is loaded, so that global reads are coalesced for the operand's layout.
template <class LoadA, class LoadB>
__device__ __forceinline__ void tile_product(
    const LoadA& a, const LoadB& b, u64 row0, u64 col0, u64 k_begin, u64 k_end,
    bool a_k_contiguous, bool b_n_contiguous, TileAcc& acc) {
    __shared__ float as[TILE_K][TILE_M + 4];
    __shared__ float bs[TILE_K][TILE_N + 4];
    const int tid = threadIdx.x;
    const int tx = tid & 15, ty = tid >> 4;
    for (u64 k0 = k_begin; k0 < k_end; k0 += TILE_K) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = tid + 256 * r;
            int mm, kk;
            if (a_k_contiguous) { kk = e & 15; mm = e >> 4; } else { mm = e & 63; kk = e >> 6; }
            const u64 k = k0 + kk;
            as[kk][mm] = k < k_end ? a(row0 + mm, k) : 0.0f;
            int nn, kb;
            if (b_n_contiguous) { nn = e & 63; kb = e >> 6; } else { kb = e & 15; nn = e >> 4; }
            const u64 kq = k0 + kb;
            bs[kb][nn] = kq < k_end ? b(kq, col0 + nn) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            float ra[4], rb[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) ra[r] = as[kk][ty + 16 * r];
#pragma unroll
            for (int c = 0; c < 4; ++c) rb[c] = bs[kk][tx + 16 * c];
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc.v[r][c] = fmaf(ra[r], rb[c], acc.v[r][c]);
        }
        __syncthreads();
    }
}

__device__ __forceinline__ void tile_clear(TileAcc& acc) {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc.v[r][c] = 0.0f;
}

// Calls store(i, j, value) for every accumulator inside the m x n matrix.
template <class Store>
__device__ __forceinline__ void tile_store(const TileAcc& acc, u64 row0, u64 col0, u64 m, u64 n, const Store& store) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const u64 i = row0 + ty + 16 * r;
        if (i >= m) continue;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const u64 j = col0 + tx + 16 * c;
            if (j < n) store(i, j, acc.v[r][c]);
        }
    }
}
