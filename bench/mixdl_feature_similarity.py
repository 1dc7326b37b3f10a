"""How alike a generator's synthesis features are across samples: the quantity MixDL's distance loss acts on.

For each snapshot (LABEL=PKL) the script draws --samples latents from a fixed seed, records every
synthesis conv output (the same names and recording code as MixDLLoss) and prints, per layer, the mean
cosine similarity between different samples' flattened feature maps, and the share of the images'
spectral energy above half the Nyquist frequency. The G distance loss draws its layer from all but the
first and the last (marked *). Matching softmax(C) with plain cosines pushes different samples' maps on
those layers apart; the first and last layers show what the same generator does where the loss does not
reach.

    python bench/mixdl_feature_similarity.py baseline=runs/base/network-snapshot-000020.pkl \\
        mixdl=runs/mixdl/network-snapshot-000020.pkl
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
import legacy  # noqa: E402
from stylegan2_ada_mixdl.mixdl.distance import cosine_similarity_matrix, distance_layer_indices  # noqa: E402
from stylegan2_ada_mixdl.mixdl.loss import synthesis_conv_names  # noqa: E402
from training.features import features_by_name, record_activations  # noqa: E402


def high_frequency_share(maps):
    """Share of the spectral energy of maps [N, C, H, W] at |frequency| above a quarter cycle per pixel."""
    power = torch.fft.rfft2(maps.double()).abs().square()
    fy = torch.fft.fftfreq(maps.shape[-2]).abs()[:, None]
    fx = torch.fft.rfftfreq(maps.shape[-1])[None, :]
    return float((power * ((fy > 0.25) | (fx > 0.25))).sum() / power.sum())


def mean_off_diagonal(matrix):
    """Mean of a square matrix's entries off its diagonal."""
    n = matrix.shape[0]
    return float(matrix[~torch.eye(n, dtype=torch.bool)].mean())


def feature_similarity(G, num_samples, seed):
    """({layer: mean cosine between different samples}, high-frequency share of the images)."""
    names = synthesis_conv_names(G.synthesis)
    z = torch.randn(num_samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    c = torch.zeros(num_samples, G.c_dim)
    with torch.no_grad(), record_activations(G.synthesis, names) as record:
        images = G.synthesis(G.mapping(z, c), noise_mode='const')
    cosines = {name: mean_off_diagonal(cosine_similarity_matrix(maps, maps))
               for name, maps in zip(names, features_by_name(record, names))}
    return cosines, high_frequency_share(images.float())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('snapshots', nargs='+', metavar='LABEL=PKL', help='network snapshots to compare')
    parser.add_argument('--samples', type=int, default=64, help='latents per snapshot (same seed for all)')
    parser.add_argument('--seed', type=int, default=1, help='seed of the latents')
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    results = {}
    for entry in args.snapshots:
        label, sep, path = entry.partition('=')
        if not sep or not label or not path:
            raise SystemExit(f'{entry!r}: expected LABEL=PKL, e.g. baseline=runs/00000/network-snapshot-000020.pkl')
        if not os.path.isfile(path):
            raise SystemExit(f'{path}: no such snapshot; pass a network-snapshot-*.pkl from a run directory')
        try:
            with dnnlib.util.open_url(path) as f:
                G = legacy.load_network_pkl(f)['G_ema'].eval()
        except Exception as error:  # any unreadable file: one line naming it
            raise SystemExit(f'{path}: cannot read a network snapshot ({error}); pass a network-snapshot-*.pkl')
        results[label] = feature_similarity(G, args.samples, args.seed)

    layers = list(next(iter(results.values()))[0])
    print(f'Mean cosine between different samples\' synthesis features ({args.samples} samples, seed {args.seed}; '
          '* = a layer the G distance loss draws from)')
    print('| layer | ' + ' | '.join(results) + ' |')
    print('|---|' + '---|' * len(results))
    drawn = distance_layer_indices(len(layers))
    for index, layer in enumerate(layers):
        mark = '*' if index in drawn else ''
        cells = [f'{cosines[layer]:.2f}' if layer in cosines else '-' for cosines, _ in results.values()]
        print(f'| {layer}{mark} | ' + ' | '.join(cells) + ' |')
    print('| image high-frequency share | ' + ' | '.join(f'{share:.3f}' for _, share in results.values()) + ' |')


if __name__ == '__main__':
    main()
