// CUDA kernels of upfirdn2d: shared-memory tile kernels for the common StyleGAN shapes and a general fallback.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "upfirdn2d.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWindowBytes = 32768;       // shared input window per block (the taps live beside it)
constexpr int kOutputsPerBlock = 1024;    // four outputs per thread keeps the window load amortised

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
// Tile kernel. A block owns an output tile of `tile_w x tile_h` samples in `planes_per_block` planes.
// It stages the input window the tile reads (not upsampled) in shared memory, then every output sums
// only the taps whose upsampled position holds a real sample: with up = 2 that is a quarter of them.
// KW x KH is the compile-time filter size; smaller filters arrive padded with leading zeros.

struct TileShape {
    int tile_w, tile_h;        // outputs per tile
    int window_w, window_h;    // staged input samples per plane
    int planes_per_block;
    int tiles_x;               // blockIdx.x = group * tiles_x + tile column
};

// Input samples a tile of `outputs` samples reads along one axis.
__host__ __device__ constexpr int window_extent(int outputs, int up, int down, int taps) {
    return ((outputs - 1) * down + taps - 1) / up + (up > 1 ? 2 : 1);
}

template <typename T, int UX, int UY, int DX, int DY, int KW, int KH>
__global__ void __launch_bounds__(kThreads) tile_kernel(UpFirDn2dLaunch p, TileShape s) {
    using Acc = typename AccumOf<T>::type;
    __shared__ Acc taps[KH * KW];
    __shared__ Acc window[kWindowBytes / sizeof(Acc)];
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);

    const int lead_rows = KH - p.fh;
    const int lead_cols = KW - p.fw;
    for (int t = threadIdx.x; t < KH * KW; t += blockDim.x) {
        int i = t / KW - lead_rows;
        int j = t % KW - lead_cols;
        taps[t] = (i >= 0 && j >= 0) ? (Acc)p.f[tap_offset(p, i, j)] * (Acc)p.gain : (Acc)0;
    }
    // The zero taps in front shift the window start, so the leading pads grow by the same amount.
    const int padx0 = p.padx0 + lead_cols;
    const int pady0 = p.pady0 + lead_rows;

    const int tile_col = blockIdx.x % s.tiles_x;
    const int first_plane = (blockIdx.x / s.tiles_x) * s.planes_per_block;
    const int ox0 = tile_col * s.tile_w;
    const int oy0 = blockIdx.y * s.tile_h;
    const int ix0 = floor_div(ox0 * DX - padx0, UX);
    const int iy0 = floor_div(oy0 * DY - pady0, UY);
    const int cpb = s.planes_per_block;

    // Window layout follows the memory order: [row][col][plane] for channels_last, else
    // [plane][row][col], so consecutive threads read consecutive global addresses and the
    // linear thread index is also the shared-memory index.
    const int window_size = cpb * s.window_h * s.window_w;
    for (int t = threadIdx.x; t < window_size; t += blockDim.x) {
        int k, col, row;
        if (p.channels_last) {
            k = t % cpb;
            int rest = t / cpb;
            col = rest % s.window_w;
            row = rest / s.window_w;
        } else {
            col = t % s.window_w;
            int rest = t / s.window_w;
            row = rest % s.window_h;
            k = rest / s.window_h;
        }
        int plane = first_plane + k;
        int ix = ix0 + col;
        int iy = iy0 + row;
        Acc v = 0;
        if (plane < p.planes && (unsigned)ix < (unsigned)p.in_w && (unsigned)iy < (unsigned)p.in_h) {
            int n = plane / p.channels;
            int c = plane - n * p.channels;
            v = widen(x[n * p.x_stride_n + c * p.x_stride_c + iy * p.x_stride_h + ix * p.x_stride_w]);
        }
        window[t] = v;
    }
    __syncthreads();

    const int col_step = p.channels_last ? cpb : 1;
    const int row_step = p.channels_last ? s.window_w * cpb : s.window_w;
    const int tile_size = cpb * s.tile_h * s.tile_w;
    for (int t = threadIdx.x; t < tile_size; t += blockDim.x) {
        int k, tx, ty;
        if (p.channels_last) {
            k = t % cpb;
            int rest = t / cpb;
            tx = rest % s.tile_w;
            ty = rest / s.tile_w;
        } else {
            tx = t % s.tile_w;
            int rest = t / s.tile_w;
            ty = rest % s.tile_h;
            k = rest / s.tile_h;
        }
        int plane = first_plane + k;
        int ox = ox0 + tx;
        int oy = oy0 + ty;
        if (plane >= p.planes || ox >= p.out_w || oy >= p.out_h) continue;

        int ux = ox * DX - padx0;
        int uy = oy * DY - pady0;
        int phase_x = wrap_mod(-ux, UX);  // first tap that lands on a real sample
        int phase_y = wrap_mod(-uy, UY);
        int col = (ux + phase_x) / UX - ix0;
        int row = (uy + phase_y) / UY - iy0;
        int base = p.channels_last ? (row * s.window_w + col) * cpb + k : (k * s.window_h + row) * s.window_w + col;

        Acc sum = 0;
#pragma unroll
        for (int a = 0; a < (KH + UY - 1) / UY; ++a) {
            int i = phase_y + a * UY;
            if (KH % UY != 0 && i >= KH) break;
#pragma unroll
            for (int b = 0; b < (KW + UX - 1) / UX; ++b) {
                int j = phase_x + b * UX;
                if (KW % UX != 0 && j >= KW) break;
                sum += taps[i * KW + j] * window[base + a * row_step + b * col_step];
            }
        }
        int n = plane / p.channels;
        int c = plane - n * p.channels;
        y[n * p.y_stride_n + c * p.y_stride_c + oy * p.y_stride_h + ox * p.y_stride_w] = narrow<T>(sum);
    }
}

