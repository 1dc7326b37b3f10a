"""Tests for training/networks.py: shapes, names, sizes, numerics and pickling of the StyleGAN2 networks."""

import copy
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from training import networks

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_SYNTHESIS = dict(channel_base=1024, channel_max=32)   # 32 channels up to 32 px, then halving


def tiny_G(res=32, c_dim=0, arch='skip', **synthesis):
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(TINY_SYNTHESIS, architecture=arch, **synthesis))


def tiny_D(res=32, c_dim=0, arch='resnet', **kwargs):
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, architecture=arch,
                                  **TINY_SYNTHESIS, **kwargs)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def n_buffers(module):
    return sum(b.numel() for b in module.buffers())

#----------------------------------------------------------------------------
# Shapes and dtypes.


@pytest.mark.parametrize('res', [16, 32, 64, 128, 256])
@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
def test_generator_shapes_every_resolution_and_architecture(res, arch):
    c_dim = 3 if res in (32, 128) else 0
    G = tiny_G(res, c_dim=c_dim, arch=arch).eval()
    z = torch.randn([2, 16])
    c = torch.eye(3)[[0, 2]] if c_dim else torch.zeros([2, 0])
    img = G(z, c, noise_mode='const')
    assert img.shape == (2, 3, res, res)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 2 * int(math.log2(res)) - 2


@pytest.mark.parametrize('res', [16, 32, 64, 128, 256])
@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
def test_discriminator_shapes_every_resolution_and_architecture(res, arch):
    c_dim = 3 if res in (16, 64) else 0
    D = tiny_D(res, c_dim=c_dim, arch=arch)
    img = torch.randn([4, 3, res, res])
    c = torch.eye(3)[[0, 1, 2, 0]] if c_dim else torch.zeros([4, 0])
    logits = D(img, c)
    assert logits.shape == (4, 1)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_architecture_decides_which_rgb_and_skip_layers_exist():
    names = {arch: {n for n, _ in tiny_G(32, arch=arch).named_parameters()} for arch in ('orig', 'skip', 'resnet')}
    assert 'synthesis.b8.torgb.weight' in names['skip'] and 'synthesis.b8.torgb.weight' not in names['orig']
    assert 'synthesis.b32.torgb.weight' in names['orig'] and 'synthesis.b32.torgb.weight' in names['resnet']
    assert 'synthesis.b8.skip.weight' in names['resnet'] and 'synthesis.b4.skip.weight' not in names['resnet']
    assert not any('skip' in n for n in names['skip'] | names['orig'])

    d_names = {arch: {n for n, _ in tiny_D(32, arch=arch).named_parameters()} for arch in ('orig', 'skip', 'resnet')}
    assert {'b16.fromrgb.weight', 'b4.fromrgb.weight'} <= d_names['skip']
    assert 'b16.fromrgb.weight' not in d_names['orig'] and 'b32.fromrgb.weight' in d_names['orig']
    assert 'b16.skip.weight' in d_names['resnet'] and 'b16.skip.bias' not in d_names['resnet']

#----------------------------------------------------------------------------
# The per-resolution plans that G and D are built from.


def test_synthesis_plan_widths_precision_and_w_split():
    stages, num_ws = networks.synthesis_plan(64, channel_base=512, channel_max=64, num_fp16_res=2,
                                             architecture='skip')
    assert [s.resolution for s in stages] == [4, 8, 16, 32, 64]
    assert [s.out_channels for s in stages] == [64, 64, 32, 16, 8]        # min(512 // res, 64)
    assert [s.in_channels for s in stages] == [0, 64, 64, 32, 16]
    assert [s.use_fp16 for s in stages] == [False, False, False, True, True]
    assert [(s.num_conv, s.num_torgb) for s in stages] == [(1, 1)] + [(2, 1)] * 4
    # Each block starts where the previous block's convs end; its toRGB shares the next conv0's w.
    assert [s.first_w for s in stages] == [0, 1, 3, 5, 7]
    assert num_ws == 10 == 2 * 6 - 2


