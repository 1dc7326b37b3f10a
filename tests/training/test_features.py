"""Tests for training/features.py on real tiny networks: layer finders, activation recording, D's features/head split."""

import copy
import pickle

import pytest
import torch

from training import features
from training import networks

TINY = dict(channel_base=1024, channel_max=32)  # 32 channels up to 32 px, 16 at 64 px


def tiny_G(res=32, arch='skip'):
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(TINY, architecture=arch))


def tiny_D(res=64, arch='resnet'):
    return networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, architecture=arch, **TINY)


def test_synthesis_conv_names_are_in_forward_order():
    G = tiny_G(32)
    expected = ['b4.conv1', 'b8.conv0', 'b8.conv1', 'b16.conv0', 'b16.conv1', 'b32.conv0', 'b32.conv1']
    assert features.synthesis_conv_names(G) == expected
    assert features.synthesis_conv_names(G.synthesis) == expected
    layers = features.synthesis_conv_layers(G)
    assert [(info.channels, info.resolution) for info in layers] == \
        [(32, 4), (32, 8), (32, 8), (32, 16), (32, 16), (32, 32), (32, 32)]


def test_recorded_synthesis_features_have_the_advertised_shapes_and_leave_output_unchanged():
    G = tiny_G(32, arch='resnet').eval()
    ws = G.mapping(torch.randn([3, 16]), None)
    reference = G.synthesis(ws, noise_mode='const')
    layers = features.synthesis_conv_layers(G)
    with features.record_activations(G.synthesis, [info.name for info in layers]) as feats:
        img = G.synthesis(ws, noise_mode='const')
    assert torch.equal(img, reference)
    assert list(feats) == [info.name for info in layers]
    for info in layers:
        assert feats[info.name].shape == (3, info.channels, info.resolution, info.resolution)
    # The hooks are gone afterwards: nothing runs when nobody listens.
    assert all(len(m._forward_hooks) == 0 for m in G.modules())


def test_gradients_flow_through_recorded_features():
    G = tiny_G(16)
    ws = G.mapping(torch.randn([2, 16]), None).detach().requires_grad_(True)
    with features.record_activations(G.synthesis, ['b8.conv0', 'b16.conv1']) as feats:
        G.synthesis(ws)
    loss = feats['b8.conv0'].square().mean() + feats['b16.conv1'].mean()
    loss.backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert G.synthesis.b8.conv0.weight.grad.abs().sum() > 0
    assert G.synthesis.b16.conv1.weight.grad.abs().sum() > 0
    assert G.synthesis.b16.torgb.weight.grad is None  # only the path to the recorded features gets gradients


def test_discriminator_layers_names_resolutions_and_channels():
    D = tiny_D(64)
    layers = features.discriminator_conv_layers(D)
    assert [(i.name, i.channels, i.resolution) for i in layers] == [
        ('b64.conv0', 16, 64), ('b64.conv1', 32, 32),
        ('b32.conv0', 32, 32), ('b32.conv1', 32, 16),
        ('b16.conv0', 32, 16), ('b16.conv1', 32, 8),
        ('b8.conv0', 32, 8), ('b8.conv1', 32, 4),
    ]
    for name, channels, _ in layers:  # channels are the real output widths
        assert dict(D.named_modules())[name].weight.shape[0] == channels
    # Feature blocks only: no fromrgb (reads the image) and no epilogue conv (follows minibatch stddev).
    skip_names = [i.name for i in features.discriminator_conv_layers(tiny_D(16, arch='skip'))]
    assert skip_names == ['b16.conv0', 'b16.conv1', 'b8.conv0', 'b8.conv1']
    with pytest.raises(ValueError, match='pass a Discriminator'):
        features.discriminator_conv_layers(tiny_G(16))


@pytest.mark.parametrize('res,wanted,names', [
    (64, [8, 4], ['b16.conv1', 'b8.conv0', 'b8.conv1']),
    (32, [4, 2], ['b8.conv1']),
    (32, 16, ['b32.conv1', 'b16.conv0']),
    (16, [8], ['b16.conv1', 'b8.conv0']),
])
def test_discriminator_layers_at_given_resolutions(res, wanted, names):
    D = tiny_D(res)
    chosen = features.discriminator_layers_at(D, wanted)
    assert [i.name for i in chosen] == names
    with features.record_activations(D, names) as record:
        D(torch.randn(2, 3, res, res), None)
    for info in chosen:
        assert record[info.name].shape == (2, info.channels, info.resolution, info.resolution)


