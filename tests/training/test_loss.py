"""StyleGAN2Loss against closed-form computations on tiny hand-written networks."""

import math

import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from training.loss import AuxiliaryLoss, DiscriminatorOutput, Loss, PhaseSpec, StyleGAN2Loss, lazy_regularisation_phases

Z_DIM, W_DIM, NUM_WS, C, H, W = 3, 4, 3, 1, 4, 4


class ToyMapping(torch.nn.Module):
    """z -> the same w broadcast to every layer (like StyleGAN's mapping)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(W_DIM, Z_DIM))
        self.num_ws = NUM_WS

    def forward(self, z, c, skip_w_avg_update=False):
        return (z @ self.weight.t()).unsqueeze(1).repeat(1, NUM_WS, 1)


class ToySynthesis(torch.nn.Module):
    """Linear: img = flatten(ws) @ A, so d(sum(img*y))/d(ws) = A @ flatten(y) in closed form."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(NUM_WS * W_DIM, C * H * W) * 0.3)

    def forward(self, ws):
        return (ws.flatten(1) @ self.A).reshape(-1, C, H, W)


class ToyD(torch.nn.Module):
    """D(x) = v . tanh(U x): small, nonlinear, with a closed-form input gradient."""

    def __init__(self):
        super().__init__()
        self.U = torch.nn.Parameter(torch.randn(5, C * H * W) * 0.2)
        self.v = torch.nn.Parameter(torch.randn(5))

    def forward(self, img, c):
        return (torch.tanh(img.flatten(1) @ self.U.t()) @ self.v).unsqueeze(1)


def make_loss(**kwargs):
    torch.manual_seed(123)
    mapping, synthesis, D = ToyMapping(), ToySynthesis(), ToyD()
    kwargs.setdefault('style_mixing_prob', 0)
    return StyleGAN2Loss(device='cpu', G_mapping=mapping, G_synthesis=synthesis, D=D, **kwargs)


def collect(fn, regex):
    collector = training_stats.Collector(regex=regex, keep_previous=False)
    fn()
    collector.update()
    return collector


def test_r1_matches_closed_form():
    gamma, gain = 3.0, 16
    loss = make_loss(r1_gamma=gamma)
    reals = torch.randn(6, C, H, W)
    labels = torch.zeros(6, 0)
    loss.D.requires_grad_(True)

    stats = collect(lambda: loss.accumulate_gradients('Dreg', reals, labels, torch.randn(6, Z_DIM), labels, gain),
                    'Loss/(r1_penalty|D/reg)')

    # Closed form: grad_x D = U^T (v * (1 - tanh^2(Ux))), penalty = |grad_x D|^2 per sample.
    U = loss.D.U.detach().clone().requires_grad_(True)
    v = loss.D.v.detach().clone().requires_grad_(True)
    hidden = torch.tanh(reals.flatten(1) @ U.t())
    grad_x = (v * (1 - hidden.square())) @ U
    penalty = grad_x.square().sum(1)
    assert stats.num('Loss/r1_penalty') == 6
    assert stats.mean('Loss/r1_penalty') == pytest.approx(penalty.mean().item(), rel=1e-5)
    assert stats.mean('Loss/D/reg') == pytest.approx(penalty.mean().item() * gamma / 2, rel=1e-5)

    # The weight gradients equal those of the closed-form objective.
    (penalty * gamma / 2).mean().mul(gain).backward()
    torch.testing.assert_close(loss.D.U.grad, U.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss.D.v.grad, v.grad, rtol=1e-4, atol=1e-6)


