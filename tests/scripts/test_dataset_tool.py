"""Tests for dataset_tool.py on tiny generated images: output layout, labels, resizing and cropping, skips and errors."""

import gzip
import io
import json
import os
import pickle
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training.dataset import ImageFolderDataset


def _save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array, mode).save(path)


def _pattern(seed, height, width, channels=3):
    shape = [height, width] if channels == 1 else [height, width, channels]
    return np.random.RandomState(seed).randint(0, 256, size=shape, dtype=np.uint8)


def _run(*args):
    result = CliRunner().invoke(dataset_tool.main, [str(arg) for arg in args])
    return result.exit_code, result.output


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        images = {name: np.asarray(PIL.Image.open(io.BytesIO(archive.read(name)))) for name in names if name.endswith('.png')}
        labels = json.loads(archive.read('dataset.json'))['labels']
        stored = {info.compress_type for info in archive.infolist()}
    return names, images, labels, stored


def test_zip_layout_order_and_pixels(tmp_path):
    src = tmp_path / 'src'
    sources = {'b.png': 0, 'a.png': 1, 'sub/c.png': 2}
    for name, seed in sources.items():
        _save(str(src / name), _pattern(seed, 8, 8))
    code, output = _run('--source', src, '--dest', tmp_path / 'out.zip')
    assert code == 0, output
    names, images, labels, stored = _read_zip(tmp_path / 'out.zip')
    assert names == ['00000/img00000000.png', '00000/img00000001.png', '00000/img00000002.png', 'dataset.json']
    assert stored == {zipfile.ZIP_STORED}
    assert labels is None
    # Sorted by relative path: a.png, b.png, sub/c.png.
    for index, seed in enumerate([1, 0, 2]):
        np.testing.assert_array_equal(images[f'00000/img{index:08d}.png'], _pattern(seed, 8, 8))
    assert 'Wrote 3 RGB images of 8x8' in output
    assert ImageFolderDataset(str(tmp_path / 'out.zip')).raw_shape == [3, 3, 8, 8]


def test_folder_dest_and_labels(tmp_path):
    src = tmp_path / 'src'
    for i in range(3):
        _save(str(src / f'{i}.png'), _pattern(i, 4, 4, 1), 'L')
    (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 2], ['1.png', 0], ['2.png', 1]]}))
    code, output = _run('--source', src, '--dest', tmp_path / 'out')
    assert code == 0, output
    labels = json.loads((tmp_path / 'out' / 'dataset.json').read_text())['labels']
    assert labels == [['00000/img00000000.png', 2], ['00000/img00000001.png', 0], ['00000/img00000002.png', 1]]
    image = np.asarray(PIL.Image.open(tmp_path / 'out' / '00000' / 'img00000001.png'))
    assert image.ndim == 2 # Grayscale stays one channel.
    np.testing.assert_array_equal(image, _pattern(1, 4, 4, 1))
    dataset = ImageFolderDataset(str(tmp_path / 'out'), use_labels=True)
    np.testing.assert_array_equal(dataset.get_label(0), [0, 0, 1])


def test_partial_labels_give_null_with_warning(tmp_path):
    src = tmp_path / 'src'
    for i in range(2):
        _save(str(src / f'{i}.png'), _pattern(i, 4, 4))
    (src / 'dataset.json').write_text(json.dumps({'labels': [['0.png', 1]]}))
    code, output = _run('--source', src, '--dest', tmp_path / 'out.zip')
    assert code == 0 and '1 of 2 images have no entry in dataset.json' in output
    assert _read_zip(tmp_path / 'out.zip')[2] is None


def test_nonempty_folder_dest_is_refused(tmp_path):
    _save(str(tmp_path / 'src' / 'a.png'), _pattern(0, 4, 4))
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('x')
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out')
    assert code == 1 and 'must be empty' in output


def test_resize_with_box_filter_is_exact_on_blocks(tmp_path):
    small = _pattern(3, 4, 4)
    big = small.repeat(2, axis=0).repeat(2, axis=1) # Each pixel becomes a 2x2 block.
    _save(str(tmp_path / 'src' / 'a.png'), big)
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--resolution=4x4', '--resize-filter=box')
    assert code == 0, output
    np.testing.assert_array_equal(_read_zip(tmp_path / 'out.zip')[1]['00000/img00000000.png'], small)
    # --width/--height spell the same thing.
    code, _ = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out2.zip', '--width=4', '--height=4', '--resize-filter=box')
    assert code == 0
    np.testing.assert_array_equal(_read_zip(tmp_path / 'out2.zip')[1]['00000/img00000000.png'], small)


