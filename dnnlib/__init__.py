"""dnnlib: the config and file helpers that StyleGAN2-ADA pickles and command-line tools import by name."""

from . import util
from .util import EasyDict, make_cache_dir_path, set_cache_dir

__all__ = ['util', 'EasyDict', 'make_cache_dir_path', 'set_cache_dir']