@pytest.mark.parametrize('arch', ['orig', 'resnet'])
def test_synthesis_plan_only_the_last_block_has_torgb_without_skip(arch):
    stages, num_ws = networks.synthesis_plan(32, architecture=arch)
    assert [s.num_torgb for s in stages] == [0, 0, 0, 1]
    assert num_ws == 8
    # The last block reads the final two ws: conv1's and toRGB's.
    assert stages[-1].first_w + stages[-1].num_conv + stages[-1].num_torgb == num_ws


def test_fp16_never_reaches_4x4_and_counts_from_the_top():
    stages, _ = networks.synthesis_plan(32, num_fp16_res=10)
    assert [s.use_fp16 for s in stages] == [False, True, True, True]
    stages, _ = networks.discriminator_plan(32, num_fp16_res=1)
    assert [(s.resolution, s.use_fp16) for s in stages] == [(32, True), (16, False), (8, False)]


def test_discriminator_plan_numbers_layers_across_blocks():
    stages, epilogue_width = networks.discriminator_plan(32, channel_base=256, channel_max=32, architecture='resnet')
    assert [(s.resolution, s.in_channels, s.tmp_channels, s.out_channels) for s in stages] == \
        [(32, 0, 8, 16), (16, 16, 16, 32), (8, 32, 32, 32)]
    assert [(s.first_layer_idx, s.num_layers) for s in stages] == [(0, 4), (4, 3), (7, 3)]   # fromrgb only first
    assert epilogue_width == 32
    skip_stages, _ = networks.discriminator_plan(32, architecture='skip')
    assert [s.num_layers for s in skip_stages] == [3, 3, 3]                               # fromrgb everywhere
    assert networks.discriminator_plan(4)[0] == []


@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
def test_networks_are_built_exactly_from_their_plans(arch):
    G = tiny_G(32, arch=arch, num_fp16_res=2)
    stages, num_ws = networks.synthesis_plan(32, architecture=arch, num_fp16_res=2, **TINY_SYNTHESIS)
    assert G.synthesis.block_resolutions == [s.resolution for s in stages] and G.num_ws == num_ws
    for s in stages:
        block = getattr(G.synthesis, f'b{s.resolution}')
        assert (block.in_channels, block.out_channels, block.use_fp16, block.num_conv, block.num_torgb) == \
            (s.in_channels, s.out_channels, s.use_fp16, s.num_conv, s.num_torgb)
    D = tiny_D(32, arch=arch, num_fp16_res=2)
    d_stages, width = networks.discriminator_plan(32, architecture=arch, num_fp16_res=2, **TINY_SYNTHESIS)
    assert D.block_resolutions == [s.resolution for s in d_stages] and D.b4.in_channels == width
    for s in d_stages:
        block = getattr(D, f'b{s.resolution}')
        assert (block.in_channels, block.use_fp16, block.first_layer_idx, block.num_layers) == \
            (s.in_channels, s.use_fp16, s.first_layer_idx, s.num_layers)
        assert tuple(block.conv1.weight.shape[:2]) == (s.out_channels, s.tmp_channels)


def test_plans_reject_bad_resolutions_and_architectures():
    for res in (0, 2, 48, 100):
        with pytest.raises(ValueError, match='power of two'):
            networks.synthesis_plan(res)
        with pytest.raises(ValueError, match='power of two'):
            networks.discriminator_plan(res)
    with pytest.raises(ValueError, match='architecture'):
        networks.synthesis_plan(16, architecture='dense')

#----------------------------------------------------------------------------
# Names, shapes and sizes as in StyleGAN2-ADA pickles.


def test_generator_parameter_and_buffer_names_match_stylegan2_ada():
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=16384))
    params = {n: tuple(p.shape) for n, p in G.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in G.named_buffers()}
    assert list(params)[0] == 'synthesis.b4.const'
    assert list(params)[-1] == 'mapping.fc1.bias'
    assert params['synthesis.b4.const'] == (512, 4, 4)
    assert params['synthesis.b4.conv1.weight'] == (512, 512, 3, 3)
    assert params['synthesis.b4.conv1.noise_strength'] == ()
    assert params['synthesis.b4.conv1.affine.weight'] == (512, 512)
    assert params['synthesis.b4.torgb.weight'] == (3, 512, 1, 1)
    assert params['synthesis.b64.conv0.weight'] == (256, 512, 3, 3)
    assert params['synthesis.b64.conv0.affine.weight'] == (512, 512)
    assert params['synthesis.b64.conv1.affine.weight'] == (256, 512)
    assert params['synthesis.b64.torgb.affine.weight'] == (256, 512)
    assert params['mapping.fc0.weight'] == (512, 512)
    assert 'mapping.embed.weight' not in params
    assert buffers['synthesis.b4.resample_filter'] == (4, 4)
    assert buffers['synthesis.b64.conv0.resample_filter'] == (4, 4)
    assert buffers['synthesis.b64.conv1.noise_const'] == (64, 64)
    assert buffers['mapping.w_avg'] == (512,)
    assert not any('torgb.resample_filter' in n for n in buffers)
    assert len(params) == 1 + 5 + 4 + 4 * (5 + 5 + 4) + 2 * 2


