"""Tests for legacy.py: loading our and NVIDIA-layout pickles into the current classes, force_fp16, the CLI."""

import pickle
import sys
import types

import pytest
import torch
from click.testing import CliRunner

import legacy
from training import networks

TINY = dict(channel_base=1024, channel_max=32)


def tiny_G(res=16, c_dim=0):
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(TINY))


def tiny_D(res=16, c_dim=0):
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, **TINY)


def snapshot(c_dim=0):
    """A dict laid out like NVIDIA's network-snapshot-NNNNNN.pkl (spec 2.1)."""
    G = tiny_G(c_dim=c_dim).eval().requires_grad_(False)
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='data.zip',
                                 use_labels=False, max_size=10, xflip=False, resolution=16),
        G=G, D=tiny_D(c_dim=c_dim).eval().requires_grad_(False), G_ema=G, augment_pipe=None)


def outputs(data, z):
    with torch.no_grad():
        img = data['G_ema'](z, None, noise_mode='const')
        return img, data['D'](img, None)


def test_snapshot_layout_loads_with_all_keys(tmp_path):
    data = snapshot()
    path = tmp_path / 'network-snapshot-000000.pkl'
    path.write_bytes(pickle.dumps(data))
    loaded = legacy.load_network_pkl(str(path))
    assert list(loaded) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    assert loaded['training_set_kwargs']['resolution'] == 16
    assert loaded['augment_pipe'] is None
    z = torch.randn([2, 16])
    for got, want in zip(outputs(loaded, z), outputs(data, z)):
        assert torch.equal(got, want)
    assert not loaded['G'].training and not any(p.requires_grad for p in loaded['G'].parameters())


def test_pretrained_layout_without_optional_keys_gets_none(tmp_path):
    data = snapshot()
    path = tmp_path / 'ffhq.pkl'
    path.write_bytes(pickle.dumps({k: data[k] for k in ('G', 'D', 'G_ema')}))
    with open(path, 'rb') as f:
        loaded = legacy.load_network_pkl(f)
    assert loaded['training_set_kwargs'] is None and loaded['augment_pipe'] is None
    loaded_from_url = legacy.load_network_pkl(path.as_uri())  # file:// URLs go through open_url
    assert set(loaded_from_url) == {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}


def _foreign_bytes(data):
    """Pickle `data`, then alter its embedded networks.py source (same length) so that unpickling
    builds classes from a different module, as happens with NVIDIA's or an older version's pickles."""
    raw = pickle.dumps(data)
    marker = b'Gains and other constants are stored as Python floats'
    assert raw.count(marker) == 1
    return raw.replace(marker, marker.upper())


def test_foreign_classes_are_rebuilt_as_current_classes_with_identical_outputs(tmp_path):
    data = snapshot()
    path = tmp_path / 'foreign.pkl'
    path.write_bytes(_foreign_bytes(data))
    with open(path, 'rb') as f:
        raw = pickle.load(f)
    assert type(raw['G']) is not networks.Generator  # the embedded (altered) source built these
    loaded = legacy.load_network_pkl(str(path))
    for key, cls in (('G', networks.Generator), ('D', networks.Discriminator), ('G_ema', networks.Generator)):
        assert type(loaded[key]) is cls
    z = torch.randn([2, 16])
    for got, want in zip(outputs(loaded, z), outputs(data, z)):
        assert torch.equal(got, want)
    assert loaded['G'].init_kwargs == data['G'].init_kwargs


def test_force_fp16_rebuilds_with_fp16_kwargs_and_same_cpu_output(tmp_path):
    data = snapshot()
    path = tmp_path / 'net.pkl'
    path.write_bytes(_foreign_bytes(data))
    loaded = legacy.load_network_pkl(str(path), force_fp16=True)
    G, D = loaded['G_ema'], loaded['D']
    assert G.init_kwargs['synthesis_kwargs']['num_fp16_res'] == 4 and G.init_kwargs['synthesis_kwargs']['conv_clamp'] == 256
    assert D.init_kwargs['num_fp16_res'] == 4 and D.init_kwargs['conv_clamp'] == 256
    assert [getattr(G.synthesis, f'b{r}').use_fp16 for r in G.synthesis.block_resolutions] == [False, True, True]
    assert G.synthesis.b16.conv1.conv_clamp == 256
    # On CPU the fp16 blocks run in fp32, and these small activations never reach the clamp.
    z = torch.randn([2, 16])
    for got, want in zip(outputs(loaded, z), outputs(data, z)):
        assert torch.allclose(got, want, atol=1e-6)


def test_stylegan3_repo_generator_kwargs_are_folded_into_synthesis_kwargs():
    flat = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                mapping_kwargs=dict(num_layers=2), channel_base=16384, channel_max=512, num_fp16_res=4,
                conv_clamp=256, fused_modconv_default='inference_only')
    kwargs = legacy._our_init_kwargs('Generator', flat)
    assert kwargs['synthesis_kwargs'] == dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256)
    assert kwargs['mapping_kwargs'] == dict(num_layers=2, w_avg_beta=0.998)
    ours = dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3, mapping_kwargs={},
                synthesis_kwargs=dict(channel_base=64))
    assert legacy._our_init_kwargs('Generator', ours) == ours
    assert legacy._our_init_kwargs('Discriminator', dict(c_dim=0)) == dict(c_dim=0)


def test_tensorflow_pickles_are_rejected_with_a_clear_error(tmp_path, monkeypatch):
    # Fabricate a pickle referencing dnnlib.tflib.network.Network, as TF-era pickles do.
    fake = types.ModuleType('dnnlib.tflib.network')

    class Network:
        pass
    Network.__module__ = 'dnnlib.tflib.network'
    Network.__qualname__ = 'Network'
    fake.Network = Network
    monkeypatch.setitem(sys.modules, 'dnnlib.tflib', types.ModuleType('dnnlib.tflib'))
    monkeypatch.setitem(sys.modules, 'dnnlib.tflib.network', fake)
    nets = []
    for name in ('G', 'D', 'Gs'):
        net = Network()
        net.__dict__.update(version=4, name=name, static_kwargs={}, components={}, variables=[])
        nets.append(net)
    path = tmp_path / 'tf.pkl'
    path.write_bytes(pickle.dumps(tuple(nets)))
    monkeypatch.delitem(sys.modules, 'dnnlib.tflib.network')
    with pytest.raises(ValueError, match="not supported; convert it with NVIDIA's legacy.py first"):
        legacy.load_network_pkl(str(path))


def test_non_network_pickles_are_rejected(tmp_path):
    path = tmp_path / 'x.pkl'
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match='expected a network pickle'):
        legacy.load_network_pkl(str(path))
    path.write_bytes(pickle.dumps(dict(G=tiny_G())))
    with pytest.raises(ValueError, match='no D, G_ema'):
        legacy.load_network_pkl(str(path))


def test_cli_converts_a_foreign_pickle(tmp_path):
    src, dst = tmp_path / 'src.pkl', tmp_path / 'dst.pkl'
    data = snapshot()
    src.write_bytes(_foreign_bytes(data))
    result = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(src), '--dest', str(dst),
                                                                '--force-fp16', 'true'])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f'Loading "{src}"...', f'Saving "{dst}"...', 'Done.']
    converted = legacy.load_network_pkl(str(dst))
    assert converted['G_ema'].init_kwargs['synthesis_kwargs']['num_fp16_res'] == 4


def test_cli_missing_source_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(tmp_path / 'nope.pkl'),
                                                                '--dest', str(tmp_path / 'out.pkl')])
    assert result.exit_code == 2
    assert 'no such file' in result.output
    assert 'Traceback' not in result.output
