"""AdaptiveMix: D split, the mixed logits and L_ada against a direct reference, gradient routing, options, training."""
import os

import click
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from stylegan2_ada_mixdl.adaptivemix import AdaptiveMixLoss
from stylegan2_ada_mixdl.adaptivemix.loss import adaptivemix_forward, negative_cosine
from stylegan2_ada_mixdl.adaptivemix.options import OPTIONS
from torch_utils import training_stats
from training import networks
from training.features import discriminator_features
from training.plugins import PluginConfigError
from tests.stylegan2_ada_mixdl.tiny_run import (last_file, last_snapshot, read_stats, tiny_config, train_run,
                                                write_image_folder)

RES, BATCH, ZDIM = 16, 4, 8
WIDTHS = dict(channel_base=128, channel_max=16, num_fp16_res=0, conv_clamp=None)


def tiny_D(c_dim=0, architecture='resnet', seed=1):
    torch.manual_seed(seed)
    return networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, architecture=architecture,
                                  epilogue_kwargs=dict(mbstd_group_size=2), **WIDTHS)


def tiny_G(seed=2):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=ZDIM, c_dim=0, w_dim=8, img_resolution=RES, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(WIDTHS))


def images(seed=3, batch=BATCH):
    return torch.rand(batch, 3, RES, RES, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def block_features(D, img):
    """F(img) written out from the blocks, independently of the module under test (x only)."""
    x = None
    for res in D.block_resolutions:
        x, img = getattr(D, f'b{res}')(x, img)
    return x, img


def reference_forward(D, img, c, lam, perm, noise):
    """AdaptiveMix as the paper states it (sec. 3.1, Eq. 2), with three separate block passes and a per-sample cosine loop."""
    x_a, x_b = img, img[perm]
    x_mix = lam * x_a + (1 - lam) * x_b
    f_a, low_a = block_features(D, x_a)
    f_b, low_b = block_features(D, x_b)
    f_mix, low_mix = block_features(D, x_mix)
    blend = lam * f_a + (1 - lam) * f_b
    low_blend = None if low_a is None else lam * low_a + (1 - lam) * low_b
    c_mix = lam * c + (1 - lam) * c[perm]
    cmap = D.mapping(None, c_mix) if D.c_dim > 0 else None
    logits = D.b4(blend, low_blend, cmap) + D.b4(f_mix, low_mix, cmap)
    target = (blend + (0 if noise is None else noise)).detach()
    ada = []
    for i in range(img.shape[0]):
        u, v = f_mix[i].flatten(), target[i].flatten()
        ada.append(-(u @ v) / (u.norm() * v.norm()))
    return logits, torch.stack(ada)


#----------------------------------------------------------------------------
# D split and the forward pass.


@pytest.mark.parametrize('architecture,c_dim,sigma', [('resnet', 0, 0.05), ('skip', 0, 0.0), ('resnet', 3, 0.1)])
def test_forward_matches_direct_reference_values_and_gradients(architecture, c_dim, sigma):
    D = tiny_D(c_dim, architecture)
    img = images().requires_grad_(True)
    c = torch.eye(3)[[2, 1, 0, 0]] if c_dim else torch.zeros(BATCH, 0)
    lam, perm = 0.3, torch.tensor([2, 0, 3, 1])
    noise = sigma * torch.randn(BATCH, 16, 4, 4, generator=torch.Generator().manual_seed(5)) if sigma else None

    out = adaptivemix_forward(D, img, c, lam, perm, noise)
    assert out.logits.shape == (BATCH, 1) and out.ada_loss.shape == (BATCH,)
    assert ((out.ada_loss >= -1 - 1e-6) & (out.ada_loss <= 1 + 1e-6)).all()
    ref_logits, ref_ada = reference_forward(D, img, c, lam, perm, noise)
    torch.testing.assert_close(out.logits, ref_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.ada_loss, ref_ada, rtol=1e-5, atol=1e-6)

    # Gradients of a mixture of both outputs, w.r.t. the images and every D parameter.
    weights = torch.linspace(0.5, 2.0, BATCH)
    params = [img] + [p for p in D.parameters()]

    def grads(logits, ada):
        objective = (F.softplus(logits).squeeze(1) * weights).sum() + (ada * weights.flip(0)).sum()
        return torch.autograd.grad(objective, params, allow_unused=True)

    got = grads(out.logits, out.ada_loss)
    want = grads(ref_logits, ref_ada)
    for g, w in zip(got, want):
        if w is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_blocks_run_once_on_the_doubled_batch():
    D = tiny_D()
    seen = []
    handles = [getattr(D, f'b{res}').register_forward_hook(lambda m, i, o: seen.append(o[0].shape[0]))
               for res in D.block_resolutions]
    adaptivemix_forward(D, images(), torch.zeros(BATCH, 0), 0.5, torch.tensor([1, 0, 3, 2]))
    for handle in handles:
        handle.remove()
    assert seen == [2 * BATCH] * len(D.block_resolutions)


def test_lambda_one_reduces_the_mix_to_the_first_source():
    D = tiny_D()
    img = images()
    out = adaptivemix_forward(D, img, torch.zeros(BATCH, 0), 1.0, torch.tensor([3, 2, 1, 0]))
    own = discriminator_features(D, img).x
    torch.testing.assert_close(out.mixed_features, own, rtol=0, atol=0)
    torch.testing.assert_close(out.mix_features, own, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, 2 * D(img, torch.zeros(BATCH, 0)), rtol=1e-6, atol=1e-6)
    # Identical features and no noise: the cosine term sits at its minimum.
    torch.testing.assert_close(out.ada_loss, torch.full([BATCH], -1.0), rtol=0, atol=1e-6)


def test_sigma_zero_gives_exactly_minus_one_for_identical_features():
    features = torch.randn(BATCH, 16, 4, 4) * torch.logspace(-3, 3, BATCH)[:, None, None, None]
    assert negative_cosine(features, features.clone()).tolist() == [-1.0] * BATCH
    opposite = negative_cosine(features, -features)
    torch.testing.assert_close(opposite, torch.ones(BATCH), rtol=0, atol=1e-6)
    # lambda = 1 mixes nothing, so with sigma = 0 the term is exactly at its minimum.
    D = tiny_D()
    out = adaptivemix_forward(D, images(), torch.zeros(BATCH, 0), 1.0, torch.tensor([1, 2, 3, 0]), target_noise=None)
    assert out.ada_loss.tolist() == [-1.0] * BATCH


@pytest.mark.parametrize('lam', [0.0, 0.37])
def test_identical_images_give_minus_one_for_any_lambda(lam):
    D = tiny_D()
    # Every image equal, so every mix equals it and F(x_mix) equals the target up to rounding.
    img = images(batch=1).repeat(BATCH, 1, 1, 1)
    out = adaptivemix_forward(D, img, torch.zeros(BATCH, 0), lam, torch.tensor([1, 2, 3, 0]), target_noise=None)
    torch.testing.assert_close(out.ada_loss, torch.full([BATCH], -1.0), rtol=0, atol=1e-6)


def test_target_is_detached():
    D = tiny_D()
    img = images().requires_grad_(True)
    perm = torch.tensor([1, 2, 3, 0])
    out = adaptivemix_forward(D, img, torch.zeros(BATCH, 0), 0.6, perm)
    got = torch.autograd.grad(out.ada_loss.sum(), [img] + list(D.parameters()), allow_unused=True)
    # Same loss with the target built from constants: gradients must come only through F(x_mix).
    target = out.mixed_features.detach().flatten(1)
    f_mix, _ = block_features(D, 0.6 * img + 0.4 * img[perm])
    want = torch.autograd.grad(-F.cosine_similarity(f_mix.flatten(1), target, dim=1).sum(),
                               [img] + list(D.parameters()), allow_unused=True)
    for g, w in zip(got, want):
        if w is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)