def test_discriminator_layers_at_a_missing_resolution_lists_the_available_ones():
    with pytest.raises(ValueError, match=r'available resolutions: \[16, 8, 4\]'):
        features.discriminator_layers_at(tiny_D(16), 2)


@pytest.mark.parametrize('arch,c_dim', [('resnet', 0), ('skip', 0), ('orig', 3)])
def test_head_of_features_is_exactly_D(arch, c_dim):
    torch.manual_seed(1)
    D = networks.Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, architecture=arch,
                               epilogue_kwargs=dict(mbstd_group_size=2), **TINY)
    img = torch.randn(4, 3, 16, 16)
    c = torch.eye(3)[[0, 1, 2, 0]] if c_dim else torch.zeros(4, 0)
    split = features.discriminator_features(D, img)
    assert list(split.x.shape[1:]) == features.discriminator_features_shape(D) == [32, 4, 4]
    assert (split.img is not None) == (arch == 'skip')
    assert (features.label_embedding(D, c) is None) == (c_dim == 0)
    torch.testing.assert_close(features.discriminator_head(D, split, features.label_embedding(D, c)), D(img, c),
                               rtol=0, atol=0)
    first, second = split.halves(2)
    assert torch.equal(torch.cat([first.x, second.x]), split.x)
    mixed = first.mixed_with(second, 0.25)
    torch.testing.assert_close(mixed.x, 0.25 * first.x + 0.75 * second.x)


def test_discriminator_features_and_penultimate_feature():
    D = tiny_D(64)
    img = torch.randn([4, 3, 64, 64], requires_grad=True)
    reference = D(img, None)
    penultimate = features.discriminator_penultimate_name(D)
    assert penultimate == 'b4.fc' and features.penultimate_width(D) == 32
    names = [i.name for i in features.discriminator_layers_at(D, 8)] + [penultimate]
    with features.record_activations(D, names) as feats:
        logits = D(img, None)
    assert torch.equal(logits, reference)
    assert feats['b16.conv1'].shape == (4, 32, 8, 8)
    assert feats['b8.conv0'].shape == (4, 32, 8, 8)
    assert feats['b4.fc'].shape == (4, 32)
    # b4.out is linear on b4.fc, so the logits can be recomputed from the recorded feature.
    assert torch.allclose(D.b4.out(feats['b4.fc']), logits, atol=1e-6)
    feats['b4.fc'].sum().backward()
    assert img.grad.abs().sum() > 0


def test_accumulate_keeps_every_call_and_detach_drops_the_graph():
    D = tiny_D(16)
    real, fake = torch.randn([2, 3, 16, 16]), torch.randn([2, 3, 16, 16], requires_grad=True)
    with features.record_activations(D, 'b4.fc', accumulate=True) as feats:
        D(real, None)
        D(fake, None)
    assert len(feats['b4.fc']) == 2
    assert not torch.allclose(feats['b4.fc'][0], feats['b4.fc'][1])
    with features.record_activations(D, ['b4.fc', 'b16'], detach=True) as feats:
        D(fake, None)
    assert not feats['b4.fc'].requires_grad
    x, img = feats['b16']  # a whole block records its (x, img) tuple
    assert x.shape == (2, 32, 8, 8) and img is None and not x.requires_grad


def test_unknown_names_are_a_clear_error_and_hooks_are_removed_on_error():
    G = tiny_G(16)
    with pytest.raises(KeyError, match='b4.conv0'):
        with features.record_activations(G.synthesis, ['b4.conv0']):
            pass
    with pytest.raises(RuntimeError, match='boom'):
        with features.record_activations(G.synthesis, ['b8.conv0']):
            raise RuntimeError('boom')
    assert len(G.synthesis.b8.conv0._forward_hooks) == 0
    with pytest.raises(KeyError, match='was not recorded'):
        features.features_by_name({}, ['b8.conv0'])


def test_works_on_networks_restored_from_a_pickle():
    G = tiny_G(16).eval()
    restored = pickle.loads(pickle.dumps(G))
    clone = copy.deepcopy(G)
    ws = G.mapping(torch.randn([2, 16]), None)
    names = features.synthesis_conv_names(restored)
    assert names == features.synthesis_conv_names(G)
    with features.record_activations(restored.synthesis, names) as from_pickle:
        restored.synthesis(ws, noise_mode='const')
    with features.record_activations(clone.synthesis, names) as from_copy:
        clone.synthesis(ws, noise_mode='const')
    for name in names:
        assert torch.equal(from_pickle[name], from_copy[name])
