"""The training loop at 16 px on CPU: end-to-end runs (run files, exact resume, the loss plug-in interface, NaN guard) and each step alone."""

import copy
import json
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
import legacy
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training import training_loop as tl
from training.augment import augpipe_specs
from training.loss import Loss, StyleGAN2Loss

TINY_NET = dict(z_dim=32, w_dim=32, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=256, channel_max=32))
BGC = dict(augpipe_specs['bgc'])  # train.py's default --augpipe


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
    assert {'reals.png', 'fakes_init.png', 'fakes000000.016.png', 'stats.jsonl',
            'network-snapshot-000000.016.pkl', 'training-state-000000.016.pt'} <= names
    assert not any('.tmp' in name for name in names)  # atomic writes leave no temp files
    assert last == str(run_dir / 'network-snapshot-000000.016.pkl')

    grid = PIL.Image.open(run_dir / 'fakes000000.016.png')
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

    state = torch.load(run_dir / 'training-state-000000.016.pt', weights_only=True)
    assert state['format'] == tl.TRAINING_STATE_FORMAT
    assert state['cur_nimg'] == 16 and state['batch_idx'] == 2 and state['cur_tick'] == 2
    assert state['snapshot_pkl'] == 'network-snapshot-000000.016.pkl'
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
    assert state_path == str(outdir / '00000-first' / 'training-state-000000.024.pt')
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
    state = torch.load(outdir / '00001-second' / 'training-state-000000.048.pt', weights_only=True)
    assert state['cur_nimg'] == 48 and state['cur_tick'] == 3

    # The newest run wins.
    assert tl.find_latest_training_state(str(outdir)).startswith(str(outdir / '00001-second'))
    with pytest.raises(tl.TrainingError, match='already at 0.0 kimg'):
        tl.training_loop(**loop_kwargs(outdir / '00002-third', image_dir, resume_state=str(outdir / '00001-second' / 'training-state-000000.048.pt')))

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

    def write_snapshot_images(self, G_ema, run_dir, kimg_label):
        path = os.path.join(run_dir, f'toy-{kimg_label}.png')
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

    snapshot = load_snapshot(first_dir / 'network-snapshot-000000.024.pkl')
    assert tuple(snapshot)[:5] == tl.SNAPSHOT_KEYS and set(snapshot) - set(tl.SNAPSHOT_KEYS) == {'toy'}
    torch.testing.assert_close(snapshot['toy']['head']['weight'], first.head.weight.detach())
    assert 'head' not in ''.join(snapshot['D'].state_dict())  # D's state_dict stays StyleGAN2-ADA's
    # Sub-kimg snapshots: the plug-in's images are named like the fakes grids beside them, none overwritten.
    fakes_labels = sorted(p.name[len('fakes'):-4] for p in first_dir.glob('fakes0*.png'))
    assert len(fakes_labels) == 2 and fakes_labels[-1] == '000000.024'
    assert sorted(p.name[len('toy-'):-4] for p in first_dir.glob('toy-*.png')) == fakes_labels

    state_path = first_dir / 'training-state-000000.024.pt'
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
                                   network_snapshot_ticks=None, resume_pkl=str(first_dir / 'network-snapshot-000000.024.pkl')))
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
    assert 'phase Dmain at kimg 0.016' in message and 'network-snapshot-000000.016.pkl' in message
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
    assert record['metric'] == 'pix_div1k' and record['snapshot_pkl'] == 'network-snapshot-000000.008.pkl'
    assert all(np.isfinite(value) for value in record['results'].values())

#----------------------------------------------------------------------------
# The steps of the loop, one by one.

def tiny_setup(image_dir, loss_kwargs=None, **net_overrides):
    """Dataset, networks, loss and phases as training_loop builds them from loop_kwargs."""
    kwargs = loop_kwargs('unused', image_dir, **net_overrides)
    tl.setup_process(random_seed=3)
    training_set, label_table = tl.open_training_set(kwargs['training_set_kwargs'], 'cpu')
    nets = tl.build_networks(tl.network_sizes(training_set), kwargs['G_kwargs'], kwargs['D_kwargs'], torch.device('cpu'),
                             kwargs['augment_kwargs'], kwargs['augment_p'])
    loss, extras = tl.build_loss(loss_kwargs or kwargs['loss_kwargs'], nets, torch.device('cpu'))
    optimizers, phases = tl.build_phases(loss, nets, extras, kwargs['G_opt_kwargs'], kwargs['D_opt_kwargs'], 4, 16, torch.device('cpu'))
    return dnnlib.EasyDict(training_set=training_set, label_table=label_table, nets=nets, loss=loss, extras=extras,
                           optimizers=optimizers, phases=phases)


