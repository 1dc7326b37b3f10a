"""--cuda-graphs: which phases can be captured (CPU), and captured phases train like uncaptured ones (GPU)."""

import copy

import pytest
import torch

from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from tests.training.test_sync_free import build_run, image_dir  # noqa: F401 (fixture)
from torch_utils import cuda_graphs
from training import training_loop as tl
from training.augment import augpipe_specs

BATCH = 4


def first_chunk(run, batch_gpu=BATCH):
    minibatch = tl.prepare_minibatch(*next(run['batches']), run['label_table'], len(run['phases']), run['nets'].G.z_dim,
                                     batch_gpu, 'cpu')
    return minibatch.real_img[0], minibatch.real_c[0], minibatch.gen_z[0][0], minibatch.gen_c[0][0]


def blockers(run, phase):
    real_img, real_c, gen_z, gen_c = first_chunk(run)
    loss = run['loss']
    loss.begin_minibatch(0)
    modules = next(p.modules for p in run['phases'] if p.name == phase)
    for module in modules:
        module.requires_grad_(True)
    return cuda_graphs.capture_blockers(loss, lambda: loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, 1), 'cpu')


def test_the_baseline_phases_can_be_captured(image_dir):  # noqa: F811
    run = build_run(image_dir, dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0))
    for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg'):
        assert blockers(run, phase) == [], phase


def test_host_reads_and_host_draws_block_a_capture(image_dir):  # noqa: F811
    ada = dict(class_name='training.augment.AugmentPipe', **augpipe_specs['bgc'])
    run = build_run(image_dir, dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0), augment_kwargs=ada)
    run['nets'].augment_pipe.p.fill_(1.0)  # every geometric transform on: the padding is read back
    (reason,) = blockers(run, 'Dmain')
    assert reason.startswith('it reads device values on the host') and 'tolist' in reason
    mixdl = build_run(image_dir, dict(class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss', r1_gamma=1.0, interval=1))
    assert blockers(mixdl, 'Gmain') == ['it draws random numbers on the host, which a replay would repeat']


def test_cuda_graphs_need_cuda(image_dir):  # noqa: F811
    run = build_run(image_dir, dict(class_name='training.loss.StyleGAN2Loss'))
    with pytest.raises(ValueError, match='CUDA graphs need a CUDA device'):
        cuda_graphs.GraphedLoss(run['loss'], [run['nets'].G, run['nets'].D], 'cpu')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a CUDA device; this machine has none')
def test_captured_phases_train_like_uncaptured_ones(tmp_path):
    """Same seeds, same data: six minibatches (all four phases, two chunks each) with and without graphs."""
    from tests.training.test_sync_free import D_NET, NET, ADAM
    import numpy as np
    import PIL.Image
    rng = np.random.RandomState(0)
    for i in range(8):
        PIL.Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)).save(tmp_path / f'{i}.png')
    device = torch.device('cuda')

    def train(graphed):
        tl.setup_process(random_seed=0, cudnn_benchmark=False)
        training_set, label_table = tl.open_training_set(dict(class_name='training.dataset.ImageFolderDataset',
                                                              path=str(tmp_path), use_labels=False, max_size=None,
                                                              xflip=False, resolution=32), device)
        nets = tl.build_networks(tl.network_sizes(training_set), dict(class_name='training.networks.Generator', **NET),
                                 D_NET, device)
        loss, extras = tl.build_loss(dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0), nets, device)
        _, phases = tl.build_phases(loss, nets, extras, ADAM, ADAM, 2, 2, device)
        step_loss = cuda_graphs.GraphedLoss(loss, [nets.G, nets.D], device, say=lambda *a: None) if graphed else loss
        batches = tl.data_iterator(training_set, dict(num_workers=0), BATCH)
        progress = tl.Progress()
        for _ in range(6):
            minibatch = tl.prepare_minibatch(*next(batches), label_table, len(phases), nets.G.z_dim, BATCH // 2, device)
            tl.train_minibatch(step_loss, phases, nets, minibatch, progress, BATCH, 1, ema_kimg=0.01, ema_rampup=None)
        torch.cuda.synchronize()
        assert loss.first_nonfinite() is None
        captured = sorted({key[0] for key in step_loss._graphs}) if graphed else None
        return copy.deepcopy(nets), loss.pl_mean.clone(), captured

    eager_nets, eager_pl, _ = train(graphed=False)
    graph_nets, graph_pl, captured = train(graphed=True)
    assert captured == ['Dmain', 'Dreg', 'Gmain', 'Greg']
    for key in ('G', 'D', 'G_ema'):
        for (name, a), b in zip(eager_nets[key].named_parameters(), graph_nets[key].parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f'{key}.{name}: {m}')
    torch.testing.assert_close(graph_pl, eager_pl, rtol=1e-4, atol=1e-6)


def test_train_py_refuses_cuda_graphs_off_cuda(tmp_path, image_dir):  # noqa: F811
    from click.testing import CliRunner
    import train
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={image_dir}', '--device=cpu',
                                             '--cuda-graphs=1', '--dry-run'], catch_exceptions=False)
    assert result.exit_code != 0 and 'Traceback' not in result.output
    assert '--cuda-graphs=1 needs a CUDA device (this run uses cpu)' in result.output
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={image_dir}', '--device=cpu', '--dry-run'],
                                catch_exceptions=False)
    assert result.exit_code == 0 and '"cuda_graphs"' not in result.output  # off by default: not in the config
