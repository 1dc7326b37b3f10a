"""dnnlib.cli: OSErrors become one line naming the path, the cause and what to do."""

import errno

import click
import pytest

from dnnlib import cli


def test_errno_errors_name_the_path_and_advice():
    assert cli.describe_os_error(OSError(errno.ENOSPC, 'No space left on device', 'out/a.png')) == \
        'out/a.png: no space left on the device; free some space or choose another location'
    assert cli.describe_os_error(FileExistsError(errno.EEXIST, 'File exists', 'taken')).startswith('taken: it already exists')
    assert cli.describe_os_error(OSError(errno.EXDEV, 'Invalid cross-device link', 'a', None, 'b')) == 'a -> b: Invalid cross-device link'


def test_errors_without_errno_keep_their_message():
    assert cli.describe_os_error(OSError('dataset x is broken')) == 'dataset x is broken'


def test_dataloader_worker_errors_keep_only_the_worker_message():
    text = ('Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n'
            '  File "x.py", line 1, in f\n    raise DatasetError(...)\n'
            'training.dataset.DatasetError: data/a.png could not be decoded (image file is truncated)\n')
    assert cli.describe_os_error(OSError(text)) == 'data/a.png could not be decoded (image file is truncated)'


def test_about_path_fills_in_a_missing_file_name():
    with pytest.raises(OSError) as error:
        with cli.about_path('out/grid.png'):
            raise OSError(errno.ENOSPC, 'No space left on device')
    assert error.value.filename == 'out/grid.png'
    with pytest.raises(OSError) as error:
        with cli.about_path('out/grid.png'):
            raise OSError(errno.EACCES, 'Permission denied', 'out')
    assert error.value.filename == 'out'


def test_one_line_errors_turns_oserror_into_click_exception():
    @cli.one_line_errors
    def command():
        raise PermissionError(errno.EACCES, 'Permission denied', '/ro/x')
    with pytest.raises(click.ClickException) as error:
        command()
    assert error.value.message == '/ro/x: permission denied; choose a location you may use, or change its permissions'
