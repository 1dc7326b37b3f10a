"""Small shared helpers: attribute dicts, logging tee, cache paths, URL opening with a download cache, lookup by name."""

import contextlib
import fnmatch
import glob
import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
import time
import types
import urllib.parse

# ------------------------------------------------------------------------------------------------
# Writing files.


def write_atomically(path, write_fn, mode='wb'):
    """Call write_fn(handle) on a temporary file beside `path`, then rename it into place.

    Readers never see a half-written file: a crash, a full disk or an exception inside `write_fn`
    leaves the previous file (or none) at `path`, and the temporary is removed. The temporary lives
    in the same folder so that the final rename stays on one file system and is atomic.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(handle, mode) as f:
            write_fn(f)
        os.chmod(temp_path, 0o666 & ~_UMASK)  # mkstemp makes files private; match what open() would make
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def _read_umask():
    # os.umask can only be read by setting it; do that once at import, before any worker threads exist,
    # instead of briefly zeroing the process's umask on every write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# ------------------------------------------------------------------------------------------------
# Attribute dictionaries.


class EasyDict(dict):
    """A dict whose keys can also be read and written as attributes (`d.lr` is `d['lr']`).

    Network pickles reference this class as `dnnlib.util.EasyDict`, so it must stay defined here.
    """

    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


# ------------------------------------------------------------------------------------------------
# Logging.


def _without_carriage_returns(text):
    # Progress bars redraw with '\r'; in a log file each redraw becomes its own line instead.
    return text.replace('\r\n', '\n').replace('\r', '\n')


class Logger:
    """Tees everything printed to stdout into a file, and routes stderr through the same tee.

    Use as a context manager or call close(); both restore the previous sys.stdout/sys.stderr.
    """

    def __init__(self, file_name=None, file_mode='w', should_flush=True):
        self.file = open(file_name, file_mode, encoding='utf-8') if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def write(self, text):
        if isinstance(text, bytes):
            text = text.decode('utf-8', errors='replace')
        if not text:
            return
        if self.file is not None:
            self.file.write(_without_carriage_returns(text))
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self):
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self):
        return False

    def close(self):
        self.flush()
        # Only undo our own redirection: another Logger may have been installed on top of us.
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


# ------------------------------------------------------------------------------------------------
# Cache directory.

_cache_dir_override = None


def set_cache_dir(path):
    """Pin the dnnlib cache root (takes precedence over $DNNLIB_CACHE_DIR). None restores the default."""
    global _cache_dir_override
    _cache_dir_override = path


def make_cache_dir_path(*paths):
    """Join `paths` under the cache root: set_cache_dir(), $DNNLIB_CACHE_DIR, ~/.cache/dnnlib, or <tmp>/.cache/dnnlib."""
    if _cache_dir_override is not None:
        return os.path.join(_cache_dir_override, *paths)
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    for home_var in ('HOME', 'USERPROFILE'):
        if home_var in os.environ:
            return os.path.join(os.environ[home_var], '.cache', 'dnnlib', *paths)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *paths)


# ------------------------------------------------------------------------------------------------
# Small formatting helpers.


def _duration_units(seconds):
    """['2d', '03h', '04m', '05s'], starting at the largest non-zero unit; later units are zero-padded."""
    total = int(round(seconds))
    if total < 60:
        return [f'{total}s']  # Also keeps a negative duration readable ('-5s', not '-1d 23h 59m').
    minutes, secs = divmod(total, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    units = [(days, 'd'), (hrs, 'h'), (mins, 'm'), (secs, 's')]
    while len(units) > 1 and units[0][0] == 0:
        units.pop(0)
    return [f'{units[0][0]}{units[0][1]}'] + [f'{value:02d}{unit}' for value, unit in units[1:]]


def format_time(seconds):
    """Human-readable duration: '12s', '3m 05s', '1h 02m 03s' or '2d 03h 04m'."""
    return ' '.join(_duration_units(seconds)[:3])


def format_time_brief(seconds):
    """Like format_time but with only the two largest units: '12s', '3m 05s', '1h 02m', '2d 03h'."""
    return ' '.join(_duration_units(seconds)[:2])


def ask_yes_no(question):
    """Ask on the terminal until the answer is yes or no; returns a bool."""
    answers = {'y': True, 'yes': True, 'n': False, 'no': False}
    while True:
        reply = input(f'{question} [y/n] ').strip().lower()
        if reply in answers:
            return answers[reply]
        print('Please answer yes or no.')


def tuple_product(values):
    """Product of the entries of a tuple (1 for an empty one)."""
    result = 1
    for value in values:
        result *= value
    return result


# ------------------------------------------------------------------------------------------------
# Finding objects by their dotted name.


def get_module_from_obj_name(obj_name):
    """Split 'pkg.mod.Class.attr' into (imported module, 'Class.attr'), trying the longest module path first."""
    parts = obj_name.split('.')
    # Common aliases used in config strings.
    aliases = {'np': 'numpy', 'tf': 'tensorflow'}
    parts[0] = aliases.get(parts[0], parts[0])
    for split in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only "this candidate does not exist" means "try a shorter prefix"; a missing
            # dependency inside an existing module is a real error the user must see.
            if error.name is not None and (module_name == error.name or module_name.startswith(error.name + '.')):
                continue
            raise
        remainder = '.'.join(parts[split:])
        try:
            get_obj_from_module(module, remainder)
        except AttributeError:
            continue
        return module, remainder
    raise ImportError(f'Cannot find "{obj_name}": no importable module prefix holds that attribute path; '
                      f'check the spelling and that its package is on sys.path')


def get_obj_from_module(module, obj_name):
    """Follow a dotted attribute path inside a module ('' returns the module itself)."""
    obj = module
    for attr in filter(None, obj_name.split('.')):
        obj = getattr(obj, attr)
    return obj


def get_obj_by_name(name):
    """Return the object with the given fully qualified dotted name, e.g. 'torch.optim.Adam'."""
    module, remainder = get_module_from_obj_name(name)
    return get_obj_from_module(module, remainder)


def call_func_by_name(*args, func_name=None, **kwargs):
    """Look up a function (or class) by dotted name and call it with the given arguments."""
    if func_name is None:
        raise ValueError('call_func_by_name needs func_name="package.module.function"')
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'"{func_name}" resolved to a non-callable {type(func).__name__}')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name=None, **kwargs):
    """Instantiate a class given by dotted name, e.g. construct_class_by_name(class_name='torch.nn.Linear', ...)."""
    if class_name is None:
        raise ValueError('construct_class_by_name needs class_name="package.module.Class"')
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name):
    """Directory of the module that defines the named object."""
    module, _ = get_module_from_obj_name(obj_name)
    return os.path.dirname(os.path.abspath(module.__file__))


def is_top_level_function(obj):
    """True for a plain function defined at module level (not a lambda, method or nested function)."""
    return isinstance(obj, types.FunctionType) and obj.__qualname__ == obj.__name__ and obj.__name__ != '<lambda>' \
        and obj.__module__ in sys.modules and getattr(sys.modules[obj.__module__], obj.__name__, None) is obj


def get_top_level_function_name(obj):
    """Fully qualified dotted name of a module-level function, usable with get_obj_by_name."""
    if not is_top_level_function(obj):
        raise ValueError(f'{obj!r} is not a module-level function, so it cannot be named for later lookup')
    module_name = obj.__module__
    if module_name == '__main__':
        main_file = getattr(sys.modules['__main__'], '__file__', None)
        if main_file:
            module_name = os.path.splitext(os.path.basename(main_file))[0]
    return f'{module_name}.{obj.__name__}'


# ------------------------------------------------------------------------------------------------
# File-system helpers.


def list_dir_recursively_with_ignore(dir_path, ignores=None, add_base_to_relative=False):
    """List (absolute, relative) paths of every file under dir_path, skipping names matching glob `ignores`."""
    ignores = list(ignores or [])
    base = os.path.basename(os.path.normpath(dir_path))
    found = []
    for root, dirs, files in os.walk(dir_path, topdown=True):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, pattern) for pattern in ignores)]
        for file_name in files:
            if any(fnmatch.fnmatch(file_name, pattern) for pattern in ignores):
                continue
            absolute = os.path.join(root, file_name)
            relative = os.path.relpath(absolute, dir_path)
            if add_base_to_relative:
                relative = os.path.join(base, relative)
            found.append((absolute, relative))
    return found


def copy_files_and_create_dirs(files):
    """Copy each (source, destination) pair, creating destination folders as needed."""
    for source, destination in files:
        parent = os.path.dirname(destination)
        if parent:
            os.makedirs(parent, exist_ok=True)
        shutil.copyfile(source, destination)


# ------------------------------------------------------------------------------------------------
# URLs and the download cache.


def is_url(obj, allow_file_urls=False):
    """True if obj is a string that looks like a network URL (or a file:// URL when allowed)."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    parsed = urllib.parse.urlparse(obj)
    if parsed.scheme == 'file':
        return allow_file_urls
    return bool(parsed.scheme) and bool(parsed.netloc)


def _file_url_to_path(url):
    parsed = urllib.parse.urlparse(url)
    path = urllib.parse.unquote(parsed.path)
    # 'file:///c:/data/x.pkl' parses to '/c:/data/x.pkl'; drop the slash before a drive letter.
    if re.match(r'^/[A-Za-z]:', path):
        path = path[1:]
    if parsed.netloc and parsed.netloc != 'localhost':
        path = f'//{parsed.netloc}{path}'  # UNC share
    return path


def _safe_file_name(name):
    return re.sub(r'[^0-9A-Za-z._-]', '_', name) or 'download'


def _url_cache_key(url):
    return hashlib.md5(url.encode('utf-8')).hexdigest()


def _default_cache_file_name(url):
    path_tail = urllib.parse.urlparse(url).path.rstrip('/').split('/')[-1]
    return _safe_file_name(urllib.parse.unquote(path_tail))


def _name_from_content_disposition(header):
    match = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', header or '', flags=re.IGNORECASE)
    return urllib.parse.unquote(match.group(1)) if match else None


# Known SHA-256 digests (or hex prefixes of them) of downloadable files, by URL. open_url checks a
# download against the entry for its URL and refuses to cache a file that differs. Add an entry only
# for a digest taken from the publisher; callers can also pass sha256= themselves.
KNOWN_SHA256 = {}

_DOWNLOAD_CHUNK = 1 << 20        # bytes per read while streaming a download to disk
_PROGRESS_INTERVAL = 0.5         # seconds between progress-line redraws


class DownloadError(OSError):
    """A URL could not be fetched; the message says where to place the file by hand."""


class HashMismatchError(DownloadError):
    """A download finished but its SHA-256 digest differs from the known one; nothing was cached."""


@contextlib.contextmanager
def _stream_url(url):
    """Open `url` for streaming: yields (suggested file name, size in bytes or None, iterator of byte chunks).

    Follows Google Drive's "cannot scan for viruses" confirmation page (at most twice). Only a small HTML
    page is ever read into memory; the file itself arrives chunk by chunk.
    """
    import requests  # Imported lazily so unpickling networks never needs it.

    with requests.Session() as session:
        target = url
        for _ in range(3):  # the original URL, then at most two confirmation pages
            response = session.get(target, stream=True, timeout=(15, 120))
            response.raise_for_status()
            size = response.headers.get('content-length')
            size = int(size) if size and size.isdigit() else None
            small_page = 'text/html' in response.headers.get('content-type', '') and (size or 0) <= 8192 * 16
            if not small_page:
                break
            page = response.content
            text = page.decode('utf-8', errors='replace')
            if 'drive.google' not in target and 'Google Drive' not in text:
                response = None
                break
            if 'download quota' in text.lower():
                raise OSError('Google Drive download quota exceeded; try again later')
            confirm = re.search(r'href="(/uc\?export=download[^"]+)"', text) or re.search(r'action="([^"]+)"', text)
            if confirm is None:
                response = None
                break
            target = requests.compat.urljoin(target, confirm.group(1).replace('&amp;', '&'))
        if response is None:     # an ordinary small HTML file: it is the download
            headers, chunks, size = {}, iter([page]), len(page)
        else:
            headers, chunks = response.headers, response.iter_content(chunk_size=_DOWNLOAD_CHUNK)
        name = _name_from_content_disposition(headers.get('content-disposition'))
        yield (_safe_file_name(name) if name else _default_cache_file_name(url)), size, chunks


class _ProgressLine:
    """'Downloading NAME: 12.3 / 360.0 MB (3%)', redrawn in place on a terminal; silent otherwise."""

    def __init__(self, name, size, enabled):
        self.name, self.size = name, size
        self.enabled = enabled and sys.stderr.isatty() and sys.stdout.isatty()
        self.last_draw = 0.0

    def update(self, done, final=False):
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last_draw < _PROGRESS_INTERVAL):
            return
        self.last_draw = now
        text = f'Downloading {self.name}: {done / 1e6:.1f}'
        text += f' / {self.size / 1e6:.1f} MB ({100 * done // max(self.size, 1)}%)' if self.size else ' MB'
        sys.stderr.write('\r' + text + ('\n' if final else ''))
        sys.stderr.flush()


