"""Generate images, grids, W-space interpolations and animations from a StyleGAN2-ADA network pickle."""

import importlib.util
import math
import os
import re
import zipfile
from typing import List

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy
from dnnlib import cli
from torch_utils import devices
from training import image_grid

_SYNTHESIS_BATCH = 8        # images per synthesis call; bounds memory for long interpolations
_DEFAULT_VIDEO_STEPS = 24   # frames per seed pair in --video when --interp is not given
MAX_SEEDS = 10000           # seeds per call: every image of a call is held in memory at once
TRUNC_RANGE = (-2.0, 2.0)   # --trunc beyond this moves w far outside anything the network was trained on

#----------------------------------------------------------------------------


class SeedList(click.ParamType):
    """Comma-separated seeds and inclusive ranges, e.g. '0-7,12' -> [0, 1, ..., 7, 12]."""
    name = 'seeds'
    _item = re.compile(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?')

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        seeds = []
        for item in str(value).split(','):
            match = self._item.fullmatch(item)
            if not match:
                self.fail(f"{value!r} is not a seed list; use numbers and ranges like '0-7,12'", param, ctx)
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                self.fail(f'range {item.strip()!r} runs backwards; write it as {last}-{first}', param, ctx)
            if last >= 2 ** 32:
                self.fail(f'seed {last} is too large; numpy seeds must be below 2**32', param, ctx)
            if len(seeds) + (last - first + 1) > MAX_SEEDS:
                self.fail(f'{value!r} names more than {MAX_SEEDS} seeds, the limit per call; '
                          'split the range over several calls', param, ctx)
            seeds.extend(range(first, last + 1))
        return seeds


def parse_seeds(text: str) -> List[int]:
    """Parse a seed list such as '0-7,12' (raises click.BadParameter on bad text)."""
    return SeedList().convert(text, None, None)

#----------------------------------------------------------------------------


def _pick_device(choice):
    try:
        return devices.pick_device(choice)
    except devices.DeviceUnavailableError as error:
        raise click.BadParameter(str(error), param_hint='--device') from None


def _check_trunc(ctx, param, value):
    low, high = TRUNC_RANGE
    if not math.isfinite(value) or not low <= value <= high:
        raise click.BadParameter(f'{value} is not a number from {low:g} to {high:g} (1 = no truncation, '
                                 '0 = the average image)', ctx, param)
    return value


def _check_outdir(outdir):
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.ClickException(f'--outdir={outdir} is an existing file, not a folder; choose a folder name')


def _nonfinite_tensors(module):
    """Names of parameters and buffers holding NaN or inf."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, tensor in named if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def _load_generator(network_pkl, device):
    if not dnnlib.util.is_url(network_pkl, allow_file_urls=True) and not os.path.isfile(network_pkl):
        raise click.BadParameter(f'no such file: {network_pkl}', param_hint='--network')
    print(f'Loading networks from "{network_pkl}"...')
    try:
        with dnnlib.util.open_url(network_pkl) as handle:
            G = legacy.load_network_pkl(handle)['G_ema']
    except (ValueError, OSError) as error:
        raise click.ClickException(f'could not load {network_pkl}: {error}') from None
    broken = _nonfinite_tensors(G)
    if broken:
        raise click.ClickException(f'{network_pkl}: G_ema holds NaN or inf in {len(broken)} tensor(s), e.g. {broken[0]}; '
                                   'the snapshot comes from a diverged run or is damaged: use an earlier snapshot')
    return G.eval().requires_grad_(False).to(device)


def _labels(G, class_idx, count, device):
    labels = torch.zeros([count, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx is not None:
            print(f'warning: --class={class_idx} ignored when running on an unconditional network')
        return labels
    if class_idx is None:
        raise click.ClickException('Must specify class label with --class when using a conditional network')
    if not 0 <= class_idx < G.c_dim:
        raise click.BadParameter(f'{class_idx} is out of range; this network has classes 0..{G.c_dim - 1}',
                                 param_hint='--class')
    labels[:, class_idx] = 1
    return labels


def _synthesize(G, ws, synthesis_kwargs):
    """Images for ws [N, num_ws, w_dim] as uint8 [N, H, W, C], in memory-bounded chunks."""
    chunks = []
    for chunk in ws.split(_SYNTHESIS_BATCH):
        img = G.synthesis(chunk, **synthesis_kwargs)
        if not torch.isfinite(img).all():
            raise click.ClickException('the generator produced NaN or inf pixels; the network is damaged, or --trunc '
                                       'or the projected w are far outside its range')
        chunks.append((img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(chunks).numpy()


def _to_pil(pixels):
    if pixels.shape[-1] == 1:
        return PIL.Image.fromarray(pixels[..., 0], 'L')
    return PIL.Image.fromarray(pixels, {3: 'RGB', 4: 'RGBA'}[pixels.shape[-1]])


def _write_png(pixels, path):
    """Save uint8 [H, W, C] as a PNG; the file appears only once complete."""
    picture = _to_pil(pixels)
    with cli.about_path(path):
        dnnlib.util.write_atomically(path, lambda handle: picture.save(handle, format='PNG'))


def _write_grid(images, columns, path):
    """Save uint8 images [N, H, W, C] row-major on a grid `columns` wide (unused cells black) as one PNG."""
    count = len(images)
    rows = math.ceil(count / columns)
    padded = np.zeros([rows * columns, *images.shape[1:]], dtype=np.uint8)
    padded[:count] = images
    try:
        with cli.about_path(path):
            image_grid.write_image_grid(padded.transpose(0, 3, 1, 2), path, drange=(0, 255), grid_size=(columns, rows))
    except ValueError as error:  # e.g. 4-channel networks: PNG grids hold 1 or 3 channels
        raise click.ClickException(f'cannot write {path}: {error}; drop --grid/--interp') from None


def _lerp_path(ws, steps, closed):
    """W-space path through ws [S, num_ws, w_dim]: `steps` points per consecutive pair, endpoints included.

    Returns [pairs, steps, num_ws, w_dim]; with closed=True the last seed also leads back to the first.
    """
    starts = ws
    ends = torch.roll(ws, shifts=-1, dims=0)
    if not closed:
        starts, ends = starts[:-1], ends[:-1]
    t = torch.linspace(0, 1, steps, device=ws.device).reshape(1, steps, 1, 1)
    return starts.unsqueeze(1) + (ends - starts).unsqueeze(1) * t


def _check_video_name(video):
    """Fail before any work if --video names a format we cannot write here."""
    extension = os.path.splitext(video)[1].lower()
    if extension not in ('.gif', '.mp4'):
        raise click.BadParameter(f'unknown video type {extension or video!r}; use a .gif or .mp4 file name',
                                 param_hint='--video')
    if extension == '.mp4' and not all(importlib.util.find_spec(name) for name in ('imageio', 'imageio_ffmpeg')):
        raise click.ClickException('MP4 output needs imageio and imageio-ffmpeg '
                                   '(pip install imageio imageio-ffmpeg), or use a .gif name')


def _write_video(frames, path, fps):
    if path.lower().endswith('.gif'):
        pictures = [_to_pil(frame) for frame in frames]
        with cli.about_path(path):
            dnnlib.util.write_atomically(path, lambda handle: pictures[0].save(
                handle, format='GIF', save_all=True, append_images=pictures[1:], duration=max(1, round(1000 / fps)), loop=0))
        return
    import imageio  # optional dependency, checked by _check_video_name
    with imageio.get_writer(path, mode='I', fps=fps, codec='libx264') as writer:
        for frame in frames:
            writer.append_data(frame)

#----------------------------------------------------------------------------


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle (path or URL)', required=True, metavar='PATH')
@click.option('--seeds', type=SeedList(), help="Random seeds, e.g. '0-7,12'")
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, callback=_check_trunc,
              help=f'Truncation psi, from {TRUNC_RANGE[0]:g} to {TRUNC_RANGE[1]:g}: 1 = none, 0 = the average image')
@click.option('--class', 'class_idx', type=int, help='Class label (conditional networks only)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Noise mode')
@click.option('--projected-w', '--projected_w', 'projected_w', type=click.Path(exists=True, dir_okay=False),
              help='Render the ws in this projector .npz file instead of seeds', metavar='FILE')
@click.option('--outdir', type=str, required=True, help='Where to save the images', metavar='DIR')
@click.option('--grid', is_flag=True, help='Also save all seed images as one grid.png')
@click.option('--interp', type=click.IntRange(min=2), help='Save W interpolation strips with N steps per seed pair',
              metavar='N')
@click.option('--video', type=str, help='Write a looping W interpolation through the seeds (.gif, or .mp4 with '
              'imageio-ffmpeg), relative to --outdir', metavar='FILE')
@click.option('--fps', type=click.IntRange(min=1), default=24, show_default=True, help='Frames per second for --video')
@click.option('--device', 'device_choice', type=click.Choice(devices.DEVICE_CHOICES), default='auto',
              show_default=True, help='Where to run the generator')
@cli.one_line_errors
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, projected_w, outdir, grid, interp,
                    video, fps, device_choice):
    """Generate images using a pretrained network pickle.

    \b
    # Uncurated images with truncation
    python generate.py --outdir=out --trunc=0.7 --seeds=0-7,12 --network=ffhq.pkl
    \b
    # A grid, interpolation strips and an animated GIF on the CPU
    python generate.py --outdir=out --seeds=0-3 --grid --interp=8 --video=walk.gif --device=cpu --network=ffhq.pkl
    \b
    # Render an image from projected W
    python generate.py --outdir=out --projected-w=projected_w.npz --network=ffhq.pkl
    """
    device = _pick_device(device_choice)
    if projected_w is None and not seeds:
        raise click.BadParameter('--seeds option is required when not using --projected-w', param_hint='--seeds')
    if projected_w is None and (interp or video) and len(seeds) < 2:
        raise click.BadParameter('--interp and --video need at least two seeds', param_hint='--seeds')
    if video:
        _check_video_name(video)
    _check_outdir(outdir)
    G = _load_generator(network_pkl, device)
    os.makedirs(outdir, exist_ok=True)
    # force_fp32 off CUDA lets networks whose embedded code lacks our automatic fp32 fallback run too.
    synthesis_kwargs = dict(noise_mode=noise_mode, force_fp32=(device.type != 'cuda'))

    if projected_w is not None:
        if seeds:
            print('warning: --seeds is ignored when using --projected-w')
        try:
            with open(projected_w, 'rb') as stream:
                stored_w = np.load(stream)['w']
        except (ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as error:
            raise click.ClickException(f'--projected-w={projected_w} is not a projector .npz with a "w" array '
                                       f'({type(error).__name__}: {error})') from None
        ws = torch.tensor(stored_w, device=device, dtype=torch.float32)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise click.BadParameter(f'w has shape {tuple(ws.shape)}, expected [N, {G.num_ws}, {G.w_dim}] '
                                     'for this network', param_hint='--projected-w')
        for index, pixels in enumerate(_synthesize(G, ws, synthesis_kwargs)):
            _write_png(pixels, os.path.join(outdir, f'proj{index:02d}.png'))
        return

    z = torch.from_numpy(np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in seeds]))
    z = z.to(torch.float32).to(device)  # cast on the CPU first: MPS has no float64
    labels = _labels(G, class_idx, len(seeds), device)
    ws = G.mapping(z, labels, truncation_psi=truncation_psi)

    images = _synthesize(G, ws, synthesis_kwargs)
    for seed, pixels in zip(seeds, images):
        print(f'Generating image for seed {seed} ...')
        _write_png(pixels, os.path.join(outdir, f'seed{seed:04d}.png'))
    if grid:
        _write_grid(images, math.ceil(math.sqrt(len(seeds))), os.path.join(outdir, 'grid.png'))

    if interp:
        path = _lerp_path(ws, interp, closed=False)                          # [pairs, N, num_ws, w_dim]
        frames = _synthesize(G, path.flatten(0, 1), synthesis_kwargs)
        strips = frames.reshape(len(seeds) - 1, interp, *frames.shape[1:])
        for (start, end), strip in zip(zip(seeds[:-1], seeds[1:]), strips):
            _write_grid(strip, interp, os.path.join(outdir, f'interp{start:04d}-{end:04d}.png'))
        _write_grid(frames, interp, os.path.join(outdir, 'interp.png'))

    if video:
        steps = interp or _DEFAULT_VIDEO_STEPS
        # Drop each segment's last frame: it repeats the next segment's first one.
        path = _lerp_path(ws, steps, closed=True)[:, :-1]
        frames = _synthesize(G, path.flatten(0, 1), synthesis_kwargs)
        video_path = os.path.join(outdir, video)
        _write_video(frames, video_path, fps)
        print(f'Wrote {len(frames)} frames to {video_path}')

#----------------------------------------------------------------------------


if __name__ == '__main__':
    generate_images()  # pylint: disable=no-value-for-parameter
