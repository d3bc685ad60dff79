// The SGD update with (Nesterov) momentum and weight decay, PyTorch's formulation, in place.
#include "common.cuh"

extern "C" __global__ void sgd_step_f32(SgdParams p, float* param, const float* grad, float* buffer) {
    for (u64 i = global_index(); i < p.len; i += global_stride()) {
        const float g = grad[i] + p.weight_decay * param[i];
        const float b = p.momentum * buffer[i] + g;
        buffer[i] = b;
        param[i] -= p.lr * (p.nesterov ? g + p.momentum * b : b);
    }
}