def test_path_length_matches_closed_form():
    decay, weight, gain = 0.25, 2.0, 4
    loss = make_loss(pl_decay=decay, pl_weight=weight, pl_batch_shrink=2)
    z = torch.randn(8, Z_DIM)
    labels = torch.zeros(8, 0)
    loss.G_mapping.requires_grad_(True)
    loss.G_synthesis.requires_grad_(True)

    torch.manual_seed(7)
    stats = collect(lambda: loss.accumulate_gradients('Greg', None, None, z, labels, gain), 'Loss/(pl_penalty|G/reg)')

    # Same direction y the loss drew: the toy networks consume no randomness before it.
    torch.manual_seed(7)
    y = torch.randn(4, C, H, W) / math.sqrt(H * W)
    A = loss.G_synthesis.A.detach().clone().requires_grad_(True)
    g = (y.flatten(1) @ A.t()).reshape(4, NUM_WS, W_DIM)  # d(sum img*y)/d(ws), per sample
    lengths = g.square().sum(2).mean(1).sqrt()
    new_mean = torch.zeros([]).lerp(lengths.mean(), decay)
    penalty = (lengths - new_mean).square()

    assert stats.num('Loss/pl_penalty') == 4  # batch shrink 2
    assert stats.mean('Loss/pl_penalty') == pytest.approx(penalty.mean().item(), rel=1e-5)
    assert stats.mean('Loss/G/reg') == pytest.approx(penalty.mean().item() * weight, rel=1e-5)
    assert loss.pl_mean.item() == pytest.approx(decay * lengths.mean().item(), rel=1e-5)

    (penalty * weight).mean().mul(gain).backward()
    torch.testing.assert_close(loss.G_synthesis.A.grad, A.grad, rtol=1e-4, atol=1e-6)
    # A linear synthesis makes the path length independent of the mapping weights.
    assert loss.G_mapping.weight.grad is None or loss.G_mapping.weight.grad.abs().max() == 0

    # Second call lerps from the stored mean.
    first_mean = loss.pl_mean.item()
    loss.accumulate_gradients('Greg', None, None, z, labels, gain)
    assert loss.pl_mean.item() != first_mean
    assert loss.state_dict()['pl_mean'].item() == pytest.approx(loss.pl_mean.item())


def test_adversarial_terms_and_reports():
    loss = make_loss(r1_gamma=0)
    reals = torch.randn(4, C, H, W)
    z = torch.randn(4, Z_DIM)
    labels = torch.zeros(4, 0)
    loss.D.requires_grad_(True)
    stats = collect(lambda: loss.accumulate_gradients('Dboth', reals, labels, z, labels, 1), 'Loss/.*')
    with torch.no_grad():
        fake_logits = loss.D(loss.G_synthesis(loss.G_mapping(z, labels)), labels)
        real_logits = loss.D(reals, labels)
    expected = (F.softplus(fake_logits) + F.softplus(-real_logits)).mean().item()
    assert stats.mean('Loss/D/loss') == pytest.approx(expected, rel=1e-5)
    assert stats.mean('Loss/scores/real') == pytest.approx(real_logits.mean().item(), rel=1e-5)
    assert stats.mean('Loss/signs/real') == pytest.approx(real_logits.sign().mean().item())
    assert stats.num('Loss/r1_penalty') == 0  # gamma 0 skips R1

    loss.D.requires_grad_(False)
    loss.G_synthesis.requires_grad_(True)
    stats = collect(lambda: loss.accumulate_gradients('Gmain', reals, labels, z, labels, 1), 'Loss/G/loss')
    assert stats.mean('Loss/G/loss') == pytest.approx(F.softplus(-fake_logits).mean().item(), rel=1e-5)
    assert loss.G_synthesis.A.grad is not None and loss.D.v.grad is not None


def test_style_mixing_replaces_a_suffix_of_layers():
    loss = make_loss(style_mixing_prob=1.0)
    z = torch.randn(5, Z_DIM)
    base = loss.G_mapping(z, None)
    crossovers = set()
    for _ in range(30):
        ws = loss._mix_styles(base, z, None)
        changed = ~torch.isclose(ws, base).all(dim=2).all(dim=0)  # per layer
        assert not changed[0]
        first = int(changed.float().argmax())
        assert changed[first:].all() and first >= 1
        crossovers.add(first)
    assert crossovers == set(range(1, NUM_WS))

    loss.style_mixing_prob = 0.0
    torch.testing.assert_close(loss._mix_styles(base, z, None), base)


def test_nonfinite_guard_names_the_phase():
    loss = make_loss(r1_gamma=0)
    labels = torch.zeros(2, 0)
    loss.D.requires_grad_(True)
    loss.accumulate_gradients('Dmain', torch.randn(2, C, H, W), labels, torch.randn(2, Z_DIM), labels, 1)
    assert loss.first_nonfinite_phase() is None
    with torch.no_grad():
        loss.D.v.fill_(float('nan'))
    loss.accumulate_gradients('Dmain', torch.randn(2, C, H, W), labels, torch.randn(2, Z_DIM), labels, 1)
    assert loss.first_nonfinite_phase() == 'Dmain'
    assert loss.first_nonfinite_phase() is None  # flags are cleared after reading


