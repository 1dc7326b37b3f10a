"""Small shared helpers: attribute dicts, logging tee, cache paths, URL opening with a download cache, lookup by name."""

import fnmatch
import glob
import hashlib
import importlib
import io
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.parse
import uuid

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
        os.chmod(temp_path, 0o666 & ~_current_umask())  # mkstemp makes files private; match open()
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _fetch_url_bytes(url, verbose):
    """Download one URL into memory; returns (bytes, suggested file name). Follows Google Drive's confirm page."""
    import requests  # Imported lazily so unpickling networks never needs it.

    with requests.Session() as session:
        if verbose:
            print(f'Downloading {url} ...', end='', flush=True)
        target = url
        for _ in range(3):  # the original URL, then at most two confirmation pages
            response = session.get(target, timeout=(15, 120))
            response.raise_for_status()
            payload = response.content
            content_type = response.headers.get('content-type', '')
            if 'text/html' not in content_type or len(payload) > 8192 * 16:
                break
            page = payload.decode('utf-8', errors='replace')
            if 'drive.google' not in target and 'Google Drive' not in page:
                break
            if 'download quota' in page.lower():
                raise OSError('Google Drive download quota exceeded; try again later')
            confirm = re.search(r'href="(/uc\?export=download[^"]+)"', page) or \
                re.search(r'action="([^"]+)"', page)
            if confirm is None:
                break
            target = requests.compat.urljoin(target, confirm.group(1).replace('&amp;', '&'))
        name = _name_from_content_disposition(response.headers.get('content-disposition'))
        if verbose:
            print(' done')
        return payload, _safe_file_name(name) if name else _default_cache_file_name(url)


class DownloadError(OSError):
    """A URL could not be fetched; the message says where to place the file by hand."""


def open_url(url, cache_dir=None, num_attempts=10, verbose=True, return_filename=False, cache=True):
    """Open a local path, file:// URL or http(s) URL for binary reading (or return its local file name).

    HTTP(S) results are cached as <cache_dir>/<md5(url)>_<name>, cache_dir defaulting to
    make_cache_dir_path('downloads'); a cached file is used without touching the network.
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
    key = _url_cache_key(url)
    if cache:
        hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), key + '_*')))
        hits = [path for path in hits if os.path.isfile(path)]
        if hits:
            return hits[0] if return_filename else open(hits[0], 'rb')

    payload = file_name = last_error = None
    for attempt in range(num_attempts):
        try:
            payload, file_name = _fetch_url_bytes(url, verbose)
            break
        except Exception as error:  # network stacks raise many unrelated types; all mean "retry or give up"
            last_error = error
            if verbose:
                print(f' failed (attempt {attempt + 1}/{num_attempts}: {type(error).__name__})')
            if _is_connection_failure(error):
                # Offline or unreachable host: retrying immediately will not change the answer.
                break
    if payload is None:
        expected = os.path.join(cache_dir, f'{key}_{_default_cache_file_name(url)}')
        raise DownloadError(f'Could not download {url} ({type(last_error).__name__}: {last_error}). '
                            f'If this machine is offline, fetch the file elsewhere and save it as {expected} '
                            f'(or pass a local path instead of the URL).') from last_error

    if not cache:
        return io.BytesIO(payload)
    os.makedirs(cache_dir, exist_ok=True)
    final_path = os.path.join(cache_dir, f'{key}_{file_name}')
    partial_path = os.path.join(cache_dir, f'partial-{uuid.uuid4().hex}_{file_name}')
    with open(partial_path, 'wb') as handle:
        handle.write(payload)
    os.replace(partial_path, final_path)  # atomic, so readers never see half a file
    return final_path if return_filename else open(final_path, 'rb')


def _is_connection_failure(error):
    try:
        import requests
    except ImportError:
        return False
    return isinstance(error, requests.exceptions.ConnectionError)