@pytest.fixture(autouse=True)
def restore_torch_switches(monkeypatch):
    """setup_process sets global switches; put them back after each test."""
    for module, name in [(conv2d_gradfix, 'enabled'), (grid_sample_gradfix, 'enabled'), (torch.backends.cudnn, 'benchmark')]:
        monkeypatch.setattr(module, name, getattr(module, name))


def test_split_batch_and_setup_process_seed_each_rank():
    assert tl.split_batch(32, 4, 2) == 16
    with pytest.raises(tl.TrainingError, match='must be a multiple of batch_gpu'):
        tl.split_batch(32, 3, 2)
    draws = []
    for rank in (0, 0, 1):
        tl.setup_process(random_seed=5, num_gpus=2, rank=rank, cudnn_benchmark=False)
        draws.append((torch.randn(3), np.random.rand()))
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1] == draws[1][1]
    assert not torch.equal(draws[0][0], draws[2][0])
    assert conv2d_gradfix.enabled and grid_sample_gradfix.enabled and not torch.backends.cudnn.benchmark


def test_open_training_set_builds_the_label_table(tmp_path, image_dir):
    training_set, table = tl.open_training_set(dict(class_name='training.dataset.ImageFolderDataset', path=image_dir), 'cpu')
    assert len(training_set) == 8 and table.shape == (8, 0)
    folder = tmp_path / 'labelled'
    folder.mkdir()
    for i in range(4):
        PIL.Image.new('RGB', (16, 16), (60 * i, 0, 0)).save(folder / f'{i}.png')
    (folder / 'dataset.json').write_text(json.dumps({'labels': [[f'{i}.png', [1, 0, 2, 1][i]] for i in range(4)]}))
    training_set, table = tl.open_training_set(dict(class_name='training.dataset.ImageFolderDataset', path=str(folder),
                                                    use_labels=True), 'cpu')
    assert table.dtype == torch.float32 and table.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_networks_loss_and_phases(image_dir):
    run = tiny_setup(image_dir)
    nets = run.nets
    assert nets.G_ema is not nets.G and not nets.G_ema.training and nets.G.training
    assert not any(p.requires_grad for key in ('G', 'D', 'G_ema') for p in nets[key].parameters())
    for a, b in zip(nets.G.parameters(), nets.G_ema.parameters()):
        assert torch.equal(a, b)
    assert float(nets.augment_pipe.p) == pytest.approx(0.2)
    assert tl.ada_collector(nets.augment_pipe, ada_target=None) is None
    assert tl.ada_collector(nets.augment_pipe, ada_target=0.6) is not None
    kwargs = loop_kwargs('unused', image_dir)
    no_aug = tl.build_networks(tl.network_sizes(run.training_set), kwargs['G_kwargs'], kwargs['D_kwargs'], 'cpu',
                               kwargs['augment_kwargs'], augment_p=0)
    assert no_aug.augment_pipe is None  # p=0 without ADA: nothing would ever be augmented

    # Lazy regularisation rescales lr and betas by R / (R + 1) (R = 4 for G, 16 for D).
    assert [(p.name, p.interval) for p in run.phases] == [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    assert run.optimizers['G'].param_groups[0]['lr'] == pytest.approx(0.002 * 4 / 5)
    assert run.optimizers['D'].param_groups[0]['betas'][1] == pytest.approx(0.99 ** (16 / 17))
    _, phases = tl.build_phases(run.loss, nets, {}, kwargs['G_opt_kwargs'], kwargs['D_opt_kwargs'], None, 16, 'cpu')
    assert [p.name for p in phases][0] == 'Gboth' and phases[0].opt.param_groups[0]['lr'] == 0.002

    # A plug-in's extra modules train with D's optimiser.
    toy = tiny_setup(image_dir, loss_kwargs=dict(class_name=f'{__name__}.ToyPluginLoss', r1_gamma=1.0))
    assert toy.extras['head'] in toy.phases[2].modules
    assert any(p is toy.extras['head'].weight for p in toy.optimizers['D'].param_groups[0]['params'])


class NoKeyLoss(ToyPluginLoss):
    snapshot_key = None


class ThirdNetworkLoss(ToyPluginLoss):
    extra_modules_train_with = 'E'


@pytest.mark.parametrize('name, message', [('NoKeyLoss', 'no snapshot_key'), ('ThirdNetworkLoss', 'must be "G" or "D"')])
def test_build_loss_and_phases_reject_a_malformed_plugin(image_dir, name, message):
    with pytest.raises(tl.TrainingError, match=message):
        tiny_setup(image_dir, loss_kwargs=dict(class_name=f'{__name__}.{name}', r1_gamma=1.0))


def test_prepare_minibatch_scales_reals_and_draws_labels_from_the_table():
    images = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(2).reshape(4, 1, 1, 1).expand(4, 3, 2, 2)
    table = torch.eye(3)[[0, 2]]  # the dataset's labels: classes 0 and 2 only
    batch = tl.prepare_minibatch(images, table[[0, 1, 0, 1]], table, num_phases=3, z_dim=5, batch_gpu=2, device='cpu')
    assert len(batch.real_img) == 2 and batch.real_img[0].shape == (2, 3, 2, 2)
    assert batch.real_img[0].min() == -1 and batch.real_img[1].max() == 1
    assert len(batch.gen_z) == 3 and all(len(chunks) == 2 and chunks[0].shape == (2, 5) for chunks in batch.gen_z)
    drawn = torch.cat([c for chunks in batch.gen_c for c in chunks])
    assert drawn.shape == (12, 3) and all(row in table.tolist() for row in drawn.tolist())


class RecordingLoss(StyleGAN2Loss):
    """Records which phases run, with how many images per call and which gain."""

    def __init__(self, device, **kwargs):
        super().__init__(device, **kwargs)
        self.calls = []
        self.grad_flags = []

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        self.calls.append((phase, real_img.shape[0], gen_z.shape[0], gain))
        self.grad_flags.append((self.D.b16.conv0.weight.requires_grad, self.G_mapping.fc0.weight.requires_grad))
        super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)


