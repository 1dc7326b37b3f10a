"""Lazy, cached and lock-safe JIT builds of our CUDA plugins, plus the one place that picks CUDA or reference op paths.

Public API
----------
verbosity : str
    'none' | 'brief' | 'full'. 'brief' prints one ``Setting up PyTorch plugin "<name>"... Done.`` line
    per build; 'full' also shows the compiler output; 'none' is silent (other ranks of a multi-GPU run).
preferred_impl : str
    Process-wide preference shared by every op that has a kernel (bias_act, upfirdn2d, ...):
      'auto' (default): CUDA tensors use the plugin when it builds; otherwise warn ONCE per plugin with
                        the reason and use the pure-PyTorch reference path.
      'cuda':           like 'auto', but a failed build raises PluginBuildError instead of falling back.
      'ref':            always the reference path; no plugin is ever built.
    Change it with ``set_preferred_impl(mode)`` (train.py's ``--ops`` maps onto it).
get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs) -> module
    Both upstream call styles work: absolute ``sources``, or names relative to ``source_dir``. Builds on
    first use (never at import) with torch.utils.cpp_extension.load + ninja, into
    ``<TORCH_EXTENSIONS_DIR>/<module_name>/<hash>`` where the hash covers the source and header bytes,
    torch/CUDA versions, the CUDA arch list and the build kwargs. The module (or the failure) is cached
    per name, so a broken toolchain costs one attempt per process, not one per call.
resolve_impl(requested_impl, tensor, plugin_loader) -> 'cuda' | 'ref'
    The single decision path used by the ops. ``requested_impl`` is the op's ``impl`` argument
    ('cuda' | 'ref'; 'auto' is accepted as a synonym of 'cuda'), ``tensor`` is the op input whose ``.device``
    decides, and ``plugin_loader`` is a zero-argument callable returning the plugin (normally a
    ``get_plugin`` call; it raises PluginBuildError on failure). Returns 'ref' for CPU/MPS tensors, for
    impl='ref', for preferred_impl='ref', and (in 'auto' mode) when the plugin cannot be built.

Environment variables: TORCH_EXTENSIONS_DIR (build root), TORCH_CUDA_ARCH_LIST (target GPUs; when unset
and no GPU is visible we build for DEFAULT_CUDA_ARCH_LIST so GPU-less CI can still compile everything).
"""

import contextlib
import glob
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings

import torch

verbosity = 'brief'
preferred_impl = 'auto'

# Ampere, Ampere consumer and Hopper, with PTX so newer GPUs can still JIT the Hopper code.
DEFAULT_CUDA_ARCH_LIST = '8.0;8.6;9.0+PTX'

# A live builder holds the lock for a couple of minutes at most; past this we stop waiting and say
# which directory to delete instead of hanging forever (upstream problem: hang at "Setting up...").
lock_timeout_s = 900.0
lock_poll_s = 0.5

_VALID_VERBOSITY = ('none', 'brief', 'full')
_VALID_IMPLS = ('auto', 'cuda', 'ref')
_HEADER_SUFFIXES = ('.h', '.hpp', '.cuh', '.inl')
_LOCK_NAME = 'build.lock'

_loaded_plugins = {}    # module_name -> loaded extension module
_failed_plugins = {}    # module_name -> PluginBuildError raised on the first (and only) attempt
_fallback_warned = set()  # plugin names whose reference fallback was already announced


class PluginBuildError(RuntimeError):
    """A CUDA plugin could not be built or loaded; the message lists the usual fixes."""

    def __init__(self, module_name, message):
        super().__init__(message)
        self.module_name = module_name


class StaleLockError(TimeoutError):
    """The build lock was held for longer than ``lock_timeout_s``."""


# --------------------------------------------------------------------------------------------------
# Implementation preference.

def set_preferred_impl(mode):
    """Set the process-wide op implementation preference: 'auto', 'cuda' or 'ref'."""
    global preferred_impl
    if mode not in _VALID_IMPLS:
        raise ValueError(f"Unknown ops implementation {mode!r}; use one of {', '.join(_VALID_IMPLS)}.")
    preferred_impl = mode


def get_preferred_impl():
    """Return the current process-wide preference ('auto', 'cuda' or 'ref')."""
    return preferred_impl