def test_discriminator_parameter_and_buffer_names_match_stylegan2_ada():
    D = networks.Discriminator(c_dim=10, img_resolution=64, img_channels=3, channel_base=16384)
    params = {n: tuple(p.shape) for n, p in D.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in D.named_buffers()}
    assert params['b64.fromrgb.weight'] == (256, 3, 1, 1)
    assert params['b64.conv0.weight'] == (256, 256, 3, 3)
    assert params['b64.conv1.weight'] == (512, 256, 3, 3)
    assert params['b64.skip.weight'] == (512, 256, 1, 1)
    assert 'b64.skip.bias' not in params
    assert params['mapping.embed.weight'] == (512, 10)
    assert params['mapping.fc7.weight'] == (512, 512)
    assert 'mapping.fc8.weight' not in params
    assert params['b4.conv.weight'] == (512, 513, 3, 3)
    assert params['b4.fc.weight'] == (512, 512 * 16)
    assert params['b4.out.weight'] == (512, 512)
    assert {'b64.resample_filter', 'b64.skip.resample_filter', 'b4.conv.resample_filter'} <= set(buffers)
    assert not any(n.startswith('b4.mbstd') for n in buffers)
    assert 'mapping.w_avg' not in buffers


@pytest.mark.parametrize('res, base, map_layers, g_params, g_buffers, num_ws, d_params', [
    (1024, 32768, 8, 30_370_060, 2_797_104, 18, 29_012_513),
    (256, 16384, 8, 24_767_458, 175_568, 14, 24_001_089),
    (256, 16384, 2, 23_191_522, 175_568, 14, 24_001_089),
    (128, 16384, 2, 22_949_277, 44_448, 12, 23_882_369),
    (32, 32768, 2, 19_947_539, 3_392, 8, 21_507_073),
])
def test_full_size_parameter_counts_match_upstream(res, base, map_layers, g_params, g_buffers, num_ws, d_params,
                                                   monkeypatch):
    # Construction only: skip the cost of drawing ~60M random numbers.
    monkeypatch.setattr(torch, 'randn', torch.empty)
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=map_layers), synthesis_kwargs=dict(channel_base=base))
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=base)
    assert (n_params(G), n_buffers(G), G.num_ws, n_params(D)) == (g_params, g_buffers, num_ws, d_params)


def test_fp16_resolutions_and_constants_are_python_floats():
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=3,
                           synthesis_kwargs=dict(channel_base=256, channel_max=8, num_fp16_res=2))
    assert [getattr(G.synthesis, f'b{r}').use_fp16 for r in G.synthesis.block_resolutions] == \
        [False, False, False, True, True]
    D = networks.Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=8,
                               num_fp16_res=4)
    assert [getattr(D, f'b{r}').use_fp16 for r in D.block_resolutions] == [True, True, True]  # clamped to >= 8
    for module in list(G.modules()) + list(D.modules()):
        for key, value in vars(module).items():
            assert not isinstance(value, np.generic), f'{type(module).__name__}.{key} is a numpy scalar'
    # numpy scalars would pull in numpy.core.multiarray.scalar (numpy 1/2 incompatible).
    assert b'multiarray' not in pickle.dumps(G) and b'multiarray' not in pickle.dumps(D)


