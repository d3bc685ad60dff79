// Matrix products by strides (the 1x1 convolution over NCHW with no copy, the linear layer):
// a float32 path that is always there and an opt-in TF32 tensor-core path (wmma), and the sum of
// split-k partial products.
#include "tile_gemm.cuh"
#ifdef EATNAS_EMULATE
#include "wmma_emu.h"  // the host emulator's stand-in (kernels/emu/)
#else
#include <mma.h>
#endif

struct StridedA {
    const float* p; u64 m, k; i64 sm, sk;
    __device__ float operator()(u64 i, u64 j) const { return i < m ? p[i * sm + j * sk] : 0.0f; }
};
struct StridedB {
    const float* p; u64 k, n; i64 sk, sn;
    __device__ float operator()(u64 i, u64 j) const { return j < n ? p[i * sk + j * sn] : 0.0f; }
};

// The batch entries this block multiplies: its share of the batch when the products are summed
// (split-k), else entry blockIdx.z alone.
__device__ __forceinline__ void batch_range(const GemmShape& s, u64& first, u64& last) {
    if (s.reduce_batch) {
        const u64 per = (s.batch + gridDim.z - 1) / gridDim.z;
        first = min(s.batch, (u64)blockIdx.z * per);
        last = min(s.batch, first + per);
    } else {
        first = blockIdx.z;
        last = first + 1;
    }
}

// Grid: (ceil(n / 64), ceil(m / 64), z). Without reduce_batch, z runs over the batch and writes
// C_z. With reduce_batch, block z sums the products of its share of the batch into
// c + z * c_batch (split-k partials; one z writes C itself). 256 threads.
extern "C" __global__ void __launch_bounds__(256) gemm_f32(GemmShape s, const float* a, const float* b, float* c) {
    const u64 row0 = (u64)blockIdx.y * TILE_M, col0 = (u64)blockIdx.x * TILE_N;
    TileAcc acc;
    tile_clear(acc);
    u64 first, last;
    batch_range(s, first, last);
    for (u64 bi = first; bi < last; ++bi) {
        const StridedA la{a + bi * s.a_batch, s.m, s.k, s.a_m, s.a_k};
        const StridedB lb{b + bi * s.b_batch, s.k, s.n, s.b_k, s.b_n};
        tile_product(la, lb, row0, col0, 0, s.k, s.a_k == 1, s.b_n == 1, acc);
    }
    float* out = c + (u64)blockIdx.z * s.c_batch;
    const float alpha = s.alpha, beta = s.beta;
    const i64 cm = s.c_m, cn = s.c_n;
    tile_store(acc, row0, col0, s.m, s.n, [&](u64 i, u64 j, float v) {
        float* dst = out + i * cm + j * cn;
        *dst = beta == 0.0f ? alpha * v : alpha * v + beta * *dst;
    });
}

// The same product on tensor cores with TF32 inputs (10-bit mantissa) and float32 accumulation:
// 128 threads, four warps of 32x32 over a 64x64 tile, k in steps of 8. Opt-in: relative error
// per product about 2^-11 * sqrt(k) of the operands' norms, against 2^-24 for float32.
extern "C" __global__ void __launch_bounds__(128) gemm_tf32(GemmShape s, const float* a, const float* b, float* c) {
    using namespace nvcuda;
    __shared__ __align__(32) float as[TILE_M][8 + 4];
    __shared__ __align__(32) float bs[8][TILE_N + 4];
    __shared__ __align__(32) float cs[TILE_M][TILE_N + 4];
    const u64 row0 = (u64)blockIdx.y * TILE_M, col0 = (u64)blockIdx.x * TILE_N;
    const int tid = threadIdx.x, warp = tid >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    u64 first, last;
    batch_range(s, first, last);
    for (u64 bi = first; bi < last; ++bi) {
        const float* pa = a + bi * s.a_batch;
        const float* pb = b + bi * s.b_batch;
        for (u64 k0 = 0; k0 < s.k; k0 += 8) {
            for (int e = tid; e < TILE_M * 8; e += 128) {
                const int mm = s.a_k == 1 ? e >> 3 : e & 63, kk = s.a_k == 1 ? e & 7 : e >> 6;
                const u64 i = row0 + mm, k = k0 + kk;
                as[mm][kk] = (i < s.m && k < s.k) ? pa[i * s.a_m + k * s.a_k] : 0.0f;
                const int nn = s.b_n == 1 ? e & 63 : e >> 3, kb = s.b_n == 1 ? e >> 6 : e & 7;
                const u64 j = col0 + nn, kq = k0 + kb;
                bs[kb][nn] = (j < s.n && kq < s.k) ? pb[kq * s.b_k + j * s.b_n] : 0.0f;
            }
            __syncthreads();
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[2];
            for (int i = 0; i < 2; ++i) {
                wmma::load_matrix_sync(fa[i], &as[wm + 16 * i][0], 8 + 4);
                for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
            }
            for (int j = 0; j < 2; ++j) {
                wmma::load_matrix_sync(fb[j], &bs[0][wn + 16 * j], TILE_N + 4);
                for (int t = 0; t < fb[j].num_elements; ++t) fb[j].x[t] = wmma::__float_to_tf32(fb[j].x[t]);
            }
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
            __syncthreads();
        }
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&cs[wm + 16 * i][wn + 16 * j], acc[i][j], TILE_N + 4, wmma::mem_row_major);
    __syncthreads();
    float* out = c + (u64)blockIdx.z * s.c_batch;
    for (int e = tid; e < TILE_M * TILE_N; e += 128) {
        const int mm = e >> 6, nn = e & 63;
        const u64 i = row0 + mm, j = col0 + nn;
        if (i < s.m && j < s.n) {
            float* dst = out + i * s.c_m + j * s.c_n;
            const float v = s.alpha * cs[mm][nn];
            *dst = s.beta == 0.0f ? v : v + s.beta * *dst;
        }
    }
}


// y (len) = sum over `slices` consecutive arrays of x (slices, len): the split-k partials.
extern "C" __global__ void sum_slices_f32(const float* x, float* y, u64 slices, u64 len) {
    for (u64 i = global_index(); i < len; i += global_stride()) {
        float s = 0.0f;
        for (u64 z = 0; z < slices; ++z) s += x[z * len + i];
        y[i] = s;
    }
}
