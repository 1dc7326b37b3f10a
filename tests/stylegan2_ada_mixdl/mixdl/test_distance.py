"""Tests for the MixDL distance losses against explicit-loop references."""
import math

import pytest
import torch

from stylegan2_ada_mixdl.mixdl.coefficients import sample_coefficients
from stylegan2_ada_mixdl.mixdl.distance import (centred_cosine_similarity_matrix, coefficient_kl,
                                                cosine_similarity_matrix, distance_layer_indices,
                                                feature_distance_loss, layered_distance_loss, layered_similarities,
                                                sample_feature_layers)

LAYER_SHAPES = [(8, 4, 4), (6, 8, 8), (6, 8, 8), (4, 16, 16), (4, 16, 16)]


def _loop_kl(sim_rows, coefs):
    """KL(softmax(C) || softmax(s)) summed over all B*B entries, over B^2, one element at a time."""
    batch = coefs.shape[0]
    total = 0.0
    for k in range(batch):
        p_norm = sum(math.e ** coefs[k, j] for j in range(batch))
        q_norm = sum(torch.exp(sim_rows[k][j]) for j in range(batch))
        for i in range(batch):
            p = math.e ** coefs[k, i] / p_norm
            q = torch.exp(sim_rows[k][i]) / q_norm
            total = total + p * (math.log(p) - torch.log(q))
    return total / batch ** 2


def _loop_cos(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return (a * b).sum() / (a.norm() * b.norm())


def _loop_layered_loss(anchor_feats, source_feats, layers, coefs):
    batch = coefs.shape[0]
    sims = [[_loop_cos(anchor_feats[layers[k]][k], source_feats[layers[k]][i]) for i in range(batch)]
            for k in range(batch)]
    return _loop_kl(sims, coefs.double())


def _random_features(batch, dtype, gen):
    anchors = [torch.randn(batch, *shape, generator=gen).to(dtype).requires_grad_() for shape in LAYER_SHAPES]
    sources = [torch.randn(batch, *shape, generator=gen).to(dtype).requires_grad_() for shape in LAYER_SHAPES]
    return anchors, sources


@pytest.mark.parametrize('batch', [1, 2, 4, 8])
def test_layered_loss_matches_loop_in_value_and_gradient(batch):
    gen = torch.Generator().manual_seed(batch)
    anchors, sources = _random_features(batch, torch.float32, gen)
    coefs = sample_coefficients(batch, generator=gen)
    layers = sample_feature_layers(batch, len(LAYER_SHAPES), generator=gen)
    assert layers.min() >= 1 and layers.max() <= len(LAYER_SHAPES) - 2

    fast = layered_distance_loss(anchors, sources, layers, coefs)
    fast_grads = torch.autograd.grad(fast, anchors + sources, allow_unused=True)
    slow = _loop_layered_loss(anchors, sources, layers.tolist(), coefs)
    slow_grads = torch.autograd.grad(slow, anchors + sources, allow_unused=True)

    assert fast.dtype == torch.float32 and fast.dim() == 0
    torch.testing.assert_close(fast.double(), slow, atol=1e-6, rtol=1e-5)
    for fg, sg, layer in zip(fast_grads, slow_grads, list(range(len(LAYER_SHAPES))) * 2):
        if sg is None:  # a layer no anchor drew gets no gradient from either side
            assert fg is None or torch.count_nonzero(fg) == 0
            continue
        torch.testing.assert_close(fg, sg, atol=1e-10, rtol=1e-3)
    if batch > 1:  # with one sample every softmax is exactly 1, so the loss and its gradient vanish
        assert any(g is not None and g.abs().sum() > 0 for g in fast_grads)


def test_every_layer_drawn_and_regrouped_in_anchor_order():
    gen = torch.Generator().manual_seed(0)
    anchors, sources = _random_features(4, torch.float32, gen)
    layers = torch.tensor([3, 1, 3, 2])
    sims = layered_similarities(anchors, sources, layers)
    for k, layer in enumerate(layers.tolist()):
        for i in range(4):
            assert sims[k, i].item() == pytest.approx(_loop_cos(anchors[layer][k], sources[layer][i]).item(), abs=1e-6)


def test_centred_similarities_subtract_the_sources_batch_mean():
    gen = torch.Generator().manual_seed(3)
    anchors, sources = _random_features(4, torch.float32, gen)
    layers = torch.tensor([2, 1, 3, 2])
    sims = layered_similarities(anchors, sources, layers, similarity=centred_cosine_similarity_matrix)
    for k, layer in enumerate(layers.tolist()):
        mean = sources[layer].detach().double().mean(dim=0)
        for i in range(4):
            expected = _loop_cos(anchors[layer][k].detach().double() - mean, sources[layer][i].detach().double() - mean)
            assert sims[k, i].item() == pytest.approx(expected.item(), abs=1e-6)


def test_centred_similarities_ignore_structure_every_sample_shares():
    gen = torch.Generator().manual_seed(4)
    anchors, sources = _random_features(4, torch.float32, gen)
    shared = [5 * torch.randn(1, *shape, generator=gen) for shape in LAYER_SHAPES]
    layers = torch.tensor([1, 2, 3, 1])
    shifted_a = [a.detach() + m for a, m in zip(anchors, shared)]
    shifted_s = [s.detach() + m for s, m in zip(sources, shared)]
    centred = layered_similarities(anchors, sources, layers, similarity=centred_cosine_similarity_matrix)
    torch.testing.assert_close(layered_similarities(shifted_a, shifted_s, layers,
                                                    similarity=centred_cosine_similarity_matrix),
                               centred, atol=1e-5, rtol=1e-4)
    plain, plain_shifted = (layered_similarities(anchors, sources, layers),
                            layered_similarities(shifted_a, shifted_s, layers))
    assert plain_shifted.min() > 0.8 and plain.abs().max() < 0.5  # plain cosines see mostly the shared map
    coefs = sample_coefficients(4, generator=gen)
    assert layered_distance_loss(anchors, sources, layers, coefs,
                                 similarity=centred_cosine_similarity_matrix).item() == pytest.approx(
        coefficient_kl(centred, coefs).item(), rel=1e-6)


def test_drawn_layers_are_exactly_the_eligible_ones():
    assert list(distance_layer_indices(7)) == [1, 2, 3, 4, 5]
    drawn = sample_feature_layers(4000, 7, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.unique(drawn).tolist()) == list(distance_layer_indices(7))


def test_float16_features_give_float32_loss_close_to_float32_reference():
    gen = torch.Generator().manual_seed(7)
    anchors, sources = _random_features(4, torch.float16, gen)
    coefs = sample_coefficients(4, generator=gen)
    layers = torch.tensor([1, 2, 3, 1])
    half = layered_distance_loss(anchors, sources, layers, coefs)
    full = _loop_layered_loss([a.float() for a in anchors], [s.float() for s in sources], layers.tolist(), coefs)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), full.detach(), atol=1e-4, rtol=1e-3)
    half.backward()
    assert anchors[1].grad.dtype == torch.float16 and torch.isfinite(anchors[1].grad.float()).all()


