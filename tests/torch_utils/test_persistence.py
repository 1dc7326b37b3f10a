"""Tests for torch_utils.persistence: source-embedding pickles, fresh-process reload, NVIDIA-style metas, hooks."""

import copy
import importlib
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import dnnlib
from torch_utils import persistence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODULE_SOURCE = textwrap.dedent('''
    """A throwaway module holding a persistent network for the persistence tests."""
    import torch
    from torch_utils import persistence

    OFFSET = 0.25

    @persistence.persistent_class
    class TinyNet(torch.nn.Module):
        def __init__(self, width, gain=1.0, kwargs_holder=None):
            super().__init__()
            self.gain = float(gain)
            self.fc = torch.nn.Linear(width, width)
            self.register_buffer('shift', torch.arange(width, dtype=torch.float32))

        def forward(self, x):
            return self.fc(x) * self.gain + self.shift + OFFSET

    @persistence.persistent_class
    class Wrapper(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.inner = TinyNet(width, gain=2.0)

        def forward(self, x):
            return self.inner(x).tanh()
''')


@pytest.fixture
def temp_module(tmp_path, monkeypatch):
    """Import MODULE_SOURCE from a uniquely named file that only this process can see."""
    name = f'persist_probe_{tmp_path.name.replace("-", "_")}'
    (tmp_path / f'{name}.py').write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_decorator_keeps_name_and_records_init_args(temp_module):
    net = temp_module.TinyNet(3, gain=1.5)
    assert type(net).__name__ == 'TinyNet'
    assert persistence.is_persistent(net) and persistence.is_persistent(temp_module.TinyNet)
    assert not persistence.is_persistent(torch.nn.Linear(2, 2))
    assert net.init_args == (3,)
    assert isinstance(net.init_kwargs, dnnlib.EasyDict) and net.init_kwargs.gain == 1.5
    net.init_kwargs.gain = 9.0  # a copy: editing it must not touch the object
    assert net.init_kwargs.gain == 1.5


def test_pickle_meta_format(temp_module):
    net = temp_module.TinyNet(2)
    func, args, state = net.__reduce__()
    assert func is persistence._reconstruct_persistent_obj and state is None
    (meta,) = args
    assert type(meta) is dict
    assert meta['type'] == 'class' and meta['version'] == 6 == persistence._version
    assert meta['class_name'] == 'TinyNet'
    assert meta['module_src'] == MODULE_SOURCE
    assert meta['state']['_init_args'] == (2,) and meta['state']['gain'] == 1.0
    blob = pickle.dumps(temp_module.Wrapper(2))
    assert blob.count(b'persist_probe') == 0  # refers to the source, never to the module name
    assert blob.count(b'OFFSET = 0.25') == 1  # source memoised once per pickle


def test_reload_in_fresh_process_without_defining_module(temp_module, tmp_path):
    torch.manual_seed(1)
    net = temp_module.Wrapper(4)
    x = torch.randn(3, 4)
    expected = net(x).detach()
    pickle_path = tmp_path / 'net.pkl'
    with open(pickle_path, 'wb') as f:
        pickle.dump(dict(G=net, x=x), f)
    torch.save(expected, tmp_path / 'expected.pt')

    script = textwrap.dedent(f'''
        import importlib.util, pickle, sys, torch
        assert importlib.util.find_spec({temp_module.__name__!r}) is None, 'temp module must not be importable'
        assert importlib.util.find_spec('training') is None, 'the training package must not be importable'
        with open({str(pickle_path)!r}, 'rb') as f:
            data = pickle.load(f)
        G = data['G']
        assert type(G).__name__ == 'Wrapper' and type(G).__module__.startswith('_imported_module_')
        assert G.inner.init_kwargs.gain == 2.0
        got = G(data['x']).detach()
        want = torch.load({str(tmp_path / 'expected.pt')!r})
        assert torch.equal(got, want), (got, want)
        print('fresh-process-ok')
    ''')
    # Only torch_utils and dnnlib (in a copy of just those packages) are importable in the child.
    isolated = tmp_path / 'isolated'
    isolated.mkdir()
    for package in ('torch_utils', 'dnnlib'):
        os.symlink(os.path.join(ROOT, package), isolated / package)
    env = dict(os.environ, PYTHONPATH=str(isolated))
    result = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path / 'isolated'), env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'fresh-process-ok' in result.stdout


def test_round_trip_and_deepcopy_share_one_module(temp_module):
    net = temp_module.Wrapper(3)
    x = torch.randn(2, 3)
    clone = pickle.loads(pickle.dumps(net))
    assert torch.equal(clone(x), net(x))
    modules_before = len(sys.modules)
    copies = [copy.deepcopy(net) for _ in range(20)]
    assert len(sys.modules) == modules_before  # source-keyed cache: no new module per copy
    assert all(type(c) is type(copies[0]) for c in copies)
    copies[0].inner.fc.weight.data.zero_()
    assert not torch.equal(copies[1].inner.fc.weight, copies[0].inner.fc.weight)
    assert torch.equal(copies[1](x), net(x))


