// Compiles the CUDA kernels of kernels/*.cu as host C++ for the CUDA emulator (see
// runtime.cpp): the device qualifiers vanish, threadIdx/blockIdx/... read the emulated thread,
// __syncthreads and the warp shuffles switch between the block's threads (user-level fibers).
// `cargo xtask cuda-emulator` rewrites the `__shared__` declarations before including a kernel
// file (static storage of the host thread, or the launch's dynamic shared memory) and compiles it
// with this header.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define EATNAS_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

namespace emu {
struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
};
extern Dim3 grid_dim, block_dim;
extern thread_local Dim3 block_idx;
const Dim3& thread_idx();
void syncthreads();
void* dynamic_shared();
// The block's exchange slots of the warp shuffles: one 8-byte slot per thread.
std::uint64_t* shuffle_slots();

template <class T>
T shuffle_from(T v, unsigned source_lane) {
    static_assert(sizeof(T) <= 8, "shuffled values fit in 8 bytes");
    const unsigned tid = thread_idx().x, base = tid & ~31u;
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    shuffle_slots()[tid] = bits;
    syncthreads();
    const std::uint64_t got = shuffle_slots()[base + source_lane];
    syncthreads();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}
}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::syncthreads(); }

// Every thread of the block must reach the same shuffles (true of these kernels: whole warps
// exit together), since the emulator synchronises the block, not just the warp.
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::shuffle_from(v, (threadIdx.x & 31u) ^ (unsigned)mask);
}
template <class T>
T __shfl_down_sync(unsigned, T v, int delta) {
    const unsigned lane = threadIdx.x & 31u;
    return emu::shuffle_from(v, lane + delta < 32 ? lane + delta : lane);
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
using std::max;
using std::min;
