"""How strongly MixDL's generator distance term pulls on G compared with its patch adversarial term, at initialisation.

For each (channel_base, channel_max) the script builds G and D at --res, draws one MixDL generator step
(B sources, B anchors) per seed and measures the norm of G's gradient from the unweighted distance loss
L_G_dist and from the patch term softplus(-Dpatch(G(w0))). lambda_G * |grad L_G_dist| / |grad patch| is
the share the distance term takes of G's MixDL update; the last column is the lambda_G at which both pull
equally. Untrained networks only: a guide to how lambda_G scales with width and resolution, not a tuning result.

    python bench/mixdl_grad_balance.py --res=32 --widths=1024x64,16384x512 --seeds=3
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylegan2_ada_mixdl.mixdl import MixDLLoss  # noqa: E402
from training import networks  # noqa: E402


def gradient_norms(res, channel_base, channel_max, seed, batch=4, z_dim=512, mapping_layers=8):
    """(|grad_G L_G_dist|, |grad_G patch term|) for one freshly initialised G and D."""
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=z_dim, c_dim=0, w_dim=z_dim, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=mapping_layers),
                           synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max)).train()
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=channel_base,
                               channel_max=channel_max, epilogue_kwargs=dict(mbstd_group_size=batch)).train()
    loss = MixDLLoss(device='cpu', G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, r1_gamma=10, seed=seed)
    z = torch.randn(batch, z_dim)
    c = torch.zeros(batch, 0)
    terms = loss.generator_terms(z, c, loss.draw_coefficients(batch), distance=True, patch=True)
    params = list(G.parameters())
    norms = []
    for name in ('G_dist', 'G_patch'):
        grads = torch.autograd.grad(terms[name].mean(), params, retain_graph=True, allow_unused=True)
        norms.append(float(torch.sqrt(sum(g.double().square().sum() for g in grads if g is not None))))
    return tuple(norms)


def parse_widths(text):
    try:
        widths = [tuple(int(v) for v in item.split('x')) for item in text.split(',') if item.strip()]
    except ValueError:
        widths = []
    if not widths or any(len(w) != 2 or min(w) < 1 for w in widths):
        raise SystemExit(f'--widths={text!r}: expected BASExMAX pairs, e.g. --widths=1024x64,16384x512')
    return widths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--res', type=int, default=32, help='image resolution')
    parser.add_argument('--widths', default='1024x64,16384x512', help='comma list of channel_base x channel_max')
    parser.add_argument('--seeds', type=int, default=3, help='initialisations averaged per width')
    parser.add_argument('--lambda-g', type=float, default=1000.0, help='lambda_G for the share column')
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f'| res | channel_base x max | grad L_G_dist | grad patch | lambda_G={args.lambda_g:g} ratio | lambda_G for 1:1 |')
    print('|---|---|---|---|---|---|')
    for base, cmax in parse_widths(args.widths):
        norms = [gradient_norms(args.res, base, cmax, seed) for seed in range(args.seeds)]
        dist = sum(n[0] for n in norms) / len(norms)
        patch = sum(n[1] for n in norms) / len(norms)
        print(f'| {args.res} | {base} x {cmax} | {dist:.3g} | {patch:.3g} | {args.lambda_g * dist / patch:.3g} | '
              f'{patch / dist:.3g} |', flush=True)


if __name__ == '__main__':
    main()
