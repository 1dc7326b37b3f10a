"""Record the numbers the StyleGAN2 networks compute on a few tiny configurations, as golden data.

Run from the repository root (writes tests/training/golden/networks/<config>.pt for every
configuration, or only for those named):

    python -m tests.training.golden.make_networks_golden [--only d_skip_clamp ...]

For each configuration the file keeps the seeded initial state_dict, the perturbed weights that
everything else is computed with (biases, noise strengths and w_avg moved off their initial
values so that no term is silently zero), forward outputs of every submodule, gradients with
respect to the inputs and every parameter, and the second-order gradients of the R1 penalty
(Mescheder et al. 2018, eq. 9) and of the path-length regulariser (Karras et al. 2020,
StyleGAN2, section 3.2), computed the way training/loss.py computes them.
tests/training/test_networks_golden.py rebuilds each configuration and compares.
"""

import argparse
import math
import os
import sys

import torch

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import dnnlib  # noqa: E402
from training import networks  # noqa: E402

FORMAT = 'stylegan2-networks-golden'
VERSION = 1
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'networks')  # one <config>.pt each
BATCH = 4
LABELS = 3

# Channel widths: min(64 // res, 8) gives 8 channels at 4 and 8 px, 4 at 16 px, 2 at 32 px.
_TINY = dict(channel_base=64, channel_max=8)

CONFIGS = {
    'g_orig': dict(kind='G', c_dim=0, res=16, synthesis=dict(architecture='orig')),
    'g_skip': dict(kind='G', c_dim=LABELS, res=16,
                   synthesis=dict(architecture='skip', conv_clamp=0.5, num_fp16_res=2)),
    'g_resnet': dict(kind='G', c_dim=0, res=32,
                     synthesis=dict(architecture='resnet', conv_clamp=1.0, num_fp16_res=1)),
    'd_orig': dict(kind='D', c_dim=0, res=16, kwargs=dict(architecture='orig')),
    'd_skip': dict(kind='D', c_dim=LABELS, res=16, kwargs=dict(architecture='skip', num_fp16_res=2)),
    'd_skip_clamp': dict(kind='D', c_dim=0, res=16, kwargs=dict(architecture='skip', conv_clamp=0.5)),
    'd_resnet': dict(kind='D', c_dim=LABELS, res=32,
                     kwargs=dict(architecture='resnet', conv_clamp=2.0, num_fp16_res=2,
                                 block_kwargs=dict(freeze_layers=2),
                                 epilogue_kwargs=dict(mbstd_group_size=2, mbstd_num_channels=2))),
}


def build(name):
    """Construct configuration `name` under a fixed seed (so the initial weights are reproducible)."""
    cfg = CONFIGS[name]
    torch.manual_seed(sum(map(ord, name)))
    if cfg['kind'] == 'G':
        return networks.Generator(z_dim=8, c_dim=cfg['c_dim'], w_dim=8, img_resolution=cfg['res'], img_channels=3,
                                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(_TINY, **cfg['synthesis']))
    return networks.Discriminator(c_dim=cfg['c_dim'], img_resolution=cfg['res'], img_channels=3,
                                  **_TINY, **cfg['kwargs'])