def _copy_stream(url, stream, handle, verbose, expected_sha256):
    """Write the chunks of `stream` (from _stream_url) to the open binary file `handle`.

    Raises OSError when the stream ends before its announced size and HashMismatchError when the digest
    differs from `expected_sha256` (a hex prefix of any length).
    """
    file_name, size, chunks = stream
    digest = hashlib.sha256()
    progress = _ProgressLine(file_name, size, verbose)
    done = 0
    for chunk in chunks:
        handle.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        progress.update(done)
    progress.update(done, final=True)
    if size is not None and done != size:
        raise OSError(f'the download stopped after {done} of {size} bytes')
    actual = digest.hexdigest()
    if expected_sha256 and not actual.startswith(expected_sha256.lower()):
        raise HashMismatchError(f'{url} has SHA-256 {actual}, which does not start with the expected '
                                f'{expected_sha256}; the file was not kept (the server may have changed it, or '
                                f'the transfer was corrupted)')


def open_url(url, cache_dir=None, num_attempts=10, verbose=True, return_filename=False, cache=True, sha256=None):
    """Open a local path, file:// URL or http(s) URL for binary reading (or return its local file name).

    HTTP(S) downloads stream to a temporary file in the cache folder, are checked against `sha256` (a
    hex prefix; default: KNOWN_SHA256[url] when present) and are then renamed into place as
    <cache_dir>/<md5(url)>_<name>, cache_dir defaulting to make_cache_dir_path('downloads'). A failed
    or interrupted download leaves nothing behind; a cached file is used without touching the network.
    With cache=False the download goes to an anonymous temporary file, returned open at its start.
    On a terminal a progress line is drawn on stderr.
    """
    if num_attempts < 1:
        raise ValueError('open_url: num_attempts must be at least 1')
    if return_filename and not cache:
        raise ValueError('open_url: return_filename=True needs cache=True (the download must land in a file)')

    if not is_url(url, allow_file_urls=True):
        return url if return_filename else open(url, 'rb')
    if urllib.parse.urlparse(url).scheme == 'file':
        local_path = _file_url_to_path(url)
        return local_path if return_filename else open(local_path, 'rb')

    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    if sha256 is None:
        sha256 = KNOWN_SHA256.get(url)
    key = _url_cache_key(url)
    if cache:
        hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), key + '_*')))
        hits = [path for path in hits if os.path.isfile(path)]
        if hits:
            return hits[0] if return_filename else open(hits[0], 'rb')
        os.makedirs(cache_dir, exist_ok=True)

    last_error = None
    for attempt in range(num_attempts):
        if verbose:
            print(f'Downloading {url} ...', flush=True)
        try:
            with _stream_url(url) as stream:
                if not cache:
                    handle = tempfile.TemporaryFile()
                    try:
                        _copy_stream(url, stream, handle, verbose, sha256)
                    except BaseException:
                        handle.close()
                        raise
                    handle.seek(0)
                    return handle
                # The temporary name starts with '.', so the cache lookup above never matches it.
                final_path = os.path.join(cache_dir, f'{key}_{stream[0]}')
                write_atomically(final_path, lambda f: _copy_stream(url, stream, f, verbose, sha256))
            return final_path if return_filename else open(final_path, 'rb')
        except HashMismatchError:
            raise  # the same bytes would arrive again
        except Exception as error:  # network stacks raise many unrelated types; all mean "retry or give up"
            last_error = error
            if verbose:
                print(f'Download failed (attempt {attempt + 1}/{num_attempts}: {type(error).__name__}: {error})')
            if _is_connection_failure(error):
                # Offline or unreachable host: retrying immediately will not change the answer.
                break
    expected = os.path.join(cache_dir, f'{key}_{_default_cache_file_name(url)}')
    raise DownloadError(f'Could not download {url} ({type(last_error).__name__}: {last_error}). '
                        f'If this machine is offline, fetch the file elsewhere and save it as {expected} '
                        f'(or pass a local path instead of the URL).') from last_error


def _is_connection_failure(error):
    try:
        import requests
    except ImportError:
        return False
    return isinstance(error, requests.exceptions.ConnectionError)
