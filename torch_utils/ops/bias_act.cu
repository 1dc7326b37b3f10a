// CUDA kernels for the fused bias + activation + gain + clamp op and its first and second derivatives.
// The argument contract is documented in bias_act.h.

#include <cuda_fp16.h>
#include "bias_act.h"

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;

// SELU constants (Klambauer et al. 2017).
constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

// Beyond this |s| the exp-based activations are replaced by their limits (avoids inf/NaN).
constexpr double kSaturate = 80.0;
// The swish derivatives are already at their limits (1 and 0) well before |s| = 40.
constexpr double kSwishGradRange = 40.0;

// Storage type -> arithmetic type: halves are promoted to float.
template <typename T> struct MathOf { typedef T type; };
template <> struct MathOf<__half> { typedef float type; };

template <typename M> __device__ __forceinline__ M load_as(const float* p, int i) { return (M)p[i]; }
template <typename M> __device__ __forceinline__ M load_as(const double* p, int i) { return (M)p[i]; }
template <typename M> __device__ __forceinline__ M load_as(const __half* p, int i) { return (M)__half2float(p[i]); }

__device__ __forceinline__ void store_from(float* p, int i, float v) { p[i] = v; }
__device__ __forceinline__ void store_from(double* p, int i, double v) { p[i] = v; }
__device__ __forceinline__ void store_from(__half* p, int i, float v) { p[i] = __float2half_rn(v); }

// The value a math-type number takes once stored as T (what the forward wrote for a clamped element).
template <typename T, typename M> __device__ __forceinline__ M as_stored(M v) { return (M)(T)v; }
template <> __device__ __forceinline__ float as_stored<__half, float>(float v) { return __half2float(__float2half_rn(v)); }

template <typename M> __device__ __forceinline__ M logistic(M s)
{
    if (s < (M)-kSaturate) return (M)0;
    if (s > (M)kSaturate) return (M)1;
    return (M)1 / ((M)1 + exp(-s));
}

// f(s) for every activation.
template <int ACT, typename M> __device__ __forceinline__ M activate(M s, M alpha)
{
    if (ACT == kActRelu) return s > (M)0 ? s : (M)0;
    if (ACT == kActLrelu) return s > (M)0 ? s : s * alpha;
    if (ACT == kActTanh) {
        if (s > (M)kSaturate) return (M)1;
        if (s < (M)-kSaturate) return (M)-1;
        return tanh(s);
    }
    if (ACT == kActSigmoid) return logistic(s);
    if (ACT == kActElu) return s >= (M)0 ? s : expm1(s);
    if (ACT == kActSelu) return s >= (M)0 ? (M)kSeluLambda * s : (M)(kSeluLambda * kSeluAlpha) * expm1(s);
    if (ACT == kActSoftplus) return s > (M)kSaturate ? s : log1p(exp(s));
    if (ACT == kActSwish) {
        if (s < (M)-kSaturate) return (M)0;
        if (s > (M)kSaturate) return s;
        return s * logistic(s);
    }
    return s;  // linear
}

// f'(s), written in terms of t = f(s) for the activations that keep only the output.
template <int ACT, typename M> __device__ __forceinline__ M slope_from_output(M t, M alpha)
{
    if (ACT == kActRelu) return t > (M)0 ? (M)1 : (M)0;
    if (ACT == kActLrelu) return t > (M)0 ? (M)1 : alpha;
    if (ACT == kActTanh) return (M)1 - t * t;
    if (ACT == kActSigmoid) return t * ((M)1 - t);
    if (ACT == kActElu) return t > (M)0 ? (M)1 : t + (M)1;
    if (ACT == kActSelu) return t > (M)0 ? (M)kSeluLambda : t + (M)(kSeluLambda * kSeluAlpha);
    if (ACT == kActSoftplus) return -expm1(-t);  // sigmoid(s) = 1 - exp(-softplus(s))
    return (M)1;  // linear
}

// d f'(s) / d t for the same activations: the second-order term routed to the forward output.
template <int ACT, typename M> __device__ __forceinline__ M curvature_from_output(M t)
{
    if (ACT == kActTanh) return (M)-2 * t;
    if (ACT == kActSigmoid) return (M)1 - (M)2 * t;
    if (ACT == kActElu || ACT == kActSelu) return t > (M)0 ? (M)0 : (M)1;
    if (ACT == kActSoftplus) return exp(-t);
    return (M)0;  // linear, relu, lrelu are piecewise linear
}

// f'(s) and f''(s) for swish, which differentiates from its input.
template <typename M> __device__ __forceinline__ M swish_slope(M s)
{
    if (s < (M)-kSwishGradRange) return (M)0;
    if (s > (M)kSwishGradRange) return (M)1;
    const M sig = logistic(s);
    return sig * ((M)1 + s * ((M)1 - sig));
}