#----------------------------------------------------------------------------
# The loss class inside the phases.


def make_loss(weight=1.0, sigma=0.05, r1_gamma=1.0):
    G, D = tiny_G(), tiny_D()
    loss = AdaptiveMixLoss('cpu', G.mapping, G.synthesis, D, augment_pipe=None, style_mixing_prob=0,
                           r1_gamma=r1_gamma, weight=weight, sigma=sigma, seed=7)
    return loss, G, D


def phase_inputs():
    gen = torch.Generator().manual_seed(11)
    return dict(real_img=images(4), real_c=torch.zeros(BATCH, 0), gen_z=torch.randn(BATCH, ZDIM, generator=gen),
                gen_c=torch.zeros(BATCH, 0))


def run_phase(loss, phase, network, gain=1):
    """As the loop does: only the phase's network has requires_grad; grads start at None."""
    G, D = loss.G_mapping, loss.D
    for module in (loss.G_mapping, loss.G_synthesis, D):
        module.requires_grad_(False)
        for p in module.parameters():
            p.grad = None
    for module in ((loss.G_mapping, loss.G_synthesis) if network == 'G' else (D,)):
        module.requires_grad_(True)
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    torch.manual_seed(0)
    loss.accumulate_gradients(phase, gain=gain, **phase_inputs())
    collector.update()
    return collector


