// CUDA kernels for the fused bias + activation + gain + clamp op and its first and second derivatives.
// The argument contract is documented in bias_act.h.

#include <cuda_fp16.h>
#include <type_traits>
#include "bias_act.h"

namespace {

constexpr int kThreads = 256;

// Elements per thread: a few independent loads in flight per thread to cover memory latency.
template <typename T> struct PerThread { static constexpr int value = 4; };

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

// Division by a divisor fixed for the whole launch, as a multiply-high and a shift (Granlund & Montgomery):
// the bias index needs two divisions per element, and hardware integer division would dominate the
// runtime of this memory-bound kernel. Valid for numerators below 2^31.
struct InvariantDivisor {
    unsigned magic;
    unsigned shift;

    __host__ __device__ InvariantDivisor() : magic(0), shift(0) {}
    __host__ explicit InvariantDivisor(unsigned divisor)
    {
        shift = 0;
        while ((1ull << shift) < divisor)
            shift++;
        magic = (unsigned)(((1ull << 32) * ((1ull << shift) - divisor)) / divisor + 1);
    }
    __device__ __forceinline__ unsigned divide(unsigned n) const { return (__umulhi(n, magic) + n) >> shift; }
};

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

// Everything a kernel thread needs besides the element index, converted to the math type once.
template <typename T>
struct ElementContext {
    typedef typename MathOf<T>::type M;
    const T* __restrict__ x;
    const T* __restrict__ b;
    const T* __restrict__ xref;
    const T* __restrict__ yref;
    const T* __restrict__ dy;
    int bias_len, grad;
    InvariantDivisor by_stride, by_len;
    M alpha, gain, clamp, clamp_stored, inv_gain;
    bool clamping;
};

// The per-element inputs, already loaded and converted (absent operands read as zero).
template <typename M> struct Operands { M x, xref, yref, dy; };

template <typename T>
__device__ __forceinline__ Operands<typename MathOf<T>::type> load_operands(const ElementContext<T>& c, int i)
{
    typedef typename MathOf<T>::type M;
    Operands<M> v;
    v.x = load_as<M>(c.x, i);
    v.xref = c.xref != nullptr ? load_as<M>(c.xref, i) : (M)0;
    v.yref = c.yref != nullptr ? load_as<M>(c.yref, i) : (M)0;
    v.dy = c.dy != nullptr ? load_as<M>(c.dy, i) : (M)0;
    return v;
}

// b[index of element i along dim], i.e. b[(i / stride) mod len], without hardware division.
template <typename T>
__device__ __forceinline__ typename MathOf<T>::type bias_for(const ElementContext<T>& c, int i)
{
    typedef typename MathOf<T>::type M;
    if (c.b == nullptr)
        return (M)0;
    const unsigned row = c.by_stride.divide((unsigned)i);
    return load_as<M>(c.b, (int)(row - c.by_len.divide(row) * (unsigned)c.bias_len));
}

// The result for element i in the mode c.grad (see bias_act.h).
template <typename T, int ACT>
__device__ __forceinline__ typename MathOf<T>::type element_result(const ElementContext<T>& c, int i,
                                                                   const Operands<typename MathOf<T>::type>& v)
{
    typedef typename MathOf<T>::type M;
    if (c.grad == 0) {
        const M out = activate<ACT>(v.x + bias_for(c, i), c.alpha) * c.gain;
        if (!c.clamping)
            return out;
        return out > c.clamp ? c.clamp : (out < -c.clamp ? -c.clamp : out);
    }

    // Pre-activation input, needed by swish and by a clamp mask without a stored output.
    const bool needs_input = ACT == kActSwish || (c.clamping && c.yref == nullptr);
    const M s = needs_input ? v.xref + bias_for(c, i) : (M)0;

    // Clamp mask. A stored output is compared with the clamp as it was stored, so clamped elements are
    // recognised even when the clamp value is not representable in T.
    if (c.clamping) {
        const bool inside = c.yref != nullptr ? fabs(v.yref) < c.clamp_stored
                                              : fabs(activate<ACT>(s, c.alpha) * c.gain) < c.clamp;
        if (!inside)
            return (M)0;
    }

    if (ACT == kActSwish)
        return c.grad == 1 ? v.x * c.gain * swish_slope(s) : v.x * v.dy * c.gain * swish_curvature(s);
    if (ACT == kActLinear)
        return c.grad == 1 ? v.x * c.gain : (M)0;
    const M t = v.yref * c.inv_gain;
    if (c.grad == 1)
        return v.x * c.gain * slope_from_output<ACT>(t, c.alpha);
    return v.x * v.dy * curvature_from_output<ACT>(t);
}

template <typename T>
__device__ __forceinline__ ElementContext<T> make_context(const BiasActLaunch& p, InvariantDivisor by_stride,
                                                          InvariantDivisor by_len)
{
    typedef typename MathOf<T>::type M;
    ElementContext<T> c;
    c.x = static_cast<const T*>(p.x);
    c.b = static_cast<const T*>(p.b);
    c.xref = static_cast<const T*>(p.xref);
    c.yref = static_cast<const T*>(p.yref);
    c.dy = static_cast<const T*>(p.dy);
    c.bias_len = p.bias_len;
    c.by_stride = by_stride;
    c.by_len = by_len;
    c.grad = p.grad;
    c.alpha = (M)p.alpha;
    c.gain = (M)p.gain;
    c.clamp = (M)p.clamp;
    c.clamp_stored = as_stored<T>(c.clamp);
    c.clamping = p.clamp >= 0.0;
    // t = y / gain; a zero gain makes every derivative zero anyway, so avoid 0/0.
    c.inv_gain = p.gain != 0.0 ? (M)1 / c.gain : (M)0;
    return c;
}

// One element per slot, any dtype and alignment.
template <typename T, int ACT>
__global__ void bias_act_kernel(BiasActLaunch p, InvariantDivisor by_stride, InvariantDivisor by_len)
{
    typedef typename MathOf<T>::type M;
    const ElementContext<T> c = make_context<T>(p, by_stride, by_len);
    T* __restrict__ out = static_cast<T*>(p.out);

    // All loads of a thread are issued before its first store, so they overlap in flight.
    constexpr int kItems = PerThread<T>::value;
    const long long first = (long long)blockIdx.x * (kThreads * kItems) + threadIdx.x;
    M results[kItems];
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const long long i = first + k * kThreads;
        if (i < p.numel)
            results[k] = element_result<T, ACT>(c, (int)i, load_operands(c, (int)i));
    }
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const long long i = first + k * kThreads;
        if (i < p.numel)
            store_from(out, (int)i, results[k]);
    }
}

