"""End-to-end 16 px CPU runs of the training loop with AugIntAELoss: stats, snapshot with the encoder, exact resume,
and the generation tool on the resulting snapshot."""
import glob
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan2_ada_mixdl.augintae import fewshot
from tests._shared import single_torch_thread  # noqa: F401  (autouse fixture)
from tests.stylegan2_ada_mixdl.tiny_run import last_file, read_stats, train_run

RES, BATCH = 16, 4
MINIBATCH_KIMG = BATCH / 1000
AUGINTAE = 'stylegan2_ada_mixdl.augintae.AugIntAELoss'


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny_base')
    rng = np.random.RandomState(0)
    for index in range(8):
        pixels = (rng.rand(RES, RES, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f'img{index}.png')
    return str(folder)


def _config(data, minibatches, **loss_kwargs):
    widths = dict(channel_base=64, channel_max=8, num_fp16_res=0, conv_clamp=None)
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
                                 max_size=None, xflip=False, resolution=RES),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=8, w_dim=8,
                      mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(widths)),
        D_kwargs=dict(class_name='training.networks.Discriminator', block_kwargs={}, mapping_kwargs={},
                      epilogue_kwargs=dict(mbstd_group_size=2), **widths),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0.5, 0.999], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0.5, 0.999], eps=1e-8),
        loss_kwargs=dict(class_name=AUGINTAE, r1_gamma=0.1, augintae_seed=5, **loss_kwargs),
        metrics=[], random_seed=3, batch_size=BATCH, batch_gpu=BATCH, ema_kimg=0.01,
        total_kimg=minibatches * MINIBATCH_KIMG, kimg_per_tick=2 * MINIBATCH_KIMG,
        image_snapshot_ticks=1, network_snapshot_ticks=100, device='cpu',
        G_reg_interval=2, D_reg_interval=2,
    )


def _snapshot_path(run_dir):
    return last_file(run_dir, 'network-snapshot-*.pkl')


@pytest.mark.parametrize('mode', ['augintae', 'intae', 'ae'])
def test_each_mode_trains_saves_the_encoder_and_generates(image_folder, tmp_path, mode):
    run_dir = train_run(tmp_path / 'run', _config(image_folder, minibatches=4, mode=mode))
    reported = set().union(*[entry.keys() for entry in read_stats(run_dir)])
    for name in ('Loss/AugIntAE/recon', 'Loss/AugIntAE/adv', 'Loss/AugIntAE/gamma', 'Loss/AugIntAE/k',
                 'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty'):
        assert name in reported, name
    recon = [entry['Loss/AugIntAE/recon']['mean'] for entry in read_stats(run_dir) if 'Loss/AugIntAE/recon' in entry]
    assert recon and all(np.isfinite(recon)) and min(recon) > 0
    assert glob.glob(os.path.join(run_dir, 'augintae-*.png'))

    with open(_snapshot_path(run_dir), 'rb') as f:
        snapshot = pickle.load(f)
    encoder_state = snapshot[fewshot.SNAPSHOT_KEY]['encoder']
    assert encoder_state and all(isinstance(value, torch.Tensor) for value in encoder_state.values())

    # The generation tool on this snapshot, with seeds of another size.
    seeds = tmp_path / 'seeds'
    seeds.mkdir()
    for index in range(3):
        PIL.Image.fromarray(np.full([40, 30, 3], 60 * index, np.uint8)).save(seeds / f's{index}.png')
    model = fewshot.FewShotAutoencoder.from_snapshot(_snapshot_path(run_dir))
    names, images = fewshot.load_seed_images(str(seeds), model.resolution, model.num_channels)
    written = fewshot.write_fewshot_outputs(model, names, images, str(tmp_path / 'out'), num_samples=3, strips=[(0, 2)], steps=3)
    assert all(os.path.isfile(path) for path in written) and len(written) == 3 + 4 + 1


def test_resume_continues_exactly(image_folder, tmp_path):
    config = _config(image_folder, minibatches=4)
    straight = train_run(tmp_path / 'straight', config)
    first_half = train_run(tmp_path / 'first', config, total_kimg=2 * MINIBATCH_KIMG)
    state_file = sorted(glob.glob(os.path.join(first_half, 'training-state-*.pt')))[-1]
    state = torch.load(state_file, weights_only=True)
    assert set(state['extra_modules']['encoder']) and 'augintae_k' in state['loss_state'][0]
    resumed = train_run(tmp_path / 'resumed', config, resume_state=state_file)
    with open(_snapshot_path(straight), 'rb') as f:
        expected = pickle.load(f)
    with open(_snapshot_path(resumed), 'rb') as f:
        got = pickle.load(f)
    for key, value in expected[fewshot.SNAPSHOT_KEY]['encoder'].items():
        torch.testing.assert_close(got[fewshot.SNAPSHOT_KEY]['encoder'][key], value, rtol=0, atol=0, msg=key)
    for network in ('G', 'D'):
        for (name, a), (_, b) in zip(expected[network].named_parameters(), got[network].named_parameters()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f'{network}.{name}')
    final_states = [torch.load(sorted(glob.glob(os.path.join(run, 'training-state-*.pt')))[-1], weights_only=True)
                    for run in (straight, resumed)]
    k_straight, k_resumed = [state['loss_state'][0]['augintae_k'] for state in final_states]
    assert k_resumed == k_straight < 1
