// Python binding of the upfirdn2d CUDA plugin: validates arguments, allocates the output, launches.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

#include "upfirdn2d.h"

namespace {

struct Geometry {
    int upx, upy, downx, downy, padx0, padx1, pady0, pady1;
};

// Fill the launch description; the tensors may be undefined when only the path is wanted.
UpFirDn2dLaunch describe(const torch::Tensor& x, const torch::Tensor& f, const torch::Tensor& y,
                         const Geometry& g, bool flip, double gain, bool channels_last) {
    UpFirDn2dLaunch p{};
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    p.f = f.data_ptr<float>();
    p.x_stride_n = x.stride(0); p.x_stride_c = x.stride(1); p.x_stride_h = x.stride(2); p.x_stride_w = x.stride(3);
    p.y_stride_n = y.stride(0); p.y_stride_c = y.stride(1); p.y_stride_h = y.stride(2); p.y_stride_w = y.stride(3);
    p.channels = (int)x.size(1);
    p.planes = (int)(x.size(0) * x.size(1));
    p.in_h = (int)x.size(2);
    p.in_w = (int)x.size(3);
    p.out_h = (int)y.size(2);
    p.out_w = (int)y.size(3);
    p.fh = (int)f.size(0);
    p.fw = (int)f.size(1);
    p.upx = g.upx; p.upy = g.upy; p.downx = g.downx; p.downy = g.downy;
    p.padx0 = g.padx0; p.pady0 = g.pady0;
    p.flip = flip;
    p.gain = gain;
    p.channels_last = channels_last;
    // With a single channel the plane index is the image index, and torch does not care what
    // stride a size-1 dim carries; make plane k sit at k * stride_c for the tile kernels.
    if (x.size(1) == 1) {
        p.x_stride_c = x.stride(0);
        p.y_stride_c = y.stride(0);
    }
    return p;
}

int dtype_code_of(const torch::Tensor& x) {
    return x.scalar_type() == at::kHalf ? 0 : (x.scalar_type() == at::kFloat ? 1 : 2);
}

bool is_channels_last(const torch::Tensor& x) {
    // A tensor that is both (e.g. C == 1 or 1x1 images) is treated as planar.
    return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

torch::Tensor check_and_allocate(const torch::Tensor& x, const torch::Tensor& f, const Geometry& g) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got ", x.dim(), " dims");
    TORCH_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "upfirdn2d: x must be float16, float32 or float64");
    TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat, "upfirdn2d: f must be a 2-D float32 tensor");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the same device as x");
    TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: f must not be empty");
    TORCH_CHECK(x.numel() <= INT_MAX, "upfirdn2d: x has more than INT_MAX elements; split the batch");
    TORCH_CHECK(g.upx >= 1 && g.upy >= 1 && g.downx >= 1 && g.downy >= 1, "upfirdn2d: up/down must be >= 1");
    int64_t out_w = (x.size(3) * g.upx + g.padx0 + g.padx1 - f.size(1) + g.downx) / g.downx;
    int64_t out_h = (x.size(2) * g.upy + g.pady0 + g.pady1 - f.size(0) + g.downy) / g.downy;
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d: the output would be empty; increase the padding");
    TORCH_CHECK(x.size(0) * x.size(1) * out_h * out_w <= INT_MAX,
                "upfirdn2d: the output has more than INT_MAX elements; split the batch");
    auto format = is_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    return torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(format));
}

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
                        int padx0, int padx1, int pady0, int pady1, bool flip, double gain) {
    Geometry g{upx, upy, downx, downy, padx0, padx1, pady0, pady1};
    torch::Tensor y = check_and_allocate(x, f, g);
    if (y.numel() == 0) return y;
    const at::cuda::CUDAGuard device_guard(x.device());
    // The tile kernels address planes through one stride, so views with gaps are compacted first.
    if (!x.is_contiguous() && !x.is_contiguous(at::MemoryFormat::ChannelsLast)) x = x.contiguous();
    torch::Tensor taps = f.contiguous();
    UpFirDn2dLaunch p = describe(x, taps, y, g, flip, gain, is_channels_last(x));
    upfirdn2d_launch(p, dtype_code_of(x), at::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}

// Which kernel upfirdn2d would run for these arguments (see UpFirDn2dPath); launches nothing.
int kernel_path(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
                int padx0, int padx1, int pady0, int pady1) {
    Geometry g{upx, upy, downx, downy, padx0, padx1, pady0, pady1};
    torch::Tensor y = check_and_allocate(x, f, g);
    if (!x.is_contiguous() && !x.is_contiguous(at::MemoryFormat::ChannelsLast)) x = x.contiguous();
    torch::Tensor taps = f.contiguous();
    return upfirdn2d_pick_path(describe(x, taps, y, g, false, 1.0, is_channels_last(x)), dtype_code_of(x));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR-filter and downsample (see upfirdn2d.h for the contract)");
    m.def("kernel_path", &kernel_path, "0 general, 1 tile 2-D, 2 tile row pass, 3 tile column pass");
}
