"""Tests for MixDL's projection and patch heads, and how they are derived from D's block structure."""
import types

import pytest
import torch

from stylegan2_ada_mixdl.heads import (EqualizedLinear, MixDLModules, PatchHead, discriminator_feature_dim,
                                       discriminator_patch_layers)


def _fake_discriminator(resolution, channel_base=16384, channel_max=512):
    """Stand-in with D's attribute layout: b{res}.conv0/conv1 weights and the epilogue's b4.fc."""
    def channels(res):
        return min(channel_base // res, channel_max)
    resolutions = [2 ** i for i in range(resolution.bit_length() - 1, 2, -1)]
    fake = types.SimpleNamespace(img_resolution=resolution, block_resolutions=resolutions)
    for res in resolutions:
        conv0 = types.SimpleNamespace(weight=torch.empty(channels(res), channels(res), 3, 3))
        conv1 = types.SimpleNamespace(weight=torch.empty(channels(res // 2), channels(res), 3, 3))
        setattr(fake, f'b{res}', types.SimpleNamespace(conv0=conv0, conv1=conv1))
    fake.b4 = types.SimpleNamespace(fc=types.SimpleNamespace(weight=torch.empty(channels(4), channels(4) * 16)))
    return fake


def test_patch_layers_at_256_are_the_four_32_and_16_px_conv_outputs():
    layers = discriminator_patch_layers(_fake_discriminator(256))
    assert layers == [('b64.conv1', 512, 32), ('b32.conv0', 512, 32), ('b32.conv1', 512, 16), ('b16.conv0', 512, 16)]
    assert discriminator_feature_dim(_fake_discriminator(256)) == 512


def test_patch_layers_follow_resolution_and_width():
    layers = discriminator_patch_layers(_fake_discriminator(1024, channel_base=32768))
    assert layers == [('b256.conv1', 256, 128), ('b128.conv0', 256, 128), ('b128.conv1', 512, 64), ('b64.conv0', 512, 64)]
    assert discriminator_patch_layers(_fake_discriminator(64, channel_base=256, channel_max=32)) == [
        ('b16.conv1', 32, 8), ('b8.conv0', 32, 8), ('b8.conv1', 32, 4)]
    # Below 64 px there is no 1/16 map; 32 px keeps its 4x4 map, 16 px falls back to the smallest one.
    assert discriminator_patch_layers(_fake_discriminator(32)) == [('b8.conv1', 512, 4)]
    assert discriminator_patch_layers(_fake_discriminator(16)) == [('b8.conv1', 512, 4)]


def test_modules_for_discriminator_have_matching_shapes():
    extras = MixDLModules.for_discriminator(_fake_discriminator(64, channel_base=512, channel_max=64))
    assert extras.feature_dim == 64 and extras.proj_dim == 64
    assert extras.patch_layer_names == ['b16.conv1', 'b8.conv0', 'b8.conv1']
    names = sorted(extras.state_dict())
    assert names == ['patch.b16_conv1.bias', 'patch.b16_conv1.weight', 'patch.b8_conv0.bias', 'patch.b8_conv0.weight',
                     'patch.b8_conv1.bias', 'patch.b8_conv1.weight', 'proj.bias', 'proj.weight']
    logits = extras.patch_logits('b8.conv0', torch.randn(2, 64, 8, 8, dtype=torch.float16))
    assert logits.shape == (2, 64) and logits.dtype == torch.float32
    assert extras.project(torch.randn(3, 64)).shape == (3, 64)
    with pytest.raises(ValueError, match=r'\[N, 64\]'):
        extras.project(torch.randn(3, 32))


def test_equalized_linear_scales_weights_at_run_time():
    torch.manual_seed(1)
    layer = EqualizedLinear(16, 4)
    assert layer.weight.std().item() == pytest.approx(1.0, abs=0.3)  # stored at unit scale
    x = torch.randn(5, 16)
    torch.testing.assert_close(layer(x), x @ layer.weight.t() / 4.0 + layer.bias)


def test_patch_head_is_a_padded_3x3_conv_to_one_channel():
    torch.manual_seed(2)
    head = PatchHead(3)
    with torch.no_grad():
        head.bias.fill_(0.5)
    x = torch.randn(2, 3, 5, 5)
    expected = torch.nn.functional.conv2d(x, head.weight / 27 ** 0.5, padding=1) + 0.5
    torch.testing.assert_close(head(x), expected.flatten(1))
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        head(torch.randn(2, 4, 5, 5))