def test_run_phases_runs_the_due_phases_chunk_by_chunk(image_dir):
    run = tiny_setup(image_dir, loss_kwargs=dict(class_name=f'{__name__}.RecordingLoss', r1_gamma=1.0))
    images = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8)
    batch = tl.prepare_minibatch(images, torch.zeros([8, 0]), run.label_table, len(run.phases), 32, 4, 'cpu')
    D_before = copy.deepcopy(run.nets.D.state_dict())
    tl.run_phases(run.loss, run.phases, batch, batch_idx=0, num_gpus=1)
    # Two chunks of four per phase; the gain is the interval over the number of chunks.
    assert run.loss.calls == [(p, 4, 4, gain) for p, gain in [('Gmain', 0.5), ('Greg', 2.0), ('Dmain', 0.5), ('Dreg', 8.0)]
                              for _ in range(2)]
    assert run.loss.grad_flags[:4] == [(False, True)] * 4 and run.loss.grad_flags[4:] == [(True, False)] * 4
    assert not any(p.requires_grad for p in run.nets.D.parameters())  # switched off again after each phase
    assert any(not torch.equal(a, run.nets.D.state_dict()[k]) for k, a in D_before.items())  # D's optimiser stepped
    assert all(p.timer.elapsed_ms() >= 0 for p in run.phases)

    run.loss.calls.clear()
    tl.run_phases(run.loss, run.phases, batch, batch_idx=4, num_gpus=1)
    assert [c[0] for c in run.loss.calls[::2]] == ['Gmain', 'Greg', 'Dmain']  # Dreg only every 16th


def test_update_G_ema_half_life_and_ramp_up():
    def net(value):
        module = torch.nn.Linear(1, 1, bias=False)
        module.register_buffer('seen', torch.tensor(value))
        torch.nn.init.constant_(module.weight, value)
        return module
    G, G_ema = net(1.0), net(0.0)
    tl.update_G_ema(G_ema, G, cur_nimg=1000, batch_size=8, ema_kimg=0.008, ema_rampup=None)  # half-life: one minibatch
    assert float(G_ema.weight.detach()) == pytest.approx(0.5) and float(G_ema.seen) == 1.0
    G_ema = net(0.0)
    tl.update_G_ema(G_ema, G, cur_nimg=4, batch_size=8, ema_kimg=10, ema_rampup=2)  # ramp-up: half-life 8 images
    assert float(G_ema.weight.detach()) == pytest.approx(0.5)


