"""Few-shot generation of a novel class with a trained AugIntAE (ICLR 2021 submission, sec. 3.3): encode a few seed
images, mix their codes by SLERP, decode. No training happens here.

Notebook use:

    model = FewShotAutoencoder.from_snapshot('runs/.../network-snapshot-000400.pkl')
    names, seeds = load_seed_images('cats/', model.resolution, model.num_channels)
    codes = model.encode(seeds)
    images, pairs, alphas = model.sample(codes, 16, generator=torch.Generator().manual_seed(0))
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy
from training import image_grid

from .encoder import ENCODER_KEY, Encoder, decode
from .ops import slerp

# Top-level key of the encoder's state in network-snapshot pickles; {ENCODER_KEY: state_dict} lives under it.
SNAPSHOT_KEY = 'augintae'
DECODERS = ('G', 'G_ema')


class FewShotError(ValueError):
    """Bad input to the few-shot tools; the message names the problem and the fix in one line."""


def _dataset_tool():
    # dataset_tool.py is a top-level script; its readers and crop are reused so seeds are treated
    # exactly like dataset images. Imported lazily because it pulls in click.
    import dataset_tool
    return dataset_tool


def load_seed_images(path: str, resolution: int, num_channels: int, resize_filter: str = 'lanczos',
                     background=(255, 255, 255)) -> Tuple[List[str], torch.Tensor]:
    """Read every image of a folder or zip (sorted by name) as uint8 [N, C, resolution, resolution].

    Each image goes through dataset_tool's conversion: transparency composited onto `background`,
    then a centre crop to a square resized to `resolution` with `resize_filter` ('lanczos' or 'box').
    Raises FewShotError for fewer than two usable images or images whose channel count is not
    `num_channels` (1 = grayscale, 3 = RGB).
    """
    tool = _dataset_tool()
    if not os.path.exists(path):
        raise FewShotError(f'no such folder or zip: {path}; pass a folder or .zip of seed images')
    if not (os.path.isdir(path) or path.lower().endswith('.zip')):
        raise FewShotError(f'{path} is neither a folder nor a .zip; pass a folder or .zip of seed images')
    try:
        names, read, _labels = tool._open_source(path)
    except Exception as error:  # click.ClickException from the readers: keep its message, drop click
        raise FewShotError(getattr(error, 'message', str(error))) from None
    resample = {'box': PIL.Image.BOX, 'lanczos': PIL.Image.LANCZOS}[resize_filter]
    kept_names, pixels, skipped = [], [], []
    for index, name in enumerate(names):
        try:
            image = tool._to_plain_mode(read(index), background)
        except tool._Skip as reason:
            skipped.append(str(reason))
            continue
        channels = 1 if image.mode == 'L' else 3
        if channels != num_channels:
            want = 'grayscale' if num_channels == 1 else 'RGB'
            raise FewShotError(f'{name} has {channels} channel(s) but the network makes {num_channels}; '
                               f'convert the seeds to {want} (e.g. dataset_tool.py --color={want.lower()})')
        image = tool._center_crop(image, resolution, resolution, resample)
        array = np.asarray(image, dtype=np.uint8)
        pixels.append(array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1))
        kept_names.append(name)
    if len(pixels) < 2:
        extra = f' ({len(skipped)} unreadable: {skipped[0]})' if skipped else ''
        raise FewShotError(f'{path} holds {len(pixels)} usable seed image(s){extra}; AugIntAE mixes pairs, so give at least two')
    return kept_names, torch.from_numpy(np.stack(pixels))


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] in [0, 255] -> float32 in [-1, 1] (the networks' range)."""
    return images.to(torch.float32) / 127.5 - 1


def all_pairs(num: int) -> List[Tuple[int, int]]:
    """Every unordered pair (i, j), i < j, in row-major order: num * (num - 1) / 2 of them."""
    return [(i, j) for i in range(num) for j in range(i + 1, num)]


