"""Tests for torch_utils.custom_ops: build hashing, failure caching, impl preference, lock recovery, real nvcc build."""

import os
import shutil
import socket
import subprocess
import sys
import types
import warnings

import pytest
import torch

from torch_utils import custom_ops

OPS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       'torch_utils', 'ops')


@pytest.fixture(autouse=True)
def _restore_module_state():
    saved = (custom_ops.verbosity, custom_ops.preferred_impl, dict(custom_ops._loaded_plugins),
             dict(custom_ops._failed_plugins), set(custom_ops._fallback_warned))
    yield
    custom_ops.verbosity, custom_ops.preferred_impl = saved[0], saved[1]
    for store, old in zip((custom_ops._loaded_plugins, custom_ops._failed_plugins), saved[2:4]):
        store.clear()
        store.update(old)
    custom_ops._fallback_warned.clear()
    custom_ops._fallback_warned.update(saved[4])


def _write(path, text):
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text)
    return str(path)


# --------------------------------------------------------------------------------------------------
# Hashing and source resolution.

def test_fingerprint_follows_sources_headers_arch_and_flags(tmp_path):
    src = _write(tmp_path / 'k.cpp', 'int a;')
    hdr = _write(tmp_path / 'k.h', '#pragma once')
    base = custom_ops.build_fingerprint([src], [hdr], '8.0', {})
    assert base == custom_ops.build_fingerprint([src], [hdr], '8.0', {})
    assert base != custom_ops.build_fingerprint([src], [hdr], '9.0', {})
    assert base != custom_ops.build_fingerprint([src], [hdr], '8.0', {'extra_cuda_cflags': ['--use_fast_math']})
    _write(tmp_path / 'k.cpp', 'int b;')
    after_source_edit = custom_ops.build_fingerprint([src], [hdr], '8.0', {})
    assert after_source_edit != base
    _write(tmp_path / 'k.h', '#pragma once // edited')
    assert custom_ops.build_fingerprint([src], [hdr], '8.0', {}) not in (base, after_source_edit)


def test_both_call_styles_resolve_to_the_same_files(tmp_path):
    _write(tmp_path / 'op.cpp', '')
    _write(tmp_path / 'op.cu', '')
    _write(tmp_path / 'op.h', '')
    _write(tmp_path / 'unrelated.h', '')
    relative = custom_ops._resolve_paths(['op.cpp', 'op.cu'], ['op.h'], str(tmp_path))
    absolute = custom_ops._resolve_paths([str(tmp_path / 'op.cpp'), str(tmp_path / 'op.cu')], None, None)
    assert relative == absolute
    assert absolute[1] == [str(tmp_path / 'op.h')]  # headers=None finds the matching header only
    with pytest.raises(FileNotFoundError, match='missing.cu'):
        custom_ops._resolve_paths(['missing.cu'], [], str(tmp_path))


def test_arch_list_default_without_gpu_and_env_override(monkeypatch):
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert custom_ops.cuda_arch_list() == custom_ops.DEFAULT_CUDA_ARCH_LIST == '8.0;8.6;9.0+PTX'
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '7.5;8.9')
    assert custom_ops.cuda_arch_list() == '7.5;8.9'


def test_pip_cuda_include_dirs_are_found(tmp_path, monkeypatch):
    (tmp_path / 'nvidia' / 'cu13' / 'include').mkdir(parents=True)
    (tmp_path / 'nvidia' / 'cudnn' / 'include').mkdir(parents=True)
    (tmp_path / 'nvidia' / 'nolibs').mkdir(parents=True)
    monkeypatch.setattr(custom_ops, '_site_dirs', lambda: [str(tmp_path)])
    assert custom_ops._pip_cuda_include_dirs() == [str(tmp_path / 'nvidia' / 'cu13' / 'include'),
                                                   str(tmp_path / 'nvidia' / 'cudnn' / 'include')]


def test_build_dir_lives_under_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    assert custom_ops.build_root() == str(tmp_path)


# --------------------------------------------------------------------------------------------------
# Failures: reported once, cached, with the usual fixes.

