"""MixDL's projection and patch heads, and the D layers they read, on real (tiny) Discriminators."""
import pytest
import torch

from stylegan2_ada_mixdl.mixdl.heads import EqualizedLinear, MixDLModules, PatchHead, discriminator_patch_layers
from torch_utils.ops import bias_act
from training import networks
from training.features import record_activations


def tiny_D(resolution, channel_base=256, channel_max=16, architecture='resnet'):
    torch.manual_seed(0)
    return networks.Discriminator(c_dim=0, img_resolution=resolution, img_channels=3, architecture=architecture,
                                  channel_base=channel_base, channel_max=channel_max, num_fp16_res=0, conv_clamp=None)


def _names_and_sizes(D):
    return [(info.name, info.resolution) for info in discriminator_patch_layers(D)]


def test_patch_layers_are_the_block_convs_at_one_eighth_and_one_sixteenth():
    assert _names_and_sizes(tiny_D(256)) == [('b64.conv1', 32), ('b32.conv0', 32), ('b32.conv1', 16), ('b16.conv0', 16)]
    # At 64 px the 1/16 map is 4x4: b8.conv1 only, never the epilogue's conv (it follows minibatch stddev).
    assert _names_and_sizes(tiny_D(64)) == [('b16.conv1', 8), ('b8.conv0', 8), ('b8.conv1', 4)]
    assert _names_and_sizes(tiny_D(64, architecture='skip')) == _names_and_sizes(tiny_D(64))
    # Below 64 px: 32 px keeps its 4x4 map (1/8); 16 px has neither and falls back to the smallest block map.
    assert _names_and_sizes(tiny_D(32)) == [('b8.conv1', 4)]
    assert _names_and_sizes(tiny_D(16)) == [('b8.conv1', 4)]


def test_patch_layer_channels_follow_the_network_width():
    D = tiny_D(64, channel_base=512, channel_max=64)
    assert [info.channels for info in discriminator_patch_layers(D)] == [
        D.b16.conv1.weight.shape[0], D.b8.conv0.weight.shape[0], D.b8.conv1.weight.shape[0]]


def test_modules_for_discriminator_have_matching_shapes_and_read_real_activations():
    D = tiny_D(64, channel_base=512, channel_max=64)
    extras = MixDLModules.for_discriminator(D)
    assert extras.feature_dim == D.b4.fc.weight.shape[0] == extras.proj_dim
    assert extras.patch_layer_names == ['b16.conv1', 'b8.conv0', 'b8.conv1']
    names = sorted(extras.state_dict())
    assert names == ['patch.b16_conv1.bias', 'patch.b16_conv1.weight', 'patch.b8_conv0.bias', 'patch.b8_conv0.weight',
                     'patch.b8_conv1.bias', 'patch.b8_conv1.weight', 'proj.bias', 'proj.weight']
    with record_activations(D, extras.patch_layer_names) as record:
        D(torch.randn(2, 3, 64, 64), torch.zeros(2, 0))
    for name, size in (('b16.conv1', 8), ('b8.conv0', 8), ('b8.conv1', 4)):
        logits = extras.patch_logits(name, record[name])
        assert logits.shape == (2, size * size) and logits.dtype == torch.float32
    assert extras.patch_logits('b8.conv0', record['b8.conv0'].half()).dtype == torch.float32
    assert extras.project(torch.randn(3, 64)).shape == (3, 64)
    with pytest.raises(ValueError, match=r'\[N, 64\]'):
        extras.project(torch.randn(3, 32))


def test_equalized_linear_scales_weights_at_run_time():
    torch.manual_seed(1)
    layer = EqualizedLinear(16, 4)
    assert layer.weight.std().item() == pytest.approx(1.0, abs=0.3)  # stored at unit scale
    x = torch.randn(5, 16)
    torch.testing.assert_close(layer(x), x @ layer.weight.t() / 4.0 + layer.bias)


def _head_with_bias(activation):
    torch.manual_seed(2)
    head = PatchHead(3, activation)
    with torch.no_grad():
        head.bias.fill_(0.5)
    return head


def test_linear_patch_head_is_a_padded_3x3_conv_to_one_channel():
    head = _head_with_bias('linear')
    x = torch.randn(2, 3, 5, 5)
    expected = torch.nn.functional.conv2d(x, head.weight / 27 ** 0.5, padding=1) + 0.5
    torch.testing.assert_close(head(x), expected.flatten(1))
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        head(torch.randn(2, 4, 5, 5))


def test_lrelu_patch_head_is_the_conv_then_biased_leaky_relu_with_gain_sqrt2():
    head = _head_with_bias('lrelu')
    x = torch.randn(2, 3, 5, 5)
    pre = torch.nn.functional.conv2d(x, head.weight / 27 ** 0.5, padding=1) + 0.5
    expected = torch.where(pre >= 0, pre, 0.2 * pre) * 2 ** 0.5
    torch.testing.assert_close(head(x), expected.flatten(1))
    assert (head(x) < 0).any()  # negative logits survive, scaled by 0.2 * sqrt(2)
    with pytest.raises(ValueError, match='lrelu'):
        PatchHead(3, 'relu')


def test_heads_of_either_activation_load_each_others_state():
    lrelu, linear = MixDLModules(8, {'b8.conv0': 4}, patch_head='lrelu'), MixDLModules(8, {'b8.conv0': 4}, patch_head='linear')
    linear.load_state_dict(lrelu.state_dict())
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(bias_act.bias_act(linear.patch_logits('b8.conv0', x).reshape(2, 1, 8, 8), act='lrelu'),
                               lrelu.patch_logits('b8.conv0', x).reshape(2, 1, 8, 8))
