"""Tests for MixDL mixup coefficient sampling and anchor mixing."""
import pytest
import torch

from stylegan2_ada_mixdl.mixdl.coefficients import COEFFICIENT_KINDS, mix_anchors, sample_coefficients


@pytest.mark.parametrize('kind', COEFFICIENT_KINDS)
@pytest.mark.parametrize('batch', [1, 2, 4, 8])
def test_rows_are_distributions(kind, batch):
    gen = torch.Generator().manual_seed(3)
    coefs = sample_coefficients(batch, kind=kind, alpha=1.0, generator=gen)
    assert coefs.shape == (batch, batch)
    assert coefs.dtype == torch.float32
    assert torch.all(coefs >= 0)
    torch.testing.assert_close(coefs.sum(dim=1), torch.ones(batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize('alpha', [0.1, 1.0, 10.0])
def test_dirichlet_moments(alpha):
    # Dirichlet(alpha * 1_B): mean 1/B, variance (1/B)(1 - 1/B) / (B * alpha + 1).
    batch, rows = 4, 4000
    gen = torch.Generator().manual_seed(1)
    samples = torch.cat([sample_coefficients(batch, 'dirichlet', alpha, generator=gen) for _ in range(rows // batch)])
    assert torch.isfinite(samples).all()
    torch.testing.assert_close(samples.sum(1), torch.ones(samples.shape[0]), atol=1e-5, rtol=0)
    expected_var = (1 / batch) * (1 - 1 / batch) / (batch * alpha + 1)
    assert abs(samples.mean().item() - 1 / batch) < 1e-6
    assert samples.var(dim=0).mean().item() == pytest.approx(expected_var, rel=0.1)


def test_gaussian_and_uniform_follow_their_definitions():
    gen = torch.Generator().manual_seed(5)
    normal = torch.randn((4, 4), generator=gen)
    gen.manual_seed(5)
    torch.testing.assert_close(sample_coefficients(4, 'gaussian', generator=gen), torch.softmax(normal, 1))
    gen.manual_seed(6)
    uniform = torch.rand((4, 4), generator=gen)
    gen.manual_seed(6)
    torch.testing.assert_close(sample_coefficients(4, 'uniform', generator=gen), uniform / uniform.sum(1, keepdim=True))


def test_generator_makes_draws_reproducible():
    first = sample_coefficients(8, generator=torch.Generator().manual_seed(11))
    second = sample_coefficients(8, generator=torch.Generator().manual_seed(11))
    third = sample_coefficients(8, generator=torch.Generator().manual_seed(12))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match='dirichlet, gaussian, uniform'):
        sample_coefficients(4, kind='beta')
    with pytest.raises(ValueError, match='alpha'):
        sample_coefficients(4, alpha=0.0)


@pytest.mark.parametrize('batch', [1, 2, 4, 8])
def test_anchors_equal_coefficient_matrix_times_ws(batch):
    gen = torch.Generator().manual_seed(batch)
    ws = torch.randn(batch, 6, 16, generator=gen, requires_grad=True)
    coefs = sample_coefficients(batch, generator=gen)
    anchors = mix_anchors(coefs, ws)
    assert anchors.shape == ws.shape
    for k in range(batch):
        expected = sum(coefs[k, i] * ws[i] for i in range(batch))
        torch.testing.assert_close(anchors[k], expected)
    anchors.sum().backward()
    torch.testing.assert_close(ws.grad, coefs.sum(0)[:, None, None].expand_as(ws))


def test_identity_coefficients_keep_sources():
    ws = torch.randn(3, 4, 8)
    torch.testing.assert_close(mix_anchors(torch.eye(3), ws), ws)
    with pytest.raises(ValueError, match=r'\[3, 3\]'):
        mix_anchors(torch.eye(2), ws)