def resolve_impl(requested_impl, tensor, plugin_loader):
    """Decide whether an op call runs its CUDA kernel or its reference path; see the module docstring."""
    if requested_impl not in ('cuda', 'ref', 'auto'):
        raise ValueError(f"Unknown impl {requested_impl!r}; use 'cuda' or 'ref'.")
    if requested_impl == 'ref' or preferred_impl == 'ref':
        return 'ref'
    device = getattr(tensor, 'device', None)
    if device is None or torch.device(device).type != 'cuda':
        return 'ref'
    try:
        plugin_loader()
    except PluginBuildError as err:
        if preferred_impl == 'cuda':
            raise
        if err.module_name not in _fallback_warned:
            _fallback_warned.add(err.module_name)
            warnings.warn(f'Using the slow pure-PyTorch reference path instead of "{err.module_name}": {err}',
                          stacklevel=3)
        return 'ref'
    return 'cuda'


# --------------------------------------------------------------------------------------------------
# Toolchain discovery (feature detection, no version allow-lists).

def _site_dirs():
    candidates = list(sys.path)
    with contextlib.suppress(AttributeError):
        import site
        candidates += site.getsitepackages() + [site.getusersitepackages()]
    seen = []
    for entry in candidates:
        if entry and os.path.isdir(entry) and entry not in seen:
            seen.append(entry)
    return seen


def _pip_cuda_include_dirs():
    """Include folders of NVIDIA's pip CUDA wheels (nvidia/cu13/include, nvidia/cudnn/include, ...).

    torch's headers include cuda_runtime.h, cublas, cusparse, ... which a pip-installed CUDA keeps there
    rather than in a toolkit folder.
    """
    found = []
    for site_dir in _site_dirs():
        for include_dir in sorted(glob.glob(os.path.join(site_dir, 'nvidia', '*', 'include'))):
            if include_dir not in found:
                found.append(include_dir)
    return found


def _cuda_toolkit_roots():
    """Folders that look like a CUDA toolkit (have include/cuda_runtime.h), best guess first."""
    guesses = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')]
    with contextlib.suppress(ImportError, AttributeError):
        from torch.utils import cpp_extension
        guesses.append(cpp_extension.CUDA_HOME)
    nvcc_path = shutil.which('nvcc')
    if nvcc_path is not None:
        guesses.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc_path))))
    guesses += ['/usr/local/cuda'] + sorted(glob.glob('/usr/local/cuda-*'), reverse=True)
    roots = []
    for root in guesses:
        if root and os.path.isfile(os.path.join(root, 'include', 'cuda_runtime.h')) and root not in roots:
            roots.append(root)
    return roots


def _extra_include_and_lib_dirs():
    include_dirs, lib_dirs = [], []
    for root in _cuda_toolkit_roots()[:1]:
        include_dirs.append(os.path.join(root, 'include'))
        for lib_name in ('lib64', 'lib', os.path.join('lib', 'x64')):
            lib_dir = os.path.join(root, lib_name)
            if glob.glob(os.path.join(lib_dir, 'libcudart.so*')) or os.path.isfile(os.path.join(lib_dir, 'cudart.lib')):
                lib_dirs.append(lib_dir)
                break
    # Wheel headers go after the toolkit's so a full toolkit wins when both exist.
    include_dirs += [d for d in _pip_cuda_include_dirs() if d not in include_dirs]
    return include_dirs, lib_dirs


def nvcc_version():
    """Return the release of the nvcc on PATH as 'X.Y', or None when there is no nvcc."""
    nvcc_path = shutil.which('nvcc')
    if nvcc_path is None:
        for root in _cuda_toolkit_roots():
            candidate = os.path.join(root, 'bin', 'nvcc')
            if os.path.isfile(candidate):
                nvcc_path = candidate
                break
    if nvcc_path is None:
        return None
    try:
        banner = subprocess.run([nvcc_path, '--version'], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'release (\d+\.\d+)', banner)
    return match.group(1) if match else None


def _find_msvc_bindir():
    """Windows only: locate cl.exe in any Visual Studio edition/year (including VS2022 under Program Files)."""
    patterns = [
        'C:/Program Files*/Microsoft Visual Studio/*/*/VC/Tools/MSVC/*/bin/Hostx64/x64',
        'C:/Program Files*/Microsoft Visual Studio */vc/bin',
    ]
    for pattern in patterns:
        hits = sorted(glob.glob(pattern), reverse=True)
        if hits:
            return hits[0]
    return None


def _ensure_host_compiler():
    if os.name != 'nt' or shutil.which('cl.exe') is not None:
        return
    bindir = _find_msvc_bindir()
    if bindir is None:
        raise RuntimeError('Could not find MSVC/GCC/CLANG installation on this computer. '
                           'Install Visual Studio (Desktop C++ workload) or put cl.exe on PATH.')
    os.environ['PATH'] = bindir + os.pathsep + os.environ['PATH']


