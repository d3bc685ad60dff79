// Batch normalisation over NCHW, fused with the ReLU that follows it in MBConv blocks.
// Training forward: per-channel sums by a split reduction (grid (C, splits), float64 partials of
// the values shifted by the channel's first value), a per-channel finalize that also moves the
// running statistics, then one element-wise pass y = max(x * scale + shift, 0).
// Backward: the same split reduction of g and g * (x - mean) (g = dy masked by the recomputed
// ReLU), a finalize for dweight and dbias, and one element-wise pass for dx.
#include "common.cuh"

// scale = inv_std * weight, shift = bias - mean * scale, rounded as written (no contraction), so
// that the forward pass and the backward pass's recomputed ReLU mask agree bit for bit.
__device__ __forceinline__ void channel_affine(float mean, float inv_std, float weight, float bias, float& scale,
                                               float& shift) {
    scale = __fmul_rn(inv_std, weight);
    shift = __fsub_rn(bias, __fmul_rn(mean, scale));
}

// Element j of channel c over the whole batch: image j / plane, position j % plane.
__device__ __forceinline__ u64 channel_offset(const PlaneShape& s, u64 c, u64 j) {
    const u32 plane = (u32)s.plane;
    const u32 n = (u32)j / plane;
    return ((u64)n * s.channels + c) * plane + ((u32)j - n * plane);
}

// The channel of flat element i.
__device__ __forceinline__ u32 channel_of(const PlaneShape& s, u64 i) {
    return ((u32)i / (u32)s.plane) % (u32)s.channels;
}

// The share [begin, end) of a channel's batch * plane values that split `split` reduces.
__device__ __forceinline__ void split_range(const PlaneShape& s, u64 split, u64 splits, u64& begin, u64& end) {
    const u64 count = s.batch * s.plane;
    const u64 per = (count + splits - 1) / splits;
    begin = min(count, split * per);
    end = min(count, begin + per);
}

// partial[(split * C + c) * 2 + {0, 1}] = sums of (x - x_c0) and (x - x_c0)^2 over the split's
// share of channel c, x_c0 being the channel's first value. Grid (C, splits), 256 threads.
extern "C" __global__ void batch_norm_partial_sums_f32(PlaneShape s, const float* x, double* partial, u64 splits) {
    __shared__ double scratch[32];
    const u64 c = blockIdx.x, split = blockIdx.y;
    u64 begin, end;
    split_range(s, split, splits, begin, end);
    const float shift = x[c * s.plane];
    double s1 = 0.0, s2 = 0.0;
    for (u64 j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const double v = (double)(x[channel_offset(s, c, j)] - shift);
        s1 += v;
        s2 += v * v;
    }
    s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    if (threadIdx.x == 0) {
        partial[(split * s.channels + c) * 2] = s1;
        partial[(split * s.channels + c) * 2 + 1] = s2;
    }
}

// One thread per channel: the batch mean and biased variance from the partial sums, inv_std,
// the fused affine (scale = weight * inv_std, shift = bias - mean * scale), and the running
// statistics moved by `momentum` (unbiased variance), as PyTorch does.
extern "C" __global__ void batch_norm_finalize_f32(
    PlaneShape s, const double* partial, u64 splits, const float* x, const float* weight, const float* bias,
    float* mean_out, float* inv_std_out, float* scale_out, float* shift_out, float* running_mean,
    float* running_var, float momentum, float eps) {
    const u64 c = global_index();
    if (c >= s.channels) return;
    double s1 = 0.0, s2 = 0.0;
    for (u64 z = 0; z < splits; ++z) {
        s1 += partial[(z * s.channels + c) * 2];
        s2 += partial[(z * s.channels + c) * 2 + 1];
    }
    const double count = (double)(s.batch * s.plane);
    const double centred = s1 / count;
    const double mean = (double)x[c * s.plane] + centred;
    const double var = fmax(s2 / count - centred * centred, 0.0);
    const float inv_std = (float)(1.0 / sqrt(var + (double)eps));
    const float m32 = (float)mean;
    float scale, shift;
    channel_affine(m32, inv_std, weight[c], bias[c], scale, shift);
    mean_out[c] = m32;
    inv_std_out[c] = inv_std;
    scale_out[c] = scale;
    shift_out[c] = shift;
    const double mo = (double)momentum;
    running_mean[c] = (float)((1.0 - mo) * (double)running_mean[c] + mo * mean);
    running_var[c] = (float)((1.0 - mo) * (double)running_var[c] + mo * var * count / (count - 1.0));
}

