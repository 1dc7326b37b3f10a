// CUDA kernels of upfirdn2d: shared-memory tile kernels for the common StyleGAN shapes and a general fallback.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "upfirdn2d.h"

namespace {

constexpr int kThreads = 256;  // tiles hold 1024 outputs: four per thread amortises the window load

// ---------------------------------------------------------------------------------------------
// Element conversion: half is widened to float for the arithmetic; float and double stay as they are.

template <typename T> struct AccumOf { using type = float; };
template <> struct AccumOf<double> { using type = double; };

__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }

template <typename T> __device__ __forceinline__ T narrow(typename AccumOf<T>::type v) { return v; }
template <> __device__ __forceinline__ __half narrow<__half>(float v) { return __float2half_rn(v); }

// Integer helpers that round towards minus infinity, because window origins can be negative.
__host__ __device__ __forceinline__ int floor_div(int a, int b) {
    int q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}
__host__ __device__ __forceinline__ int wrap_mod(int a, int b) {
    int r = a % b;
    return r < 0 ? r + b : r;
}

// Map a filter tap of the correlation kernel g back to its storage position in f.
__device__ __forceinline__ int tap_offset(const UpFirDn2dLaunch& p, int i, int j) {
    int row = p.flip ? i : p.fh - 1 - i;
    int col = p.flip ? j : p.fw - 1 - j;
    return row * p.fw + col;
}

// ---------------------------------------------------------------------------------------------
// General kernel: one output sample per loop iteration, only the taps that hit real input samples.

template <typename T>
__global__ void __launch_bounds__(kThreads) general_kernel(UpFirDn2dLaunch p, int64_t total) {
    using Acc = typename AccumOf<T>::type;
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    for (int64_t flat = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; flat < total;
         flat += (int64_t)gridDim.x * blockDim.x) {
        // Walk outputs in their memory order so neighbouring threads write neighbouring addresses.
        int plane, ox, oy;
        if (p.channels_last) {
            int c = (int)(flat % p.channels);
            int64_t rest = flat / p.channels;
            ox = (int)(rest % p.out_w);
            rest /= p.out_w;
            oy = (int)(rest % p.out_h);
            plane = (int)(rest / p.out_h) * p.channels + c;
        } else {
            ox = (int)(flat % p.out_w);
            int64_t rest = flat / p.out_w;
            oy = (int)(rest % p.out_h);
            plane = (int)(rest / p.out_h);
        }
        int n = plane / p.channels;
        int c = plane - n * p.channels;
        const T* x_plane = x + n * p.x_stride_n + c * p.x_stride_c;

        int ux = ox * p.downx - p.padx0;  // upsampled coordinate under tap 0
        int uy = oy * p.downy - p.pady0;
        Acc sum = 0;
        for (int i = wrap_mod(-uy, p.upy); i < p.fh; i += p.upy) {
            int iy = (uy + i) / p.upy;  // exact: uy + i is a multiple of upy
            if (iy < 0) continue;
            if (iy >= p.in_h) break;
            for (int j = wrap_mod(-ux, p.upx); j < p.fw; j += p.upx) {
                int ix = (ux + j) / p.upx;
                if (ix < 0) continue;
                if (ix >= p.in_w) break;
                sum += (Acc)p.f[tap_offset(p, i, j)] * widen(x_plane[iy * p.x_stride_h + ix * p.x_stride_w]);
            }
        }
        y[n * p.y_stride_n + c * p.y_stride_c + oy * p.y_stride_h + ox * p.y_stride_w] = narrow<T>(sum * (Acc)p.gain);
    }
}

// ---------------------------------------------------------------------------------------------
// Tile kernel. A block owns an output tile of TW x TH samples in CPB consecutive planes. It stages the
// input window the tile reads (not upsampled) in shared memory, then every output sums only the taps
// whose upsampled position holds a real sample: with up = 2 that is a quarter of them. KW x KH is the
// compile-time filter size; smaller filters arrive padded with leading zeros. All tile sizes are
// compile-time powers of two so the index arithmetic reduces to shifts and masks.
// CL selects the channels_last order ([row][col][plane] window, planes fastest across threads);
// otherwise the window is [plane][row][col]. Either way the linear thread index is the window index,
// so consecutive threads touch consecutive global addresses.

