"""bench/_loop_harness.py: the loss-cost benchmarks train through the training loop's own steps."""

import argparse
import os
import sys

import torch

from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'bench'))
import _loop_harness as harness  # noqa: E402

BASELINE = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0)


def tiny_args(*extra):
    parser = argparse.ArgumentParser()
    harness.add_common_args(parser, res=16, channel_base=256, minibatches=16, warmup=0)
    return parser.parse_args(['--batch=4', '--channel-max=16', '--z-dim=16', '--blocks=1', '--device=cpu', *extra])


def test_arms_run_the_loops_minibatch_step(monkeypatch):
    calls = []
    original = harness.loop.train_minibatch

    def counting(loss, phases, nets, minibatch, *args, **kwargs):
        calls.append((type(loss).__name__, [p.name for p in phases], minibatch.real_c[0].shape))
        return original(loss, phases, nets, minibatch, *args, **kwargs)
    monkeypatch.setattr(harness.loop, 'train_minibatch', counting)
    args = tiny_args()
    device = harness.prepare_process(args)
    sec_per_kimg = harness.time_losses({'a': BASELINE, 'b': BASELINE}, args, device)
    assert set(sec_per_kimg) == {'a', 'b'} and all(value > 0 for value in sec_per_kimg.values())
    assert len(calls) == 2 * 16
    assert calls[0] == ('StyleGAN2Loss', ['Gmain', 'Greg', 'Dmain', 'Dreg'], (4, 0))  # real labels, not generated ones


def test_networks_follow_train_pys_precision_policy():
    G_kwargs, D_kwargs = harness.network_kwargs(tiny_args('--cfg-widths=paper256'), torch.device('cpu'))
    assert G_kwargs.synthesis_kwargs.num_fp16_res == 0 and D_kwargs.num_fp16_res == 0  # fp32 off CUDA
    assert G_kwargs.synthesis_kwargs.channel_base == 16384 and D_kwargs.conv_clamp == 256