def test_train_minibatch_moves_the_counters(image_dir):
    run = tiny_setup(image_dir)
    progress = tl.Progress(cur_nimg=80, batch_idx=10)
    batch = tl.prepare_minibatch(torch.zeros([8, 3, 16, 16], dtype=torch.uint8), torch.zeros([8, 0]), run.label_table,
                                 len(run.phases), 32, 8, 'cpu')
    G_ema_before = copy.deepcopy(run.nets.G_ema)
    tl.train_minibatch(run.loss, run.phases, run.nets, batch, progress, batch_size=8, num_gpus=1, ema_kimg=0.01, ema_rampup=None)
    assert (progress.cur_nimg, progress.batch_idx) == (88, 11)
    moved = [not torch.equal(a, b) for a, b in zip(G_ema_before.parameters(), run.nets.G_ema.parameters())]
    assert any(moved)


def test_stop_if_diverged_names_the_phase_and_the_last_snapshot():
    loss = Loss()
    loss.watch_finite('Dmain', torch.tensor(1.0))
    tl.stop_if_diverged(loss, [], kimg=0.5, num_gpus=1, device='cpu', last_snapshot=None)  # finite: nothing happens
    loss.watch_finite('Gmain', torch.tensor(1.0))
    loss.watch_finite('Dreg', torch.tensor([1.0, float('inf')]))
    with pytest.raises(tl.TrainingDiverged, match=r'phase Dreg at kimg 1\.250; training stopped \(last good snapshot: x.pkl\)'):
        tl.stop_if_diverged(loss, [], kimg=1.25, num_gpus=1, device='cpu', last_snapshot='x.pkl')


def test_adjust_augment_p_follows_the_sign_of_d_real():
    pipe = torch.nn.Module()
    pipe.register_buffer('p', torch.tensor(0.1))
    stats = tl.ada_collector(pipe, ada_target=0.6)
    progress = tl.Progress()
    training_stats.report('Loss/signs/real', torch.tensor([1.0, 1.0, 1.0, -1.0]))  # mean 0.5 < 0.6: D does not overfit
    tl.adjust_augment_p(pipe, stats, progress, ada_target=0.6, ada_interval=4, ada_kimg=1, batch_size=8)
    assert float(pipe.p) == pytest.approx(0.1 - 8 * 4 / 1000) and progress.ada_window is None
    # A window carried from before a snapshot counts together with the new signs.
    progress.ada_window = (20, 1.0)  # with it the mean is 16 / 24 > 0.6; the new signs alone would say -1
    training_stats.report('Loss/signs/real', torch.tensor([-1.0, -1.0, -1.0, -1.0]))
    tl.adjust_augment_p(pipe, stats, progress, ada_target=0.6, ada_interval=4, ada_kimg=1, batch_size=8)
    assert float(pipe.p) == pytest.approx(0.1)
    tl.adjust_augment_p(pipe, stats, progress, ada_target=0.6, ada_interval=4, ada_kimg=1, batch_size=8)  # no new signs
    assert float(pipe.p) == pytest.approx(0.1) and tl.augment_probability(pipe) == pytest.approx(0.1)
    assert tl.augment_probability(None) == 0.0


def test_report_tick_reduces_the_stats_and_formats_the_line():
    tick_stats = training_stats.Collector(regex='.*')
    training_stats.report('Loss/G/loss', torch.tensor([0.5, 1.5]))
    clock = tl.TickClock(start=100.0, tick_start=160.0, tick_first_nimg=4000, tick_end=180.0, maintenance_sec=2.0)
    progress = tl.Progress(cur_nimg=8000, cur_tick=3)
    stats, line = tl.report_tick(progress, [], None, clock, total_kimg=10, tick_stats=tick_stats, device=torch.device('cpu'))
    assert stats['Progress/kimg']['mean'] == 8.0 and stats['Timing/sec_per_kimg']['mean'] == pytest.approx(5.0)
    assert stats['Timing/total_sec']['mean'] == 80 and stats['Timing/maintenance_sec']['mean'] == 2.0
    assert stats['Loss/G/loss']['mean'] == 1.0 and 'Resources/cpu_mem_gb' in stats
    assert line.startswith('tick 3     kimg 8.0') and 'sec/tick 20.0' in line and 'ETA 10s' in line
    assert line.endswith('G 1.000   D -')

    clock.tick_end = 190.0
    clock.next_tick(8000)
    assert clock.tick_first_nimg == 8000 and clock.maintenance_sec == pytest.approx(clock.tick_start - 190.0)


