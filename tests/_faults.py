"""Helpers for fault-injection tests: run a click command and check that it failed with one line."""

import errno
import pickle

from click.testing import CliRunner


def invoke(command, args):
    """Run a click command in-process; stdout and stderr are captured together."""
    return CliRunner().invoke(command, [str(arg) for arg in args], catch_exceptions=True)


def error_line(result):
    """Assert the command failed with exactly one 'Error: ...' line and no traceback; return that line.

    Progress lines on stdout (such as 'Loading ...') are allowed, and so is click's usage preamble
    ('Usage: ...', "Try '... --help' for help.") before the error line of an option error.
    """
    assert result.exit_code != 0, f'expected a failure, got exit 0:\n{result.output}'
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f'uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}'
    assert 'Traceback' not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith('Error: '), f'expected an error line on stderr:\n{result.stderr}'
    assert all(line.startswith(('Usage: ', 'Try ')) for line in lines[:-1]), f'more than one error line:\n{result.stderr}'
    return lines[-1]


def disk_full(*_args, **_kwargs):
    """Stand-in for a write that hits a full disk."""
    raise OSError(errno.ENOSPC, 'No space left on device')


class Unimportable:
    """Pickles as a reference to a module that does not exist, like a pickle from another project."""

    def __reduce__(self):
        return (_missing_module_function, ())


def _missing_module_function():  # pragma: no cover - never called; only its (rewritten) name is pickled
    raise AssertionError


def foreign_pickle_bytes():
    """A valid pickle whose class lives in a module this project does not have."""
    data = pickle.dumps(Unimportable(), protocol=2)
    own = _missing_module_function.__module__.encode()
    return data.replace(own, b'some_other_project_xyz', 1)