def test_freeze_layers_turns_early_d_layers_into_buffers():
    D = tiny_D(32, block_kwargs=dict(freeze_layers=5))
    params = {n for n, _ in D.named_parameters()}
    buffers = {n for n, _ in D.named_buffers()}
    # b32 has layers 0-3 (fromrgb, conv0, conv1, skip), b16 starts at 4 (conv0), 5 (conv1), 6 (skip).
    assert {'b32.fromrgb.weight', 'b32.skip.weight', 'b16.conv0.weight', 'b16.conv0.bias'} <= buffers
    assert {'b16.conv1.weight', 'b16.skip.weight', 'b8.conv0.weight'} <= params
    assert D(torch.randn([2, 3, 32, 32]), torch.zeros([2, 0])).shape == (2, 1)

#----------------------------------------------------------------------------
# Numerics of the building blocks against naive references.


def test_fully_connected_uses_equalised_learning_rate():
    layer = networks.FullyConnectedLayer(6, 5, lr_multiplier=0.01, bias_init=2)
    assert torch.equal(layer.bias, torch.full([5], 2.0))
    assert torch.allclose(layer.weight.std(), torch.tensor(100.0), rtol=0.5)  # stored as randn / lr_multiplier
    x = torch.randn([3, 6])
    expected = x @ (layer.weight * 0.01 / math.sqrt(6)).t() + layer.bias * 0.01
    assert torch.allclose(layer(x), expected, atol=1e-5)
    lrelu = networks.FullyConnectedLayer(6, 5, activation='lrelu')
    pre = x @ (lrelu.weight / math.sqrt(6)).t()
    assert torch.allclose(lrelu(x), torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2), atol=1e-5)


def test_fully_connected_bias_init_value():
    layer = networks.FullyConnectedLayer(4, 3, bias_init=1)
    assert torch.equal(layer.bias, torch.ones(3))


def _naive_modulated_conv(x, weight, styles, demodulate, padding):
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        outs.append(torch.nn.functional.conv2d(x[n:n + 1], w, padding=padding))
    return torch.cat(outs)


@pytest.mark.parametrize('demodulate', [True, False])
@pytest.mark.parametrize('fused', [True, False])
def test_modulated_conv2d_matches_per_sample_reference(demodulate, fused):
    x = torch.randn([3, 4, 8, 8], dtype=torch.float64)
    weight = torch.randn([5, 4, 3, 3], dtype=torch.float64)
    styles = torch.randn([3, 4], dtype=torch.float64)
    got = networks.modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused)
    assert torch.allclose(got, _naive_modulated_conv(x, weight, styles, demodulate, 1), atol=1e-10)


def test_normalize_2nd_moment_gives_unit_mean_square():
    x = torch.randn([4, 7]) * 5
    y = networks.normalize_2nd_moment(x)
    assert torch.allclose(y.square().mean(dim=1), torch.ones(4), atol=1e-5)


def test_minibatch_std_matches_grouped_reference():
    layer = networks.MinibatchStdLayer(group_size=2, num_channels=2)
    x = torch.randn([6, 4, 3, 3], dtype=torch.float64)
    y = layer(x)
    assert y.shape == (6, 6, 3, 3)
    assert torch.equal(y[:, :4], x)
    # Groups take every third sample: {0,3}, {1,4}, {2,5}; stats per channel half.
    for i in range(6):
        members = x[[i % 3, i % 3 + 3]]
        for f in range(2):
            part = members[:, 2 * f:2 * f + 2]
            expected = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            assert torch.allclose(y[i, 4 + f], expected.expand(3, 3))


def test_conv2d_layer_matches_manual_conv_and_clamp():
    layer = networks.Conv2dLayer(3, 4, kernel_size=3, activation='lrelu', conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 4))
    x = torch.randn([2, 3, 6, 6])
    pre = torch.nn.functional.conv2d(x, layer.weight / math.sqrt(27), layer.bias, padding=1)
    expected = (torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert layer(x * 100).abs().max() <= 0.5 + 1e-6


def test_fused_and_unfused_synthesis_agree():
    G = tiny_G(16).eval()
    ws = G.mapping(torch.randn([3, 16]), None)
    fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-5)

#----------------------------------------------------------------------------
# Mapping behaviour: truncation, w_avg tracking, noise modes, determinism.


