// Python binding and argument checks for the bias_act CUDA plugin; the contract is in bias_act.h.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <climits>
#include "bias_act.h"

namespace {

// Strides of size-1 axes never affect addressing, so they are allowed to differ.
bool same_layout(const torch::Tensor& a, const torch::Tensor& b)
{
    for (int64_t d = 0; d < a.dim(); d++)
        if (a.size(d) > 1 && a.stride(d) != b.stride(d))
            return false;
    return true;
}

// An empty tensor stands for "not given"; anything else must line up element for element with x.
bool given_like(const torch::Tensor& t, const torch::Tensor& x, const char* name)
{
    if (t.numel() == 0)
        return false;
    TORCH_CHECK(t.device() == x.device(), name, " must be on the same device as x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, " must have the same dtype as x");
    TORCH_CHECK(t.sizes() == x.sizes(), name, " must have the same shape as x");
    TORCH_CHECK(same_layout(t, x), name, " must have the same memory layout (strides) as x");
    return true;
}

BiasActDtype dtype_code(const torch::Tensor& x)
{
    switch (x.scalar_type()) {
    case torch::kHalf: return kBiasActHalf;
    case torch::kFloat: return kBiasActFloat;
    case torch::kDouble: return kBiasActDouble;
    default: TORCH_CHECK(false, "bias_act_plugin supports float16, float32 and float64, not ", x.scalar_type());
    }
    return kBiasActFloat;
}

bool differentiates_from_input(int act) { return act == kActSwish; }

} // namespace

torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref, torch::Tensor dy,
                       int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "x must be non-overlapping and dense");
    TORCH_CHECK(x.numel() <= INT_MAX, "x has too many elements for bias_act_plugin (at most INT_MAX)");
    TORCH_CHECK(grad >= 0 && grad <= 2, "grad must be 0, 1 or 2");
    TORCH_CHECK(act >= kActLinear && act <= kActSwish, "act must be a cuda_idx between 1 and 9");
    TORCH_CHECK(x.dim() > 0 && dim >= 0 && dim < x.dim(), "dim is out of range for x");

    const bool has_b = b.numel() > 0;
    if (has_b) {
        TORCH_CHECK(b.device() == x.device(), "b must be on the same device as x");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "b must have the same dtype as x");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "b must be 1-D with length x.shape[dim]");
        TORCH_CHECK(b.is_contiguous(), "b must be contiguous");
    }
    const bool has_xref = given_like(xref, x, "xref");
    const bool has_yref = given_like(yref, x, "yref");
    const bool has_dy = given_like(dy, x, "dy");

    if (grad > 0) {
        if (differentiates_from_input(act)) {
            TORCH_CHECK(has_xref, "xref (the forward input) is required for the backward of this activation");
        } else if (act != kActLinear) {
            TORCH_CHECK(has_yref, "yref (the forward output) is required for the backward of this activation");
        }
        if (clamp >= 0) {
            TORCH_CHECK(has_yref || has_xref, "yref or xref is required to know where the forward clamped");
        }
    }
    if (grad == 2) {
        TORCH_CHECK(has_dy, "dy is required for the second-order backward (grad=2)");
    }

    const at::cuda::CUDAGuard device_guard(x.device());
    torch::Tensor out = torch::empty_like(x);  // keeps x's strides, so channels_last stays channels_last
    TORCH_CHECK(same_layout(out, x), "internal error: output layout differs from x");
    if (x.numel() == 0)
        return out;

    BiasActLaunch launch;
    launch.x = x.data_ptr();
    launch.b = has_b ? b.data_ptr() : nullptr;
    launch.xref = has_xref ? xref.data_ptr() : nullptr;
    launch.yref = has_yref ? yref.data_ptr() : nullptr;
    launch.dy = has_dy ? dy.data_ptr() : nullptr;
    launch.out = out.data_ptr();
    launch.numel = (int)x.numel();
    launch.bias_len = (int)x.size(dim);
    launch.bias_stride = (int)(x.stride(dim) > 0 ? x.stride(dim) : 1);
    launch.grad = (int)grad;
    launch.act = (int)act;
    launch.alpha = alpha;
    launch.gain = gain;
    launch.clamp = clamp;

    const cudaError_t status = bias_act_launch(launch, dtype_code(x), at::cuda::getCurrentCUDAStream());
    TORCH_CHECK(status == cudaSuccess, "bias_act kernel launch failed: ", cudaGetErrorString(status));
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its derivatives (see bias_act.h)");
}
