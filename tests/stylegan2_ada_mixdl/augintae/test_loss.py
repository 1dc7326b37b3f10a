"""The AugIntAE loss plug-in called phase by phase on tiny 16 px networks."""
import copy

import pytest
import torch

from stylegan2_ada_mixdl.augintae import loss as augintae_loss
from stylegan2_ada_mixdl.augintae import ops, transform
from stylegan2_ada_mixdl.augintae.encoder import decode
from torch_utils import training_stats
from training import networks
from training.plugins import PluginConfigError
from tests._shared import single_torch_thread  # noqa: F401  (autouse fixture)

RES = 16


def make_loss(**kwargs):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=64, channel_max=8,
                               epilogue_kwargs=dict(mbstd_group_size=2))
    loss = augintae_loss.AugIntAELoss('cpu', G.mapping, G.synthesis, D, augintae_seed=3, **kwargs)
    return loss, G, D


def reals(n=4, seed=1):
    return torch.rand([n, 3, RES, RES], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def run_phase(loss, phase, x, G, D):
    trained = [G.synthesis, loss.encoder] if phase.startswith('G') else [D]
    for module in (G, D, loss.encoder):
        module.requires_grad_(False)
        for p in module.parameters():
            p.grad = None
    for module in trained:
        module.requires_grad_(True)
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    c = torch.zeros([len(x), 0])
    loss.accumulate_gradients(phase, real_img=x, real_c=c, gen_z=torch.randn([len(x), 8]), gen_c=c, gain=1.0)
    collector.update()
    return collector


def has_grad(module):
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


@pytest.mark.parametrize('mode', augintae_loss.MODES)
def test_phases_train_the_right_networks_and_report_their_losses(mode):
    loss, G, D = make_loss(mode=mode)
    x = reals()
    stats = run_phase(loss, 'Gmain', x, G, D)
    assert has_grad(G.synthesis) and has_grad(loss.encoder)
    assert not has_grad(G.mapping) and not has_grad(D)
    for name in ('Loss/AugIntAE/recon', 'Loss/AugIntAE/adv', 'Loss/AugIntAE/gamma', 'Loss/AugIntAE/k', 'Loss/G/loss'):
        assert stats.num(name) > 0 and stats.mean(name) == stats.mean(name), name
    stats = run_phase(loss, 'Dmain', x, G, D)
    assert has_grad(D) and not has_grad(G.synthesis) and not has_grad(loss.encoder)
    for name in ('Loss/D/loss', 'Loss/scores/real', 'Loss/scores/fake', 'Loss/signs/real'):
        assert stats.num(name) > 0, name
    stats = run_phase(loss, 'Dreg', x, G, D)
    assert has_grad(D) and stats.num('Loss/r1_penalty') > 0 and stats.num('Loss/D/loss') == 0
    run_phase(loss, 'Greg', x, G, D)  # nothing to do: the mapping network and path lengths are unused
    assert not has_grad(G.synthesis)


def test_augintae_objective_matches_a_hand_computation():
    loss, G, D = make_loss(adv_weight=0.0)
    x = reals()
    state = loss.stream.get_state()
    stats = run_phase(loss, 'Gmain', x, G, D)
    # Replay the same draws by hand.
    loss.stream.set_state(state)
    rho1, rho2, alpha = loss._draws(len(x))
    with torch.no_grad():
        codes = loss.encoder(transform.transform_images(torch.cat([x, x]), torch.cat([rho1, rho2])))
        out = decode(G.synthesis, ops.slerp(codes[:4], codes[4:], alpha))
        target = transform.transform_images(x, transform.interpolate(rho1, rho2, alpha))
    assert stats.mean('Loss/AugIntAE/recon') == pytest.approx(float((target - out).abs().mean()), rel=1e-5)
    assert stats.num('Loss/AugIntAE/adv') == 0  # adv_weight 0: D is not called


def test_intae_mixes_different_images_and_ae_reconstructs_its_input():
    loss, G, D = make_loss(mode='ae', adv_weight=0.0)
    x = reals()
    pairs, fakes = loss.autoencode(x)
    assert pairs[0][0] is x and len(fakes) == 1
    loss, G, D = make_loss(mode='intae')
    pairs, fakes = loss.autoencode(x)
    assert pairs[0][0] is x and len(fakes) == 2 and fakes[1].shape == x.shape


def test_seed_reconstruction_term_is_optional():
    loss, G, D = make_loss(seed_recon_weight=0.5)
    stats = run_phase(loss, 'Gmain', reals(), G, D)
    assert stats.num('Loss/AugIntAE/seed_recon') == 4
    loss, G, D = make_loss()
    assert run_phase(loss, 'Gmain', reals(), G, D).num('Loss/AugIntAE/seed_recon') == 0


def test_k_follows_the_rule_once_per_minibatch():
    loss, G, D = make_loss()
    assert loss.k == 1.0
    x = reals()
    loss.begin_minibatch(0)
    stats = run_phase(loss, 'Dmain', x, G, D)
    real_mean, fake_mean = stats.mean('Loss/scores/real'), stats.mean('Loss/scores/fake')
    expected = ops.update_k(1.0, real_mean, fake_mean)
    loss.begin_minibatch(1)
    assert loss.k == pytest.approx(expected, abs=1e-9)
    loss.begin_minibatch(2)  # no D phase in between: unchanged
    assert loss.k == pytest.approx(expected, abs=1e-9)


def test_state_round_trip_continues_the_same_draws_and_k():
    loss, G, D = make_loss()
    x = reals()
    loss.begin_minibatch(0)
    run_phase(loss, 'Dmain', x, G, D)
    saved = copy.deepcopy(loss.state_dict())
    assert set(saved) >= {'augintae_k', 'augintae_rng', 'augintae_d_sums'}
    other, G2, D2 = make_loss()
    other.encoder.load_state_dict(loss.encoder.state_dict())
    other.load_state_dict(saved)
    loss.begin_minibatch(1)
    other.begin_minibatch(1)
    assert other.k == loss.k != 1.0
    first = run_phase(loss, 'Gmain', x, G, D).mean('Loss/AugIntAE/recon')
    second = run_phase(other, 'Gmain', x, G2, D2).mean('Loss/AugIntAE/recon')
    assert first == second


def test_configuration_errors_name_the_option():
    with pytest.raises(PluginConfigError, match='--augintae-seed-recon'):
        make_loss(mode='ae', seed_recon_weight=1.0)
    with pytest.raises(PluginConfigError, match='--augintae-aug-strength'):
        make_loss(aug_strength=5.0)
    with pytest.raises(PluginConfigError, match='--augintae-mode'):
        make_loss(mode='vae')
    grey = augintae_loss.augment_ranges('auto', 1.0, 1)
    assert grey == transform.default_ranges(1)
    assert augintae_loss.augment_ranges('natural', 0.5, 1).rotate == 5.0


def test_reconstruction_steps_beat_step_zero_on_a_held_out_image():
    # The plain autoencoder objective, optimised directly: the held-out error must drop.
    loss, G, D = make_loss(mode='ae', adv_weight=0.0)
    train, held_out = reals(8, seed=5), reals(1, seed=6)
    # Smooth images (a few blobs) so that 16 px tiny networks can learn something general in a few hundred steps.
    train = torch.nn.functional.avg_pool2d(train, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    held_out = torch.nn.functional.avg_pool2d(held_out, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)

    def held_out_error():
        with torch.no_grad():
            return float((decode(G.synthesis, loss.encoder(held_out), noise_mode='const') - held_out).abs().mean())

    before = held_out_error()
    params = list(G.synthesis.parameters()) + list(loss.encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=0.002, betas=(0.5, 0.999))
    for step in range(150):
        optimizer.zero_grad(set_to_none=True)
        run_phase(loss, 'Gmain', train[torch.randperm(8)[:4]], G, D)
        optimizer.step()
    after = held_out_error()
    assert after < 0.5 * before, (before, after)


def test_discriminator_phase_reuses_the_generator_phase_reconstructions():
    loss, G, D = make_loss()
    x = reals()
    loss.begin_minibatch(0)
    run_phase(loss, 'Gmain', x, G, D)
    assert len(loss._fakes_for_D) == 1
    before = loss.stream.get_state().clone()
    run_phase(loss, 'Dmain', x, G, D)
    assert torch.equal(loss.stream.get_state(), before) and loss._fakes_for_D == []  # nothing decoded anew
    loss.begin_minibatch(1)
    run_phase(loss, 'Dmain', x, G, D)  # no G phase before it: fresh reconstructions from new draws
    assert not torch.equal(loss.stream.get_state(), before)


def test_grey_networks_train_with_the_character_ranges():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=1,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=1, channel_base=64, channel_max=8,
                               epilogue_kwargs=dict(mbstd_group_size=2))
    loss = augintae_loss.AugIntAELoss('cpu', G.mapping, G.synthesis, D, augintae_seed=3)
    assert loss.ranges == transform.default_ranges(1)
    x = reals()[:, :1]
    assert run_phase(loss, 'Gmain', x, G, D).num('Loss/AugIntAE/recon') == 4 and has_grad(loss.encoder)
    assert run_phase(loss, 'Dmain', x, G, D).num('Loss/D/loss') == 4 and has_grad(D)
