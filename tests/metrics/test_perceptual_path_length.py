"""Tests for PPL: slerp, the trimmed mean, and one step distance against a direct computation."""

import numpy as np
import torch

from metrics import metric_utils, perceptual_path_length as ppl

from .standins import ToyGenerator


def test_slerp_endpoints_and_unit_norm():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    start = ppl.slerp(a, b, torch.zeros(4))
    end = ppl.slerp(a, b, torch.ones(4))
    torch.testing.assert_close(start, a / a.norm(dim=1, keepdim=True))
    torch.testing.assert_close(end, b / b.norm(dim=1, keepdim=True))
    middle = ppl.slerp(a, b, torch.full([4], 0.5))
    torch.testing.assert_close(middle.norm(dim=1), torch.ones(4))
    # The midpoint is equally far (in angle) from both ends.
    cos_a = (middle * start).sum(1)
    cos_b = (middle * end).sum(1)
    torch.testing.assert_close(cos_a, cos_b)


def test_trimmed_mean_drops_outliers():
    values = np.concatenate([np.full(990, 1.0), np.full(5, 1000.0), np.full(5, -1000.0)])
    assert ppl.trimmed_mean(values) == 1.0
    # With 100 values the 1st percentile (rounded down) is the minimum itself, so nothing is dropped below.
    assert ppl.trimmed_mean(np.concatenate([np.full(99, 1.0), [-99.0]])) == 0.0


def test_step_distance_matches_direct_computation(metric_env):
    vgg = metric_utils.get_feature_detector(metric_utils.VGG16_URL)
    G = ToyGenerator(kind='smooth').eval()
    z = torch.randn(4, G.z_dim)
    c = torch.zeros(2, 0)
    t = torch.tensor([0.25, 0.75])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        got = ppl.path_step_distances(G, vgg, z, c, t, 1e-2, 'w', False, gen)
        w = G.mapping(z, None)
        w0, w1 = w[:2], w[2:]
        noise = torch.randn(G.synthesis.b4.noise_const.shape, generator=torch.Generator().manual_seed(0))
        assert torch.equal(G.synthesis.b4.noise_const, noise)
        img_a = G.synthesis(w0 + (w1 - w0) * t.view(-1, 1, 1))
        img_b = G.synthesis(w0 + (w1 - w0) * (t.view(-1, 1, 1) + 1e-2))
        ea = vgg((img_a + 1) * 127.5, resize_images=False, return_lpips=True)
        eb = vgg((img_b + 1) * 127.5, resize_images=False, return_lpips=True)
        expected = (ea - eb).square().sum(1) / 1e-4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_center_crop_face():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    crop = ppl.center_crop_face(x)
    assert crop.shape == (1, 1, 4, 4) and crop[0, 0, 0, 0].item() == 3 * 8 + 2