class FewShotAutoencoder:
    """A trained AugIntAE: encoder E and decoder (G's synthesis network), in eval mode on one device."""

    def __init__(self, encoder: Encoder, G: torch.nn.Module, device='cpu', batch_size: int = 16):
        self.device = torch.device(device)
        self.encoder = encoder.eval().requires_grad_(False).to(self.device)
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.batch_size = int(batch_size)

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    @property
    def num_channels(self) -> int:
        return int(self.G.img_channels)

    @classmethod
    def from_snapshot_data(cls, data: Dict, decoder: str = 'G', device='cpu', source: str = 'the snapshot') -> 'FewShotAutoencoder':
        """Build from a loaded snapshot dict (as legacy.load_network_pkl returns it)."""
        if decoder not in DECODERS:
            raise FewShotError(f'unknown decoder {decoder!r}; use one of {", ".join(DECODERS)}')
        saved = data.get(SNAPSHOT_KEY)
        if not isinstance(saved, dict) or ENCODER_KEY not in saved:
            raise FewShotError(f'{source} has no AugIntAE encoder; use a snapshot of a run trained with --augintae=1')
        G = data[decoder]
        encoder = Encoder.like_discriminator(data['D'], w_dim=G.w_dim)
        try:
            encoder.load_state_dict({name: torch.as_tensor(value) for name, value in saved[ENCODER_KEY].items()})
        except RuntimeError as error:
            raise FewShotError(f'the encoder in {source} does not match its D architecture ({str(error).splitlines()[0]})') from None
        return cls(encoder, G, device=device)

    @classmethod
    def from_snapshot(cls, network_pkl: str, decoder: str = 'G', device='cpu') -> 'FewShotAutoencoder':
        """Load a network-snapshot pickle written by a --augintae=1 run."""
        if not dnnlib.util.is_url(network_pkl, allow_file_urls=True) and not os.path.isfile(network_pkl):
            raise FewShotError(f'no such snapshot: {network_pkl}')
        try:
            with dnnlib.util.open_url(network_pkl) as handle:
                data = legacy.load_network_pkl(handle)
        except (ValueError, OSError) as error:
            raise FewShotError(f'could not load {network_pkl}: {error}') from None
        return cls.from_snapshot_data(data, decoder=decoder, device=device, source=network_pkl)

    def _batches(self, tensor):
        return [tensor[lo:lo + self.batch_size] for lo in range(0, len(tensor), self.batch_size)]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, R, R] (uint8 in [0, 255], or float in [-1, 1]) -> codes [N, w_dim]."""
        if images.dtype == torch.uint8:
            images = uint8_to_float(images)
        return torch.cat([self.encoder(batch.to(self.device)) for batch in self._batches(images)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, w_dim] -> images [N, C, R, R] in about [-1, 1] (noise fixed, full precision)."""
        return torch.cat([decode(self.G.synthesis, batch.to(self.device), noise_mode='const', force_fp32=True)
                          for batch in self._batches(codes)])

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def mix(self, codes: torch.Tensor, pairs: Sequence[Tuple[int, int]], alphas) -> torch.Tensor:
        """slerp(codes[i], codes[j], alpha) for each (i, j), alpha weighting codes[i]."""
        pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
        alphas = torch.as_tensor(alphas, dtype=codes.dtype).reshape(-1).to(codes.device)
        return slerp(codes[pairs[:, 0]], codes[pairs[:, 1]], alphas)

    def sample(self, codes: torch.Tensor, num: int, generator: Optional[torch.Generator] = None):
        """`num` images from random pairs i != j with alpha ~ U[0, 1].

        Returns (images [num, C, R, R], pairs [num, 2], alphas [num]). Draws come from `generator`
        (a CPU generator) or torch's global stream.
        """
        count = len(codes)
        if count < 2:
            raise FewShotError('sampling mixes pairs of seeds; give at least two')
        first = torch.randint(count, [num], generator=generator)
        # A second index drawn from the other count - 1 seeds, so i != j always.
        second = (first + 1 + torch.randint(count - 1, [num], generator=generator)) % count
        alphas = torch.rand([num], generator=generator)
        pairs = torch.stack([first, second], dim=1)
        return self.decode(self.mix(codes, pairs, alphas)), pairs, alphas

    def midpoint_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """[n * n, C, R, R], row-major: cell (i, j) is the midpoint of seeds i and j, the diagonal the
        reconstructions of the seeds (the n * (n - 1) / 2 distinct midpoints appear twice, mirrored)."""
        count = len(codes)
        rows = torch.arange(count).repeat_interleave(count)
        cols = torch.arange(count).repeat(count)
        alphas = torch.where(rows == cols, torch.ones(count * count), torch.full([count * count], 0.5))
        return self.decode(self.mix(codes, torch.stack([rows, cols], dim=1), alphas))

    def strip(self, codes: torch.Tensor, i: int, j: int, steps: int) -> torch.Tensor:
        """`steps` images along the SLERP path from seed i (first) to seed j (last)."""
        if steps < 2:
            raise FewShotError(f'an interpolation strip needs at least 2 steps, got {steps}')
        alphas = torch.linspace(1, 0, steps)
        return self.decode(self.mix(codes, [(i, j)] * steps, alphas))