def test_center_crop_takes_middle_square(tmp_path):
    wide = _pattern(4, 8, 16) # 16 wide, 8 high.
    _save(str(tmp_path / 'src' / 'a.png'), wide)
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--transform=center-crop', '--resolution=8x8')
    assert code == 0, output
    np.testing.assert_array_equal(_read_zip(tmp_path / 'out.zip')[1]['00000/img00000000.png'], wide[:, 4:12])


def test_center_crop_wide_letterboxes_and_skips_small(tmp_path):
    wide = _pattern(5, 8, 16)
    _save(str(tmp_path / 'src' / 'a.png'), wide)
    _save(str(tmp_path / 'src' / 'b.png'), _pattern(6, 4, 8)) # Too narrow for a 16-wide output.
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--transform=center-crop-wide', '--resolution=16x8')
    assert code == 0, output
    names, images, _, _ = _read_zip(tmp_path / 'out.zip')
    assert len(images) == 1
    canvas = images['00000/img00000000.png']
    assert canvas.shape == (16, 16, 3)
    np.testing.assert_array_equal(canvas[4:12], wide)
    assert canvas[:4].max() == 0 and canvas[12:].max() == 0
    assert 'Skipped 1 input(s)' in output and 'b.png: 8x4 is too small for center-crop-wide' in output


def test_transform_needs_size(tmp_path):
    _save(str(tmp_path / 'src' / 'a.png'), _pattern(0, 8, 8))
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--transform=center-crop')
    assert code == 1 and '--resolution=WxH' in output


@pytest.mark.parametrize('background, expected', [([], [255, 255, 255]), (['--background=black'], [0, 0, 0]), (['--background=10,20,30'], [10, 20, 30])])
def test_rgba_composited_onto_background(tmp_path, background, expected):
    rgba = np.zeros([4, 4, 4], np.uint8)
    rgba[0, 0] = [200, 100, 50, 255] # One opaque pixel, the rest fully transparent.
    _save(str(tmp_path / 'src' / 'a.png'), rgba, 'RGBA')
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', *background)
    assert code == 0, output
    image = _read_zip(tmp_path / 'out.zip')[1]['00000/img00000000.png']
    assert image.shape == (4, 4, 3)
    np.testing.assert_array_equal(image[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(image[3, 3], expected)


def test_corrupt_images_are_skipped_and_reported(tmp_path):
    src = tmp_path / 'src'
    _save(str(src / 'a.png'), _pattern(0, 8, 8))
    (src / 'b.png').write_bytes(b'not an image at all')
    good = io.BytesIO()
    PIL.Image.fromarray(_pattern(1, 64, 64)).save(good, format='PNG')
    (src / 'c.png').write_bytes(good.getvalue()[:300]) # Truncated: header fine, pixels missing.
    _save(str(src / 'd.png'), _pattern(2, 8, 8))
    code, output = _run('--source', src, '--dest', tmp_path / 'out.zip')
    assert code == 0, output
    assert len(_read_zip(tmp_path / 'out.zip')[1]) == 2
    assert 'Skipped 2 input(s)' in output and '  b.png:' in output and '  c.png:' in output


def test_max_images(tmp_path):
    for i in range(5):
        _save(str(tmp_path / 'src' / f'{i}.png'), _pattern(i, 4, 4))
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--max-images=2')
    assert code == 0 and len(_read_zip(tmp_path / 'out.zip')[1]) == 2


def test_color_rgb_unifies_mixed_channels(tmp_path):
    _save(str(tmp_path / 'src' / 'a.png'), _pattern(0, 4, 4))
    _save(str(tmp_path / 'src' / 'b.png'), _pattern(1, 4, 4, 1), 'L')
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'mixed.zip')
    assert code == 1 and 'b.png is 4x4 with 1 channel(s)' in output and '--color=rgb' in output
    assert not (tmp_path / 'mixed.zip').exists() and not (tmp_path / 'mixed.zip.partial').exists()
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'rgb.zip', '--color=rgb')
    assert code == 0, output
    gray = _read_zip(tmp_path / 'rgb.zip')[1]['00000/img00000001.png']
    assert gray.shape == (4, 4, 3)
    np.testing.assert_array_equal(gray[:, :, 0], _pattern(1, 4, 4, 1))


