"""Load StyleGAN2-ADA network pickles (ours or NVIDIA's) into this codebase's current network classes."""

# A pickled network carries the source of the networks.py that wrote it, and unpickling runs that
# source. load_network_pkl() therefore rebuilds G, D and G_ema from their constructor kwargs with the
# classes in training/networks.py and copies the weights over by name, so that training, metrics
# and generation always run our code, whichever version wrote the file. Networks that do not fit
# our classes (e.g. StyleGAN3 pickles) are returned as unpickled, with a warning.

import copy
import os
import pickle
import warnings

import click
import torch

import dnnlib
from dnnlib import cli
from torch_utils import misc
from torch_utils import persistence
from training import networks

# Top-level keys of a network snapshot (spec 2.1); only these three must be networks.
_NETWORK_KEYS = ('G', 'D', 'G_ema')
_OPTIONAL_KEYS = ('training_set_kwargs', 'augment_pipe')

# Constructor arguments of our Generator; anything else at the top level of an init_kwargs dict came
# from a StyleGAN3-repo (networks_stylegan2) Generator, which takes its synthesis kwargs flat.
_GENERATOR_TOP_LEVEL = {'z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels',
                        'mapping_kwargs', 'synthesis_kwargs'}
# Defaults in the StyleGAN3 repository's networks_stylegan2 that differ from ours (spec 3.7); made
# explicit when converting so the rebuilt network computes the same function.
_SG3_SYNTHESIS_DEFAULTS = {'num_fp16_res': 4, 'conv_clamp': 256}
_SG3_MAPPING_DEFAULTS = {'w_avg_beta': 0.998}
# StyleGAN3-repo options that only select a speed trade-off and have no counterpart in our classes.
_SG3_SPEED_ONLY_KWARGS = ('fused_modconv_default',)

_TF_UNSUPPORTED = ("TensorFlow-era network pickles are not supported; convert it with NVIDIA's legacy.py first "
                   "(python legacy.py --source=OLD.pkl --dest=NEW.pkl in stylegan2-ada-pytorch)")

#----------------------------------------------------------------------------


class NetworkPickleError(ValueError):
    """The file cannot be read as a network pickle; the message says why, in one line."""


class _TFNetworkStub(dnnlib.EasyDict):
    """Stands in for dnnlib.tflib.network.Network so TF pickles unpickle (and can be rejected) without TensorFlow."""


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that stubs TF networks and bridges numpy 1.x / 2.x module paths."""

    def find_class(self, module, name):
        if module == 'dnnlib.tflib.network' and name == 'Network':
            return _TFNetworkStub
        module = _available_numpy_module(module)
        return super().find_class(module, name)


def _available_numpy_module(module):
    # numpy 2 writes 'numpy._core.*', numpy 1 writes 'numpy.core.*'; either may be missing here.
    for old, new in (('numpy._core', 'numpy.core'), ('numpy.core', 'numpy._core')):
        if module == old or module.startswith(old + '.'):
            try:
                __import__(module)
                return module
            except ImportError:
                return new + module[len(old):]
    return module


def _unpickle(f):
    """Unpickle `f`, turning every way a file can fail to be a pickle into one NetworkPickleError.

    Unpickling runs code named by the file (by design of the pickle format), so a hostile or foreign
    file can fail in arbitrary ways; all of them mean "this is not a usable network pickle".
    """
    try:
        return _LegacyUnpickler(f).load()
    except EOFError:
        raise NetworkPickleError('the file is empty or ends early (truncated); copy or download it again') from None
    except pickle.UnpicklingError as error:
        if 'truncated' in str(error):
            raise NetworkPickleError(f'the file ends early ({_flat(error)}); copy or download it again') from None
        raise NetworkPickleError(f'not a pickle ({_flat(error)}){_zip_hint(f)}') from None
    except (ImportError, AttributeError) as error:
        raise NetworkPickleError(f'the pickle refers to code that is not available here ({type(error).__name__}: '
                                 f'{_flat(error)}); it was not written by StyleGAN2-ADA or this project') from None
    except MemoryError:
        raise
    except Exception as error:  # code run by a foreign or damaged pickle may raise anything
        raise NetworkPickleError(f'the pickle cannot be loaded ({type(error).__name__}: {_flat(error)})') from None


def _flat(error):
    """An exception's message on one line."""
    return ' '.join(str(error).split())


