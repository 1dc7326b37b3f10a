"""Tests for dnnlib.util: EasyDict, cache paths, open_url (local, file://, cache, offline), names, Logger."""

import contextlib
import hashlib
import os
import pathlib
import pickle
import sys

import pytest

import dnnlib
from dnnlib import util


def test_easydict_attribute_semantics():
    d = dnnlib.EasyDict(lr=0.002, betas=[0, 0.99])
    assert d.lr == 0.002
    d.batch = 4
    assert d['batch'] == 4
    del d.lr
    assert 'lr' not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    with pytest.raises(AttributeError):
        del d.missing
    assert getattr(d, 'missing', 'fallback') == 'fallback'


def test_easydict_pickles_under_dnnlib_util_path():
    d = dnnlib.EasyDict(mapping_kwargs=dnnlib.EasyDict(num_layers=8))
    assert dnnlib.EasyDict is util.EasyDict
    blob = pickle.dumps(d)
    assert b'dnnlib.util' in blob and b'EasyDict' in blob
    back = pickle.loads(blob)
    assert type(back) is util.EasyDict and back.mapping_kwargs.num_layers == 8


def test_make_cache_dir_path_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'env'))
    assert dnnlib.make_cache_dir_path('downloads') == os.path.join(str(tmp_path / 'env'), 'downloads')
    dnnlib.set_cache_dir(str(tmp_path / 'pinned'))
    try:
        assert dnnlib.make_cache_dir_path('a', 'b') == os.path.join(str(tmp_path / 'pinned'), 'a', 'b')
    finally:
        dnnlib.set_cache_dir(None)
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert dnnlib.make_cache_dir_path() == os.path.join(str(tmp_path / 'home'), '.cache', 'dnnlib')


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (12, '12s'), (59.4, '59s'), (185, '3m 05s'), (3723, '1h 02m 03s'),
    (2 * 86400 + 3 * 3600 + 4 * 60 + 5, '2d 03h 04m'),
])
def test_format_time(seconds, text):
    assert util.format_time(seconds) == text


def test_format_time_brief():
    assert util.format_time_brief(3723) == '1h 02m'
    assert util.format_time_brief(2 * 86400 + 3 * 3600) == '2d 03h'


def test_is_url():
    assert util.is_url('https://example.org/ffhq.pkl')
    assert util.is_url('http://127.0.0.1:9/x')
    assert not util.is_url('/data/ffhq.pkl')
    assert not util.is_url('file:///data/ffhq.pkl')
    assert util.is_url('file:///data/ffhq.pkl', allow_file_urls=True)
    assert not util.is_url(42)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('the network must not be touched')
    monkeypatch.setattr(util, '_stream_url', refuse)


def test_open_url_local_path_and_file_url(tmp_path, no_network):
    target = tmp_path / 'weights.bin'
    target.write_bytes(b'\x00\x01payload')
    with util.open_url(str(target)) as handle:
        assert handle.read() == b'\x00\x01payload'
    with util.open_url(target.as_uri()) as handle:
        assert handle.read() == b'\x00\x01payload'
    assert util.open_url(target.as_uri(), return_filename=True) == str(target)


def test_windows_file_url_form():
    assert util._file_url_to_path('file:///c:/data/x.pkl') == 'c:/data/x.pkl'
    assert util._file_url_to_path('file:///tmp/a%20b.pkl') == '/tmp/a b.pkl'


def test_open_url_cache_hit_never_touches_network(tmp_path, no_network):
    url = 'https://example.invalid/models/ffhq.pkl'
    seeded = tmp_path / f'{hashlib.md5(url.encode()).hexdigest()}_ffhq.pkl'
    seeded.write_bytes(b'cached bytes')
    with util.open_url(url, cache_dir=str(tmp_path)) as handle:
        assert handle.read() == b'cached bytes'
    assert util.open_url(url, cache_dir=str(tmp_path), return_filename=True) == str(seeded)


