"""AugIntAE maths: SLERP, per-image gradient balancing (gamma), the k rule; and the encoder."""
import math

import numpy as np
import pytest
import torch

from stylegan2_ada_mixdl.augintae import encoder as enc
from stylegan2_ada_mixdl.augintae import ops
from training import networks
from tests._shared import single_torch_thread  # noqa: F401  (autouse fixture)


def unit_codes(n, dim, seed):
    codes = torch.randn([n, dim], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return codes / codes.norm(dim=1, keepdim=True)


def naive_slerp(a, b, alpha):
    """Textbook SLERP of two unit vectors, one pair at a time."""
    theta = math.acos(max(-1.0, min(1.0, float(a @ b))))
    return (math.sin(alpha * theta) * a + math.sin((1 - alpha) * theta) * b) / math.sin(theta)


def test_slerp_stays_on_the_sphere_and_matches_the_textbook_formula():
    a, b = unit_codes(5, 16, 0), unit_codes(5, 16, 1)
    for alpha in np.linspace(0, 1, 11):
        mixed = ops.slerp(a, b, float(alpha))
        assert torch.allclose(mixed.norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-12)
        for i in range(5):
            assert torch.allclose(mixed[i], naive_slerp(a[i], b[i], float(alpha)), atol=1e-10)
    # Constant angular speed: the midpoint is equally far (in angle) from both ends.
    mid = ops.slerp(a, b, 0.5)
    assert torch.allclose((mid * a).sum(dim=1), (mid * b).sum(dim=1), atol=1e-12)


def test_slerp_endpoints_are_exact_and_per_row_alpha_works():
    a, b = unit_codes(4, 8, 2).float() * 3, unit_codes(4, 8, 3).float() * 3
    assert torch.equal(ops.slerp(a, b, 1.0), a)
    assert torch.equal(ops.slerp(a, b, 0.0), b)
    mixed = ops.slerp(a, b, torch.tensor([1.0, 0.0, 0.5, 0.25]))
    assert torch.equal(mixed[0], a[0]) and torch.equal(mixed[1], b[1])
    assert torch.allclose(mixed[2:].norm(dim=1), torch.full([2], 3.0), atol=1e-5)  # length sqrt(D)-style codes keep it


def test_slerp_of_nearly_parallel_codes_is_the_lerp_direction():
    a = unit_codes(3, 8, 4)
    b = a + 1e-7 * unit_codes(3, 8, 5)
    b = b / b.norm(dim=1, keepdim=True)
    for alpha in (0.2, 0.7):
        lerp = alpha * a + (1 - alpha) * b
        assert torch.allclose(ops.slerp(a, b, alpha), lerp / lerp.norm(dim=1, keepdim=True), atol=1e-14)
    # And it stays differentiable there (no sin(0) division in the gradient).
    a_grad = a.clone().requires_grad_(True)
    ops.slerp(a_grad, a.clone(), 0.3).sum().backward()
    assert torch.isfinite(a_grad.grad).all()


def test_slerp_gradient_is_finite_for_generic_codes():
    a = unit_codes(4, 8, 6).requires_grad_(True)
    b = unit_codes(4, 8, 7).requires_grad_(True)
    ops.slerp(a, b, torch.rand(4, dtype=torch.float64)).square().sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def tiny_critic():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 1))


def test_gamma_makes_each_adversarial_gradient_as_long_as_the_reconstruction_gradient_times_k():
    critic = tiny_critic()
    source = torch.randn([5, 3, 8, 8], requires_grad=True)
    images = torch.tanh(source * 2)               # the "reconstruction", part of a graph
    target = torch.rand([5, 3, 8, 8]) * 2 - 1
    recon = (images - target).abs().flatten(1).mean(dim=1)
    adv = (critic(images).squeeze(1) - 1).square()
    gamma = ops.balance_gamma(recon, adv, images)
    assert gamma.shape == (5,) and not gamma.requires_grad
    k = 0.7
    # Both terms are averaged over the batch in the loss; the ratio is unaffected by that.
    grad_recon, = torch.autograd.grad(recon.mean(), [images], retain_graph=True)
    grad_adv, = torch.autograd.grad(k * (gamma * adv).mean(), [images], retain_graph=True)
    norms_recon = grad_recon.flatten(1).norm(dim=1)
    norms_adv = grad_adv.flatten(1).norm(dim=1)
    assert torch.allclose(norms_adv, k * norms_recon, rtol=1e-5)
    # Without gamma the norms differ (so the test above is not trivially true).
    plain, = torch.autograd.grad(adv.mean(), [images], retain_graph=True)
    assert not torch.allclose(plain.flatten(1).norm(dim=1), norms_recon, rtol=1e-2)


