// Shared declarations of the upfirdn2d CUDA plugin: the launch description and the launcher entries.
//
// Contract (what every kernel computes), for each image plane p = n*C + c:
//   y[p, oy, ox] = gain * sum_{i<fh, j<fw} g[i, j] * u[p, oy*downy + i - pady0, ox*downx + j - padx0]
// where u is x zero-inserted by (upy, upx): u[p, a*upy, b*upx] = x[p, a, b], zero elsewhere and
// outside the image. g is f as given when `flip` is true (correlation) and f rotated by 180 degrees
// when it is false (true convolution). Output size: out_h = (H*upy + pady0 + pady1 - fh + downy) / downy
// and likewise for the width, so the trailing pads only enter through the output size.
// Accumulation is in float for half and float inputs, in double for double inputs.

#pragma once

#include <cstdint>

struct UpFirDn2dLaunch {
    // Tensors are addressed through element strides, so contiguous and channels_last both work.
    const void* x;
    void* y;
    const float* f;  // [fh, fw] row-major float32 on the device
    int64_t x_stride_n, x_stride_c, x_stride_h, x_stride_w;
    int64_t y_stride_n, y_stride_c, y_stride_h, y_stride_w;
    int channels;  // C, to split a plane index back into (n, c)
    int planes;    // N * C
    int in_h, in_w;
    int out_h, out_w;
    int fh, fw;
    int upx, upy, downx, downy;
    int padx0, pady0;
    bool flip;
    double gain;
    bool channels_last;  // memory order of x and y; decides which index runs fastest across threads
};

// Which kernel a launch uses. Tile paths stage an input window in shared memory; smaller filters
// run on them by padding the filter with leading zeros.
enum UpFirDn2dPath : int {
    kPathGeneral = 0,  // any up/down/filter size, one thread per output sample
    kPathTile2d = 1,   // 2-D filter up to 4x4, with up 2x2, down 2x2 or plain filtering (any layout)
    kPathTileRow = 2,  // 1 x n filter up to 12 taps (horizontal pass), up 2, down 2 or plain (planar)
    kPathTileCol = 3,  // n x 1 filter up to 12 taps (vertical pass), up 2, down 2 or plain (planar)
};
// float64 always runs the general kernel; channels_last needs C % 16 == 0 for the tile path.
// Tile paths need dense tensors with stride_n == C * stride_c (planar) or stride_c == 1
// (channels_last); the binding guarantees that.

// The path upfirdn2d_launch will take for this launch and dtype_code.
int upfirdn2d_pick_path(const UpFirDn2dLaunch& launch, int dtype_code);

// dtype_code: 0 = float16, 1 = float32, 2 = float64. Enqueues on `stream` (a cudaStream_t).
void upfirdn2d_launch(const UpFirDn2dLaunch& launch, int dtype_code, void* stream);