def cuda_arch_list():
    """The arch list a build targets: TORCH_CUDA_ARCH_LIST, else the visible GPUs, else the default."""
    from_env = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if from_env and from_env != 'native':
        return from_env
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return DEFAULT_CUDA_ARCH_LIST
    compiled_sms = [int(re.sub(r'\D', '', name[3:]) or 0) for name in torch.cuda.get_arch_list()
                    if name.startswith('sm_')]
    newest = max(compiled_sms, default=None)
    archs = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        # nvcc may not know a GPU newer than the one torch was built for; the PTX suffix covers it.
        if newest is not None and major * 10 + minor > newest:
            major, minor = divmod(newest, 10)
        label = f'{major}.{minor}'
        if label not in archs:
            archs.append(label)
    archs.sort()
    archs[-1] += '+PTX'
    return ';'.join(archs)


# --------------------------------------------------------------------------------------------------
# Build directory and lock.

def build_root():
    """Root under which plugins are built: $TORCH_EXTENSIONS_DIR or torch's per-user default."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR')
    if root:
        return root
    from torch.utils import cpp_extension
    return cpp_extension.get_default_build_root()


def build_fingerprint(source_paths, header_paths, arch_list, build_kwargs):
    """Hex digest of everything that makes a build reusable: file bytes, versions, archs and flags."""
    digest = hashlib.sha256()
    for path in list(source_paths) + list(header_paths):
        digest.update(os.path.basename(path).encode('utf-8') + b'\0')
        with open(path, 'rb') as handle:
            digest.update(handle.read())
        digest.update(b'\0')
    context = [torch.__version__, str(torch.version.cuda), arch_list, sys.version.split()[0],
               repr(sorted((k, repr(v)) for k, v in build_kwargs.items()))]
    digest.update('\n'.join(context).encode('utf-8'))
    return digest.hexdigest()[:20]


def _pid_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _read_lock_owner(lock_path):
    """Return (hostname, pid) recorded in a lock file, or (None, None) if unreadable."""
    try:
        with open(lock_path, 'r', encoding='utf-8') as handle:
            host, pid_text = handle.read().strip().split(':', 1)
        return host, int(pid_text)
    except (OSError, ValueError):
        return None, None


@contextlib.contextmanager
def build_lock(build_dir, timeout_s=None):
    """Exclusive lock on ``build_dir`` across processes.

    A lock whose owner was killed (same host, pid gone) is removed with a warning. A lock that is
    still held after ``timeout_s`` raises StaleLockError naming the directory to delete.
    """
    timeout_s = lock_timeout_s if timeout_s is None else timeout_s
    os.makedirs(build_dir, exist_ok=True)
    lock_path = os.path.join(build_dir, _LOCK_NAME)
    owner_tag = f'{socket.gethostname()}:{os.getpid()}'
    started = time.monotonic()
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            host, pid = _read_lock_owner(lock_path)
            if host == socket.gethostname() and pid is not None and not _pid_alive(pid):
                warnings.warn(f'Removed a stale plugin build lock left by killed process {pid}: {lock_path}. '
                              f'If the build still misbehaves, delete the directory {build_dir}.', stacklevel=3)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock_path)
                continue
            if time.monotonic() - started > timeout_s:
                raise StaleLockError(
                    f'Timed out after {timeout_s:.0f}s waiting for the plugin build lock {lock_path} '
                    f'(held by {host or "unknown host"}:{pid}). If no other process is building, delete the '
                    f'directory {build_dir} (or the whole {build_root()}) and try again.') from None
            time.sleep(lock_poll_s)
            continue
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(owner_tag)
        break
    try:
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path)


# --------------------------------------------------------------------------------------------------
# Plugin builds.

def _resolve_paths(sources, headers, source_dir):
    if isinstance(sources, str):
        sources = [sources]
    source_paths = [os.path.abspath(os.path.join(source_dir, s) if source_dir else s) for s in sources]
    if headers is None:
        # Upstream's older call style passes no headers; pick up the ones next to the sources so
        # that editing a header still changes the build hash.
        header_paths = []
        for folder in sorted({os.path.dirname(p) for p in source_paths}):
            stems = {os.path.splitext(os.path.basename(p))[0] for p in source_paths if os.path.dirname(p) == folder}
            for candidate in sorted(os.listdir(folder)):
                if candidate.endswith(_HEADER_SUFFIXES) and os.path.splitext(candidate)[0] in stems:
                    header_paths.append(os.path.join(folder, candidate))
    else:
        if isinstance(headers, str):
            headers = [headers]
        header_paths = [os.path.abspath(os.path.join(source_dir, h) if source_dir else h) for h in headers]
    for path in source_paths + header_paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'Plugin source file not found: {path}')
    return source_paths, header_paths


def _failure_message(module_name, build_dir, cause):
    torch_cuda = torch.version.cuda
    found_nvcc = nvcc_version()
    lines = [f'Could not build the CUDA plugin "{module_name}": {type(cause).__name__}: {cause}',
             'Usual fixes:']
    if torch_cuda is None:
        lines.append('  - this torch is a CPU-only build; install a CUDA build of torch.')
    if found_nvcc is None:
        lines.append(f'  - nvcc not found: install the CUDA toolkit {torch_cuda} (conda "cudatoolkit" alone is not '
                     'enough) and put its bin/ on PATH or set CUDA_HOME.')
    elif torch_cuda is not None and found_nvcc.split('.')[0] != str(torch_cuda).split('.')[0]:
        lines.append(f'  - nvcc is CUDA {found_nvcc} but torch was built with CUDA {torch_cuda}; install a '
                     'matching toolkit or torch.')
    else:
        lines.append(f'  - check the toolkit: nvcc is CUDA {found_nvcc}, torch was built with CUDA {torch_cuda}.')
    if shutil.which('ninja') is None:
        lines.append('  - ninja is missing: pip install ninja.')
    compiler = 'cl.exe' if os.name == 'nt' else os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None:
        lines.append(f'  - no C++ compiler ({compiler}) on PATH: install GCC >= 9, Clang or MSVC.')
    lines.append(f'  - clear the build directory {build_dir} and retry (stale or half-finished builds).')
    lines.append("  - or run without kernels: set_preferred_impl('ref') / --ops=ref.")
    return '\n'.join(lines)


@contextlib.contextmanager
def _temporary_env(name, value):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _say(text, end='\n'):
    if verbosity in ('brief', 'full'):
        print(text, end=end, flush=True)


def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Build (once) and return the torch extension ``module_name``; see the module docstring."""
    if verbosity not in _VALID_VERBOSITY:
        raise ValueError(f"custom_ops.verbosity is {verbosity!r}; use one of {', '.join(_VALID_VERBOSITY)}.")
    if module_name in _loaded_plugins:
        return _loaded_plugins[module_name]
    if module_name in _failed_plugins:
        raise _failed_plugins[module_name]

    source_paths, header_paths = _resolve_paths(sources, headers, source_dir)
    arch_list = cuda_arch_list()
    fingerprint = build_fingerprint(source_paths, header_paths, arch_list, build_kwargs)
    build_dir = os.path.join(build_root(), module_name, fingerprint)

    _say(f'Setting up PyTorch plugin "{module_name}"... ', end='' if verbosity == 'brief' else '\n')
    try:
        _ensure_host_compiler()
        module = _build_in(module_name, build_dir, source_paths, header_paths, arch_list, build_kwargs)
    except Exception as cause:  # any toolchain failure: report once with the fixes, then remember it
        _say('Failed!')
        failure = PluginBuildError(module_name, _failure_message(module_name, build_dir, cause))
        failure.__cause__ = cause
        _failed_plugins[module_name] = failure
        raise failure from cause
    _say('Done.')
    _loaded_plugins[module_name] = module
    return module


