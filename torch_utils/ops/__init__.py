# Package marker: custom ops with CUDA kernels and pure-PyTorch reference paths.