// Input samples a tile of `outputs` samples reads along one axis.
__host__ __device__ constexpr int window_extent(int outputs, int up, int down, int taps) {
    return ((outputs - 1) * down + taps - 1) / up + (up > 1 ? 2 : 1);
}

template <typename T, int UX, int UY, int DX, int DY, int KW, int KH, int TW, int TH, int CPB, bool CL>
__global__ void __launch_bounds__(kThreads) tile_kernel(UpFirDn2dLaunch p, int tiles_x) {
    using Acc = typename AccumOf<T>::type;
    constexpr int WW = window_extent(TW, UX, DX, KW);
    constexpr int WH = window_extent(TH, UY, DY, KH);
    static_assert(sizeof(Acc) * (CPB * WW * WH + KW * KH) <= 48 * 1024, "tile window exceeds static shared memory");
    __shared__ Acc taps[KH * KW];
    __shared__ Acc window[CPB * WH * WW];
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);

    const int lead_rows = KH - p.fh;
    const int lead_cols = KW - p.fw;
    for (int t = threadIdx.x; t < KH * KW; t += kThreads) {
        int i = t / KW - lead_rows;
        int j = t % KW - lead_cols;
        taps[t] = (i >= 0 && j >= 0) ? (Acc)p.f[tap_offset(p, i, j)] * (Acc)p.gain : (Acc)0;
    }
    // The zero taps in front shift the window start, so the leading pads grow by the same amount.
    const int padx0 = p.padx0 + lead_cols;
    const int pady0 = p.pady0 + lead_rows;

    const int tile_col = blockIdx.x % tiles_x;
    const int first_plane = (blockIdx.x / tiles_x) * CPB;
    const int ox0 = tile_col * TW;
    const int oy0 = blockIdx.y * TH;
    const int ix0 = floor_div(ox0 * DX - padx0, UX);
    const int iy0 = floor_div(oy0 * DY - pady0, UY);

    // Plane addressing: planar tensors are dense, so plane k sits at k * stride_c. channels_last
    // blocks never straddle two images (the host requires C % CPB == 0), so n is per block.
    const int n0 = first_plane / p.channels;
    const int c0 = first_plane - n0 * p.channels;
    const T* x_base = CL ? x + n0 * p.x_stride_n + c0 : x + (int64_t)first_plane * p.x_stride_c;
    T* y_base = CL ? y + n0 * p.y_stride_n + c0 : y + (int64_t)first_plane * p.y_stride_c;
    const int planes_here = min(CPB, p.planes - first_plane);

#pragma unroll 4
    for (int t = threadIdx.x; t < CPB * WH * WW; t += kThreads) {
        int k, col, row;
        if (CL) {
            k = t % CPB;
            col = (t / CPB) % WW;
            row = t / (CPB * WW);
        } else {
            col = t % WW;
            row = (t / WW) % WH;
            k = t / (WW * WH);
        }
        int ix = ix0 + col;
        int iy = iy0 + row;
        Acc v = 0;
        if (k < planes_here && (unsigned)ix < (unsigned)p.in_w && (unsigned)iy < (unsigned)p.in_h)
            v = widen(x_base[k * p.x_stride_c + iy * p.x_stride_h + ix * p.x_stride_w]);
        window[t] = v;
    }
    __syncthreads();

    constexpr int col_step = CL ? CPB : 1;
    constexpr int row_step = CL ? WW * CPB : WW;
