"""open_url against a real HTTP server on 127.0.0.1: streamed download, SHA-256 check, interrupted transfers, progress."""

import hashlib
import http.server
import io
import os
import threading

import pytest

from dnnlib import util

PAYLOAD = bytes(range(256)) * 4096 * 3      # 3 MiB: several streaming chunks


class _Handler(http.server.BaseHTTPRequestHandler):
    """/full sends PAYLOAD; /cut announces PAYLOAD's length but closes halfway; /named sets a file name."""

    def do_GET(self):
        self.server.requests_seen.append(self.path)
        body = PAYLOAD
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(body)))
        if self.path == '/named':
            self.send_header('Content-Disposition', 'attachment; filename="weights v2.pkl"')
        self.end_headers()
        if self.path == '/cut':
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.requests_seen = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield httpd, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_download_streams_in_chunks_to_the_cache(server, tmp_path, monkeypatch):
    httpd, base = server
    written = []
    real_copy = util._copy_stream

    def spy(url, stream, handle, verbose, expected):
        name, size, chunks = stream
        def counted():
            for chunk in chunks:
                written.append(len(chunk))
                yield chunk
        return real_copy(url, (name, size, counted()), handle, verbose, expected)
    monkeypatch.setattr(util, '_copy_stream', spy)
    path = util.open_url(f'{base}/full', cache_dir=str(tmp_path), return_filename=True, verbose=False)
    assert open(path, 'rb').read() == PAYLOAD
    assert len(written) >= 3 and max(written) <= 1 << 20      # never the whole body at once
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    # Second open: served from the cache.
    with util.open_url(f'{base}/full', cache_dir=str(tmp_path), verbose=False) as f:
        assert f.read() == PAYLOAD
    assert httpd.requests_seen == ['/full']


def test_content_disposition_names_the_cached_file(server, tmp_path):
    _, base = server
    path = util.open_url(f'{base}/named', cache_dir=str(tmp_path), return_filename=True, verbose=False)
    assert os.path.basename(path).endswith('_weights_v2.pkl')


def test_matching_hash_prefix_is_accepted(server, tmp_path, monkeypatch):
    _, base = server
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(util.KNOWN_SHA256, f'{base}/full', digest[:12].upper())
    path = util.open_url(f'{base}/full', cache_dir=str(tmp_path), return_filename=True, verbose=False)
    assert open(path, 'rb').read() == PAYLOAD


def test_hash_mismatch_is_a_clear_error_and_caches_nothing(server, tmp_path):
    httpd, base = server
    with pytest.raises(util.HashMismatchError) as info:
        util.open_url(f'{base}/full', cache_dir=str(tmp_path), verbose=False, sha256='0000deadbeef', num_attempts=3)
    message = str(info.value)
    assert hashlib.sha256(PAYLOAD).hexdigest() in message and '0000deadbeef' in message and 'not kept' in message
    assert os.listdir(tmp_path) == []
    assert httpd.requests_seen == ['/full']       # a mismatch is not retried


def test_interrupted_download_leaves_no_partial_file(server, tmp_path):
    httpd, base = server
    with pytest.raises(util.DownloadError) as info:
        util.open_url(f'{base}/cut', cache_dir=str(tmp_path), verbose=False, num_attempts=2)
    assert f'{base}/cut' in str(info.value)
    assert os.listdir(tmp_path) == []
    assert httpd.requests_seen == ['/cut', '/cut']


def test_uncached_download_is_a_temporary_file(server, tmp_path):
    _, base = server
    with util.open_url(f'{base}/full', cache_dir=str(tmp_path / 'c'), cache=False, verbose=False) as f:
        assert not isinstance(f, io.BytesIO) and f.read() == PAYLOAD
    assert not (tmp_path / 'c').exists() or os.listdir(tmp_path / 'c') == []


class _FakeTerminal(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize('tty', [True, False])
def test_progress_line_only_on_a_terminal(server, tmp_path, monkeypatch, tty):
    _, base = server
    err, out = _FakeTerminal(tty), _FakeTerminal(tty)
    monkeypatch.setattr('sys.stderr', err)
    monkeypatch.setattr('sys.stdout', out)
    util.open_url(f'{base}/full', cache_dir=str(tmp_path), return_filename=True, verbose=True)
    if tty:
        assert err.getvalue().rstrip().endswith('3.1 / 3.1 MB (100%)')
    else:
        assert err.getvalue() == '' and '\r' not in out.getvalue()
