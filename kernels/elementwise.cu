// Element-wise ops over flat float32 arrays: grid-stride loops, any length.
#include "common.cuh"

extern "C" __global__ void fill_f32(float* y, float value, u64 len) {
    for (u64 i = global_index(); i < len; i += global_stride()) y[i] = value;
}

extern "C" __global__ void relu_f32(const float* x, float* y, u64 len) {
    for (u64 i = global_index(); i < len; i += global_stride()) y[i] = fmaxf(x[i], 0.0f);
}

// dx = dy where the ReLU's output y > 0, else 0.
extern "C" __global__ void relu_backward_f32(const float* y, const float* dy, float* dx, u64 len) {
    for (u64 i = global_index(); i < len; i += global_stride()) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" __global__ void add_f32(const float* a, const float* b, float* y, u64 len) {
    for (u64 i = global_index(); i < len; i += global_stride()) y[i] = a[i] + b[i];
}

// y (rows, cols) = each row a copy of `row` (cols): the bias before a linear layer's product.
extern "C" __global__ void broadcast_rows_f32(const float* row, float* y, u64 rows, u64 cols) {
    const u64 len = rows * cols;
    for (u64 i = global_index(); i < len; i += global_stride()) y[i] = row[i % cols];
}

// out (cols) = sum over the rows of x (rows, cols), in double: the bias gradient.
// One thread per column; reads are coalesced across the threads of a warp.
extern "C" __global__ void sum_rows_f32(const float* x, float* out, u64 rows, u64 cols) {
    for (u64 j = global_index(); j < cols; j += global_stride()) {
        double s = 0.0;
        for (u64 r = 0; r < rows; ++r) s += x[r * cols + j];
        out[j] = (float)s;
    }
}