#pragma unroll
    for (int t = threadIdx.x; t < CPB * TH * TW; t += kThreads) {
        int k, tx, ty;
        if (CL) {
            k = t % CPB;
            tx = (t / CPB) % TW;
            ty = t / (CPB * TW);
        } else {
            tx = t % TW;
            ty = (t / TW) % TH;
            k = t / (TW * TH);
        }
        int ox = ox0 + tx;
        int oy = oy0 + ty;
        if (k >= planes_here || ox >= p.out_w || oy >= p.out_h) continue;

        int ux = ox * DX - padx0;
        int uy = oy * DY - pady0;
        int phase_x = wrap_mod(-ux, UX);  // first tap that lands on a real sample
        int phase_y = wrap_mod(-uy, UY);
        int col = (ux + phase_x) / UX - ix0;
        int row = (uy + phase_y) / UY - iy0;
        const Acc* src = window + (CL ? (row * WW + col) * CPB + k : (k * WH + row) * WW + col);

        Acc sum = 0;
#pragma unroll
        for (int a = 0; a < (KH + UY - 1) / UY; ++a) {
            int i = phase_y + a * UY;
            if (KH % UY != 0 && i >= KH) break;
#pragma unroll
            for (int b = 0; b < (KW + UX - 1) / UX; ++b) {
                int j = phase_x + b * UX;
                if (KW % UX != 0 && j >= KW) break;
                sum += taps[i * KW + j] * src[a * row_step + b * col_step];
            }
        }
        y_base[k * p.y_stride_c + oy * p.y_stride_h + ox * p.y_stride_w] = narrow<T>(sum);
    }
}

// Tile shapes (outputs): wide single-plane tiles for big planar images, square tiles stacked over 16
// planes for small images and for channels_last (where 16 channels are 16 adjacent addresses).
// Upsampling tiles are larger because their window is a quarter of the tile; many outputs per
// block hide the latency of the serial load-then-compute phases.
enum TileKind { kWide, kStacked, kStackedCL };

template <typename T, int UX, int UY, int DX, int DY, int KW, int KH, int TW, int TH, int CPB, bool CL>
bool launch_tile_shape(const UpFirDn2dLaunch& p, cudaStream_t stream) {
    int64_t tiles_x = (p.out_w + TW - 1) / TW;
    int64_t tiles_y = (p.out_h + TH - 1) / TH;
    int64_t groups = (p.planes + CPB - 1) / CPB;
    if (tiles_y > 65535 || groups * tiles_x > 0x7fffffff) return false;
    dim3 grid((unsigned)(groups * tiles_x), (unsigned)tiles_y);
    tile_kernel<T, UX, UY, DX, DY, KW, KH, TW, TH, CPB, CL><<<grid, kThreads, 0, stream>>>(p, (int)tiles_x);
    return true;
}

template <typename T, int UX, int UY, int DX, int DY, int KW, int KH>
bool launch_tile(const UpFirDn2dLaunch& p, TileKind kind, cudaStream_t stream) {
    constexpr bool upsampling = UX > 1 || UY > 1;
    constexpr bool downsampling = DX > 1 || DY > 1;
    constexpr int wide_w = upsampling ? 128 : 64;
    constexpr int wide_h = downsampling ? 16 : 32;
    constexpr int side = upsampling ? 16 : 8;
    if (kind == kWide) return launch_tile_shape<T, UX, UY, DX, DY, KW, KH, wide_w, wide_h, 1, false>(p, stream);
    if constexpr (KW > 1 && KH > 1) {
        if (kind == kStacked) return launch_tile_shape<T, UX, UY, DX, DY, KW, KH, side, side, 16, false>(p, stream);
        return launch_tile_shape<T, UX, UY, DX, DY, KW, KH, side, side, 16, true>(p, stream);
    }
    return false;
}

template <typename T>
void launch_general(const UpFirDn2dLaunch& p, cudaStream_t stream) {
    int64_t total = (int64_t)p.planes * p.out_h * p.out_w;
    int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
    general_kernel<T><<<(unsigned)blocks, kThreads, 0, stream>>>(p, total);
}