template <typename M> __device__ __forceinline__ M swish_curvature(M s)
{
    if (s < (M)-kSwishGradRange || s > (M)kSwishGradRange) return (M)0;
    const M sig = logistic(s);
    return sig * ((M)1 - sig) * ((M)2 + s * ((M)1 - (M)2 * sig));
}

template <typename T, int ACT>
__global__ void bias_act_kernel(BiasActLaunch p)
{
    typedef typename MathOf<T>::type M;
    const T* x = static_cast<const T*>(p.x);
    const T* b = static_cast<const T*>(p.b);
    const T* xref = static_cast<const T*>(p.xref);
    const T* yref = static_cast<const T*>(p.yref);
    const T* dy = static_cast<const T*>(p.dy);
    T* out = static_cast<T*>(p.out);

    const M alpha = (M)p.alpha;
    const M gain = (M)p.gain;
    const M clamp = (M)p.clamp;
    const bool clamping = p.clamp >= 0.0;
    // t = y / gain; a zero gain makes every derivative zero anyway, so avoid 0/0.
    const M inv_gain = p.gain != 0.0 ? (M)1 / gain : (M)0;

    const int first = blockIdx.x * (kThreads * kPerThread) + threadIdx.x;
#pragma unroll
    for (int k = 0; k < kPerThread; k++) {
        const int i = first + k * kThreads;
        if (i >= p.numel)
            return;
        const M operand = load_as<M>(x, i);

        // Pre-activation input, only when this mode and activation read it.
        auto pre_activation = [&](const T* base) -> M {
            M s = load_as<M>(base, i);
            if (b != nullptr)
                s += load_as<M>(b, (i / p.bias_stride) % p.bias_len);
            return s;
        };

        if (p.grad == 0) {
            M v = activate<ACT>(pre_activation(x), alpha) * gain;
            if (clamping)
                v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
            store_from(out, i, v);
            continue;
        }

        // Clamp mask: from the stored output when we have it, else recompute the unclamped output.
        if (clamping) {
            // A stored output is compared with the clamp as it was stored, so that clamped elements
            // are recognised even when the clamp value is not representable in T.
            bool inside;
            if (yref != nullptr)
                inside = fabs(load_as<M>(yref, i)) < as_stored<T>(clamp);
            else
                inside = fabs(activate<ACT>(pre_activation(xref), alpha) * gain) < clamp;
            if (!inside) {
                store_from(out, i, (M)0);
                continue;
            }
        }

        M result;
        if (ACT == kActSwish) {
            const M s = pre_activation(xref);
            if (p.grad == 1)
                result = operand * gain * swish_slope(s);
            else
                result = operand * load_as<M>(dy, i) * gain * swish_curvature(s);
        } else if (ACT == kActLinear) {
            result = p.grad == 1 ? operand * gain : (M)0;
        } else {
            const M t = load_as<M>(yref, i) * inv_gain;
            if (p.grad == 1)
                result = operand * gain * slope_from_output<ACT>(t, alpha);
            else
                result = operand * load_as<M>(dy, i) * curvature_from_output<ACT>(t);
        }
        store_from(out, i, result);
    }
}

template <typename T>
cudaError_t launch_typed(const BiasActLaunch& p, cudaStream_t stream)
{
    if (p.numel <= 0)
        return cudaSuccess;
    const long long per_block = (long long)kThreads * kPerThread;
    const unsigned blocks = (unsigned)((p.numel + per_block - 1) / per_block);
    switch (p.act) {
    case kActLinear:   bias_act_kernel<T, kActLinear><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActRelu:     bias_act_kernel<T, kActRelu><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActLrelu:    bias_act_kernel<T, kActLrelu><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActTanh:     bias_act_kernel<T, kActTanh><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActSigmoid:  bias_act_kernel<T, kActSigmoid><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActElu:      bias_act_kernel<T, kActElu><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActSelu:     bias_act_kernel<T, kActSelu><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActSoftplus: bias_act_kernel<T, kActSoftplus><<<blocks, kThreads, 0, stream>>>(p); break;
    case kActSwish:    bias_act_kernel<T, kActSwish><<<blocks, kThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

} // namespace

cudaError_t bias_act_launch(const BiasActLaunch& launch, BiasActDtype dtype, cudaStream_t stream)
{
    switch (dtype) {
    case kBiasActHalf:   return launch_typed<__half>(launch, stream);
    case kBiasActFloat:  return launch_typed<float>(launch, stream);
    case kBiasActDouble: return launch_typed<double>(launch, stream);
    }
    return cudaErrorInvalidValue;
}
