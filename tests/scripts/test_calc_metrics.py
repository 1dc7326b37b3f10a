"""End-to-end tests of calc_metrics.py on a tiny 32 px snapshot with stand-in detectors and no network."""

import json
import os
import pickle

import numpy as np
import PIL.Image
import torch
from click.testing import CliRunner

import calc_metrics
from tests._shared import offline  # noqa: F401 (fixture, shared with tests/metrics)
from tests.metrics.standins import write_standin_detectors


def _tiny_snapshot(run_dir, images=None):
    """A 32 px snapshot beside a folder of its training images: `images` (uint8 [N, 3, 32, 32]) or six of noise."""
    from training import networks
    image_dir = run_dir / 'images'
    image_dir.mkdir()
    if images is None:
        images = np.random.RandomState(0).randint(0, 256, [6, 3, 32, 32], dtype=np.uint8)
    for i, image in enumerate(images):
        PIL.Image.fromarray(image.transpose(1, 2, 0)).save(image_dir / f'img{i}.png')
    torch.manual_seed(0)
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=0))
    G = networks.Generator(**kwargs).eval().requires_grad_(False)
    D = networks.Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=128, channel_max=16,
                               num_fp16_res=0).eval().requires_grad_(False)
    snapshot = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=str(image_dir),
                                              use_labels=False, max_size=None, xflip=False, resolution=32),
                    G=G, D=D, G_ema=G, augment_pipe=None)
    pkl = run_dir / 'network-snapshot-000000.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(snapshot, f)
    (run_dir / 'training_options.json').write_text('{}')
    return pkl


def test_calc_metrics_writes_jsonl_records(offline):
    run_dir = offline / 'run'
    run_dir.mkdir()
    pkl = _tiny_snapshot(run_dir)
    detectors = write_standin_detectors(str(offline / 'detectors'))
    result = CliRunner().invoke(calc_metrics.calc_metrics, [
        f'--network={pkl}', '--metrics=fid50k_full,kid50k_full,pix_div1k', f'--detector-dir={detectors}', '--item-cap=8'])
    assert result.exit_code == 0, result.output
    for metric, key in [('fid50k_full', 'fid50k_full'), ('kid50k_full', 'kid50k_full'), ('pix_div1k', 'pix_div1k')]:
        lines = (run_dir / f'metric-{metric}.jsonl').read_text().splitlines()
        assert len(lines) == 1
        record = json.loads(lines[0])
        assert record['metric'] == metric and record['snapshot_pkl'] == 'network-snapshot-000000.pkl'
        assert np.isfinite(record['results'][key]) and record['num_gpus'] == 1
        assert json.dumps(record) in result.output or lines[0] in result.output   # printed like upstream
    fid = json.loads((run_dir / 'metric-fid50k_full.jsonl').read_text())
    assert fid['results']['fid50k_full'] > 0 and fid['details']['num_real'] == 6


def test_missing_detector_fails_before_loading_the_network(offline):
    result = CliRunner().invoke(calc_metrics.calc_metrics, ['--network=does-not-exist.pkl', '--metrics=fid50k_full',
                                                            f'--detector-dir={offline}'])
    assert result.exit_code != 0
    assert 'download URL to' in result.output and 'inception-2015-12-05.pt' in result.output
    assert '--metrics=none' in result.output and 'Loading network' not in result.output


def test_metrics_none_and_unknown_metric(offline):
    ok = CliRunner().invoke(calc_metrics.calc_metrics, ['--network=x.pkl', '--metrics=none'])
    assert ok.exit_code == 0 and 'nothing to do' in ok.output
    bad = CliRunner().invoke(calc_metrics.calc_metrics, ['--network=x.pkl', '--metrics=fid'])
    assert bad.exit_code == 2 and 'unknown metric fid' in bad.output