def param_grads(*modules):
    return [p.grad.clone() if p.grad is not None else None for m in modules for p in m.parameters()]


def test_generator_phase_adds_weighted_term_through_fakes_only():
    loss, G, D = make_loss(weight=2.5)
    state = loss.stream.get_state()
    stats = run_phase(loss, 'Gmain', 'G')
    got = param_grads(G.mapping, G.synthesis)
    assert all(p.grad is None for p in D.parameters())
    assert stats.num('Loss/adaptivemix/G') == BATCH and stats.num('Loss/adaptivemix/D') == 0

    # Reference with the same draws: softplus(-logits).mean() + weight * mean(L_ada), through the fakes.
    loss.stream.set_state(state)
    torch.manual_seed(0)
    inputs = phase_inputs()
    fakes, _ = loss.run_G(inputs['gen_z'], inputs['gen_c'])
    lam, perm = loss.draw_mix(BATCH, 'cpu')
    noise = loss.draw_target_noise([BATCH, 16, 4, 4], 'cpu')
    out = adaptivemix_forward(D, fakes, inputs['gen_c'], lam, perm, noise)
    assert stats.mean('Loss/adaptivemix/G') == pytest.approx(out.ada_loss.mean().item(), rel=1e-5)
    objective = F.softplus(-out.logits).mean() + 2.5 * out.ada_loss.mean()
    want = torch.autograd.grad(objective, list(G.mapping.parameters()) + list(G.synthesis.parameters()),
                               allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=1e-4, atol=1e-7)


def test_discriminator_phase_adds_the_term_on_fake_and_real_calls_and_never_reaches_G():
    loss, G, D = make_loss(weight=1.0)
    state = loss.stream.get_state()
    stats = run_phase(loss, 'Dmain', 'D')
    got = param_grads(D)
    assert all(p.grad is None for p in list(G.mapping.parameters()) + list(G.synthesis.parameters()))
    assert stats.num('Loss/adaptivemix/D') == 2 * BATCH and stats.num('Loss/adaptivemix/G') == 0

    loss.stream.set_state(state)
    torch.manual_seed(0)
    inputs = phase_inputs()
    with torch.no_grad():
        fakes, _ = loss.run_G(inputs['gen_z'], inputs['gen_c'])
    calls = []
    for img, real in ((fakes, False), (inputs['real_img'], True)):
        lam, perm = loss.draw_mix(BATCH, 'cpu')
        noise = loss.draw_target_noise([BATCH, 16, 4, 4], 'cpu')
        out = adaptivemix_forward(D, img, inputs['gen_c'], lam, perm, noise)
        calls.append((F.softplus(-out.logits if real else out.logits).mean() + out.ada_loss.mean()))
    want = torch.autograd.grad(calls[0] + calls[1], list(D.parameters()), allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=1e-4, atol=1e-7)


def test_r1_phase_uses_mixed_logits_but_adds_no_term():
    with_term, _, D1 = make_loss(weight=1.0)
    without, _, D2 = make_loss(weight=0.0)
    stats = run_phase(with_term, 'Dreg', 'D', gain=4)
    run_phase(without, 'Dreg', 'D', gain=4)
    assert stats.num('Loss/adaptivemix/D') == 0 and stats.num('Loss/r1_penalty') == BATCH
    for p1, p2 in zip(D1.parameters(), D2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=0, atol=0)

    # R1 is the squared input gradient of the mixed logits (same draws as the phase).
    check, _, D = make_loss()
    state = check.stream.get_state()
    reals = phase_inputs()['real_img'].requires_grad_(True)
    output = check.run_D(reals, torch.zeros(BATCH, 0))
    assert output.aux.name == 'adaptivemix' and output.aux.per_sample.shape == (BATCH,)  # computed, then left out
    (grad,) = torch.autograd.grad(output.logits.sum(), reals)
    assert stats.mean('Loss/r1_penalty') == pytest.approx(grad.square().sum(dim=[1, 2, 3]).mean().item(), rel=1e-5)
    check.stream.set_state(state)
    assert check.state_dict()['adaptivemix_rng'].equal(state)