def test_open_url_downloads_into_cache_via_rename(tmp_path, monkeypatch):
    calls = []

    @contextlib.contextmanager
    def fake_stream(url):
        calls.append(url)
        yield 'net.pkl', 5, iter([b'fre', b'sh'])
    monkeypatch.setattr(util, '_stream_url', fake_stream)
    url = 'https://example.invalid/net.pkl'
    path = util.open_url(url, cache_dir=str(tmp_path), return_filename=True, verbose=False)
    assert path == str(tmp_path / f'{hashlib.md5(url.encode()).hexdigest()}_net.pkl')
    assert pathlib.Path(path).read_bytes() == b'fresh'
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no partial file left behind
    util.open_url(url, cache_dir=str(tmp_path), verbose=False).close()
    assert calls == [url]
    with util.open_url(url, cache_dir=str(tmp_path / 'other'), cache=False, verbose=False) as uncached:
        assert uncached.read() == b'fresh'
    assert not (tmp_path / 'other').exists()


def test_open_url_unreachable_gives_clear_error(tmp_path):
    url = 'http://127.0.0.1:9/x'
    with pytest.raises(OSError) as info:
        util.open_url(url, cache_dir=str(tmp_path), verbose=False)
    message = str(info.value)
    assert url in message
    assert os.path.join(str(tmp_path), hashlib.md5(url.encode()).hexdigest() + '_x') in message
    assert 'offline' in message and 'local path' in message


def test_get_obj_and_construct_by_name():
    import collections
    assert util.get_obj_by_name('collections.OrderedDict') is collections.OrderedDict
    assert util.get_obj_by_name('os.path.join') is os.path.join
    assert util.get_obj_by_name('np.float32').__name__ == 'float32'
    made = util.construct_class_by_name([('a', 1)], class_name='collections.OrderedDict', b=2)
    assert made == collections.OrderedDict(a=1, b=2)
    assert util.call_func_by_name(-3, func_name='builtins.abs') == 3
    with pytest.raises(ImportError, match='no_such_module'):
        util.get_obj_by_name('no_such_module.Thing')
    with pytest.raises(ValueError):
        util.construct_class_by_name()


def test_get_top_level_function_name():
    assert util.get_top_level_function_name(util.format_time) == 'dnnlib.util.format_time'
    with pytest.raises(ValueError):
        util.get_top_level_function_name(lambda: None)


def test_logger_tees_and_strips_carriage_returns(tmp_path, capsys):
    log_path = tmp_path / 'log.txt'
    saved_stdout, saved_stderr = sys.stdout, sys.stderr
    with util.Logger(file_name=str(log_path)):
        print('tick 1')
        sys.stdout.write('10%\r20%\r\n')
        print('warned', file=sys.stderr)
    assert sys.stdout is saved_stdout and sys.stderr is saved_stderr
    text = log_path.read_bytes()
    assert b'\r' not in text
    assert text.decode() == 'tick 1\n10%\n20%\nwarned\n'
    captured = capsys.readouterr()
    assert captured.out == 'tick 1\n10%\r20%\r\nwarned\n'
    assert captured.err == ''


def test_list_and_copy_files(tmp_path):
    src = tmp_path / 'src'
    (src / 'sub').mkdir(parents=True)
    (src / 'a.py').write_text('a')
    (src / 'sub' / 'b.py').write_text('b')
    (src / 'sub' / 'c.pyc').write_text('c')
    listed = util.list_dir_recursively_with_ignore(str(src), ignores=['*.pyc'])
    assert sorted(rel for _, rel in listed) == ['a.py', os.path.join('sub', 'b.py')]
    util.copy_files_and_create_dirs([(abs_path, str(tmp_path / 'dst' / rel)) for abs_path, rel in listed])
    assert (tmp_path / 'dst' / 'sub' / 'b.py').read_text() == 'b'


def test_write_atomically_replaces_whole_file_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / 'out.bin'
    dnnlib.util.write_atomically(str(path), lambda f: f.write(b'first'))
    assert path.read_bytes() == b'first'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file open() makes

    def fail_midway(f):
        f.write(b'half')
        raise OSError(28, 'No space left on device')
    with pytest.raises(OSError, match='No space'):
        dnnlib.util.write_atomically(str(path), fail_midway)
    assert path.read_bytes() == b'first'
    assert sorted(os.listdir(tmp_path)) == ['out.bin']
