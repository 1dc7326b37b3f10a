// Shared declarations for the fused bias + activation + gain + clamp CUDA plugin (bias_act_plugin).
//
// Python entry point (bias_act.cpp):
//   bias_act(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp) -> Tensor shaped and strided like x
//
// Notation: s = xref + b (bias broadcast along `dim`), f = activation `act`,
//           y = clamp(gain * f(s)) is the forward output, and the "clamp mask" is 1 where |gain * f(s)| < clamp
//           (always 1 when clamp < 0), 0 where the forward clamped.
//
// Arguments (an empty tensor means "not given"):
//   x     grad=0: the forward input (before the bias).
//         grad=1: dL/dy, the gradient arriving at the forward output.
//         grad=2: dL/d(out1), the gradient arriving at the output of a grad=1 call.
//   b     1-D bias of length x.size(dim), x's dtype; added in the forward and whenever xref is read.
//   xref  the forward input (before the bias, exactly what grad=0 received). Needed by activations that
//         differentiate from the input (ref 'x': swish). Ignored by the others.
//   yref  the forward output y (what grad=0 returned). Needed by activations that differentiate from the
//         output (ref 'y': relu, lrelu, tanh, sigmoid, elu, selu, softplus) and by linear when clamp >= 0.
//         When given, the clamp mask is read from it (|y| < clamp rounded to x's dtype); otherwise it is
//         recomputed from xref.
//   dy    grad=2 only: the x that the matching grad=1 call received (dL/dy).
//   grad  0 forward, 1 first backward, 2 second backward.
//   dim   axis of x that b runs along.  act: cuda_idx from activation_funcs (1..9).
//   alpha lrelu slope (other activations ignore it).  gain: output scale.  clamp: < 0 means off.
//
// Results:
//   grad=0: y.
//   grad=1: x * gain * f'(s) * mask, i.e. dL/ds (= dL/dxref, and summed over the other axes = dL/db).
//           For ref 'y' activations f'(s) is written in terms of t = yref / gain, so s is never needed.
//   grad=2: ref 'x' activations: x * dy * gain * f''(s) * mask -- the gradient w.r.t. xref (and b).
//           ref 'y' activations: x * dy * d(gain * f'(s)) / d(yref) * mask -- the gradient w.r.t. yref.
//           It flows on to the forward input through the first-order backward of y, so the caller must
//           route it to yref (never also to xref). linear, relu and lrelu give zeros (piecewise linear).
//
// Every non-empty tensor other than b must have x's sizes, strides, dtype and device; x must be
// non-overlapping and dense (any dim order, so channels_last is kept) with at most INT_MAX elements.
// Dtypes: float64, float32, float16 (float16 is computed in float32).
#pragma once

#include <cuda_runtime.h>

enum BiasActKind : int {
    kActLinear = 1,
    kActRelu = 2,
    kActLrelu = 3,
    kActTanh = 4,
    kActSigmoid = 5,
    kActElu = 6,
    kActSelu = 7,
    kActSoftplus = 8,
    kActSwish = 9,
};

enum BiasActDtype : int {
    kBiasActHalf = 0,
    kBiasActFloat = 1,
    kBiasActDouble = 2,
};

struct BiasActLaunch {
    const void* x;      // main operand, see above
    const void* b;      // nullptr when absent
    const void* xref;   // nullptr when absent
    const void* yref;   // nullptr when absent
    const void* dy;     // nullptr when absent
    void* out;
    int numel;
    int bias_len;       // x.size(dim)
    int bias_stride;    // x.stride(dim), in elements
    int grad;
    int act;
    double alpha;
    double gain;
    double clamp;
};

// Launches the kernel for `launch` on `stream`; returns the launch status.
cudaError_t bias_act_launch(const BiasActLaunch& launch, BiasActDtype dtype, cudaStream_t stream);