def _same_bytes(path_a, path_b):
    if not (os.path.isfile(path_a) and os.path.isfile(path_b)):
        return False
    with open(path_a, 'rb') as file_a, open(path_b, 'rb') as file_b:
        return file_a.read() == file_b.read()


def _build_in(module_name, build_dir, source_paths, header_paths, arch_list, build_kwargs):
    from torch.utils import cpp_extension

    with build_lock(build_dir):
        # Build from private copies, so editing the checkout never touches a finished build.
        copied_sources = []
        for path in source_paths + header_paths:
            target = os.path.join(build_dir, os.path.basename(path))
            if not _same_bytes(path, target):
                shutil.copyfile(path, target)
            if path in source_paths:
                copied_sources.append(target)

        include_dirs, lib_dirs = _extra_include_and_lib_dirs()
        kwargs = dict(build_kwargs)
        kwargs['extra_include_paths'] = list(kwargs.get('extra_include_paths') or []) + include_dirs
        if lib_dirs:
            kwargs['extra_ldflags'] = list(kwargs.get('extra_ldflags') or []) + [f'-L{d}' for d in lib_dirs]
        with _temporary_env('TORCH_CUDA_ARCH_LIST', arch_list):
            return cpp_extension.load(name=module_name, sources=copied_sources, build_directory=build_dir,
                                      verbose=(verbosity == 'full'), **kwargs)


def forget_plugin(module_name):
    """Drop the cached module/failure for ``module_name`` (tests; a later call builds again)."""
    _loaded_plugins.pop(module_name, None)
    _failed_plugins.pop(module_name, None)
    _fallback_warned.discard(module_name)
