// Softmax cross-entropy with label smoothing: one warp per row computes the row's loss, its
// gradient (softmax - target) / batch, and whether the top class was the label.
#include "common.cuh"

// logits (rows, classes); labels (rows) as int; row_stats (2, rows): each row's loss, then
// whether its top class was the label (0/1), so that the host reads both in one copy.
// Blocks of 256 threads: 8 rows per block.
extern "C" __global__ void softmax_cross_entropy_f32(
    const float* logits, const int* labels, float* dlogits, float* row_stats,
    u64 rows, u64 classes, float smoothing) {
    const u64 r = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float* row = logits + r * classes;
    float* grad = dlogits + r * classes;
    const int label = labels[r];

    // Maximum, and the lowest index that reaches it (ties count for the lowest index).
    float best = -INFINITY;
    u64 best_index = classes;
    for (u64 k = lane; k < classes; k += 32) {
        const float v = row[k];
        if (v > best) { best = v; best_index = k; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, o);
        const u64 other_index = __shfl_xor_sync(0xffffffffu, best_index, o);
        if (other > best || (other == best && other_index < best_index)) {
            best = other;
            best_index = other_index;
        }
    }
    double sum_exp = 0.0;
    for (u64 k = lane; k < classes; k += 32) sum_exp += exp((double)row[k] - (double)best);
    for (int o = 16; o > 0; o >>= 1) sum_exp += __shfl_xor_sync(0xffffffffu, sum_exp, o);
    const double log_sum = log(sum_exp) + (double)best;

    const double off_target = (double)smoothing / (double)classes;
    const double on_target = 1.0 - (double)smoothing + off_target;
    double loss = 0.0;
    for (u64 k = lane; k < classes; k += 32) {
        const double target = (k == (u64)label) ? on_target : off_target;
        const double log_p = (double)row[k] - log_sum;
        loss -= target * log_p;
        grad[k] = (float)((exp(log_p) - target) / (double)rows);
    }
    for (int o = 16; o > 0; o >>= 1) loss += __shfl_xor_sync(0xffffffffu, loss, o);
    if (lane == 0) {
        row_stats[r] = (float)loss;
        row_stats[rows + r] = best_index == (u64)label ? 1.0f : 0.0f;
    }
}
