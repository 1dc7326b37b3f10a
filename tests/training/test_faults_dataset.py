"""Faults in training data: images cut short after their header, and malformed dataset.json files."""

import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

from training.dataset import DatasetError, ImageFolderDataset, find_undecodable_images, verify_all_images


def png_bytes(index, size=8):
    pixels = np.random.RandomState(index).randint(0, 256, size=[size, size, 3], dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format='PNG')
    return buffer.getvalue()


def cut_short(data):
    """The same PNG with its pixel data cut off half-way: the header (size, mode) still reads fine."""
    return data[:len(data) // 2]


def write_folder(root, count, bad=(), labels=None):
    root.mkdir()
    for index in range(count):
        data = png_bytes(index)
        (root / f'{index:02d}.png').write_bytes(cut_short(data) if index in bad else data)
    if labels is not None:
        (root / 'dataset.json').write_text(labels)
    return root


def write_zip(path, count, bad=()):
    with zipfile.ZipFile(path, 'w') as archive:
        for index in range(count):
            data = png_bytes(index)
            archive.writestr(f'{index:02d}.png', cut_short(data) if index in bad else data)
    return path


def one_line(error):
    message = str(error.value)
    assert '\n' not in message and 'Traceback' not in message
    return message


@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_truncated_image_passes_the_header_check_but_not_verification(tmp_path, container):
    path = (write_folder(tmp_path / 'set', 6, bad={3}) if container == 'folder'
            else write_zip(tmp_path / 'set.zip', 6, bad={3}))
    dataset = ImageFolderDataset(path)          # headers only: opening succeeds, as before
    assert len(dataset) == 6
    with pytest.raises(DatasetError) as error:
        verify_all_images(dataset, print_fn=None)
    message = one_line(error)
    assert message.startswith('1 of 6 images cannot be decoded: ') and '03.png' in message
    assert 'truncated' in message and 'dataset_tool.py' in message
    for clean in ('00.png', '01.png', '02.png', '04.png', '05.png'):
        assert clean not in message
    with pytest.raises(DatasetError) as error:     # reading the item itself: one line naming the file
        dataset[3]
    assert '03.png' in one_line(error)


def test_verification_lists_bad_files_and_counts_the_rest(tmp_path):
    dataset = ImageFolderDataset(write_folder(tmp_path / 'set', 5, bad={0, 2, 4}))
    with pytest.raises(DatasetError) as error:
        verify_all_images(dataset, print_fn=None, max_listed=2)
    message = one_line(error)
    assert message.startswith('3 of 5 images') and '00.png' in message and '02.png' in message
    assert '04.png' not in message and 'and 1 more' in message
    problems = find_undecodable_images(dataset)
    assert [line.split(': ')[0].endswith(name) for line, name in zip(problems, ['00.png', '02.png', '04.png'])] == [True] * 3


def test_verification_checks_each_stored_image_once_and_prints_progress(tmp_path):
    dataset = ImageFolderDataset(write_folder(tmp_path / 'set', 5), xflip=True)
    assert len(dataset) == 10
    printed = []
    verify_all_images(dataset, print_fn=printed.append, progress_every=2)
    assert printed == ['Decoding all 5 images of set to check them...', '  checked 2/5 images',
                       '  checked 4/5 images', '  checked 5/5 images']
    quiet = []
    verify_all_images(dataset, print_fn=quiet.append)   # small sets: no progress lines
    assert quiet == []


def test_verification_covers_only_the_chosen_subset(tmp_path):
    root = write_folder(tmp_path / 'set', 6)
    dataset = ImageFolderDataset(root, max_size=2, random_seed=0)
    chosen = sorted({dataset.get_details(i).raw_idx for i in range(len(dataset))})
    unused = next(index for index in range(6) if index not in chosen)
    (root / f'{unused:02d}.png').write_bytes(cut_short(png_bytes(unused)))
    verify_all_images(dataset, print_fn=None)          # a bad file outside the subset is never read
    (root / f'{chosen[0]:02d}.png').write_bytes(cut_short(png_bytes(chosen[0])))
    with pytest.raises(DatasetError) as error:
        verify_all_images(dataset, print_fn=None)
    assert one_line(error).startswith('1 of 2 images')


@pytest.mark.parametrize('labels, needle', [
    ('{"labels": [["00.png"]]}', 'entry 0 is ["00.png"]'),
    ('{"labels": [["00.png", 0], "01.png"]}', 'entry 1 is "01.png"'),
    ('{"labels": [["00.png", 0, 1]]}', 'entry 0'),
    ('{"labels": 5}', 'must be a list or null'),
    ('{"labels": {"00.png": 1}}', 'must be a list or null'),
    ('{"labels": [["00.png", 1]', 'is not valid'),
    ('[1, 2]', 'is not valid'),
])
def test_malformed_dataset_json_is_one_line_when_opened(tmp_path, labels, needle):
    root = write_folder(tmp_path / 'set', 2, labels=labels)
    with pytest.raises(DatasetError) as error:
        ImageFolderDataset(root, use_labels=True)
    message = one_line(error)
    assert 'dataset.json' in message and needle in message
    assert len(ImageFolderDataset(root, use_labels=False)) == 2   # without labels the file is not read
