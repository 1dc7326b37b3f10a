"""Tests for the W-space interpolation strips written at each snapshot."""
import os

import numpy as np
import pytest
import torch

from stylegan2_ada_mixdl.mixdl.interp import images_to_grid, interp_filename, interpolation_images, latents_for_seeds


class _LinearToyGenerator(torch.nn.Module):
    """Mapping = fixed linear map to 2 ws, synthesis = image whose pixels equal ws' mean: easy to check."""
    z_dim, c_dim, num_ws, w_dim = 3, 0, 2, 3

    def __init__(self):
        super().__init__()
        self.map = torch.nn.Parameter(torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, -1.0]]))

    def mapping(self, z, c, truncation_psi=1, skip_w_avg_update=False):
        return (z @ self.map).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode='const'):
        return ws.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand(-1, 3, 2, 2) * 0.1


def test_strip_runs_along_straight_lines_in_w():
    G = _LinearToyGenerator()
    images = interpolation_images(G, seed_pairs=((0, 1), (5, 9)), steps=8, batch_size=3)
    assert images.shape == (2, 8, 3, 2, 2)
    for row, (a, b) in enumerate(((0, 1), (5, 9))):
        ends = [G.synthesis(G.mapping(torch.from_numpy(np.random.RandomState(s).randn(3)).float()[None], None))
                for s in (a, b)]
        torch.testing.assert_close(images[row, 0], ends[0][0])
        torch.testing.assert_close(images[row, -1], ends[1][0])
        values = images[row, :, 0, 0, 0]
        torch.testing.assert_close(values[1:] - values[:-1], (values[-1] - values[0]).expand(7) / 7)


def test_grid_layout_and_quantisation():
    images = torch.zeros(2, 3, 1, 2, 2)
    images[1, 2] = 1.0   # bottom-right tile white
    images[0, 0] = -1.0  # top-left tile black
    grid = images_to_grid(images)
    assert grid.shape == (4, 6, 1) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 0 and grid[3, 5, 0] == 255 and grid[0, 2, 0] == 128


def test_bad_arguments_and_file_name():
    with pytest.raises(ValueError, match='at least 2 steps'):
        interpolation_images(_LinearToyGenerator(), steps=1)
    assert interp_filename('run', '000004.500') == os.path.join('run', 'fakes-interp-000004.500.png')


def test_latents_for_seeds_follow_generate_py():
    z = latents_for_seeds([3, 0, 3], z_dim=5)
    assert z.dtype == torch.float32 and z.shape == (3, 5)
    np.testing.assert_array_equal(z[0].numpy(), np.random.RandomState(3).randn(5).astype(np.float32))
    np.testing.assert_array_equal(z[1].numpy(), np.random.RandomState(0).randn(5).astype(np.float32))
    assert torch.equal(z[0], z[2])
