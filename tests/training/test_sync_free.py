"""No host-device synchronisation inside a training minibatch: every device read waits for the tick."""

import numpy as np
import PIL.Image
import pytest
import torch

from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from torch_utils import sync_free
from torch_utils import training_stats
from training import training_loop as tl
from training.loss import StyleGAN2Loss

RES = 16
BATCH = 4
NET = dict(z_dim=32, w_dim=32, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
D_NET = dict(class_name='training.networks.Discriminator', channel_base=256, channel_max=32, block_kwargs={},
             mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4))
ADAM = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)
# Colour transforms only: ADA's geometric transforms size their reflect padding from the drawn
# warp, which the host has to read (see docs/PERFORMANCE.md).
COLOUR_AUG = dict(class_name='training.augment.AugmentPipe', brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

LOSSES = {
    'baseline': dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
    'mixdl': dict(class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss', r1_gamma=1.0, interval=2),
    'adaptivemix': dict(class_name='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss', r1_gamma=1.0),
    'augintae': dict(class_name='stylegan2_ada_mixdl.augintae.AugIntAELoss', r1_gamma=1.0),
}
# AugIntAE's transform T skips the warp when no image moved (bool of a device tensor), and warps through ADA's
# resampler, which reads its padding size back.
KNOWN_READS = {'augintae': "AugIntAE's T reads whether any image moved, and the warp's padding size, on the host"}


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('sync16')
    rng = np.random.RandomState(1)
    for i in range(8):
        PIL.Image.fromarray((rng.rand(RES, RES, 3) * 255).astype(np.uint8)).save(folder / f'{i}.png')
    return str(folder)


def dataset_kwargs(image_dir):
    return dict(class_name='training.dataset.ImageFolderDataset', path=image_dir, use_labels=False, max_size=None,
                xflip=False, resolution=RES)


def build_run(image_dir, loss_kwargs, augment_kwargs=None):
    """The loop's own set-up steps, with both regularisers due every second minibatch."""
    tl.setup_process(random_seed=0, cudnn_benchmark=False)
    training_set, label_table = tl.open_training_set(dataset_kwargs(image_dir), 'cpu')
    nets = tl.build_networks(tl.network_sizes(training_set), dict(class_name='training.networks.Generator', **NET), D_NET,
                             'cpu', augment_kwargs, augment_p=0.5 if augment_kwargs else 0)
    loss, extras = tl.build_loss(loss_kwargs, nets, 'cpu')
    optimizers, phases = tl.build_phases(loss, nets, extras, ADAM, ADAM, G_reg_interval=2, D_reg_interval=2, device='cpu')
    batches = tl.data_iterator(training_set, dict(num_workers=0), BATCH)
    return dict(loss=loss, nets=nets, optimizers=optimizers, phases=phases, batches=batches, label_table=label_table,
                progress=tl.Progress())


def one_minibatch(run):
    minibatch = tl.prepare_minibatch(*next(run['batches']), run['label_table'], len(run['phases']), run['nets'].G.z_dim,
                                     BATCH // 2, 'cpu')
    tl.train_minibatch(run['loss'], run['phases'], run['nets'], minibatch, run['progress'], BATCH, 1, ema_kimg=0.01,
                       ema_rampup=None)


@pytest.mark.parametrize('augment', [False, True], ids=['noaug', 'colour-aug'])
@pytest.mark.parametrize('name', [pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_READS[name], strict=True,
                                                                            raises=sync_free.DeviceReadError))
                                  if name in KNOWN_READS else name for name in sorted(LOSSES)])
def test_minibatches_never_read_the_device(image_dir, name, augment):
    run = build_run(image_dir, LOSSES[name], COLOUR_AUG if augment else None)
    one_minibatch(run)  # creates the optimisers' state outside the guarded region
    host = sync_free.optimizer_host_tensors(run['optimizers'].values())
    with sync_free.forbid_device_reads(host_tensors=host):
        for _ in range(4):  # main and regularisation phases, MixDL and plain minibatches
            one_minibatch(run)
    # Once per tick the values are read: losses were reported and the NaN/inf watch is clean.
    stats = training_stats.Collector(regex='Loss/.*')
    training_stats.report('Loss/G/loss', torch.ones([1]))
    stats.update()
    assert stats.num('Loss/G/loss') >= 1
    assert run['loss'].first_nonfinite() is None


def test_the_guard_catches_reads_and_allows_host_draws():
    weights = torch.ones(3)
    generator = torch.Generator().manual_seed(0)
    with sync_free.forbid_device_reads():
        host_draw = torch.randint(5, [3], generator=generator)
        assert isinstance(host_draw.tolist(), list) and int(host_draw.sum()) >= 0  # host values may be read
        from_numpy = torch.as_tensor(np.arange(3)) * 2
        assert from_numpy.tolist() == [0, 2, 4]
        value = weights.sum() * host_draw.float().mean()
        for read in (lambda: value.item(), lambda: float(value), lambda: bool(value > 0), lambda: value.tolist(),
                     lambda: value.cpu(), lambda: f'{value:.3f}', lambda: int(value), lambda: value.numpy(),
                     lambda: torch.zeros(3, device='cpu').tolist()):
            with pytest.raises(sync_free.DeviceReadError):
                read()
        with sync_free.allow_device_reads():
            assert value.item() >= 0
        host_draw.add_(weights.long())  # device data written into a host tensor makes it a device tensor
        with pytest.raises(sync_free.DeviceReadError):
            host_draw.tolist()
    assert value.item() >= 0  # outside the region anything goes


class ReadingLoss(StyleGAN2Loss):
    """Reads its D loss on the host every minibatch: what the guard is there to catch."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        if phase == 'Dmain':
            float(self.D(real_img, real_c).mean())


def test_a_loss_that_reads_the_device_is_caught(image_dir):
    run = build_run(image_dir, dict(class_name=f'{__name__}.ReadingLoss', r1_gamma=1.0))
    one_minibatch(run)
    with sync_free.forbid_device_reads(host_tensors=sync_free.optimizer_host_tensors(run['optimizers'].values())):
        with pytest.raises(sync_free.DeviceReadError, match='__float__'):
            one_minibatch(run)


def test_the_loop_reads_the_device_only_at_ticks(tmp_path, image_dir, monkeypatch):
    """A whole training_loop() run with every per-minibatch step guarded; the NaN check runs once per tick."""
    guarded = {}

    def guard(function):
        def wrapped(*args, **kwargs):
            optimizers = [phase.opt for phase in guarded.get('phases', [])]
            with sync_free.forbid_device_reads(host_tensors=sync_free.optimizer_host_tensors(optimizers)):
                return function(*args, **kwargs)
        return wrapped

    real_train_minibatch = tl.train_minibatch

    def train_minibatch(loss, phases, *args, **kwargs):
        if 'phases' not in guarded:  # the first minibatch creates the optimisers' state
            guarded['phases'] = phases
            return real_train_minibatch(loss, phases, *args, **kwargs)
        return guard(real_train_minibatch)(loss, phases, *args, **kwargs)

    checks = []
    real_stop = tl.stop_if_diverged
    monkeypatch.setattr(tl, 'train_minibatch', train_minibatch)
    monkeypatch.setattr(tl, 'prepare_minibatch', guard(tl.prepare_minibatch))
    monkeypatch.setattr(tl, 'stop_if_diverged', lambda *args: checks.append(args[2]) or real_stop(*args))
    minibatches_per_tick = 3
    tl.training_loop(run_dir=str(tmp_path), training_set_kwargs=dataset_kwargs(image_dir),
                     data_loader_kwargs=dict(num_workers=0), G_kwargs=dict(class_name='training.networks.Generator', **NET),
                     D_kwargs=D_NET, G_opt_kwargs=ADAM, D_opt_kwargs=ADAM, loss_kwargs=LOSSES['baseline'],
                     batch_size=BATCH, batch_gpu=BATCH, G_reg_interval=2, D_reg_interval=2,
                     total_kimg=BATCH * (1 + 2 * minibatches_per_tick) / 1000,
                     kimg_per_tick=BATCH * minibatches_per_tick / 1000, image_snapshot_ticks=None,
                     network_snapshot_ticks=None, random_seed=0, device='cpu')
    assert len(checks) == 3  # one NaN/inf check per tick (ticks 0, 1, 2), not one per minibatch


def test_the_nan_watch_names_the_first_bad_minibatch_and_phase():
    loss = StyleGAN2Loss('cpu', G_mapping=None, G_synthesis=None, D=None)
    for batch_idx, (gmain, dmain) in enumerate([(1.0, 1.0), (1.0, float('nan')), (float('inf'), float('nan'))]):
        loss.begin_minibatch(batch_idx)
        loss.watch_finite('Gmain', torch.tensor([gmain]))
        loss.watch_finite('Dmain', torch.tensor(dmain))
        loss.end_minibatch()
    assert loss.first_nonfinite() == ('Dmain', 1)
    assert loss.first_nonfinite() is None  # read and cleared
    with pytest.raises(tl.TrainingDiverged, match=r'phase Gmain at kimg 0\.984;'):
        loss.begin_minibatch(5)
        loss.watch_finite('Gmain', torch.tensor(float('nan')))
        loss.end_minibatch()
        loss.begin_minibatch(7)  # two minibatches later, at kimg 1.000 with 8 images a minibatch
        tl.stop_if_diverged(loss, [], kimg=1.0, num_gpus=1, device='cpu', last_snapshot=None, batch_size=8)
