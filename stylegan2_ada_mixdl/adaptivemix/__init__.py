"""AdaptiveMix (Liu et al., CVPR 2023): options and the loss."""
from stylegan2_ada_mixdl.adaptivemix.loss import AdaptiveMixLoss  # noqa: F401
