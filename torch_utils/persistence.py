"""Pickling classes together with their module source, so network pickles load without the defining package.

Format (shared with NVIDIA's stylegan2-ada-pytorch, version 6): an instance of a persistent class
pickles as `_reconstruct_persistent_obj(meta)` where meta is a plain dict with keys `type`
('class'), `version` (6), `module_src` (full source of the defining module), `class_name` and
`state` (the instance __dict__, including `_init_args` and `_init_kwargs`).
"""

import copy
import io
import linecache
import pickle
import sys
import types
import uuid

import dnnlib

_version = 6  # Meta format version; NVIDIA's loader asserts this exact value.

_persistent_classes = set()        # every class produced by persistent_class()
_registered_import_hooks = []      # callables meta -> meta, run before each reconstruction
_source_by_module = dict()         # module object -> its source text
_module_by_source = dict()         # source text -> module object (shared by all objects from that source)

_BOM = '\ufeff'


def persistent_class(orig_class):
    """Class decorator: instances pickle with the full source of the class's module embedded.

    The returned subclass keeps the name, records deep copies of the constructor arguments as
    `init_args` / `init_kwargs`, and checks at construction that the instance can be pickled cheaply.
    May also be applied later to an existing class ("just in time").
    """
    if not isinstance(orig_class, type):
        raise TypeError(f'persistent_class expects a class, got {type(orig_class).__name__}')
    if is_persistent(orig_class):
        return orig_class
    home_module = sys.modules.get(orig_class.__module__)
    if home_module is None:
        raise ValueError(f'persistent_class: module {orig_class.__module__!r} of {orig_class.__name__} is not in '
                         f'sys.modules; define the class in an imported module')
    module_source = _module_to_src(home_module)

    def __init__(self, *args, **kwargs):
        orig_class.__init__(self, *args, **kwargs)
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)
        if getattr(home_module, orig_class.__name__, None) is None:
            raise AssertionError(f'persistent class {orig_class.__name__} must be reachable as a top-level name '
                                 f'of module {home_module.__name__} to be unpickled from its source')
        _check_pickleable(self.__reduce__())

    def __reduce__(self):
        fields = list(super(wrapper, self).__reduce__())
        fields.extend([None] * (3 - len(fields)))
        if fields[0] is _reconstruct_persistent_obj:  # an inner persistent base already wrapped it
            return tuple(fields)
        meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                    class_name=self._orig_class_name, state=fields[2])
        fields[0] = _reconstruct_persistent_obj
        fields[1] = (meta,)
        fields[2] = None
        return tuple(fields)

    namespace = {
        '__init__': __init__,
        '__reduce__': __reduce__,
        '__module__': orig_class.__module__,
        '__qualname__': orig_class.__qualname__,
        '__doc__': orig_class.__doc__,
        '_orig_module_src': module_source,
        '_orig_class_name': orig_class.__name__,
        'init_args': property(lambda self: copy.deepcopy(self._init_args),
                              doc='Deep copy of the positional constructor arguments.'),
        'init_kwargs': property(lambda self: dnnlib.EasyDict(copy.deepcopy(self._init_kwargs)),
                                doc='Deep copy of the keyword constructor arguments, as an EasyDict.'),
    }
    wrapper = type(orig_class)(orig_class.__name__, (orig_class,), namespace)
    _persistent_classes.add(wrapper)
    return wrapper


def is_persistent(obj):
    """True for a class made by persistent_class() or an instance of one."""
    try:
        if obj in _persistent_classes:
            return True
    except TypeError:  # unhashable instances cannot be classes
        pass
    return type(obj) in _persistent_classes


def import_hook(hook):
    """Register hook(meta) -> meta, called on every unpickle before the embedded source is run.

    Hooks may rewrite `meta.module_src` (e.g. to patch old code) or `meta.state`; they must return meta.
    """
    if not callable(hook):
        raise TypeError('import_hook expects a callable taking and returning the meta dict')
    _registered_import_hooks.append(hook)


def _reconstruct_persistent_obj(meta):
    """Rebuild a pickled persistent object from its meta dict (the name is referenced by every pickle)."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _registered_import_hooks:
        meta = hook(meta)
        if meta is None:
            raise TypeError(f'persistence import hook {hook!r} returned None; hooks must return the meta dict')
    if meta.version != _version:
        raise ValueError(f'Unsupported persistence format version {meta.version} (this code reads {_version}); '
                         f'the pickle was written by an incompatible tool')
    if meta.type != 'class':
        raise ValueError(f'Unknown persistent object type {meta.type!r} in pickle')

    module = _src_to_module(meta.module_src)
    found = module.__dict__.get(meta.class_name)
    if not isinstance(found, type):
        raise AttributeError(f'The embedded source defines no class {meta.class_name!r}')
    cls = persistent_class(found)
    obj = cls.__new__(cls)
    restore = getattr(obj, '__setstate__', None)
    if callable(restore):
        restore(meta.state)  # nn.Module fills in attributes that older torch versions did not pickle
    else:
        obj.__dict__.update(meta.state)
    return obj


def _module_to_src(module):
    """Source text of a module, cached (and mapped back to the module so equal sources share it)."""
    source = _source_by_module.get(module)
    if source is None:
        import inspect
        source = inspect.getsource(module)
        if source.startswith(_BOM):
            source = source[len(_BOM):]
        _source_by_module[module] = source
        _module_by_source.setdefault(source, module)
    return source


def _src_to_module(src):
    """A module built from source text; built once per distinct text, so deepcopy/unpickle stay cheap."""
    if src.startswith(_BOM):
        src = src[len(_BOM):]
    module = _module_by_source.get(src)
    if module is not None:
        return module

    name = f'_imported_module_{uuid.uuid4().hex}'
    module = types.ModuleType(name)
    file_name = f'<persistence:{name}>'
    module.__file__ = file_name
    # Both mappings must exist before exec: the decorators inside the source look their source up.
    sys.modules[name] = module
    _source_by_module[module] = src
    _module_by_source[src] = module
    # Lets tracebacks show the embedded lines instead of "source not available".
    linecache.cache[file_name] = (len(src), None, src.splitlines(keepends=True), file_name)
    try:
        exec(compile(src, file_name, 'exec'), module.__dict__)  # noqa: S102 - running embedded source is the format
    except BaseException:
        # Forget the broken module so a later attempt (e.g. after registering a fixing hook) starts clean.
        del sys.modules[name]
        del _source_by_module[module]
        del _module_by_source[src]
        linecache.cache.pop(file_name, None)
        raise
    return module


_CHEAP_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)


def _check_pickleable(obj):
    """Raise if `obj` contains something that pickle cannot handle (or would handle only expensively).

    Containers are walked; primitives, arrays, tensors and persistent objects pass untouched; every
    other leaf is test-pickled so errors surface at construction instead of at snapshot time.
    """
    import numpy as np
    import torch

    pending = [obj]
    leaves = []
    while pending:
        item = pending.pop()
        if isinstance(item, _CHEAP_TYPES) or isinstance(item, (np.ndarray, np.generic, torch.Tensor)):
            continue
        if isinstance(item, (torch.dtype, torch.device)) or is_persistent(item):
            continue
        if isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            leaves.append(item)
    for leaf in leaves:
        try:
            pickle.dump(leaf, io.BytesIO())
        except Exception as error:  # pickle raises TypeError, AttributeError, PicklingError, ...
            raise TypeError(f'Persistent objects must hold only pickleable values; {type(leaf).__name__} '
                            f'is not ({error}). Store plain data (numbers, lists, dicts, tensors) instead.') from error
