"""End-to-end CPU runs of the training loop at 16 px: run files, exact resume, the loss plug-in interface, NaN guard."""

import json
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import legacy
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from training import training_loop as tl
from training.loss import StyleGAN2Loss

TINY_NET = dict(z_dim=32, w_dim=32, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=256, channel_max=32))
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('img16')
    rng = np.random.RandomState(0)
    for i in range(8):
        # Smooth blobs rather than noise, so D has something to learn.
        yy, xx = np.mgrid[0:16, 0:16]
        centre = rng.uniform(4, 12, size=2)
        blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 10.0)
        colour = rng.uniform(0.2, 1.0, size=3)
        PIL.Image.fromarray((blob[..., None] * colour * 255).astype(np.uint8)).save(folder / f'{i}.png')
    return str(folder)


def loop_kwargs(run_dir, image_dir, **overrides):
    os.makedirs(run_dir, exist_ok=True)
    kwargs = dict(
        run_dir=str(run_dir),
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=image_dir, use_labels=False,
                                 max_size=None, xflip=False, resolution=16),
        data_loader_kwargs=dict(num_workers=0),
        G_kwargs=dict(class_name='training.networks.Generator', **TINY_NET),
        D_kwargs=dict(class_name='training.networks.Discriminator', channel_base=256, channel_max=32,
                      block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4)),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        augment_kwargs=dict(class_name='training.augment.AugmentPipe', **BGC),
        augment_p=0.2, ada_target=0.6, ada_interval=2, ada_kimg=1,
        loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
        batch_size=8, batch_gpu=4, ema_kimg=0.02, ema_rampup=None,
        total_kimg=0.048, kimg_per_tick=0.024, image_snapshot_ticks=None, network_snapshot_ticks=1,
        random_seed=3, device='cpu',
    )
    kwargs.update(overrides)
    return kwargs


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def load_snapshot(path):
    with open(path, 'rb') as f:
        return pickle.load(f)

#----------------------------------------------------------------------------

