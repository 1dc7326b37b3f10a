"""Tests for training/dataset.py on tiny generated images: layout, labels, subsets, x-flips and bad inputs."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest

from training.dataset import DatasetError, ImageFolderDataset


def _pixels(index, size=8, channels=3):
    """A distinct, non-symmetric test pattern for image `index`."""
    rng = np.random.RandomState(index)
    shape = [size, size] if channels == 1 else [size, size, channels]
    return rng.randint(0, 256, size=shape, dtype=np.uint8)


def _png_bytes(array, mode=None):
    buffer = io.BytesIO()
    PIL.Image.fromarray(array, mode).save(buffer, format='PNG')
    return buffer.getvalue()


def _write_folder(root, images, labels=None):
    os.makedirs(root, exist_ok=True)
    for name, data in images.items():
        target = os.path.join(root, *name.split('/'))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as f:
            f.write(data)
    if labels is not None:
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': labels}, f)
    return str(root)


def _write_zip(path, images, labels=None):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as archive:
        for name, data in images.items():
            archive.writestr(name, data)
        if labels is not None:
            archive.writestr('dataset.json', json.dumps({'labels': labels}))
    return str(path)


def _four_images(size=8, channels=3):
    # Deliberately out of order and nested, to check sorting by relative path.
    names = ['b/img1.png', 'a.png', 'b/img0.png', 'c.png']
    return {name: _png_bytes(_pixels(i, size, channels)) for i, name in enumerate(names)}, names


@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_reads_images_sorted_with_values(tmp_path, container):
    images, names = _four_images()
    path = _write_folder(tmp_path / 'set', images) if container == 'folder' else _write_zip(tmp_path / 'set.zip', images)
    dataset = ImageFolderDataset(path)
    assert dataset.name == 'set'
    assert len(dataset) == 4
    assert dataset.image_shape == [3, 8, 8]
    assert dataset.num_channels == 3 and dataset.resolution == 8
    assert dataset.raw_shape == [4, 3, 8, 8]
    assert dataset.has_labels is False and dataset.label_shape == [0]
    order = sorted(names)
    for idx, name in enumerate(order):
        image, label = dataset[idx]
        assert image.dtype == np.uint8 and image.shape == (3, 8, 8)
        np.testing.assert_array_equal(image, _pixels(names.index(name)).transpose(2, 0, 1))
        assert label.shape == (0,) and label.dtype == np.float32


def test_grayscale_is_hw1(tmp_path):
    images = {f'{i}.png': _png_bytes(_pixels(i, 4, 1)) for i in range(2)}
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'gray', images))
    assert dataset.image_shape == [1, 4, 4]
    np.testing.assert_array_equal(dataset[1][0][0], _pixels(1, 4, 1))


def test_jpeg_is_accepted(tmp_path):
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full([8, 8, 3], 200, np.uint8)).save(buffer, format='JPEG', quality=95)
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'jpg', {'x.jpg': buffer.getvalue()}))
    image, _ = dataset[0]
    assert image.shape == (3, 8, 8) and abs(int(image.mean()) - 200) <= 2


@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_integer_labels_become_onehot(tmp_path, container):
    images, names = _four_images()
    labels = [[name, i % 3] for i, name in enumerate(names)]
    writer = _write_folder if container == 'folder' else _write_zip
    path = writer(tmp_path / ('set' if container == 'folder' else 'set.zip'), images, labels)
    dataset = ImageFolderDataset(path, use_labels=True)
    assert dataset.has_labels and dataset.has_onehot_labels
    assert dataset.label_shape == [3] and dataset.label_dim == 3
    # Sorted order is a.png (label 1), b/img0.png (2), b/img1.png (0), c.png (0).
    np.testing.assert_array_equal(dataset.get_label(0), [0, 1, 0])
    np.testing.assert_array_equal(dataset[1][1], [0, 0, 1])
    assert dataset.get_details(1).raw_label == 2
    # Without use_labels the same data reports no labels.
    assert ImageFolderDataset(path).label_shape == [0]


def test_vector_labels_stay_float(tmp_path):
    images, names = _four_images()
    labels = [[name, [i * 0.5, 1.0]] for i, name in enumerate(names)]
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'set', images, labels), use_labels=True)
    assert not dataset.has_onehot_labels and dataset.label_shape == [2]
    np.testing.assert_allclose(dataset.get_label(0), [0.5, 1.0])  # a.png was written second


def test_null_labels_mean_unlabelled(tmp_path):
    images, _ = _four_images()
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'set', images, labels=None), use_labels=True)
    assert dataset.has_labels is False


def test_missing_label_is_named(tmp_path):
    images, names = _four_images()
    labels = [[name, 0] for name in names[1:]]
    with pytest.raises(DatasetError, match=r"no label for 'b/img1.png'"):   # checked when the dataset is opened
        ImageFolderDataset(_write_folder(tmp_path / 'set', images, labels), use_labels=True)


def test_xflip_doubles_and_mirrors(tmp_path):
    images, names = _four_images()
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'set', images), xflip=True)
    assert len(dataset) == 8
    plain, _ = dataset[0]
    mirrored, _ = dataset[4]
    np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])
    details = dataset.get_details(4)
    assert details.raw_idx == 0 and details.xflip is True
    assert dataset.get_details(0).xflip is False


def test_max_size_is_seeded_sorted_subset(tmp_path):
    images = {f'{i:02d}.png': _png_bytes(_pixels(i, 4)) for i in range(10)}
    path = _write_folder(tmp_path / 'set', images)
    first = ImageFolderDataset(path, max_size=4, random_seed=1)
    again = ImageFolderDataset(path, max_size=4, random_seed=1)
    other = ImageFolderDataset(path, max_size=4, random_seed=2)
    chosen = [first.get_details(i).raw_idx for i in range(len(first))]
    assert len(first) == 4 and chosen == sorted(chosen) and len(set(chosen)) == 4
    assert chosen == [again.get_details(i).raw_idx for i in range(4)]
    assert chosen != [other.get_details(i).raw_idx for i in range(4)]
    # Same rule as upstream: a seeded permutation, first max_size entries, sorted.
    assert chosen == sorted(np.random.RandomState(1).permutation(10)[:4].tolist())
    assert len(ImageFolderDataset(path, max_size=100)) == 10


def test_resolution_argument(tmp_path):
    images, _ = _four_images()
    path = _write_folder(tmp_path / 'set', images)
    assert ImageFolderDataset(path, resolution=8).resolution == 8
    with pytest.raises(IOError, match='Image files do not match the specified resolution'):
        ImageFolderDataset(path, resolution=16)


def test_pickles_for_workers_with_open_zip(tmp_path):
    images, _ = _four_images()
    dataset = ImageFolderDataset(_write_zip(tmp_path / 'set.zip', images), xflip=True)
    expected = dataset[3][0]  # Opens the zip handle.
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone[3][0], expected)
    clone.close()
    dataset.close()


#----------------------------------------------------------------------------
# Bad inputs: each gives one DatasetError line naming the problem and the fix.

def _error_of(path, **kwargs):
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path), **kwargs)
    message = str(info.value)
    assert '\n' not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
    return message


def test_missing_path(tmp_path):
    message = _error_of(tmp_path / 'nowhere')
    assert 'Path must point to a directory or zip' in message and 'does not exist' in message


def test_not_a_zip_or_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    assert 'Path must point to a directory or zip' in _error_of(tmp_path / 'notes.txt')


def test_empty_folder(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('no images here')
    assert 'No image files found' in _error_of(tmp_path / 'empty')


def test_non_square(tmp_path):
    path = _write_folder(tmp_path / 'set', {'a.png': _png_bytes(np.zeros([8, 16, 3], np.uint8))})
    message = _error_of(path)
    assert 'a.png is 16x8' in message and 'square' in message and '--transform=center-crop --resolution=8x8' in message


def test_non_power_of_two(tmp_path):
    path = _write_folder(tmp_path / 'set', {'a.png': _png_bytes(np.zeros([12, 12, 3], np.uint8))})
    message = _error_of(path)
    assert 'power of two' in message and '--resolution=8x8' in message  # ties round down: shrink, don't invent pixels


def test_mixed_sizes(tmp_path):
    path = _write_folder(tmp_path / 'set', {'a.png': _png_bytes(_pixels(0, 8)), 'b.png': _png_bytes(_pixels(1, 16))})
    message = _error_of(path)
    assert 'b.png is 16x16' in message and 'a.png is 8x8' in message and '--resolution=8x8' in message


def test_mixed_channels(tmp_path):
    path = _write_folder(tmp_path / 'set', {'a.png': _png_bytes(_pixels(0, 8, 3)), 'b.png': _png_bytes(_pixels(1, 8, 1))})
    message = _error_of(path)
    assert 'b.png has 1 channel(s)' in message and '--color=rgb' in message


def test_rgba_is_rejected_with_fix(tmp_path):
    path = _write_folder(tmp_path / 'set', {'a.png': _png_bytes(_pixels(0, 8, 4), 'RGBA')})
    message = _error_of(path)
    assert 'alpha channel' in message and 'dataset_tool.py' in message


def test_corrupt_image(tmp_path):
    images, _ = _four_images()
    images['d.png'] = b'\x89PNG\r\n\x1a\n' + b'garbage' * 10
    message = _error_of(_write_folder(tmp_path / 'set', images))
    assert 'd.png is not a readable image' in message


def test_truncated_image_fails_on_load_naming_file(tmp_path):
    images, _ = _four_images(size=64)
    images['a.png'] = images['a.png'][:200]  # Header intact, pixel data cut off.
    dataset = ImageFolderDataset(_write_folder(tmp_path / 'set', images))
    with pytest.raises(DatasetError, match=r'a\.png could not be decoded'):
        dataset[0]


def test_corrupt_zip(tmp_path):
    (tmp_path / 'broken.zip').write_bytes(b'PK\x03\x04 this is not really a zip')
    message = _error_of(tmp_path / 'broken.zip')
    assert 'not a readable zip' in message and 'dataset_tool.py' in message