// Up/down factors of the tile instantiations, per axis: 0 = plain, 1 = up 2, 2 = down 2.
int axis_mode(int up, int down) {
    if (up == 1 && down == 1) return 0;
    if (up == 2 && down == 1) return 1;
    if (up == 1 && down == 2) return 2;
    return -1;
}

template <typename T, int KW, int KH>
bool launch_tile_mode(const UpFirDn2dLaunch& p, int mode_x, int mode_y, TileKind kind, cudaStream_t stream) {
    // Only square modes exist for 2-D filters and single-axis modes for the 1-D passes.
    if constexpr (KW > 1 && KH > 1) {
        if (mode_x != mode_y) return false;
        if (mode_x == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, kind, stream);
        if (mode_x == 1) return launch_tile<T, 2, 2, 1, 1, KW, KH>(p, kind, stream);
        return launch_tile<T, 1, 1, 2, 2, KW, KH>(p, kind, stream);
    } else if constexpr (KH == 1) {
        if (mode_y != 0) return false;
        if (mode_x == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, kind, stream);
        if (mode_x == 1) return launch_tile<T, 2, 1, 1, 1, KW, KH>(p, kind, stream);
        return launch_tile<T, 1, 1, 2, 1, KW, KH>(p, kind, stream);
    } else {
        if (mode_x != 0) return false;
        if (mode_y == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, kind, stream);
        if (mode_y == 1) return launch_tile<T, 1, 2, 1, 1, KW, KH>(p, kind, stream);
        return launch_tile<T, 1, 1, 1, 2, KW, KH>(p, kind, stream);
    }
}

TileKind tile_kind(const UpFirDn2dLaunch& p) {
    if (p.channels_last) return kStackedCL;
    return p.out_w <= 32 ? kStacked : kWide;
}

int pick_path(const UpFirDn2dLaunch& p, int dtype_code) {
    int mode_x = axis_mode(p.upx, p.downx);
    int mode_y = axis_mode(p.upy, p.downy);
    // Double precision is for tests and checks: it always takes the general kernel.
    if (dtype_code == 2 || mode_x < 0 || mode_y < 0 || (p.fw == 1 && p.fh == 1)) return kPathGeneral;
    if (p.fw > 1 && p.fh > 1 && p.fw <= 4 && p.fh <= 4 && mode_x == mode_y) {
        // channels_last tiles keep 16 channels of one image together.
        if (p.channels_last && p.channels % 16 != 0) return kPathGeneral;
        return kPathTile2d;
    }
    if (p.channels_last) return kPathGeneral;
    if (p.fh == 1 && p.fw <= 12 && mode_y == 0) return kPathTileRow;
    if (p.fw == 1 && p.fh <= 12 && mode_x == 0) return kPathTileCol;
    return kPathGeneral;
}

template <typename T>
int run(const UpFirDn2dLaunch& p, int path, cudaStream_t stream) {
    int mode_x = axis_mode(p.upx, p.downx);
    int mode_y = axis_mode(p.upy, p.downy);
    TileKind kind = tile_kind(p);
    bool launched = false;
    if (path == kPathTile2d) launched = launch_tile_mode<T, 4, 4>(p, mode_x, mode_y, kind, stream);
    if (path == kPathTileRow) launched = launch_tile_mode<T, 12, 1>(p, mode_x, mode_y, kWide, stream);
    if (path == kPathTileCol) launched = launch_tile_mode<T, 1, 12>(p, mode_x, mode_y, kWide, stream);
    if (!launched) {
        launch_general<T>(p, stream);
        path = kPathGeneral;
    }
    return path;
}

}  // namespace

int upfirdn2d_pick_path(const UpFirDn2dLaunch& launch, int dtype_code) {
    return pick_path(launch, dtype_code);
}

void upfirdn2d_launch(const UpFirDn2dLaunch& launch, int dtype_code, void* stream) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    int path = pick_path(launch, dtype_code);
    if (dtype_code == 0) run<__half>(launch, path, s);
    else if (dtype_code == 1) run<float>(launch, path, s);
    else launch_general<double>(launch, s);
}
