"""Style-mixing grids (Karras et al. 2019, sec. 3.1): each row seed's w with some layers taken from each column seed's w."""

import os

import click
import numpy as np
import torch

import generate
from torch_utils import devices
from training.image_grid import write_image_grid


def parse_styles(text, num_ws):
    """'0-6' or '0,2,4' -> sorted layer indices, each checked against the network's num_ws."""
    try:
        layers = generate.parse_seeds(text)
    except click.BadParameter:
        raise click.BadParameter(f'{text!r} is not a list of layers; use numbers and ranges like 0-6',
                                 param_hint='--styles') from None
    outside = [layer for layer in layers if layer >= num_ws]
    if outside:
        raise click.BadParameter(f'layer {outside[0]} does not exist; this network has w layers 0..{num_ws - 1}',
                                 param_hint='--styles')
    return sorted(set(layers))


def mix_ws(row_ws, col_ws, styles):
    """[R, num_ws, w_dim] and [C, num_ws, w_dim] -> [R, C, num_ws, w_dim]: row w with `styles` layers from column w."""
    mixed = row_ws.unsqueeze(1).repeat(1, len(col_ws), 1, 1)
    mixed[:, :, styles] = col_ws[:, styles].unsqueeze(0).expand(len(row_ws), -1, -1, -1)
    return mixed


def _seed_ws(G, seeds, truncation_psi, labels):
    z = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds]).astype(np.float32)
    z = torch.from_numpy(z).to(labels.device)
    return G.mapping(z, labels.expand(len(seeds), -1), truncation_psi=truncation_psi)


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle (path or URL)', required=True, metavar='PATH')
@click.option('--rows', 'row_seeds', type=generate.SeedList(), help="Seeds of the rows, e.g. '85,100,75'", required=True)
@click.option('--cols', 'col_seeds', type=generate.SeedList(), help="Seeds of the columns, e.g. '55,821,1789'",
              required=True)
@click.option('--styles', 'styles_text', default='0-6', show_default=True,
              help='w layers that come from the column seed')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, help='Truncation psi')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Noise mode')
@click.option('--class', 'class_idx', type=int, help='Class label (conditional networks only)')
@click.option('--outdir', type=str, required=True, help='Where to save the output images', metavar='DIR')
@click.option('--device', 'device_choice', type=click.Choice(devices.DEVICE_CHOICES), default='auto',
              show_default=True, help='Where to run the generator')
def generate_style_mix(network_pkl, row_seeds, col_seeds, styles_text, truncation_psi, noise_mode, class_idx, outdir,
                       device_choice):
    """Generate a style-mixing grid using a pretrained network pickle.

    Writes grid.png (top row: the column seeds' images; left column: the row seeds' images; every other
    cell: the row seed's w with the --styles layers replaced by the column seed's w) and every image on
    its own as ROW-COL.png, including SEED-SEED.png for each seed alone.

    \b
    python style_mixing.py --outdir=out --rows=85,100,75,458,1500 --cols=55,821,1789,293 --network=ffhq.pkl
    """
    device = generate._pick_device(device_choice)
    G = generate._load_generator(network_pkl, device)
    styles = parse_styles(styles_text, G.num_ws)
    labels = generate._labels(G, class_idx, 1, device)
    synthesis_kwargs = dict(noise_mode=noise_mode, force_fp32=(device.type != 'cuda'))
    os.makedirs(outdir, exist_ok=True)

    print('Generating W vectors...')
    row_ws = _seed_ws(G, row_seeds, truncation_psi, labels)
    col_ws = _seed_ws(G, col_seeds, truncation_psi, labels)
    print('Generating images...')
    row_images = generate._synthesize(G, row_ws, synthesis_kwargs)           # [R, H, W, C] uint8
    col_images = generate._synthesize(G, col_ws, synthesis_kwargs)
    mixed = mix_ws(row_ws, col_ws, styles)
    mixed_images = generate._synthesize(G, mixed.flatten(0, 1), synthesis_kwargs).reshape(
        len(row_seeds), len(col_seeds), *row_images.shape[1:])

    print('Saving images...')
    for seed, pixels in [*zip(row_seeds, row_images), *zip(col_seeds, col_images)]:
        _save(pixels, os.path.join(outdir, f'{seed}-{seed}.png'))
    for r, row_seed in enumerate(row_seeds):
        for c, col_seed in enumerate(col_seeds):
            _save(mixed_images[r, c], os.path.join(outdir, f'{row_seed}-{col_seed}.png'))

    print('Saving image grid...')
    height, width, channels = row_images.shape[1:]
    cells = np.zeros([len(row_seeds) + 1, len(col_seeds) + 1, height, width, channels], dtype=np.uint8)
    cells[0, 1:] = col_images
    cells[1:, 0] = row_images
    cells[1:, 1:] = mixed_images
    write_image_grid(cells.reshape(-1, height, width, channels).transpose(0, 3, 1, 2), os.path.join(outdir, 'grid.png'),
                     drange=(0, 255), grid_size=(len(col_seeds) + 1, len(row_seeds) + 1))


def _save(pixels, path):
    """uint8 [H, W, C] -> PNG, through the one (atomic) image writer."""
    write_image_grid(pixels.transpose(2, 0, 1)[np.newaxis], path, drange=(0, 255), grid_size=(1, 1))


if __name__ == '__main__':
    generate_style_mix()  # pylint: disable=no-value-for-parameter
