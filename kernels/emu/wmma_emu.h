// nvcuda::wmma for the host emulator, as far as gemm.cu uses it (TF32 16x16x8, row-major
// operands, float accumulator). Each emulated thread holds the whole tile (on a GPU the warp's 32
// threads hold a share each): loads, stores and products are the documented whole-tile
// semantics, so the kernel's leading dimensions, offsets and conversions are what is checked.
#pragma once
#include <cstdint>
#include <cstring>

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment;
template <int M, int N, int K>
struct fragment<matrix_a, M, N, K, precision::tf32, row_major> {
    static const int num_elements = M * K;
    float x[M * K];
};
template <int M, int N, int K>
struct fragment<matrix_b, M, N, K, precision::tf32, row_major> {
    static const int num_elements = K * N;
    float x[K * N];
};
template <int M, int N, int K>
struct fragment<accumulator, M, N, K, float, void> {
    static const int num_elements = M * N;
    float x[M * N];
};

template <int M, int N, int K>
void load_matrix_sync(fragment<matrix_a, M, N, K, precision::tf32, row_major>& f, const float* p, unsigned ldm) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < K; ++c) f.x[r * K + c] = p[r * ldm + c];
}
template <int M, int N, int K>
void load_matrix_sync(fragment<matrix_b, M, N, K, precision::tf32, row_major>& f, const float* p, unsigned ldm) {
    for (int r = 0; r < K; ++r)
        for (int c = 0; c < N; ++c) f.x[r * N + c] = p[r * ldm + c];
}
template <int M, int N, int K>
void fill_fragment(fragment<accumulator, M, N, K, float, void>& f, float v) {
    for (int i = 0; i < M * N; ++i) f.x[i] = v;
}
template <int M, int N, int K>
void mma_sync(fragment<accumulator, M, N, K, float, void>& d,
              const fragment<matrix_a, M, N, K, precision::tf32, row_major>& a,
              const fragment<matrix_b, M, N, K, precision::tf32, row_major>& b,
              const fragment<accumulator, M, N, K, float, void>& c) {
    float out[M * N];
    for (int r = 0; r < M; ++r)
        for (int q = 0; q < N; ++q) {
            float s = c.x[r * N + q];
            for (int k = 0; k < K; ++k) s += a.x[r * K + k] * b.x[k * N + q];
            out[r * N + q] = s;
        }
    std::memcpy(d.x, out, sizeof out);
}
template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float, void>& f, unsigned ldm, layout_t) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) p[r * ldm + c] = f.x[r * N + c];
}
// cvt.rna.tf32.f32: 10 mantissa bits, rounded to nearest, ties away from zero.
inline float __float_to_tf32(float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits = (bits + 0x1000u) & 0xffffe000u;
    std::memcpy(&v, &bits, 4);
    return v;
}
}  // namespace wmma
}  // namespace nvcuda