def test_state_dict_round_trip_repeats_the_draws():
    loss, _, _ = make_loss()
    saved = loss.state_dict()
    first = loss.draw_mix(BATCH, 'cpu'), loss.draw_target_noise([BATCH, 2], 'cpu')
    loss.load_state_dict(saved)
    second = loss.draw_mix(BATCH, 'cpu'), loss.draw_target_noise([BATCH, 2], 'cpu')
    assert first[0][0] == second[0][0] and first[0][1].equal(second[0][1]) and first[1].equal(second[1])
    assert 0 <= first[0][0] <= 1 and sorted(first[0][1].tolist()) == list(range(BATCH))
    with pytest.raises(ValueError, match='unexpected keys'):
        loss.load_state_dict({'bogus': 1})


def test_beta_draws_follow_alpha():
    loss, _, _ = make_loss()
    loss.mixup_alpha = 0.2
    lams = np.array([loss.draw_mix(2, 'cpu')[0] for _ in range(2000)])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 * (2 * 0.2 + 1)) = 0.179 (vs 1/12 for alpha = 1).
    assert abs(lams.mean() - 0.5) < 0.03 and abs(lams.var() - 1 / 5.6) < 0.02


@pytest.mark.parametrize('kwargs,match', [(dict(weight=-1), 'adaptivemix-weight'),
                                          (dict(mixup_alpha=0), 'adaptivemix-alpha'),
                                          (dict(adaptivemix_sigma=-0.1), 'adaptivemix-sigma')])
def test_bad_constructor_values_name_the_option(kwargs, match):
    G, D = tiny_G(), tiny_D()
    with pytest.raises(ValueError, match=match):
        AdaptiveMixLoss('cpu', G.mapping, G.synthesis, D, **kwargs)

#----------------------------------------------------------------------------
# Command-line options.


def _parse(args, with_mixdl_switch=False):
    params = train._plugin_click_options(OPTIONS)
    if with_mixdl_switch:
        params.append(click.Option(['--mixdl'], type=bool, default=False))
    command = click.Command('train', params=params, callback=lambda **kw: kw)
    return command.main(args, standalone_mode=False)


def test_options_off_leave_the_baseline_untouched():
    opts = _parse([])
    assert opts == {'adaptivemix': False, 'adaptivemix_weight': 1.0, 'adaptivemix_alpha': 1.0,
                    'adaptivemix_sigma': 0.05}
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}
    assert OPTIONS.configure(opts, loss_kwargs) == ''
    assert loss_kwargs == {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}


def test_options_on_fill_kwargs_and_desc():
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss'}
    assert AdaptiveMixLoss.options.configure(_parse(['--adaptivemix=1']), loss_kwargs) == '-adaptivemix'
    assert loss_kwargs == {'class_name': 'stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss', 'weight': 1.0,
                           'mixup_alpha': 1.0, 'sigma': 0.05}
    loss_kwargs = {}
    opts = _parse(['--adaptivemix=1', '--adaptivemix-weight=2', '--adaptivemix-sigma=0'])
    assert OPTIONS.configure(opts, loss_kwargs) == '-adaptivemix-w2-sigma0'
    assert loss_kwargs['sigma'] == 0.0 and isinstance(loss_kwargs['weight'], float)