def perturbed_state(net, seed):
    """The net's state_dict with biases, noise strengths and w_avg moved by fixed random amounts."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        value = value.detach().clone()
        leaf = key.rsplit('.', 1)[-1]
        if leaf in ('bias', 'noise_strength'):
            value += 0.3 * torch.randn(value.shape, generator=gen)
        elif leaf == 'w_avg':
            value += 0.5 * torch.randn(value.shape, generator=gen)
        state[key] = value
    return state

#----------------------------------------------------------------------------


def _as_tensors(output):
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, (tuple, list)):
        return tuple(_as_tensors(item) for item in output)
    return None


class _ModuleOutputs:
    """Forward hooks on every submodule of `root`: {name: [output of each call]} while active."""

    def __init__(self, root):
        self.root = root
        self.outputs = {}
        self.handles = []

    def __enter__(self):
        for name, module in self.root.named_modules():
            self.handles.append(module.register_forward_hook(self._hook_for(name or '<root>')))
        return self.outputs

    def _hook_for(self, name):
        def hook(_module, _inputs, output):
            self.outputs.setdefault(name, []).append(_as_tensors(output))
        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _inputs(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    res = cfg['res']
    labels = torch.eye(LABELS)[torch.randint(0, LABELS, [BATCH], generator=gen)] if cfg['c_dim'] else \
        torch.zeros([BATCH, 0])
    return dict(z=torch.randn([BATCH, 8], generator=gen), c=labels,
                img=1.5 * torch.randn([BATCH, 3, res, res], generator=gen),
                probe=torch.randn([BATCH, 3, res, res], generator=gen))


def _grad(tensor):
    # None where the tensor took no part (the labels of an unconditional network).
    return None if tensor.grad is None else tensor.grad.detach().clone()


def _param_grads(net):
    return {name: _grad(p) for name, p in net.named_parameters()}


def _generator_record(G, x):
    rec = {}
    fp32 = dict(force_fp32=True)
    G.eval()
    with torch.no_grad(), _ModuleOutputs(G.mapping) as mapping_outputs:
        rec['ws'] = G.mapping(x['z'], x['c'])
    rec['mapping_modules'] = mapping_outputs
    with torch.no_grad():
        rec['ws_trunc'] = G.mapping(x['z'], x['c'], truncation_psi=0.7)
        rec['ws_trunc_cutoff'] = G.mapping(x['z'], x['c'], truncation_psi=0.5, truncation_cutoff=2)
        ws = rec['ws_trunc']
        with _ModuleOutputs(G.synthesis) as synthesis_outputs:
            rec['img_const'] = G.synthesis(ws, noise_mode='const', **fp32)
        rec['synthesis_modules'] = synthesis_outputs
        rec['img_none'] = G.synthesis(ws, noise_mode='none', **fp32)
        rec['img_unfused'] = G.synthesis(ws, noise_mode='const', fused_modconv=False, **fp32)
        torch.manual_seed(11)
        rec['img_random'] = G.synthesis(ws, noise_mode='random', **fp32)
        rec['img_full'] = G(x['z'], x['c'], truncation_psi=0.7, truncation_cutoff=3, noise_mode='const', **fp32)

    # First-order gradients of a fixed projection of the image, through mapping and synthesis.
    z = x['z'].clone().requires_grad_(True)
    c = x['c'].clone().requires_grad_(True)
    G.zero_grad(set_to_none=True)
    ws = G.mapping(z, c, truncation_psi=0.7)
    ws.retain_grad()
    img = G.synthesis(ws, noise_mode='const', **fp32)
    (img * x['probe']).sum().backward()
    rec['grad_z'], rec['grad_c'], rec['grad_ws'] = _grad(z), _grad(c), _grad(ws)
    rec['grad_params'] = _param_grads(G)

    # Path length as in training: synthesis in training mode (unfused), then the penalty's gradient.
    G.train()
    G.zero_grad(set_to_none=True)
    ws = rec['ws'].clone().requires_grad_(True)
    img = G.synthesis(ws, noise_mode='const', **fp32)
    direction = x['probe'] / math.sqrt(img.shape[2] * img.shape[3])
    (grad_ws,) = torch.autograd.grad(outputs=[(img * direction).sum()], inputs=[ws], create_graph=True)
    lengths = grad_ws.square().sum(dim=2).mean(dim=1).sqrt()
    (lengths - 0.5).square().sum().backward()
    rec['pl_grad_ws'], rec['pl_lengths'] = grad_ws.detach().clone(), lengths.detach().clone()
    rec['pl_grad_params'] = _param_grads(G)

    # Running mean of w: one training-mode mapping call.
    with torch.no_grad():
        G.mapping(x['z'], x['c'])
    rec['w_avg_after_update'] = G.mapping.w_avg.detach().clone()
    G.eval()
    return rec


def _discriminator_record(D, x):
    rec = {}
    fp32 = dict(force_fp32=True)
    c = x['c'].clone().requires_grad_(True)
    img = x['img'].clone().requires_grad_(True)
    D.zero_grad(set_to_none=True)
    with _ModuleOutputs(D) as outputs:
        logits = D(img, c, **fp32)
    rec['logits'] = logits.detach().clone()
    rec['modules'] = outputs
    (logits * torch.linspace(-1, 1, BATCH).unsqueeze(1)).sum().backward()
    rec['grad_img'], rec['grad_c'] = _grad(img), _grad(c)
    rec['grad_params'] = _param_grads(D)

    # R1: gradient of sum(D(x)) w.r.t. the reals, then the gradient of its squared norm w.r.t. D.
    D.zero_grad(set_to_none=True)
    reals = x['img'].clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(outputs=[D(reals, x['c'], **fp32).sum()], inputs=[reals], create_graph=True)
    penalty = grad_x.square().sum(dim=[1, 2, 3])
    penalty.sum().backward()
    rec['r1_grad_img'], rec['r1_penalty'] = grad_x.detach().clone(), penalty.detach().clone()
    rec['r1_grad_params'] = _param_grads(D)
    return rec


def record(name, state=None):
    """Build configuration `name`, load `state` (default: its perturbed weights) and record everything."""
    net = build(name)
    init_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    seed = sum(map(ord, name)) + 1
    if state is None:
        state = perturbed_state(net, seed)
    net.load_state_dict(state)
    cfg = CONFIGS[name]
    x = _inputs(cfg, seed + 1)
    outputs = _generator_record(net, x) if cfg['kind'] == 'G' else _discriminator_record(net, x)
    return dict(config=cfg, init_state=init_state, state=state, outputs=outputs)

#----------------------------------------------------------------------------


def golden_path(name, folder=GOLDEN_DIR):
    return os.path.join(folder, f'{name}.pt')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=sorted(CONFIGS), help='regenerate only these configurations')
    parser.add_argument('--outdir', default=GOLDEN_DIR, help='output folder (default: %(default)s)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.outdir, exist_ok=True)
    for name in args.only or CONFIGS:
        data = dict(format=FORMAT, version=VERSION, name=name, **record(name))
        path = golden_path(name, args.outdir)
        dnnlib.util.write_atomically(path, lambda f: torch.save(data, f))
        print(f'wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)')


if __name__ == '__main__':
    main()