def _nvidia_style_blob(module_src, class_name, state):
    """Pickle bytes shaped exactly like an NVIDIA snapshot entry: (_reconstruct_persistent_obj, (meta,))."""
    meta = dict(type='class', version=6, module_src=module_src, class_name=class_name, state=state)

    class Carrier:
        def __reduce__(self):
            return persistence._reconstruct_persistent_obj, (meta,)
    return pickle.dumps(Carrier())


NVIDIA_STYLE_SOURCE = '\ufeff' + textwrap.dedent('''
    import numpy as np
    import torch
    from torch_utils import misc
    from torch_utils import persistence

    @persistence.persistent_class
    class Scale(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones([channels]))
            self.weight_gain = np.float64(0.5)

        def forward(self, x):
            misc.assert_shape(x, [None, self.weight.shape[0]])
            return x * (self.weight * self.weight_gain)
''')


def _module_state_like_old_torch(channels):
    donor = torch.nn.Module()
    donor.weight = torch.nn.Parameter(torch.arange(channels, dtype=torch.float32))
    state = dict(donor.__dict__)
    # Old torch versions pickled fewer hook dicts; loading must fill them in.
    for key in list(state):
        if key.endswith('_with_kwargs') or key.endswith('_always_called') or key.startswith('_state_dict_pre'):
            del state[key]
    state.update(weight_gain=0.5, _init_args=(channels,), _init_kwargs=dnnlib.EasyDict())
    return state


def test_nvidia_style_meta_pickle_loads():
    blob = _nvidia_style_blob(NVIDIA_STYLE_SOURCE, 'Scale', _module_state_like_old_torch(3))
    net = pickle.loads(blob)
    assert type(net).__name__ == 'Scale' and persistence.is_persistent(net)
    assert net.init_args == (3,)
    out = net(torch.ones(2, 3))
    assert out.tolist() == [[0.0, 0.5, 1.0]] * 2
    assert [name for name, _ in net.named_parameters()] == ['weight']
    # Re-pickling our load gives the same (BOM-free) source back.
    assert net.__reduce__()[1][0]['module_src'] == NVIDIA_STYLE_SOURCE[1:]


def test_import_hook_sees_and_patches_meta(monkeypatch):
    monkeypatch.setattr(persistence, '_registered_import_hooks', [])
    seen = []

    def patch_source(meta):
        seen.append((meta.class_name, meta.version, type(meta.state).__name__))
        meta.module_src = meta.module_src.replace('self.weight * self.weight_gain', 'self.weight * 10')
        return meta
    persistence.import_hook(patch_source)
    net = pickle.loads(_nvidia_style_blob(NVIDIA_STYLE_SOURCE, 'Scale', _module_state_like_old_torch(2)))
    assert seen == [('Scale', 6, 'EasyDict')]
    assert net(torch.ones(1, 2)).tolist() == [[0.0, 10.0]]


def test_wrong_version_and_bad_hook_are_rejected(monkeypatch):
    meta = dict(type='class', version=5, module_src=NVIDIA_STYLE_SOURCE, class_name='Scale',
                state=_module_state_like_old_torch(2))
    with pytest.raises(ValueError, match='version 5'):
        persistence._reconstruct_persistent_obj(meta)
    monkeypatch.setattr(persistence, '_registered_import_hooks', [lambda meta: None])
    meta['version'] = 6
    with pytest.raises(TypeError, match='must return'):
        persistence._reconstruct_persistent_obj(meta)


def test_broken_source_is_not_cached():
    source = 'raise RuntimeError("boom")\n'
    with pytest.raises(RuntimeError, match='boom'):
        persistence._src_to_module(source)
    assert source not in persistence._module_by_source


def test_check_pickleable():
    persistence._check_pickleable([1, 'a', (2.0, None), {'k': torch.zeros(2)}, torch.float32])
    with pytest.raises(TypeError, match='pickleable'):
        persistence._check_pickleable({'fn': lambda v: v})


def test_unpickleable_constructor_argument_fails_at_construction():
    source = textwrap.dedent('''
        import torch
        from torch_utils import persistence

        @persistence.persistent_class
        class Holder(torch.nn.Module):
            def __init__(self, thing):
                super().__init__()
                self.thing = thing
    ''')
    holder_class = persistence._src_to_module(source).Holder
    assert holder_class(thing=[1, 2]).init_kwargs.thing == [1, 2]
    with pytest.raises(TypeError, match='pickleable'):
        holder_class(thing=lambda v: v)