def test_run_writes_grids_snapshot_state_and_stats(tmp_path, image_dir):
    run_dir = tmp_path / 'run'
    last = tl.training_loop(**loop_kwargs(run_dir, image_dir, total_kimg=0.016, image_snapshot_ticks=1))
    names = set(os.listdir(run_dir))
    assert {'reals.png', 'fakes_init.png', 'fakes000000.png', 'stats.jsonl',
            'network-snapshot-000000.pkl', 'training-state-000000.pt'} <= names
    assert not any('.tmp' in name for name in names)  # atomic writes leave no temp files
    assert last == str(run_dir / 'network-snapshot-000000.pkl')

    grid = PIL.Image.open(run_dir / 'fakes000000.png')
    assert grid.size == (32 * 16, 32 * 16) and grid.mode == 'RGB'  # gw=gh=32 at 16 px

    snapshot = load_snapshot(last)
    assert tuple(snapshot) == tl.SNAPSHOT_KEYS
    assert snapshot['training_set_kwargs']['path'] == image_dir
    assert not snapshot['G'].training and not any(p.requires_grad for p in snapshot['G'].parameters())
    assert float(snapshot['augment_pipe'].p) >= 0
    with open(last, 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    images = loaded['G_ema'](torch.randn(2, 32), torch.zeros(2, 0), noise_mode='const')
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()

    state = torch.load(run_dir / 'training-state-000000.pt', weights_only=True)
    assert state['format'] == tl.TRAINING_STATE_FORMAT
    assert state['cur_nimg'] == 16 and state['batch_idx'] == 2 and state['cur_tick'] == 2
    assert state['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert set(state['optimizers']) == {'G', 'D'}

    records = read_jsonl(run_dir / 'stats.jsonl')
    assert [r['Progress/tick']['mean'] for r in records] == [0, 1]
    assert [r['Progress/kimg']['mean'] for r in records] == pytest.approx([0.008, 0.016])
    assert records[0]['Loss/G/loss']['num'] == 8 and records[0]['Loss/r1_penalty']['num'] == 8
    assert all('timestamp' in r and 'Timing/sec_per_kimg' in r for r in records)


def test_resume_latest_continues_exactly(tmp_path, image_dir):
    straight = tl.training_loop(**loop_kwargs(tmp_path / 'straight', image_dir))

    outdir = tmp_path / 'runs'
    tl.training_loop(**loop_kwargs(outdir / '00000-first', image_dir, total_kimg=0.024))
    state_path = tl.find_latest_training_state(str(outdir))
    assert state_path == str(outdir / '00000-first' / 'training-state-000000.pt')
    assert torch.load(state_path, weights_only=True)['cur_nimg'] == 24
    resumed = tl.training_loop(**loop_kwargs(outdir / '00001-second', image_dir, resume_state=state_path))

    a, b = load_snapshot(straight), load_snapshot(resumed)
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        for (name, x), (_, y) in zip(a[key].state_dict().items(), b[key].state_dict().items()):
            assert torch.equal(x, y), f'{key}.{name} differs after resume'
    assert float(a['augment_pipe'].p) > 0  # ADA moved p, so its carried window was exercised

    # kimg and tick numbering continue where the first run stopped.
    ticks = [(r['Progress/tick']['mean'], r['Progress/kimg']['mean'])
             for r in read_jsonl(outdir / '00001-second' / 'stats.jsonl')]
    assert ticks == [(2, pytest.approx(0.048))]
    state = torch.load(outdir / '00001-second' / 'training-state-000000.pt', weights_only=True)
    assert state['cur_nimg'] == 48 and state['cur_tick'] == 3

    # The newest run wins.
    assert tl.find_latest_training_state(str(outdir)).startswith(str(outdir / '00001-second'))
    with pytest.raises(tl.TrainingError, match='already at 0.0 kimg'):
        tl.training_loop(**loop_kwargs(outdir / '00002-third', image_dir, resume_state=str(outdir / '00001-second' / 'training-state-000000.pt')))

#----------------------------------------------------------------------------

class ToyPluginLoss(StyleGAN2Loss):
    """A minimal plug-in: a trainable head on D's side, extra resumable state, an extra snapshot image."""

    snapshot_key = 'toy'
    instances = []

    def __init__(self, device, head_dim=4, **kwargs):
        super().__init__(device, **kwargs)
        self.head = torch.nn.Linear(3, head_dim).to(device)
        self.seen_batches = []
        self.head_at_first_minibatch = None
        self.odd_steps = torch.zeros([], dtype=torch.int64)
        ToyPluginLoss.instances.append(self)

    def extra_modules(self):
        return {'head': self.head}

    def begin_minibatch(self, batch_idx):
        super().begin_minibatch(batch_idx)
        if self.head_at_first_minibatch is None:
            self.head_at_first_minibatch = self.head.weight.detach().clone()
        self.seen_batches.append(batch_idx)
        self.odd_steps += batch_idx % 2

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        if phase == 'Dmain' and self.batch_idx % 2 == 1:  # every 2nd minibatch is special
            pooled = real_img.mean(dim=[2, 3])
            extra = self.head(pooled).square().mean()
            self.watch_finite(phase, extra)
            extra.mul(gain).backward()

    def state_dict(self):
        return {**super().state_dict(), 'odd_steps': self.odd_steps.clone()}

    def load_state_dict(self, state):
        state = dict(state)
        self.odd_steps = state.pop('odd_steps').clone()
        super().load_state_dict(state)

    def write_snapshot_images(self, G_ema, run_dir, cur_nimg):
        path = os.path.join(run_dir, f'toy-{cur_nimg // 1000:06d}.png')
        PIL.Image.new('L', (4, 4)).save(path)
        return [path]


def test_toy_plugin_module_is_optimised_saved_and_restored(tmp_path, image_dir):
    ToyPluginLoss.instances.clear()
    loss_kwargs = dict(class_name=f'{__name__}.ToyPluginLoss', r1_gamma=1.0)
    first_dir = tmp_path / '00000-toy'
    tl.training_loop(**loop_kwargs(first_dir, image_dir, loss_kwargs=loss_kwargs, total_kimg=0.024,
                                   image_snapshot_ticks=2))
    first = ToyPluginLoss.instances[-1]
    assert first.seen_batches == [0, 1, 2]
    assert not torch.equal(first.head.weight.detach(), first.head_at_first_minibatch)  # optimised with D

    snapshot = load_snapshot(first_dir / 'network-snapshot-000000.pkl')
    assert tuple(snapshot)[:5] == tl.SNAPSHOT_KEYS and set(snapshot) - set(tl.SNAPSHOT_KEYS) == {'toy'}
    torch.testing.assert_close(snapshot['toy']['head']['weight'], first.head.weight.detach())
    assert 'head' not in ''.join(snapshot['D'].state_dict())  # D's state_dict stays StyleGAN2-ADA's
    assert (first_dir / 'toy-000000.png').exists()

    state_path = first_dir / 'training-state-000000.pt'
    state = torch.load(state_path, weights_only=True)
    assert int(state['loss_state'][0]['odd_steps']) == 1
    torch.testing.assert_close(state['extra_modules']['head']['weight'], first.head.weight.detach())
    num_d_tensors = len(list(snapshot['D'].parameters())) + 2
    assert len(state['optimizers']['D']['param_groups'][0]['params']) == num_d_tensors

    tl.training_loop(**loop_kwargs(tmp_path / '00001-toy', image_dir, loss_kwargs=loss_kwargs, total_kimg=0.040,
                                   resume_state=str(state_path)))
    resumed = ToyPluginLoss.instances[-1]
    assert resumed.seen_batches == [3, 4]
    torch.testing.assert_close(resumed.head_at_first_minibatch, first.head.weight.detach())
    assert int(resumed.odd_steps) == 2

    # Weights-only resume from the pickle also restores the plug-in module.
    tl.training_loop(**loop_kwargs(tmp_path / '00002-toy', image_dir, loss_kwargs=loss_kwargs, total_kimg=0.008,
                                   network_snapshot_ticks=None, resume_pkl=str(first_dir / 'network-snapshot-000000.pkl')))
    torch.testing.assert_close(ToyPluginLoss.instances[-1].head_at_first_minibatch, first.head.weight.detach())


class PoisonedLoss(StyleGAN2Loss):
    """Reports a NaN D loss on the third minibatch."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        if phase == 'Dmain' and self.batch_idx == 2:
            self.watch_finite(phase, torch.tensor(float('nan')))


def test_nan_guard_stops_and_keeps_last_good_snapshot(tmp_path, image_dir):
    run_dir = tmp_path / 'nan'
    kwargs = loop_kwargs(run_dir, image_dir, loss_kwargs=dict(class_name=f'{__name__}.PoisonedLoss', r1_gamma=1.0),
                         kimg_per_tick=0.008)
    with pytest.raises(tl.TrainingDiverged) as info:
        tl.training_loop(**kwargs)
    message = str(info.value)
    assert '\n' not in message
    assert 'phase Dmain at kimg 0.016' in message and 'network-snapshot-000000.pkl' in message
    records = read_jsonl(run_dir / 'stats.jsonl')
    assert [r['Progress/kimg']['mean'] for r in records] == pytest.approx([0.008, 0.016])  # nothing after the NaN


def test_shape_mismatch_on_resume_is_one_clear_line(tmp_path, image_dir):
    wide = tl.training_loop(**loop_kwargs(tmp_path / 'wide', image_dir, total_kimg=0.008))
    narrow_G = dict(class_name='training.networks.Generator', z_dim=32, w_dim=32, mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=128, channel_max=32))
    with pytest.raises(tl.TrainingError) as info:
        tl.training_loop(**loop_kwargs(tmp_path / 'narrow', image_dir, G_kwargs=narrow_G, resume_pkl=wide))
    message = str(info.value)
    assert '\n' not in message and message.startswith('--resume: G.')
    assert 'channel_base 256 in the pickle vs 128 here' in message


def test_grid_and_tick_line_helpers(tmp_path):
    images = np.arange(6 * 3 * 2 * 2, dtype=np.float32).reshape(6, 3, 2, 2) % 255
    tl.write_image_grid(images, tmp_path / 'g.png', drange=[0, 255], grid_size=(3, 2))
    tiled = np.asarray(PIL.Image.open(tmp_path / 'g.png'))
    assert tiled.shape == (4, 6, 3)
    np.testing.assert_array_equal(tiled[2:4, 2:4, 1], images[4, 1])  # row 1, column 1 = image 4

    line = tl.format_tick_line(3, 12000, 75, 20.0, 5.0, 3600, 0.5, 1.25, 0.0, 0.125, 0.7, 1.3)
    assert line.startswith('tick 3     kimg 12.0     time 1m 15s')
    assert 'sec/kimg 5.00' in line and 'ETA 1h 00m 00s' in line and 'augment 0.125' in line
    assert line.endswith('G 0.700   D 1.300') and '\r' not in line
    # A tick without full-image losses (only MixDL patch minibatches) shows '-', not a NaN that looks like divergence.
    line = tl.format_tick_line(0, 8, 5, 5.0, 600.0, 60, 0.0, 1.0, 0.0, 0.0, None, 0.25)
    assert line.endswith('G -       D 0.250')


def test_metrics_hook_runs_at_snapshots(tmp_path, image_dir):
    run_dir = tmp_path / 'metrics'
    tl.training_loop(**loop_kwargs(run_dir, image_dir, total_kimg=0.008, metrics=['pix_div1k']))
    (record,) = read_jsonl(run_dir / 'metric-pix_div1k.jsonl')
    assert record['metric'] == 'pix_div1k' and record['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert all(np.isfinite(value) for value in record['results'].values())