// Choose the tile for a launch: wide tiles for planar layouts, small tiles stacked over many
// channels for channels_last, both shrunk until the window fits in shared memory.
template <typename Acc, int UX, int UY, int DX, int DY, int KW, int KH>
bool plan_tile(const UpFirDn2dLaunch& p, TileShape* s) {
    const int capacity = kWindowBytes / (int)sizeof(Acc);
    int tile_w = std::min(p.out_w, p.channels_last ? 8 : 64);
    int tile_h = std::min(p.out_h, std::max(1, (p.channels_last ? 64 : kOutputsPerBlock) / tile_w));
    auto window = [&](int w, int h) {
        return window_extent(w, UX, DX, KW) * window_extent(h, UY, DY, KH);
    };
    while (window(tile_w, tile_h) > capacity && (tile_w > 1 || tile_h > 1)) {
        if (tile_h >= tile_w && tile_h > 1) tile_h = (tile_h + 1) / 2; else tile_w = (tile_w + 1) / 2;
    }
    int per_plane = window(tile_w, tile_h);
    if (per_plane > capacity) return false;
    int planes_per_block = std::max(1, kOutputsPerBlock / (tile_w * tile_h));
    planes_per_block = std::min({planes_per_block, capacity / per_plane, p.planes});
    s->tile_w = tile_w;
    s->tile_h = tile_h;
    s->window_w = window_extent(tile_w, UX, DX, KW);
    s->window_h = window_extent(tile_h, UY, DY, KH);
    s->planes_per_block = planes_per_block;
    s->tiles_x = (p.out_w + tile_w - 1) / tile_w;
    int64_t groups = (p.planes + planes_per_block - 1) / planes_per_block;
    int64_t tiles_y = (p.out_h + tile_h - 1) / tile_h;
    return tiles_y <= 65535 && groups * s->tiles_x <= 0x7fffffff;
}

template <typename T, int UX, int UY, int DX, int DY, int KW, int KH>
bool launch_tile(const UpFirDn2dLaunch& p, cudaStream_t stream) {
    TileShape s;
    if (!plan_tile<typename AccumOf<T>::type, UX, UY, DX, DY, KW, KH>(p, &s)) return false;
    int groups = (p.planes + s.planes_per_block - 1) / s.planes_per_block;
    dim3 grid(groups * s.tiles_x, (p.out_h + s.tile_h - 1) / s.tile_h);
    tile_kernel<T, UX, UY, DX, DY, KW, KH><<<grid, kThreads, 0, stream>>>(p, s);
    return true;
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
bool launch_tile_mode(const UpFirDn2dLaunch& p, int mode_x, int mode_y, cudaStream_t stream) {
    // Only square modes exist for 2-D filters and single-axis modes for the 1-D passes.
    if (KW > 1 && KH > 1) {
        if (mode_x != mode_y) return false;
        if (mode_x == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, stream);
        if (mode_x == 1) return launch_tile<T, 2, 2, 1, 1, KW, KH>(p, stream);
        return launch_tile<T, 1, 1, 2, 2, KW, KH>(p, stream);
    }
    if (KH == 1) {
        if (mode_y != 0) return false;
        if (mode_x == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, stream);
        if (mode_x == 1) return launch_tile<T, 2, 1, 1, 1, KW, KH>(p, stream);
        return launch_tile<T, 1, 1, 2, 1, KW, KH>(p, stream);
    }
    if (mode_x != 0) return false;
    if (mode_y == 0) return launch_tile<T, 1, 1, 1, 1, KW, KH>(p, stream);
    if (mode_y == 1) return launch_tile<T, 1, 2, 1, 1, KW, KH>(p, stream);
    return launch_tile<T, 1, 1, 1, 2, KW, KH>(p, stream);
}

int pick_path(const UpFirDn2dLaunch& p) {
    int mode_x = axis_mode(p.upx, p.downx);
    int mode_y = axis_mode(p.upy, p.downy);
    if (mode_x < 0 || mode_y < 0 || (p.fw == 1 && p.fh == 1)) return kPathGeneral;
    if (p.fw > 1 && p.fh > 1 && p.fw <= 4 && p.fh <= 4 && mode_x == mode_y) return kPathTile2d;
    if (p.fh == 1 && p.fw <= 12 && mode_y == 0) return kPathTileRow;
    if (p.fw == 1 && p.fh <= 12 && mode_x == 0) return kPathTileCol;
    return kPathGeneral;
}

template <typename T>
int run(const UpFirDn2dLaunch& p, cudaStream_t stream) {
    int mode_x = axis_mode(p.upx, p.downx);
    int mode_y = axis_mode(p.upy, p.downy);
    int path = pick_path(p);
    bool launched = false;
    if (path == kPathTile2d) launched = launch_tile_mode<T, 4, 4>(p, mode_x, mode_y, stream);
    if (path == kPathTileRow) launched = launch_tile_mode<T, 12, 1>(p, mode_x, mode_y, stream);
    if (path == kPathTileCol) launched = launch_tile_mode<T, 1, 12>(p, mode_x, mode_y, stream);
    if (!launched) {
        launch_general<T>(p, stream);
        path = kPathGeneral;
    }
    return path;
}

}  // namespace

int upfirdn2d_pick_path(const UpFirDn2dLaunch& launch) {
    return pick_path(launch);
}

void upfirdn2d_launch(const UpFirDn2dLaunch& launch, int dtype_code, void* stream) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (dtype_code == 0) run<__half>(launch, s);
    else if (dtype_code == 1) run<float>(launch, s);
    else run<double>(launch, s);
}
