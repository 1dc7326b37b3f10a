"""Alias module: run configurations (loss_kwargs.class_name) name MixDL `stylegan2_ada_mixdl.loss.MixDLLoss`.

The class is stylegan2_ada_mixdl.mixdl.MixDLLoss; it also reads those configurations' keyword
names (mixdl_interval, mixdl_seed), so they construct the same loss.
"""
from stylegan2_ada_mixdl.mixdl.loss import MixDLLoss  # noqa: F401