// float16 with every buffer 4-byte aligned: two neighbouring elements per slot through __half2 loads
// and stores, which halves the memory instructions (narrow 2-byte accesses otherwise cap bandwidth).
__device__ __forceinline__ float2 load_pair(const __half* base, long long pair)
{
    if (base == nullptr)
        return make_float2(0.0f, 0.0f);
    return __half22float2(reinterpret_cast<const __half2*>(base)[pair]);
}

template <int ACT>
__global__ void bias_act_half2_kernel(BiasActLaunch p, InvariantDivisor by_stride, InvariantDivisor by_len)
{
    const ElementContext<__half> c = make_context<__half>(p, by_stride, by_len);
    __half* __restrict__ out = static_cast<__half*>(p.out);

    constexpr int kItems = PerThread<__half>::value;
    const long long pairs = ((long long)p.numel + 1) / 2;
    const long long first = (long long)blockIdx.x * (kThreads * kItems) + threadIdx.x;
    float2 results[kItems];
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const long long j = first + k * kThreads;
        if (j >= pairs)
            continue;
        const int i = (int)(2 * j);
        if (i + 1 < p.numel) {
            const float2 x = load_pair(c.x, j), xr = load_pair(c.xref, j), yr = load_pair(c.yref, j),
                         g = load_pair(c.dy, j);
            const Operands<float> lo = {x.x, xr.x, yr.x, g.x};
            const Operands<float> hi = {x.y, xr.y, yr.y, g.y};
            results[k] = make_float2(element_result<__half, ACT>(c, i, lo), element_result<__half, ACT>(c, i + 1, hi));
        } else {  // odd element count: the last element has no partner
            results[k] = make_float2(element_result<__half, ACT>(c, i, load_operands(c, i)), 0.0f);
        }
    }
#pragma unroll
    for (int k = 0; k < kItems; k++) {
        const long long j = first + k * kThreads;
        if (j >= pairs)
            continue;
        const int i = (int)(2 * j);
        if (i + 1 < p.numel)
            reinterpret_cast<__half2*>(out)[j] = __floats2half2_rn(results[k].x, results[k].y);
        else
            out[i] = __float2half_rn(results[k].x);
    }
}

#define BIAS_ACT_FOR_EACH_ACT(LAUNCH)                                                                   \
    switch (p.act) {                                                                                   \
    case kActLinear:   LAUNCH(kActLinear); break;                                                      \
    case kActRelu:     LAUNCH(kActRelu); break;                                                        \
    case kActLrelu:    LAUNCH(kActLrelu); break;                                                       \
    case kActTanh:     LAUNCH(kActTanh); break;                                                        \
    case kActSigmoid:  LAUNCH(kActSigmoid); break;                                                     \
    case kActElu:      LAUNCH(kActElu); break;                                                         \
    case kActSelu:     LAUNCH(kActSelu); break;                                                        \
    case kActSoftplus: LAUNCH(kActSoftplus); break;                                                    \
    case kActSwish:    LAUNCH(kActSwish); break;                                                       \
    default: return cudaErrorInvalidValue;                                                             \
    }

bool four_byte_aligned(const void* ptr) { return ptr == nullptr || (reinterpret_cast<size_t>(ptr) & 3) == 0; }

template <typename T>
cudaError_t launch_typed(const BiasActLaunch& p, cudaStream_t stream)
{
    if (p.numel <= 0)
        return cudaSuccess;
    const long long per_block = (long long)kThreads * PerThread<T>::value;
    const InvariantDivisor by_stride((unsigned)(p.bias_stride > 0 ? p.bias_stride : 1));
    const InvariantDivisor by_len((unsigned)(p.bias_len > 0 ? p.bias_len : 1));
    const bool paired = std::is_same<T, __half>::value && four_byte_aligned(p.x) && four_byte_aligned(p.xref) &&
                        four_byte_aligned(p.yref) && four_byte_aligned(p.dy) && four_byte_aligned(p.out);
    if (paired) {
        const unsigned blocks = (unsigned)((((long long)p.numel + 1) / 2 + per_block - 1) / per_block);
#define BIAS_ACT_LAUNCH_PAIRED(A) bias_act_half2_kernel<A><<<blocks, kThreads, 0, stream>>>(p, by_stride, by_len)
        BIAS_ACT_FOR_EACH_ACT(BIAS_ACT_LAUNCH_PAIRED)
#undef BIAS_ACT_LAUNCH_PAIRED
    } else {
        const unsigned blocks = (unsigned)((p.numel + per_block - 1) / per_block);
#define BIAS_ACT_LAUNCH_SINGLE(A) bias_act_kernel<T, A><<<blocks, kThreads, 0, stream>>>(p, by_stride, by_len)
        BIAS_ACT_FOR_EACH_ACT(BIAS_ACT_LAUNCH_SINGLE)
#undef BIAS_ACT_LAUNCH_SINGLE
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