def test_truncation_and_cutoff():
    G = tiny_G(16).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.linspace(-1, 1, 16))
    z = torch.randn([2, 16])
    ws = G.mapping(z, None)
    assert torch.allclose(G.mapping(z, None, truncation_psi=0), G.mapping.w_avg.expand(2, G.num_ws, 16))
    half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(half[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(half[:, 2:], ws[:, 2:])


def test_w_avg_tracks_batch_mean_only_in_training():
    G = tiny_G(16)
    z = torch.randn([5, 16])
    G.eval()
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros(16))
    G.train()
    ws = G.mapping(z, None)
    assert torch.allclose(G.mapping.w_avg, ws[:, 0].mean(dim=0) * (1 - 0.995), atol=1e-6)
    before = G.mapping.w_avg.clone()
    G.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(G.mapping.w_avg, before)


def test_conditional_mapping_uses_the_label():
    G = tiny_G(16, c_dim=3).eval()
    z = torch.randn([1, 16]).repeat(2, 1)
    ws = G.mapping(z, torch.eye(3)[:2])
    assert not torch.allclose(ws[0], ws[1])
    assert 'mapping.embed.weight' in dict(G.named_parameters())


def test_noise_modes():
    G = tiny_G(16).eval()
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith('noise_strength'):
                param.fill_(0.5)
    ws = G.mapping(torch.randn([2, 16]), None)
    const_a = G.synthesis(ws, noise_mode='const')
    const_b = G.synthesis(ws, noise_mode='const')
    assert torch.equal(const_a, const_b)
    torch.manual_seed(1)
    random_a = G.synthesis(ws, noise_mode='random')
    torch.manual_seed(1)
    random_b = G.synthesis(ws, noise_mode='random')
    assert torch.equal(random_a, random_b)
    assert not torch.allclose(random_a, const_a)
    assert not torch.allclose(G.synthesis(ws, noise_mode='none'), const_a)
    with pytest.raises(ValueError, match='noise_mode'):
        G.synthesis(ws, noise_mode='fixed')


def test_construction_and_output_are_deterministic_under_a_seed():
    torch.manual_seed(123)
    G1 = tiny_G(16).eval()
    torch.manual_seed(123)
    G2 = tiny_G(16).eval()
    z = torch.randn([2, 16])
    assert torch.equal(G1(z, None, noise_mode='const'), G2(z, None, noise_mode='const'))


def test_gradients_reach_every_generator_and_discriminator_parameter():
    G = tiny_G(16, arch='resnet')
    D = tiny_D(16, arch='skip')
    img = G(torch.randn([2, 16]), None)
    D(img, None).sum().backward()
    missing = [n for n, p in list(G.named_parameters()) + list(D.named_parameters()) if p.grad is None]
    assert missing == []


def test_force_fp32_and_cpu_fallback_give_identical_output_to_an_fp32_network():
    torch.manual_seed(5)
    G32 = tiny_G(32).eval()
    torch.manual_seed(5)
    G16 = tiny_G(32, num_fp16_res=2).eval()
    G16.load_state_dict(G32.state_dict())
    z = torch.randn([2, 16])
    # On CPU the fp16 blocks run in fp32 automatically.
    assert torch.equal(G16(z, None, noise_mode='const'), G32(z, None, noise_mode='const'))


def test_channels_last_option_builds_and_runs():
    G = tiny_G(16, num_fp16_res=2, fp16_channels_last=True).eval()
    assert G.synthesis.b16.channels_last and not G.synthesis.b4.channels_last
    assert G(torch.randn([1, 16]), None).shape == (1, 3, 16, 16)


def test_bad_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match='power of two'):
        networks.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=48, img_channels=3)
    with pytest.raises(ValueError, match='architecture'):
        tiny_D(16, arch='dense')

#----------------------------------------------------------------------------
# Pickling.


def test_deepcopy_and_state_dict_round_trip_keep_outputs():
    G = tiny_G(16).eval()
    z = torch.randn([2, 16])
    reference = G(z, None, noise_mode='const')
    clone = copy.deepcopy(G)
    assert torch.equal(clone(z, None, noise_mode='const'), reference)
    fresh = tiny_G(16).eval()
    fresh.load_state_dict(G.state_dict(), strict=True)
    assert torch.equal(fresh(z, None, noise_mode='const'), reference)
    assert G.init_kwargs['synthesis_kwargs']['channel_base'] == 1024