def write_fewshot_outputs(model: FewShotAutoencoder, names: List[str], seeds: torch.Tensor, outdir: str,
                          num_samples: int = 16, strips: Sequence[Tuple[int, int]] = (), steps: int = 8,
                          seed: int = 0) -> List[str]:
    """Write everything the generation tool makes into `outdir`; returns the written paths.

    samples/sample-NNNN.png   num_samples images from random seed pairs, alpha ~ U[0, 1]
    samples.png               the same as one grid
    samples.txt               which pair and alpha made each sample
    reconstructions.png       top row the seeds as read, bottom row their reconstructions
    midpoints.png             n x n grid of pairwise midpoints (diagonal: reconstructions)
    strip-I-J.png             seed I, `steps` decoded images from I to J, seed J
    """
    count = len(seeds)
    for i, j in strips:
        if not (0 <= i < count and 0 <= j < count) or i == j:
            raise FewShotError(f'strip {i}-{j} needs two different seed indices in 0..{count - 1}')
    os.makedirs(os.path.join(outdir, 'samples'), exist_ok=True)
    drange = (-1, 1)
    written = []
    codes = model.encode(seeds)

    images, pairs, alphas = model.sample(codes, num_samples, generator=torch.Generator().manual_seed(int(seed)))
    for index, image in enumerate(images):
        path = os.path.join(outdir, 'samples', f'sample-{index:04d}.png')
        image_grid.write_image_grid(image[np.newaxis], path, drange, (1, 1))
        written.append(path)
    columns = int(np.ceil(np.sqrt(num_samples)))
    rows = int(np.ceil(num_samples / columns))
    padded = torch.cat([images, images.new_full([columns * rows - num_samples, *images.shape[1:]], -1)])
    written.append(os.path.join(outdir, 'samples.png'))
    image_grid.write_image_grid(padded, written[-1], drange, (columns, rows))
    lines = ['sample\tseed_i\tseed_j\talpha_i'] + [
        f'{index:04d}\t{names[int(i)]}\t{names[int(j)]}\t{float(alpha):.4f}' for index, ((i, j), alpha) in enumerate(zip(pairs, alphas))]
    written.append(os.path.join(outdir, 'samples.txt'))
    dnnlib.util.write_atomically(written[-1], lambda f: f.write(('\n'.join(lines) + '\n').encode('utf-8')))

    real = seeds.to(torch.float32) / 127.5 - 1
    written.append(os.path.join(outdir, 'reconstructions.png'))
    image_grid.write_image_grid(torch.cat([real.to(model.device), model.decode(codes)]), written[-1], drange, (count, 2))

    written.append(os.path.join(outdir, 'midpoints.png'))
    image_grid.write_image_grid(model.midpoint_grid(codes), written[-1], drange, (count, count))

    for i, j in strips:
        strip = torch.cat([real[i:i + 1].to(model.device), model.strip(codes, i, j, steps), real[j:j + 1].to(model.device)])
        written.append(os.path.join(outdir, f'strip-{i}-{j}.png'))
        image_grid.write_image_grid(strip, written[-1], drange, (steps + 2, 1))
    return written