def test_option_errors_are_one_line_and_name_the_fix():
    with pytest.raises(PluginConfigError, match='--adaptivemix-alpha only has an effect with --adaptivemix=1'):
        OPTIONS.configure(_parse(['--adaptivemix-alpha=2']), {})
    with pytest.raises(PluginConfigError, match='--adaptivemix=1 cannot be combined with --mixdl=1: MixDL replaces'):
        OPTIONS.configure(_parse(['--adaptivemix=1', '--mixdl=1'], with_mixdl_switch=True), {})
    with pytest.raises(PluginConfigError, match='enable one loss plug-in at a time'):
        OPTIONS.configure(_parse(['--adaptivemix=1']), {'class_name': 'some.other.Loss'})
    for args in (['--adaptivemix-alpha=0'], ['--adaptivemix-sigma=-1'], ['--adaptivemix-weight=-1']):
        with pytest.raises(click.BadParameter):
            _parse(['--adaptivemix=1'] + args)

#----------------------------------------------------------------------------
# train.py and end-to-end CPU training.

from tests._shared import DEMO_ZIP, train_dry_run as _dry_run  # noqa: E402


@pytest.mark.skipif(not os.path.exists(DEMO_ZIP), reason='bundled demo dataset missing')
def test_train_cli_records_options_only_when_enabled(tmp_path):
    result, config = _dry_run(tmp_path, '--adaptivemix=1', '--adaptivemix-sigma=0.1')
    assert result.exit_code == 0, result.output
    assert config['loss_kwargs']['class_name'] == 'stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss'
    assert (config['loss_kwargs']['weight'], config['loss_kwargs']['mixup_alpha'],
            config['loss_kwargs']['sigma']) == (1.0, 1.0, 0.1)
    assert os.path.basename(config['run_dir']).endswith('-adaptivemix-sigma0.1')

    result, config = _dry_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert not {'weight', 'mixup_alpha', 'sigma'} & set(config['loss_kwargs'])
    assert 'adaptivemix' not in os.path.basename(config['run_dir'])

    result, _ = _dry_run(tmp_path, '--adaptivemix=1', '--mixdl=1')
    assert result.exit_code != 0
    assert 'Error: --adaptivemix=1 cannot be combined with --mixdl=1: MixDL replaces' in result.output


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp('tiny_set'), RES)


ADAPTIVEMIX = dict(class_name='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss')


def _config(data, loss_kwargs, minibatches):
    return tiny_config(data, loss_kwargs, minibatches, RES, batch=BATCH, z_dim=ZDIM, w_dim=8,
                       widths=dict(channel_base=128, channel_max=16), augment_p=0.3,
                       augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, xint=1, brightness=1))


@pytest.mark.slow
def test_training_reports_the_term_and_snapshots_load_as_plain_stylegan2(image_folder, tmp_path):
    run_dir = train_run(tmp_path / 'run', _config(image_folder, ADAPTIVEMIX, minibatches=4))
    stats = read_stats(run_dir)
    for name in ('Loss/adaptivemix/G', 'Loss/adaptivemix/D'):
        values = [entry[name]['mean'] for entry in stats if name in entry]
        assert values and all(-1 <= v <= 1 for v in values), name
    assert all(name in stats[-1] for name in ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty'))

    assert list(last_snapshot(run_dir)) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    import legacy
    with open(last_file(run_dir, 'network-snapshot-*.pkl'), 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    assert list(loaded['D'].state_dict()) == list(tiny_D().state_dict())
    assert list(loaded['G_ema'].state_dict()) == list(tiny_G().state_dict())
    img = loaded['G_ema'](torch.randn(2, ZDIM), torch.zeros(2, 0), noise_mode='const')
    assert img.shape == (2, 3, RES, RES) and torch.isfinite(img).all()
    assert torch.isfinite(loaded['D'](img, torch.zeros(2, 0))).all()


@pytest.mark.slow
def test_resume_continues_exactly(image_folder, tmp_path):
    config = _config(image_folder, ADAPTIVEMIX, minibatches=4)
    straight = train_run(tmp_path / 'straight', config)
    first_half = train_run(tmp_path / 'first', config, total_kimg=2 * BATCH / 1000)
    state_file = last_file(first_half, 'training-state-*.pt')
    assert 'adaptivemix_rng' in torch.load(state_file, weights_only=True)['loss_state'][0]
    resumed = train_run(tmp_path / 'resumed', config, resume_state=state_file)
    expected, got = last_snapshot(straight), last_snapshot(resumed)
    for key in ('G', 'D'):
        for (name, a), (_, b) in zip(expected[key].named_parameters(), got[key].named_parameters()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f'{key}.{name}')