def test_lazy_regularisation_phases_and_plugin_defaults():
    assert lazy_regularisation_phases(4, 16) == [PhaseSpec('Gmain', 'G', 1), PhaseSpec('Greg', 'G', 4),
                                                 PhaseSpec('Dmain', 'D', 1), PhaseSpec('Dreg', 'D', 16)]
    assert lazy_regularisation_phases(None, None) == [PhaseSpec('Gboth', 'G', 1), PhaseSpec('Dboth', 'D', 1)]
    loss = make_loss()
    assert loss.extra_modules() == {} and loss.snapshot_key is None
    assert loss.write_snapshot_images(None, '.', '000000') == []
    assert Loss.options is None and StyleGAN2Loss.options is None  # no command-line options of its own
    with pytest.raises(ValueError, match='Unknown phase'):
        loss.accumulate_gradients('Gfoo', None, None, None, None, 1)
    fresh = make_loss()
    fresh.load_state_dict({'pl_mean': torch.tensor(1.5)})
    assert fresh.pl_mean.item() == 1.5
    with pytest.raises(ValueError, match='unexpected keys'):
        fresh.load_state_dict({'bogus': torch.tensor(0.0)})


class AuxLoss(StyleGAN2Loss):
    """A plug-in whose D calls also compute a term (like AdaptiveMix): logits^2 per sample, weighted 0.7."""

    term_weight = 0.7

    def run_D(self, img, c):
        logits = super().run_D(img, c).logits
        return DiscriminatorOutput(logits, AuxiliaryLoss('toy', logits.squeeze(1).square(), self.term_weight))


def test_discriminator_aux_terms_join_the_loss_of_their_D_call():
    torch.manual_seed(123)
    loss = AuxLoss(device='cpu', G_mapping=ToyMapping(), G_synthesis=ToySynthesis(), D=ToyD(),
                   style_mixing_prob=0, r1_gamma=0)
    reals, z, labels, gain = torch.randn(4, C, H, W), torch.randn(4, Z_DIM), torch.zeros(4, 0), 3
    loss.D.requires_grad_(True)
    collector = training_stats.Collector(regex='Loss/toy/.*', keep_previous=False)
    loss.accumulate_gradients('Dmain', reals, labels, z, labels, gain)
    collector.update()
    assert collector.num('Loss/toy/D') == 8 and collector.num('Loss/toy/G') == 0  # fakes and reals, as D's
    got = [loss.D.U.grad.clone(), loss.D.v.grad.clone()]

    with torch.no_grad():
        fakes = loss.G_synthesis(loss.G_mapping(z, labels))
    fake_logits, real_logits = loss.D(fakes, labels), loss.D(reals, labels)
    # One backward per D call: its adversarial mean plus the mean of the term it queued.
    expected = (F.softplus(fake_logits).mean() + 0.7 * fake_logits.square().mean()
                + F.softplus(-real_logits).mean() + 0.7 * real_logits.square().mean()) * gain
    want = torch.autograd.grad(expected, [loss.D.U, loss.D.v])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert loss.first_nonfinite_phase() is None


def test_aux_terms_stay_out_of_r1_alone_and_weight_zero_only_reports():
    torch.manual_seed(123)
    loss = AuxLoss(device='cpu', G_mapping=ToyMapping(), G_synthesis=ToySynthesis(), D=ToyD(),
                   style_mixing_prob=0, r1_gamma=2)
    plain = StyleGAN2Loss(device='cpu', G_mapping=loss.G_mapping, G_synthesis=loss.G_synthesis, D=loss.D,
                          style_mixing_prob=0, r1_gamma=2)
    reals, z, labels = torch.randn(4, C, H, W), torch.randn(4, Z_DIM), torch.zeros(4, 0)
    loss.D.requires_grad_(True)
    grads = {}
    for name, which, phase, weight in (('aux', loss, 'Dreg', 0.7), ('plain', plain, 'Dreg', 0.7),
                                       ('aux0', loss, 'Dmain', 0.0), ('plain0', plain, 'Dmain', 0.0)):
        loss.term_weight = weight
        loss.D.U.grad = loss.D.v.grad = None
        torch.manual_seed(1)
        which.accumulate_gradients(phase, reals, labels, z, labels, 1)
        grads[name] = [loss.D.U.grad.clone(), loss.D.v.grad.clone()]
    for a, b in zip(grads['aux'] + grads['aux0'], grads['plain'] + grads['plain0']):
        assert torch.equal(a, b)
