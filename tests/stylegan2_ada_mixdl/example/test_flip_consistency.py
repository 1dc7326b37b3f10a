"""The example plug-in of docs/PLUGINS.md: its term, its options, and two CPU minibatches of training with it."""
import numpy as np
import pytest
import torch

from stylegan2_ada_mixdl.example import FlipConsistencyLoss
from tests.stylegan2_ada_mixdl.tiny_run import read_stats, tiny_config, tiny_networks, train_run, write_image_folder
from training.plugins import PluginConfigError

RES = 16


def _loss(**kwargs):
    G, D = tiny_networks(RES)
    return FlipConsistencyLoss('cpu', G.mapping, G.synthesis, D, **kwargs)


def test_the_term_is_the_squared_logit_change_under_a_flip():
    loss = _loss(weight=0.5)
    img = torch.randn(4, 3, RES, RES)
    output = loss.run_D(img, torch.zeros(4, 0))
    expected = (loss.D(img, None) - loss.D(img.flip(3), None)).square().squeeze(1)
    torch.testing.assert_close(output.aux.per_sample, expected)
    assert output.aux.name == 'flipcr' and output.aux.weight == 0.5 and expected.abs().sum() > 0
    symmetric = img + img.flip(3)  # a mirror-symmetric image scores the same both ways
    assert loss.run_D(symmetric, torch.zeros(4, 0)).aux.per_sample.abs().max() < 1e-5


def test_options_have_defaults_and_checks():
    assert _loss().weight == 1.0
    with pytest.raises(PluginConfigError, match='--flipcr-weight'):
        _loss(weight=-1)


def test_two_cpu_minibatches_train_with_it_and_report_the_term(tmp_path):
    data = write_image_folder(tmp_path / 'data', RES)
    config = tiny_config(data, dict(class_name='stylegan2_ada_mixdl.example.FlipConsistencyLoss', weight=2.0),
                         minibatches=2, res=RES, z_dim=8, w_dim=8, widths=dict(channel_base=128, channel_max=16))
    stats = read_stats(train_run(tmp_path / 'run', config))
    for name in ('Loss/flipcr/G', 'Loss/flipcr/D', 'Loss/D/loss'):
        values = [entry[name]['mean'] for entry in stats if name in entry]
        assert values and np.isfinite(values).all(), name


def test_docs_show_the_example_file_as_it_is():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[3]
    doc = (root / 'docs' / 'PLUGINS.md').read_text()
    marker = '<!-- example: stylegan2_ada_mixdl/example/flip_consistency.py -->\n```python\n'
    listing = doc.split(marker, 1)[1].split('```\n', 1)[0]
    assert listing == (root / 'stylegan2_ada_mixdl' / 'example' / 'flip_consistency.py').read_text()