def test_failed_build_is_attempted_once_and_names_fixes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    src = _write(tmp_path / 'broken.cu', 'this is not C++')
    attempts = []

    def failing_build(*args, **kwargs):
        attempts.append(args[0])
        raise RuntimeError("Command '['ninja', '-v']' returned non-zero exit status 1.")

    monkeypatch.setattr(custom_ops, '_build_in', failing_build)
    monkeypatch.setattr(custom_ops, 'nvcc_version', lambda: '11.8')
    custom_ops.verbosity = 'brief'
    with pytest.raises(custom_ops.PluginBuildError) as first:
        custom_ops.get_plugin('test_broken_plugin', [src])
    with pytest.raises(custom_ops.PluginBuildError) as second:
        custom_ops.get_plugin('test_broken_plugin', [src])
    assert attempts == ['test_broken_plugin']
    assert second.value is first.value
    message = str(first.value)
    assert 'ninja' in message and str(tmp_path) in message and 'Usual fixes' in message
    if torch.version.cuda is not None:
        assert f'nvcc is CUDA 11.8 but torch was built with CUDA {torch.version.cuda}' in message
    assert capsys.readouterr().out == 'Setting up PyTorch plugin "test_broken_plugin"... Failed!\n'


def test_success_is_cached_and_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    src = _write(tmp_path / 'fine.cpp', '')
    fake_module = types.SimpleNamespace(name='fake')
    calls = []
    monkeypatch.setattr(custom_ops, '_build_in', lambda *a, **k: calls.append(a[1]) or fake_module)
    custom_ops.verbosity = 'brief'
    assert custom_ops.get_plugin('test_fine_plugin', [src]) is fake_module
    assert custom_ops.get_plugin('test_fine_plugin', [src]) is fake_module
    assert len(calls) == 1 and calls[0].startswith(os.path.join(str(tmp_path), 'test_fine_plugin'))
    assert capsys.readouterr().out == 'Setting up PyTorch plugin "test_fine_plugin"... Done.\n'
    custom_ops.forget_plugin('test_fine_plugin')
    custom_ops.verbosity = 'none'
    custom_ops.get_plugin('test_fine_plugin', [src])
    assert len(calls) == 2 and capsys.readouterr().out == ''


# --------------------------------------------------------------------------------------------------
# Implementation preference.

class _FakeCudaTensor:
    device = torch.device('cuda')


def _broken_loader():
    raise custom_ops.PluginBuildError('fake_plugin', 'nvcc not found')


def _working_loader():
    return object()


def test_set_preferred_impl_validates():
    custom_ops.set_preferred_impl('ref')
    assert custom_ops.get_preferred_impl() == 'ref'
    with pytest.raises(ValueError, match="Unknown ops implementation 'fast'"):
        custom_ops.set_preferred_impl('fast')


def test_ref_preference_forces_reference_everywhere():
    custom_ops.set_preferred_impl('ref')

    def must_not_build():
        raise AssertionError('plugin must not be built under preferred_impl=ref')

    assert custom_ops.resolve_impl('cuda', _FakeCudaTensor(), must_not_build) == 'ref'


def test_ref_preference_reaches_bias_act(monkeypatch):
    from torch_utils.ops import bias_act as ba
    custom_ops.set_preferred_impl('ref')
    seen = []
    monkeypatch.setattr(ba, '_bias_act_ref', lambda *a: seen.append('ref') or a[0])
    ba.bias_act(torch.ones(2, 3))
    assert seen == ['ref']


def test_requested_ref_and_cpu_tensors_use_reference():
    custom_ops.set_preferred_impl('cuda')
    assert custom_ops.resolve_impl('ref', _FakeCudaTensor(), _broken_loader) == 'ref'
    assert custom_ops.resolve_impl('cuda', torch.zeros(1), _broken_loader) == 'ref'
    with pytest.raises(ValueError, match="Unknown impl 'x'"):
        custom_ops.resolve_impl('x', torch.zeros(1), _working_loader)


