"""MixDL (Kong et al., ECCV 2022): coefficients, distances, heads, options, interpolation strips and the loss."""
from stylegan2_ada_mixdl.mixdl.loss import MixDLLoss  # noqa: F401
