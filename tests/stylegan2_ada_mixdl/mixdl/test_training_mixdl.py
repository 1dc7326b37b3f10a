"""End-to-end CPU runs of the training loop with MixDLLoss at 32 px: stats, snapshots, resume, baseline parity."""
import copy
import glob
import json
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

from training import training_loop

RES, BATCH = 32, 4
MINIBATCH_KIMG = BATCH / 1000


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny_set')
    rng = np.random.RandomState(0)
    for index in range(6):
        pixels = (rng.rand(RES, RES, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f'img{index}.png')
    return str(folder)


def _config(data, loss_kwargs, minibatches, aug='fixed'):
    widths = dict(channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=None)
    config = dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
                                 max_size=None, xflip=False, resolution=RES),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=16, w_dim=16,
                      mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(widths)),
        D_kwargs=dict(class_name='training.networks.Discriminator', block_kwargs={}, mapping_kwargs={},
                      epilogue_kwargs=dict(mbstd_group_size=2), **widths),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(loss_kwargs, r1_gamma=1.0),
        metrics=[], random_seed=3, batch_size=BATCH, batch_gpu=BATCH, ema_kimg=0.01,
        total_kimg=minibatches * MINIBATCH_KIMG, kimg_per_tick=2 * MINIBATCH_KIMG,
        image_snapshot_ticks=None, network_snapshot_ticks=100, device='cpu',
        # R1 and path length on the first minibatch too, so they meet MixDL minibatches.
        G_reg_interval=2, D_reg_interval=2,
    )
    if aug == 'fixed':
        config.update(augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1,
                                          brightness=1, contrast=1), augment_p=0.3)
    elif aug == 'ada':
        config.update(augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, xint=1, brightness=1),
                      ada_target=0.6, ada_interval=1, ada_kimg=1)
    return config


def _train(run_dir, config, **overrides):
    os.makedirs(run_dir, exist_ok=True)
    training_loop.training_loop(run_dir=str(run_dir), **copy.deepcopy(dict(config, **overrides)))
    return str(run_dir)


def _stats(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


def _snapshot(run_dir):
    with open(sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1], 'rb') as f:
        return pickle.load(f)


MIXDL = dict(class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss')


@pytest.mark.slow
def test_mixdl_run_reports_terms_and_saves_plugin_state(image_folder, tmp_path):
    run_dir = _train(tmp_path / 'run', _config(image_folder, MIXDL, minibatches=4))
    reported = set().union(*[entry.keys() for entry in _stats(run_dir)])
    for name in ('Loss/mixdl/G_dist', 'Loss/mixdl/D_dist', 'Loss/mixdl/G_patch', 'Loss/mixdl/D_patch_real',
                 'Loss/mixdl/D_patch_fake', 'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty'):
        assert name in reported, name
    means = [entry['Loss/mixdl/G_dist']['mean'] for entry in _stats(run_dir) if 'Loss/mixdl/G_dist' in entry]
    assert means and all(np.isfinite(means)) and max(means) > 0

    snapshot = _snapshot(run_dir)
    assert list(snapshot) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe', 'mixdl']
    extras = snapshot['mixdl']['extras']
    assert set(extras) == {'proj.weight', 'proj.bias', 'patch.b8_conv1.weight', 'patch.b8_conv1.bias'}
    assert all(isinstance(value, torch.Tensor) for value in extras.values())

    # Plain StyleGAN2-ADA code paths: legacy loader, and G/D names exactly those of fresh baseline networks.
    import legacy
    from training import networks
    with open(sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1], 'rb') as f:
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
    straight = _train(tmp_path / 'straight', config)
    first_half = _train(tmp_path / 'first', config, total_kimg=2 * MINIBATCH_KIMG)
    state_file = sorted(glob.glob(os.path.join(first_half, 'training-state-*.pt')))[-1]
    state = torch.load(state_file, weights_only=True)
    assert set(state['extra_modules']['extras']) == {'proj.weight', 'proj.bias', 'patch.b8_conv1.weight',
                                                     'patch.b8_conv1.bias'}
    assert 'mixdl_rng' in state['loss_state'][0]
    resumed = _train(tmp_path / 'resumed', config, resume_state=state_file)
    expected, got = _snapshot(straight), _snapshot(resumed)
    for key, value in expected['mixdl']['extras'].items():
        torch.testing.assert_close(got['mixdl']['extras'][key], value, rtol=0, atol=0)
    for (name, a), (_, b) in zip(expected['D'].named_parameters(), got['D'].named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['none', 'ada'])
def test_all_mixdl_terms_off_follows_the_baseline_exactly(image_folder, tmp_path, aug):
    baseline = _config(image_folder, dict(class_name='training.loss.StyleGAN2Loss'), minibatches=4, aug=aug)
    off = _config(image_folder, dict(MIXDL, lambda_G=0, lambda_D=0, patch_discrimination=False), minibatches=4, aug=aug)
    base_dir = _train(tmp_path / 'base', baseline)
    off_dir = _train(tmp_path / 'off', off)
    keys = ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty', 'Loss/scores/real')
    base_stats, off_stats = _stats(base_dir), _stats(off_dir)
    assert len(base_stats) == len(off_stats) >= 2
    for a, b in zip(base_stats, off_stats):
        for key in keys:
            assert (key in a) == (key in b)
            if key in a:
                assert a[key]['num'] == b[key]['num'] and a[key]['mean'] == b[key]['mean'], key
                # The std is derived from float64 sums whose rounding may differ in the last bit.
                assert a[key]['std'] == pytest.approx(b[key]['std'], rel=1e-9, abs=1e-12), key
    for (name, a), (_, b) in zip(_snapshot(base_dir)['G'].named_parameters(), _snapshot(off_dir)['G'].named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