// Inference: inv_std, scale and shift from the running statistics. One thread per channel.
extern "C" __global__ void batch_norm_eval_affine_f32(
    u64 channels, const float* running_mean, const float* running_var, const float* weight, const float* bias,
    float eps, float* inv_std_out, float* scale_out, float* shift_out) {
    const u64 c = global_index();
    if (c >= channels) return;
    const float inv_std = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
    float scale, shift;
    channel_affine(running_mean[c], inv_std, weight[c], bias[c], scale, shift);
    inv_std_out[c] = inv_std;
    scale_out[c] = scale;
    shift_out[c] = shift;
}

// y = x * scale[c] + shift[c], then max(y, 0) when relu.
extern "C" __global__ void batch_norm_apply_f32(PlaneShape s, const float* x, const float* scale, const float* shift,
                                               int relu, float* y) {
    const u64 len = s.batch * s.channels * s.plane;
    for (u64 i = global_index(); i < len; i += global_stride()) {
        const u32 c = channel_of(s, i);
        const float v = fmaf(x[i], scale[c], shift[c]);
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// partial[(split * C + c) * 2 + {0, 1}] = sums of g and g * (x - mean) over the split's share,
// g = dy where the forward output was positive (relu) or everywhere.
extern "C" __global__ void batch_norm_backward_partial_sums_f32(
    PlaneShape s, const float* x, const float* dy, const float* mean, const float* inv_std, const float* weight,
    const float* bias, int relu, double* partial, u64 splits) {
    __shared__ double scratch[32];
    const u64 c = blockIdx.x, split = blockIdx.y;
    u64 begin, end;
    split_range(s, split, splits, begin, end);
    const float m = mean[c];
    float a, b;
    channel_affine(m, inv_std[c], weight[c], bias[c], a, b);
    double sg = 0.0, sgx = 0.0;
    for (u64 j = begin + threadIdx.x; j < end; j += blockDim.x) {
        const u64 o = channel_offset(s, c, j);
        const float v = x[o];
        const float g = (!relu || fmaf(v, a, b) > 0.0f) ? dy[o] : 0.0f;
        sg += (double)g;
        sgx += (double)g * (double)(v - m);
    }
    sg = block_sum(sg, scratch);
    sgx = block_sum(sgx, scratch);
    if (threadIdx.x == 0) {
        partial[(split * s.channels + c) * 2] = sg;
        partial[(split * s.channels + c) * 2 + 1] = sgx;
    }
}

// One thread per channel: dbias = sum g, dweight = inv_std * sum g (x - mean).
extern "C" __global__ void batch_norm_backward_finalize_f32(PlaneShape s, const double* partial, u64 splits,
                                                           const float* inv_std, float* dweight, float* dbias) {
    const u64 c = global_index();
    if (c >= s.channels) return;
    double sg = 0.0, sgx = 0.0;
    for (u64 z = 0; z < splits; ++z) {
        sg += partial[(z * s.channels + c) * 2];
        sgx += partial[(z * s.channels + c) * 2 + 1];
    }
    dbias[c] = (float)sg;
    dweight[c] = (float)(sgx * (double)inv_std[c]);
}

// dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat)) in training, weight * inv_std * g
// in inference.
extern "C" __global__ void batch_norm_backward_apply_f32(
    PlaneShape s, const float* x, const float* dy, const float* mean, const float* inv_std, const float* weight,
    const float* bias, const float* dweight, const float* dbias, int relu, int training, float* dx) {
    const u64 len = s.batch * s.channels * s.plane;
    const float count = (float)(s.batch * s.plane);
    for (u64 i = global_index(); i < len; i += global_stride()) {
        const u32 c = channel_of(s, i);
        const float v = x[i];
        float a, b;
        channel_affine(mean[c], inv_std[c], weight[c], bias[c], a, b);
        const float g = (!relu || fmaf(v, a, b) > 0.0f) ? dy[i] : 0.0f;
        const float k = weight[c] * inv_std[c];
        if (training) {
            const float mean_g = dbias[c] / count;
            const float mean_gx = dweight[c] / count;  // mean of g * xhat
            dx[i] = k * (g - mean_g - (v - mean[c]) * inv_std[c] * mean_gx);
        } else {
            dx[i] = k * g;
        }
    }
}