@pytest.mark.parametrize('size, needle', [((8, 16), 'required to be square.  Got 16x8'), ((12, 12), 'required to be power-of-two')])
def test_shape_errors(tmp_path, size, needle):
    _save(str(tmp_path / 'src' / 'a.png'), _pattern(0, *size))
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    assert code == 1 and output.startswith('Error: ') and needle in output
    assert len(output.strip().splitlines()) == 1


def test_mixed_sizes_error_names_image(tmp_path):
    _save(str(tmp_path / 'src' / 'a.png'), _pattern(0, 8, 8))
    _save(str(tmp_path / 'src' / 'b.png'), _pattern(1, 16, 16))
    code, output = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    assert code == 1 and 'b.png is 16x16' in output and 'a.png is 8x8' in output and '--resolution=WxH' in output


def test_missing_and_unknown_sources(tmp_path):
    code, output = _run('--source', tmp_path / 'nope', '--dest', tmp_path / 'o.zip')
    assert code == 1 and 'Missing input file or directory' in output
    (tmp_path / 'data.bin').write_bytes(b'123')
    code, output = _run('--source', tmp_path / 'data.bin', '--dest', tmp_path / 'o.zip')
    assert code == 1 and 'unknown archive type' in output


def test_bad_resolution_option(tmp_path):
    code, output = _run('--source', tmp_path, '--dest', tmp_path / 'o.zip', '--resolution=big')
    assert code == 2 and 'expected WxH' in output


def test_zip_source_with_labels(tmp_path):
    with zipfile.ZipFile(tmp_path / 'in.zip', 'w') as archive:
        for i in range(2):
            buffer = io.BytesIO()
            PIL.Image.fromarray(_pattern(i, 4, 4)).save(buffer, format='PNG')
            archive.writestr(f'imgs/{i}.png', buffer.getvalue())
        archive.writestr('dataset.json', json.dumps({'labels': [['imgs/0.png', 1], ['imgs/1.png', 0]]}))
    code, output = _run('--source', tmp_path / 'in.zip', '--dest', tmp_path / 'out.zip')
    assert code == 0, output
    _, images, labels, _ = _read_zip(tmp_path / 'out.zip')
    assert labels == [['00000/img00000000.png', 1], ['00000/img00000001.png', 0]]
    np.testing.assert_array_equal(images['00000/img00000001.png'], _pattern(1, 4, 4))


def test_cifar10_source(tmp_path):
    path = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(path, 'w:gz') as archive:
        for batch in range(1, 6):
            data = np.full([2, 3072], batch, np.uint8)
            payload = pickle.dumps({'data': data, 'labels': [batch % 10, 0]})
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{batch}')
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    code, output = _run('--source', path, '--dest', tmp_path / 'out.zip')
    assert code == 0, output
    _, images, labels, _ = _read_zip(tmp_path / 'out.zip')
    assert len(images) == 10 and images['00000/img00000004.png'].shape == (32, 32, 3)
    assert int(images['00000/img00000004.png'].mean()) == 3 and labels[4] == ['00000/img00000004.png', 3]


def test_mnist_source_is_padded_to_32(tmp_path):
    images = np.full([3, 28, 28], 7, np.uint8)
    with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(b'\0' * 16 + images.tobytes())
    with gzip.open(tmp_path / 'train-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(b'\0' * 8 + bytes([4, 1, 9]))
    code, output = _run('--source', tmp_path / 'train-images-idx3-ubyte.gz', '--dest', tmp_path / 'out.zip')
    assert code == 0, output
    _, written, labels, _ = _read_zip(tmp_path / 'out.zip')
    image = written['00000/img00000002.png']
    assert image.shape == (32, 32) and image[0, 0] == 0 and image[2, 2] == 7
    assert [label for _, label in labels] == [4, 1, 9]
