"""End-to-end CPU runs of the training loop with MixDLLoss at 32 px: stats, snapshots, resume, baseline parity."""

import numpy as np
import pytest
import torch

from tests.stylegan2_ada_mixdl.tiny_run import (last_file, last_snapshot, read_stats, tiny_config, train_run,
                                                write_image_folder)

RES, BATCH = 32, 4
MINIBATCH_KIMG = BATCH / 1000


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp('tiny_set'), RES)


def _config(data, loss_kwargs, minibatches, aug='fixed'):
    augment = {}
    if aug == 'fixed':
        augment = dict(augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1,
                                           brightness=1, contrast=1), augment_p=0.3)
    elif aug == 'ada':
        augment = dict(augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, xint=1, brightness=1),
                       ada_target=0.6, ada_interval=1, ada_kimg=1)
    return tiny_config(data, loss_kwargs, minibatches, RES, batch=BATCH, **augment)


MIXDL = dict(class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss')


@pytest.mark.slow
def test_mixdl_run_reports_terms_and_saves_plugin_state(image_folder, tmp_path):
    run_dir = train_run(tmp_path / 'run', _config(image_folder, MIXDL, minibatches=4))
    reported = set().union(*[entry.keys() for entry in read_stats(run_dir)])
    for name in ('Loss/mixdl/G_dist', 'Loss/mixdl/D_dist', 'Loss/mixdl/G_patch', 'Loss/mixdl/D_patch_real',
                 'Loss/mixdl/D_patch_fake', 'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty'):
        assert name in reported, name
    means = [entry['Loss/mixdl/G_dist']['mean'] for entry in read_stats(run_dir) if 'Loss/mixdl/G_dist' in entry]
    assert means and all(np.isfinite(means)) and max(means) > 0

    snapshot = last_snapshot(run_dir)
    assert list(snapshot) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe', 'mixdl']
    extras = snapshot['mixdl']['extras']
    assert set(extras) == {'proj.weight', 'proj.bias', 'patch.b8_conv1.weight', 'patch.b8_conv1.bias'}
    assert all(isinstance(value, torch.Tensor) for value in extras.values())

    # Plain StyleGAN2-ADA code paths: legacy loader, and G/D names exactly those of fresh baseline networks.
    import legacy
    from training import networks
    with open(last_file(run_dir, 'network-snapshot-*.pkl'), 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    config = _config(image_folder, MIXDL, 1)
    common = dict(c_dim=0, img_resolution=RES, img_channels=3)
    G_ref = networks.Generator(**{k: v for k, v in config['G_kwargs'].items() if k != 'class_name'}, **common)
    D_ref = networks.Discriminator(**{k: v for k, v in config['D_kwargs'].items() if k != 'class_name'}, **common)
    assert list(loaded['G'].state_dict()) == list(G_ref.state_dict())
    assert list(loaded['G_ema'].state_dict()) == list(G_ref.state_dict())
    assert list(loaded['D'].state_dict()) == list(D_ref.state_dict())
    img = loaded['G_ema'](torch.randn(2, 16), torch.zeros(2, 0), noise_mode='const')
    assert img.shape == (2, 3, RES, RES) and torch.isfinite(img).all()


@pytest.mark.slow
def test_resume_restores_plugin_modules_and_stream(image_folder, tmp_path):
    config = _config(image_folder, MIXDL, minibatches=4)
    straight = train_run(tmp_path / 'straight', config)
    first_half = train_run(tmp_path / 'first', config, total_kimg=2 * MINIBATCH_KIMG)
    state_file = last_file(first_half, 'training-state-*.pt')
    state = torch.load(state_file, weights_only=True)
    assert set(state['extra_modules']['extras']) == {'proj.weight', 'proj.bias', 'patch.b8_conv1.weight',
                                                     'patch.b8_conv1.bias'}
    assert 'mixdl_rng' in state['loss_state'][0]
    resumed = train_run(tmp_path / 'resumed', config, resume_state=state_file)
    expected, got = last_snapshot(straight), last_snapshot(resumed)
    for key, value in expected['mixdl']['extras'].items():
        torch.testing.assert_close(got['mixdl']['extras'][key], value, rtol=0, atol=0)
    for (name, a), (_, b) in zip(expected['D'].named_parameters(), got['D'].named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['none', 'ada'])
def test_all_mixdl_terms_off_follows_the_baseline_exactly(image_folder, tmp_path, aug):
    baseline = _config(image_folder, dict(class_name='training.loss.StyleGAN2Loss'), minibatches=4, aug=aug)
    off = _config(image_folder, dict(MIXDL, lambda_G=0, lambda_D=0, patch_discrimination=False), minibatches=4, aug=aug)
    base_dir = train_run(tmp_path / 'base', baseline)
    off_dir = train_run(tmp_path / 'off', off)
    keys = ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty', 'Loss/scores/real')
    base_stats, off_stats = read_stats(base_dir), read_stats(off_dir)
    assert len(base_stats) == len(off_stats) >= 2
    for a, b in zip(base_stats, off_stats):
        for key in keys:
            assert (key in a) == (key in b)
            if key in a:
                assert a[key]['num'] == b[key]['num'] and a[key]['mean'] == b[key]['mean'], key
                # The std is derived from float64 sums whose rounding may differ in the last bit.
                assert a[key]['std'] == pytest.approx(b[key]['std'], rel=1e-9, abs=1e-12), key
    for (name, a), (_, b) in zip(last_snapshot(base_dir)['G'].named_parameters(), last_snapshot(off_dir)['G'].named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