@pytest.mark.parametrize('batch', [1, 2, 4, 8])
def test_feature_loss_matches_loop(batch):
    gen = torch.Generator().manual_seed(10 + batch)
    anchor = torch.randn(batch, 32, generator=gen, requires_grad=True)
    source = torch.randn(batch, 32, generator=gen, requires_grad=True)
    coefs = sample_coefficients(batch, 'gaussian', generator=gen)
    fast = feature_distance_loss(anchor, source, coefs)
    sims = [[_loop_cos(anchor[k], source[i]) for i in range(batch)] for k in range(batch)]
    slow = _loop_kl(sims, coefs.double())
    torch.testing.assert_close(fast.double(), slow, atol=1e-6, rtol=1e-5)
    for fg, sg in zip(torch.autograd.grad(fast, [anchor, source]), torch.autograd.grad(slow, [anchor, source])):
        torch.testing.assert_close(fg, sg, atol=1e-10, rtol=1e-3)


def test_kl_direction_and_reduction():
    coefs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    sims = torch.tensor([[0.9, -0.5, 0.1], [0.2, 0.6, -0.3], [-0.8, 0.4, 0.5]])
    p, q = torch.softmax(coefs, 1).double(), torch.softmax(sims, 1).double()
    forward_kl = (p * (p.log() - q.log())).sum() / 9
    reverse_kl = (q * (q.log() - p.log())).sum() / 9
    loss = coefficient_kl(sims, coefs)
    assert loss.item() == pytest.approx(forward_kl.item(), rel=1e-5)
    assert abs(forward_kl.item() - reverse_kl.item()) > 1e-3  # the two directions are distinguishable here
    # Sum over all entries divided by B^2, i.e. not divided by B (batchmean) and not a per-row mean.
    assert loss.item() == pytest.approx((p * (p.log() - q.log())).sum(1).mean().item() / 3, rel=1e-5)


def test_zero_when_q_equals_p_and_positive_otherwise():
    coefs = sample_coefficients(6, generator=torch.Generator().manual_seed(2))
    # softmax is shift invariant per row, so these similarities give q == p exactly.
    same = coefs + torch.linspace(-0.5, 0.5, 6)[:, None]
    assert coefficient_kl(same, coefs).abs().item() < 1e-7
    other = torch.rand(6, 6, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert coefficient_kl(other, coefs).item() > 0
    # Coefficients are constants: only the similarities receive gradient.
    sims = other.clone().requires_grad_()
    coefs_leaf = coefs.clone().requires_grad_()
    coefficient_kl(sims, coefs_leaf).backward()
    assert coefs_leaf.grad is None and sims.grad.abs().sum() > 0


def test_cosine_matrix_is_one_on_parallel_vectors():
    a = torch.randn(3, 2, 5)
    sims = cosine_similarity_matrix(a, 4.0 * a)
    torch.testing.assert_close(torch.diagonal(sims), torch.ones(3))
    assert sims.shape == (3, 3) and sims.dtype == torch.float32


def test_layer_sampler_excludes_first_and_last():
    draws = sample_feature_layers(4000, 6, generator=torch.Generator().manual_seed(0))
    assert draws.device.type == 'cpu'
    assert sorted(torch.unique(draws).tolist()) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match='at least 3'):
        sample_feature_layers(4, 2)


def test_layer_index_on_device_or_wrong_batch_is_rejected():
    feats = [torch.randn(2, 3) for _ in range(3)]
    with pytest.raises(ValueError, match='CPU'):
        layered_similarities(feats, feats, torch.ones(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match='batch 3'):
        layered_similarities(feats, feats, torch.ones(3, dtype=torch.long))
