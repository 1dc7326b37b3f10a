"""One-line errors for the command-line scripts: a failed file operation becomes a click error that
names the path and the cause (and what to do), never a traceback."""

import contextlib
import errno
import functools
import os

import click

# What each common errno means for someone running a script, and what to do about it.
_ERRNO_ADVICE = {
    errno.ENOSPC: 'no space left on the device; free some space or choose another location',
    errno.EACCES: 'permission denied; choose a location you may use, or change its permissions',
    errno.EPERM: 'operation not permitted; choose a location you may use, or change its permissions',
    errno.EROFS: 'the file system is read-only; choose another location',
    errno.ENOENT: 'no such file or folder; check the path',
    errno.ENOTDIR: 'part of the path is a file, not a folder; choose another path',
    errno.EEXIST: 'it already exists and is not a folder; choose another path or remove it',
    errno.EISDIR: 'it is a folder, not a file; give a file name',
    errno.ENAMETOOLONG: 'the name is too long; choose a shorter path',
    errno.EMFILE: 'too many open files; raise the limit (ulimit -n) or close other programs',
}
if hasattr(errno, 'EDQUOT'):
    _ERRNO_ADVICE[errno.EDQUOT] = 'disk quota exceeded; free some space or choose another location'


def describe_os_error(error):
    """One line for an OSError: '<path>: <cause>; <advice>' when the error carries a path and errno,
    otherwise the error's own message (errors such as DatasetError already read as one line)."""
    if error.errno is None:
        return _worker_message(str(error))
    cause = _ERRNO_ADVICE.get(error.errno) or error.strerror or str(error)
    if error.filename is None:
        return cause
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where = f'{where} -> {os.fsdecode(error.filename2)}'
    return f'{where}: {cause}'


def _worker_message(text):
    """torch's DataLoader re-raises a worker's exception with the worker's whole traceback as its
    message; the worker's own message is the last line, after 'module.ErrorType: '."""
    if 'Original Traceback' not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(': ', 1)[1] if ': ' in last else last


@contextlib.contextmanager
def about_path(path):
    """Attach `path` to OSErrors raised inside the block that do not name a file themselves
    (a failing write() on a full disk carries only its errno)."""
    try:
        yield
    except OSError as error:
        if error.errno is not None and error.filename is None:
            error.filename = os.fspath(path)
        raise


def one_line_errors(command):
    """Decorate a click command's function so that an OSError leaving it is reported as one line.

    Apply it closest to the `def`, below the click decorators."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OSError as error:
            raise click.ClickException(describe_os_error(error)) from None
    return run
