"""Tests for training/image_grid.py: layout, value mapping, channel handling and atomic writing."""
import os

import numpy as np
import PIL.Image
import pytest
import torch

from training import image_grid


def test_grid_places_images_row_by_row():
    # Image k is filled with value 10*k, so each tile's position tells which image landed there.
    images = np.stack([np.full([3, 2, 2], 10 * k, dtype=np.uint8) for k in range(6)])
    tiled = image_grid.tile_images(images, grid_size=(3, 2))
    assert tiled.shape == (4, 6, 3)
    assert tiled[0, 0, 0] == 0 and tiled[0, 2, 0] == 10 and tiled[0, 4, 0] == 20
    assert tiled[2, 0, 0] == 30 and tiled[2, 4, 0] == 50


def test_float_range_maps_to_full_uint8_range_with_rounding():
    values = torch.tensor([-1.0, -0.999, 0.0, 1.0, 2.0]).reshape(5, 1, 1, 1)
    assert image_grid.to_uint8(values, (-1, 1)).reshape(-1).tolist() == [0, 0, 128, 255, 255]


def test_write_image_grid_writes_grayscale_and_rgb(tmp_path):
    gray = np.zeros([4, 1, 3, 3], dtype=np.float32)
    image_grid.write_image_grid(gray, tmp_path / 'g.png', drange=(0, 1), grid_size=(2, 2))
    rgb = torch.ones([2, 3, 3, 3])
    image_grid.write_image_grid(rgb, tmp_path / 'c.png', drange=(-1, 1), grid_size=(2, 1))
    assert PIL.Image.open(tmp_path / 'g.png').mode == 'L'
    with PIL.Image.open(tmp_path / 'c.png') as picture:
        assert picture.mode == 'RGB' and picture.size == (6, 3)
        assert np.asarray(picture).min() == 255


def test_bad_grids_are_refused(tmp_path):
    with pytest.raises(ValueError, match='do not fill'):
        image_grid.write_image_grid(np.zeros([3, 3, 2, 2]), tmp_path / 'x.png', (0, 1), (2, 2))
    with pytest.raises(ValueError, match='4-channel'):
        image_grid.write_image_grid(np.zeros([4, 4, 2, 2]), tmp_path / 'x.png', (0, 1), (2, 2))
    assert not os.listdir(tmp_path)


def test_failed_write_keeps_the_previous_grid(tmp_path, monkeypatch):
    path = tmp_path / 'fakes.png'
    image_grid.write_image_grid(np.zeros([1, 3, 2, 2]), path, (0, 1), (1, 1))
    before = path.read_bytes()

    def disk_full(self, fp, format=None, **params):
        fp.write(b'partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(PIL.Image.Image, 'save', disk_full)
    with pytest.raises(OSError):
        image_grid.write_image_grid(np.ones([1, 3, 2, 2]), path, (0, 1), (1, 1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['fakes.png']