def test_snapshot_state_and_restore_round_trip(tmp_path, image_dir):
    run = tiny_setup(image_dir, loss_kwargs=dict(class_name=f'{__name__}.ToyPluginLoss', r1_gamma=1.0))
    run.loss.odd_steps += 3
    progress = tl.Progress(cur_nimg=2000, cur_tick=5, batch_idx=250, ada_window=(4, 0.25))
    snapshot = tl.snapshot_networks(run.nets, run.loss, run.extras, {'path': image_dir}, num_gpus=1)
    assert tuple(snapshot) == tl.SNAPSHOT_KEYS + ('toy',)
    assert snapshot['G'] is not run.nets.G and not snapshot['G'].training
    assert not any(p.requires_grad for p in snapshot['D'].parameters())
    path = tl.save_snapshot(str(tmp_path), snapshot, progress, run.optimizers, run.nets.augment_pipe, None, run.loss,
                            rng={'seed': torch.tensor(1)}, num_gpus=1, batch_size=8, is_main=True)
    assert path == str(tmp_path / 'network-snapshot-000002.pkl')
    state, pkl = tl.load_training_state(str(tmp_path / 'training-state-000002.pt'))
    assert pkl == path and state['cur_tick'] == 6 and state['ada_window'] == [4, 0.25]
    assert state['augment_p'] == pytest.approx(0.2) and state['rng'] == [{'seed': torch.tensor(1)}]

    fresh = tiny_setup(image_dir, loss_kwargs=dict(class_name=f'{__name__}.ToyPluginLoss', r1_gamma=1.0))
    fresh.nets.augment_pipe.p.zero_()
    restored = tl.restore_training_state(state, 'x.pt', fresh.optimizers, fresh.nets.augment_pipe, fresh.loss, fresh.extras, rank=0)
    assert restored == tl.Progress(cur_nimg=2000, cur_tick=6, batch_idx=250, ada_window=(4, 0.25))
    assert int(fresh.loss.odd_steps) == 3 and float(fresh.nets.augment_pipe.p) == pytest.approx(0.2)
    torch.testing.assert_close(fresh.extras['head'].weight, run.extras['head'].weight)
    assert tl.restore_training_state(None, None, {}, None, None, {}, 0) == tl.Progress()
    with pytest.raises(tl.TrainingError, match='already at 2.0 kimg'):
        tl.check_resumed_run(state, restored, num_gpus=1, batch_size=8, total_kimg=2, say=print)


def test_data_iterator_skips_what_a_resumed_run_already_saw(image_dir):
    training_set, _ = tl.open_training_set(dict(class_name='training.dataset.ImageFolderDataset', path=image_dir), 'cpu')
    fresh = tl.data_iterator(training_set, dict(num_workers=0), batch_per_process=3, random_seed=7)
    seen = [next(fresh)[0] for _ in range(4)]
    resumed = tl.data_iterator(training_set, dict(num_workers=0), batch_per_process=3, random_seed=7, skip_batches=2)
    assert torch.equal(next(resumed)[0], seen[2]) and torch.equal(next(resumed)[0], seen[3])


def test_image_grid_and_stats_writer(tmp_path, image_dir):
    run = tiny_setup(image_dir)
    grid = tl.start_image_grid(str(tmp_path), run.training_set, run.nets.G_ema, batch_gpu=4, random_seed=1, device='cpu')
    assert PIL.Image.open(tmp_path / 'reals.png').size == PIL.Image.open(tmp_path / 'fakes_init.png').size == (512, 512)
    again = tl.start_image_grid(str(tmp_path), run.training_set, run.nets.G_ema, batch_gpu=4, random_seed=1, device='cpu')
    assert all(torch.equal(a, b) for a, b in zip(grid.latents, again.latents))  # same z in every run

    writer = tl.StatsWriter(str(tmp_path), say=lambda *args: None)
    collector = training_stats.Collector(regex='Test/.*')
    training_stats.report('Test/value', torch.tensor([2.0, 4.0]))
    collector.update()
    writer.write(collector.as_dict(), {}, cur_nimg=3000, start_time=0.0)
    writer.close()
    (record,) = read_jsonl(tmp_path / 'stats.jsonl')
    assert record['Test/value']['mean'] == 3.0 and record['timestamp'] > 0


def test_network_summaries_print_both_tables_and_leave_G_untouched(image_dir, capsys):
    run = tiny_setup(image_dir)
    w_avg = run.nets.G.mapping.w_avg.clone()
    tl.print_network_summaries(run.nets, batch_gpu=4, device='cpu')
    printed = capsys.readouterr().out
    assert 'Generator' in printed and 'Discriminator' in printed and 'mapping' in printed and 'b16' in printed
    assert torch.equal(run.nets.G.mapping.w_avg, w_avg) and run.nets.G.training  # eval pass, then train mode again