def test_k_rule():
    assert ops.update_k(1.0, 0.8, 0.1) == pytest.approx(1.0 - 0.001 * (1 - 0.7))
    assert ops.update_k(0.5, 1.0, -0.5) == pytest.approx(0.5 + 0.001 * 0.5)   # wide gap: k grows
    assert ops.update_k(0.5, 0.9, -0.1) == pytest.approx(0.5)                # gap of exactly 1: unchanged
    assert ops.update_k(0.0005, 0.5, 0.5) == 0.0                             # clipped below
    assert ops.update_k(0.9999, 5.0, -5.0) == 1.0                            # clipped above
    rng = np.random.default_rng(0)
    k = 1.0
    for real, fake in rng.normal(size=[5000, 2]) * 3:
        k = ops.update_k(k, real, fake, rate=0.05)
        assert 0.0 <= k <= 1.0


def make_discriminator(resolution=16, channels=3):
    return networks.Discriminator(c_dim=0, img_resolution=resolution, img_channels=channels, channel_base=64,
                                  channel_max=8, epilogue_kwargs=dict(mbstd_group_size=2),
                                  block_kwargs=dict(freeze_layers=1))


def test_encoder_has_the_discriminator_architecture_and_emits_sqrt_w_dim_codes():
    D = make_discriminator()
    E = enc.Encoder.like_discriminator(D, w_dim=12)
    assert E.backbone.b4.out.out_features == 12 and E.backbone.b4.mbstd is None
    assert [name for name, _ in E.backbone.named_children()] == [name for name, _ in D.named_children()]
    assert all(p.requires_grad for p in E.parameters())  # D's frozen layers are not frozen in E
    images = torch.rand([4, 3, 16, 16]) * 2 - 1
    codes = E(images)
    assert codes.shape == (4, 12)
    assert torch.allclose(codes.norm(dim=1), torch.full([4], math.sqrt(12)), atol=1e-5)
    # A code depends on its own image only (no minibatch statistics).
    assert torch.allclose(E(images[:1]), codes[:1], atol=1e-5)
    codes.sum().backward()
    assert all(p.grad is not None for p in E.parameters())


def test_encoder_needs_recorded_kwargs():
    with pytest.raises(ValueError, match='constructor kwargs'):
        enc.encoder_kwargs_from_discriminator(torch.nn.Linear(2, 2))


def test_decode_feeds_the_code_to_every_layer():
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=12, img_resolution=16, img_channels=3,
                           synthesis_kwargs=dict(channel_base=64, channel_max=8))
    codes = torch.randn([2, 12])
    images = enc.decode(G.synthesis, codes, noise_mode='const')
    ws = codes.unsqueeze(1).repeat(1, G.synthesis.num_ws, 1)
    assert torch.equal(images, G.synthesis(ws, noise_mode='const'))


def test_gamma_over_several_image_tensors_balances_the_rows_jointly():
    # IntAE: the reconstruction term sits on the seeds' reconstructions, the adversarial one on them and on mixes.
    critic = tiny_critic()
    source = torch.randn([3, 3, 8, 8], requires_grad=True)
    recon_images, mixed_images = torch.tanh(source), torch.tanh(source.flip(0) * 0.5)
    recon = (recon_images - 0.3).abs().flatten(1).mean(dim=1)
    adv = (critic(recon_images).squeeze(1) - 1).square() + (critic(mixed_images).squeeze(1) - 1).square()
    gamma = ops.balance_gamma(recon, adv, [recon_images, mixed_images])
    grads_recon = torch.autograd.grad(recon.mean(), [recon_images, mixed_images], retain_graph=True, allow_unused=True)
    grads_adv = torch.autograd.grad((gamma * adv).mean(), [recon_images, mixed_images], retain_graph=True)
    joint = lambda grads: torch.stack([g.flatten(1).square().sum(dim=1) for g in grads if g is not None]).sum(dim=0).sqrt()
    assert torch.allclose(joint(grads_adv), joint(grads_recon), rtol=1e-5)