def _zip_hint(f):
    """Extra advice when the file is a zip, which is what torch.save() writes (training-state-*.pt)."""
    try:
        f.seek(0)
        head = f.read(4)
    except (AttributeError, OSError, ValueError):
        return ''
    if head[:2] == b'PK':
        return '; it is a zip, as written by torch.save(): pass the network-snapshot-*.pkl file, not a training-state-*.pt'
    return ''


def _contains_tf_stub(data):
    if isinstance(data, _TFNetworkStub):
        return True
    if isinstance(data, (tuple, list)):
        return any(isinstance(item, _TFNetworkStub) for item in data)
    if isinstance(data, dict):
        return any(isinstance(item, _TFNetworkStub) for item in data.values())
    return False

#----------------------------------------------------------------------------


def _our_init_kwargs(class_name, init_kwargs):
    """Translate a pickled network's constructor kwargs into kwargs for our class of the same name."""
    kwargs = copy.deepcopy(dict(init_kwargs))
    if class_name != 'Generator':
        return kwargs
    flat = {key: kwargs.pop(key) for key in list(kwargs) if key not in _GENERATOR_TOP_LEVEL}
    if not flat:
        return kwargs
    # StyleGAN3-repo Generator: fold its flat synthesis kwargs and make its defaults explicit.
    for key in _SG3_SPEED_ONLY_KWARGS:
        flat.pop(key, None)
    kwargs['synthesis_kwargs'] = dnnlib.EasyDict({**_SG3_SYNTHESIS_DEFAULTS, **flat})
    kwargs['mapping_kwargs'] = dnnlib.EasyDict({**_SG3_MAPPING_DEFAULTS, **kwargs.get('mapping_kwargs', {})})
    return kwargs


def _layout_of(module):
    return {name: tuple(tensor.shape) for name, tensor in misc.named_params_and_buffers(module)}


def _copy_state(src, dst):
    """Copy weights by name, then mirror train/eval mode and requires_grad flags."""
    misc.copy_params_and_buffers(src, dst, require_all=True)
    dst.train(src.training)
    wants_grad = {name: param.requires_grad for name, param in src.named_parameters()}
    for name, param in dst.named_parameters():
        param.requires_grad_(wants_grad.get(name, param.requires_grad))
    return dst


def convert_to_current(net):
    """Return `net` as an instance of our current class of the same name, weights copied by name.

    Networks that already are our current classes come back unchanged. Networks whose constructor
    kwargs or parameter layout do not fit ours come back unchanged too, with a warning, because
    their own embedded code is the only code that can run them.
    """
    target = {'Generator': networks.Generator, 'Discriminator': networks.Discriminator}.get(type(net).__name__)
    if target is None or type(net) is target:
        return net
    if not persistence.is_persistent(net) or not hasattr(net, 'init_kwargs'):
        return net
    try:
        fresh = target(*getattr(net, 'init_args', ()), **_our_init_kwargs(type(net).__name__, net.init_kwargs))
    except (TypeError, ValueError) as error:
        warnings.warn(f'{type(net).__name__} from the pickle does not fit training/networks.py ({error}); '
                      f'using the code embedded in the pickle instead')
        return net
    if _layout_of(fresh) != _layout_of(net):
        warnings.warn(f'{type(net).__name__} from the pickle has a different parameter layout than '
                      f'training/networks.py builds from its kwargs; using the code embedded in the pickle instead')
        return net
    first_tensor = next(iter(misc.params_and_buffers(net)), None)
    if first_tensor is not None:
        fresh = fresh.to(first_tensor.device)
    with torch.no_grad():
        return _copy_state(net, fresh)


def _with_fp16(net):
    """Rebuild `net` with the top 4 resolutions in fp16 and conv_clamp=256 (spec 2.5, force_fp16)."""
    old_kwargs = dnnlib.EasyDict(net.init_kwargs)
    new_kwargs = copy.deepcopy(old_kwargs)
    target = new_kwargs.get('synthesis_kwargs', new_kwargs) if type(net).__name__ == 'Generator' else new_kwargs
    target['num_fp16_res'] = 4
    target['conv_clamp'] = 256
    if new_kwargs == old_kwargs:
        return net
    fresh = type(net)(*getattr(net, 'init_args', ()), **new_kwargs)
    with torch.no_grad():
        return _copy_state(net, fresh)

