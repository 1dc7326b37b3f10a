"""The worked example of docs/PLUGINS.md: a flip-consistency regulariser for D, in one small file."""
from stylegan2_ada_mixdl.example.flip_consistency import FlipConsistencyLoss  # noqa: F401