def test_auto_warns_once_then_falls_back():
    custom_ops.set_preferred_impl('auto')
    custom_ops._fallback_warned.discard('fake_plugin')
    with pytest.warns(UserWarning, match='reference path instead of "fake_plugin": nvcc not found'):
        assert custom_ops.resolve_impl('cuda', _FakeCudaTensor(), _broken_loader) == 'ref'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert custom_ops.resolve_impl('cuda', _FakeCudaTensor(), _broken_loader) == 'ref'
    assert custom_ops.resolve_impl('cuda', _FakeCudaTensor(), _working_loader) == 'cuda'


def test_cuda_preference_raises_on_failed_build():
    custom_ops.set_preferred_impl('cuda')
    with pytest.raises(custom_ops.PluginBuildError, match='nvcc not found'):
        custom_ops.resolve_impl('cuda', _FakeCudaTensor(), _broken_loader)


# --------------------------------------------------------------------------------------------------
# Build lock.

def _dead_pid():
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def test_stale_lock_from_killed_process_is_removed(tmp_path):
    build_dir = tmp_path / 'plugin' / 'abc'
    build_dir.mkdir(parents=True)
    lock_file = build_dir / 'build.lock'
    _write(lock_file, f'{socket.gethostname()}:{_dead_pid()}')
    with pytest.warns(UserWarning, match='stale plugin build lock') as record:
        with custom_ops.build_lock(str(build_dir), timeout_s=5) as held:
            assert open(held).read() == f'{socket.gethostname()}:{os.getpid()}'
    assert str(build_dir) in str(record[0].message)
    assert not lock_file.exists()


def test_lock_held_too_long_times_out_naming_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(custom_ops, 'lock_poll_s', 0.05)
    build_dir = tmp_path / 'plugin' / 'def'
    build_dir.mkdir(parents=True)
    _write(build_dir / 'build.lock', f'{socket.gethostname()}:{os.getpid()}')  # a live owner: us
    with pytest.raises(custom_ops.StaleLockError) as info:
        with custom_ops.build_lock(str(build_dir), timeout_s=0.3):
            pass
    assert f'delete the directory {build_dir}' in str(info.value)
    _write(build_dir / 'build.lock', 'some-other-host:1')  # cannot check another host's pid
    with pytest.raises(custom_ops.StaleLockError):
        with custom_ops.build_lock(str(build_dir), timeout_s=0.2):
            pass


def test_lock_is_released_after_use_and_on_error(tmp_path):
    with custom_ops.build_lock(str(tmp_path)):
        assert (tmp_path / 'build.lock').exists()
    assert not (tmp_path / 'build.lock').exists()
    with pytest.raises(KeyError):
        with custom_ops.build_lock(str(tmp_path)):
            raise KeyError('boom')
    assert not (tmp_path / 'build.lock').exists()


# --------------------------------------------------------------------------------------------------
# Real compile with nvcc (takes about a minute on 2 cores; runs on GPU-less CI).

def _compile_skip_reason():
    if torch.version.cuda is None:
        return 'torch is a CPU-only build (torch.version.cuda is None)'
    if shutil.which('ninja') is None:
        return 'ninja is not installed'
    if custom_ops.nvcc_version() is None:
        return 'nvcc (CUDA toolkit) not found on PATH or under CUDA_HOME'
    return None


@pytest.mark.slow
@pytest.mark.skipif(_compile_skip_reason() is not None, reason=str(_compile_skip_reason()))
def test_bias_act_plugin_really_compiles(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    custom_ops.forget_plugin('bias_act_plugin')
    custom_ops.verbosity = 'none'
    from torch_utils.ops import bias_act as ba
    plugin = ba._load_plugin()
    assert callable(plugin.bias_act)
    built = [os.path.join(root, name) for root, _, names in os.walk(tmp_path) for name in names
             if name.startswith('bias_act_plugin') and name.endswith(('.so', '.pyd'))]
    assert len(built) == 1
    assert os.path.dirname(built[0]).startswith(os.path.join(str(tmp_path), 'bias_act_plugin'))
    if torch.cuda.is_available():
        x = torch.randn(2, 3, 4, 4, device='cuda')
        torch.testing.assert_close(ba.bias_act(x, act='lrelu', impl='cuda'), ba.bias_act(x, act='lrelu', impl='ref'))
    custom_ops.forget_plugin('bias_act_plugin')
