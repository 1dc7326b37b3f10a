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
    ('Usage: ...', "Try '... --help' for help.") before the error line of an option error. Scripts
    that tee stderr into stdout (dnnlib.util.Logger) must end stdout with the error line.
    """
    assert result.exit_code != 0, f'expected a failure, got exit 0:\n{result.output}'
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f'uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}'
    assert 'Traceback' not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1, f'expected one error line:\n{result.output}'
    stream = result.stderr if result.stderr.strip() else result.stdout
    lines = [line for line in stream.splitlines() if line.strip()]
    assert lines[-1] == errors[0], f'the error line is not the last line:\n{stream}'
    if stream is result.stderr:
        assert all(line.startswith(('Usage: ', 'Try ')) for line in lines[:-1]), f'extra error output:\n{stream}'
    return errors[0]


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