_RELOAD_SCRIPT = r'''
import pickle, sys, torch
sys.path.insert(0, sys.argv[1])
with open(sys.argv[2], 'rb') as f:
    data = pickle.load(f)
assert 'training.networks' not in sys.modules, 'the pickle must not need our module on the import path'
G, D, z = data['G'], data['D'], data['z']
with torch.no_grad():
    img = G(z, None, noise_mode='const')
    logits = D(img, None)
torch.save({'img': img, 'logits': logits, 'G_type': type(G).__module__}, sys.argv[3])
'''


def test_pickle_round_trip_in_fresh_process_gives_identical_outputs(tmp_path):
    G = tiny_G(16, arch='skip').eval()
    D = tiny_D(16).eval()
    z = torch.randn([3, 16])
    with torch.no_grad():
        img = G(z, None, noise_mode='const')
        logits = D(img, None)
    pkl = tmp_path / 'nets.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=D, z=z), f)
    out = tmp_path / 'out.pt'
    script = tmp_path / 'reload.py'
    script.write_text(_RELOAD_SCRIPT)
    subprocess.run([sys.executable, str(script), REPO_ROOT, str(pkl), str(out)], check=True, timeout=120)
    reloaded = torch.load(out)
    # Same weights and code; only the CPU thread split of the reductions may differ between processes.
    assert torch.allclose(reloaded['img'], img, rtol=1e-5, atol=1e-6)
    assert torch.allclose(reloaded['logits'], logits, rtol=1e-5, atol=1e-6)
    assert reloaded['G_type'].startswith('_imported_module_')  # the embedded source ran, not our file


@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 blocks only run on CUDA')
def test_fp16_blocks_run_in_half_on_cuda_and_stay_close_to_fp32():
    torch.manual_seed(7)
    G = tiny_G(32, num_fp16_res=2, conv_clamp=256).eval().cuda()
    D = tiny_D(32, num_fp16_res=2, conv_clamp=256).eval().cuda()
    z = torch.randn([4, 16], device='cuda')
    ws = G.mapping(z, None)
    x, img = G.synthesis.b4(None, None, ws[:, :2])
    x, img = G.synthesis.b8(x, img, ws[:, 1:4])
    x16, _ = G.synthesis.b16(x, img, ws[:, 3:6])
    assert x.dtype == torch.float32 and x16.dtype == torch.float16
    img16 = G(z, None, noise_mode='const')
    img32 = G(z, None, noise_mode='const', force_fp32=True)
    assert img16.dtype == torch.float32
    assert (img16 - img32).abs().max() < 0.05 * img32.abs().max() + 1e-3
    logits16 = D(img32, None)
    logits32 = D(img32, None, force_fp32=True)
    assert (logits16 - logits32).abs().max() < 0.05 * logits32.abs().max() + 1e-2

#----------------------------------------------------------------------------
# The skip discriminator's epilogue fromrgb is not clamped (StyleGAN2-ADA behaviour).


def test_skip_epilogue_fromrgb_is_unclamped_while_block_fromrgb_clamps():
    clamp = 1.0
    D = tiny_D(16, arch='skip', conv_clamp=clamp).eval()
    seen = {}

    def keep(name):
        return lambda _module, inputs, output: seen.__setitem__(name, (inputs[0], output))
    D.b4.fromrgb.register_forward_hook(keep('b4'))
    D.b16.fromrgb.register_forward_hook(keep('b16'))
    img = 2 * torch.randn([4, 3, 16, 16])
    with torch.no_grad():
        D(img, None)

    # The epilogue's fromrgb: 1x1 conv + bias + lrelu * sqrt(2), values beyond the clamp kept.
    layer = D.b4.fromrgb
    rgb, out = seen['b4']
    pre = torch.nn.functional.conv2d(rgb, layer.weight * layer.weight_gain, layer.bias)
    expected = torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2)
    assert expected.abs().max() > 1.5 * clamp                   # the clamp would matter here
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert layer.conv_clamp is None and D.b4.conv.conv_clamp == clamp

    # Every block's fromrgb (and the epilogue conv) still clamp.
    assert seen['b16'][1].abs().max() <= clamp
    assert D.b16.fromrgb.conv_clamp == clamp