#----------------------------------------------------------------------------


def load_network_pkl(f, force_fp16=False):
    """Load a network snapshot and return its dict with G, D and G_ema as our current classes.

    f: an open binary file, or a path / URL (opened with dnnlib.util.open_url).
    force_fp16: rebuild the networks with num_fp16_res=4 and conv_clamp=256.
    Returns a dict with at least G, D, G_ema, training_set_kwargs and augment_pipe (the last two may
    be None); any other keys pass through unchanged.
    """
    if isinstance(f, (str, os.PathLike)):
        with dnnlib.util.open_url(os.fspath(f)) as handle:
            return load_network_pkl(handle, force_fp16=force_fp16)

    data = _unpickle(f)
    if _contains_tf_stub(data):
        raise ValueError(_TF_UNSUPPORTED)
    if not isinstance(data, dict):
        raise ValueError(f'expected a network pickle holding a dict with G, D and G_ema, got {type(data).__name__}')

    for key in _OPTIONAL_KEYS:
        data.setdefault(key, None)
    missing = [key for key in _NETWORK_KEYS if key not in data]
    if missing:
        raise ValueError(f'network pickle has no {", ".join(missing)}; keys present: {sorted(data)}')
    for key in _NETWORK_KEYS:
        if not isinstance(data[key], torch.nn.Module):
            raise ValueError(f'network pickle entry {key!r} is a {type(data[key]).__name__}, expected a torch.nn.Module')
    if not isinstance(data['training_set_kwargs'], (dict, type(None))):
        raise ValueError('network pickle entry training_set_kwargs must be a dict or None')
    if not isinstance(data['augment_pipe'], (torch.nn.Module, type(None))):
        raise ValueError('network pickle entry augment_pipe must be a torch.nn.Module or None')

    for key in _NETWORK_KEYS:
        data[key] = convert_to_current(data[key])
    if force_fp16:
        for key in _NETWORK_KEYS:
            data[key] = _with_fp16(data[key])
    return data

#----------------------------------------------------------------------------


@click.command()
@click.option('--source', required=True, metavar='PATH',
              help='Pickle to convert: a local file or a URL')
@click.option('--dest', required=True, metavar='PATH',
              help='Where to write the converted pickle')
@click.option('--force-fp16', help='Rebuild with the top 4 resolutions in fp16 and conv_clamp=256', type=bool,
              default=False, metavar='BOOL', show_default=True)
@click.option('--overwrite', is_flag=True,
              help='Replace --dest if it exists (also needed when --dest is --source)')
@cli.one_line_errors
def convert_network_pickle(source, dest, force_fp16, overwrite):
    """Rewrite a network pickle with this codebase's network classes (optionally forcing fp16).

    The new pickle is written under a temporary name and renamed into place once complete, so an
    interrupted or failed run leaves --dest as it was.

    \b
    python legacy.py --source=ffhq.pkl --dest=ffhq-ours.pkl
    """
    if not dnnlib.util.is_url(source, allow_file_urls=True) and not os.path.isfile(source):
        raise click.BadParameter(f'no such file: {source}', param_hint='--source')
    if os.path.isdir(dest):
        raise click.ClickException(f'--dest={dest} is a folder; give a file name such as {os.path.join(dest, "converted.pkl")}')
    if os.path.exists(dest) and not overwrite:
        raise click.ClickException(f'--dest={dest} already exists; add --overwrite to replace it')
    print(f'Loading "{source}"...')
    try:
        data = load_network_pkl(source, force_fp16=force_fp16)
    except ValueError as error:
        raise click.ClickException(f'cannot convert {source}: {error}') from None
    print(f'Saving "{dest}"...')
    with cli.about_path(dest):
        dnnlib.util.write_atomically(dest, lambda handle: pickle.dump(data, handle))
    print('Done.')

#----------------------------------------------------------------------------


if __name__ == '__main__':
    convert_network_pickle()  # pylint: disable=no-value-for-parameter
