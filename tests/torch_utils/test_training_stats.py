"""Tests for torch_utils.training_stats: single-process moments against numpy, windows, regex, reduction calls."""

import math

import numpy as np
import pytest
import torch

from torch_utils import training_stats


@pytest.fixture(autouse=True)
def fresh_stats(monkeypatch):
    # The bus is module-global; give every test an empty one in single-process mode.
    monkeypatch.setattr(training_stats, '_pending_moments', dict())
    monkeypatch.setattr(training_stats, '_total_moments', dict())
    monkeypatch.setattr(training_stats, '_process_rank', 0)
    monkeypatch.setattr(training_stats, '_reduce_device', None)
    monkeypatch.setattr(training_stats, '_first_update_done', False)


def test_mean_std_num_match_numpy():
    collector = training_stats.Collector(regex='Loss/.*')
    rng = np.random.RandomState(0)
    a = rng.randn(7).astype(np.float32)
    b = rng.randn(2, 3)
    returned = training_stats.report('Loss/G', torch.from_numpy(a))
    assert torch.equal(returned, torch.from_numpy(a))
    training_stats.report('Loss/G', b)
    training_stats.report('Loss/G', 1.5)
    training_stats.report('Timing/tick', 3.0)
    collector.update()
    everything = np.concatenate([a.astype(np.float64), b.ravel(), [1.5]])
    assert collector.names() == ['Loss/G']
    assert collector.num('Loss/G') == everything.size == 14
    assert collector.mean('Loss/G') == pytest.approx(everything.mean(), rel=1e-12)
    assert collector.std('Loss/G') == pytest.approx(everything.std(), rel=1e-9)
    assert collector['Loss/G'] == collector.mean('Loss/G')
    stats = collector.as_dict()
    assert list(stats) == ['Loss/G'] and stats['Loss/G'].num == 14
    assert stats['Loss/G'].std == collector.std('Loss/G')


def test_single_sample_and_empty_values():
    collector = training_stats.Collector()
    training_stats.report('one', [4.0])
    training_stats.report('none', [])
    collector.update()
    assert collector.names() == ['one', 'none']  # empty reports still register the name
    assert collector.num('one') == 1 and collector.mean('one') == 4.0 and collector.std('one') == 0.0
    assert collector.num('none') == 0
    assert math.isnan(collector.mean('none')) and math.isnan(collector.std('none'))
    assert math.isnan(collector.mean('never-reported'))


def test_windows_are_deltas_and_keep_previous():
    keeping = training_stats.Collector(keep_previous=True)
    dropping = training_stats.Collector(keep_previous=False)
    training_stats.report('x', [1.0, 3.0])
    keeping.update()
    dropping.update()
    assert keeping.mean('x') == 2.0 and dropping.mean('x') == 2.0
    training_stats.report('x', [10.0])
    keeping.update()
    assert keeping.num('x') == 1 and keeping.mean('x') == 10.0
    keeping.update()  # nothing new: the previous window stays
    dropping.update()  # saw 10.0 in this window
    assert keeping.mean('x') == 10.0 and dropping.mean('x') == 10.0
    dropping.update()
    assert dropping.num('x') == 0 and math.isnan(dropping.mean('x'))


def test_collector_ignores_values_reported_before_it_existed():
    training_stats.report('early', 5.0)
    collector = training_stats.Collector()
    training_stats.report('early', 7.0)
    collector.update()
    assert collector.num('early') == 1 and collector.mean('early') == 7.0


def test_report0_only_counts_rank_zero(monkeypatch):
    collector = training_stats.Collector()
    training_stats.report0('r0', 2.0)
    monkeypatch.setattr(training_stats, '_process_rank', 1)
    assert training_stats.report0('r0', 5.0) == 5.0
    collector.update()
    assert collector.num('r0') == 1 and collector.mean('r0') == 2.0


def test_report_keeps_tensor_on_device_and_in_float64():
    value = torch.tensor([1, 2, 3], dtype=torch.int32)
    training_stats.report('ints', value)
    (moments,) = training_stats._pending_moments['ints'].values()
    assert moments.dtype == torch.float64 and moments.tolist() == [3.0, 6.0, 14.0]


def test_one_all_reduce_per_update(monkeypatch):
    calls = []

    def fake_all_reduce(tensor):
        calls.append(tuple(tensor.shape))
        tensor.mul_(2)  # pretend a second process reported the same values
    monkeypatch.setattr(torch.distributed, 'all_reduce', fake_all_reduce)
    training_stats.init_multiprocessing(rank=0, sync_device=torch.device('cpu'))
    collector = training_stats.Collector()
    training_stats.report('a', [1.0, 2.0])
    training_stats.report('b', 4.0)
    calls.clear()
    collector.update()
    assert calls == [(2, 3)]
    assert collector.num('a') == 4 and collector.mean('a') == 1.5 and collector.num('b') == 2
    with pytest.raises(RuntimeError, match='before the first'):
        training_stats.init_multiprocessing(rank=0, sync_device=None)
    training_stats.init_multiprocessing(rank=0, sync_device=torch.device('cpu'))  # same set-up again: allowed


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_values_accumulate_on_device():
    collector = training_stats.Collector()
    training_stats.report('gpu', torch.arange(4.0, device='cuda'))
    (moments,) = training_stats._pending_moments['gpu'].values()
    assert moments.device.type == 'cuda'
    collector.update()
    assert collector.mean('gpu') == 1.5 and collector.num('gpu') == 4
