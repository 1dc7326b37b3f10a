"""Training datasets: square power-of-two images from a folder or zip, with optional dataset.json labels."""

import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

import dnnlib

try:
    import pyspng
except ImportError:
    pyspng = None

#----------------------------------------------------------------------------

class DatasetError(OSError, ValueError):
    """A dataset that cannot be used for training; the message names the file and the fix.

    It subclasses OSError (upstream raises IOError for dataset problems) and ValueError (bad user
    input), so callers written against either convention catch it.
    """

# Pillow modes we can turn into uint8 images without guessing, with their channel counts.
_MODE_CHANNELS = {'1': 1, 'L': 1, 'P': 3, 'RGB': 3, 'YCbCr': 3, 'CMYK': 3}
_ALPHA_MODES = {'RGBA', 'RGBa', 'LA', 'La', 'PA'}

_TOOL_HINT = 'dataset_tool.py --source=<images> --dest=<out.zip>'

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset):
    """Index bookkeeping shared by all datasets: subset selection, x-flip doubling and labels.

    Subclasses provide `_read_image(raw_idx) -> uint8 [C, H, W]` and `_read_labels() -> array or None`.
    """

    def __init__(self,
        name,               # Name of the dataset, used in cache keys and run directory names.
        raw_shape,          # [num_images, channels, height, width] of the stored images.
        max_size=None,      # Keep a seeded random subset of at most this many images (None = all).
        use_labels=False,   # Return the stored labels; otherwise labels have zero width.
        xflip=False,        # Append a mirrored copy of every image, doubling the length.
        random_seed=0,      # Seed for choosing the max_size subset.
    ):
        self._name = name
        self._stored_shape = list(raw_shape)
        self._use_labels = use_labels
        self._cached_labels = None
        self._label_width = None

        # Subset first, then mirror: the mirrored half refers to the same stored images.
        chosen = np.arange(self._stored_shape[0], dtype=np.int64)
        if max_size is not None and chosen.size > max_size:
            chosen = np.sort(np.random.RandomState(random_seed).permutation(chosen.size)[:max_size])
        flips = np.zeros(chosen.size, dtype=np.uint8)
        if xflip:
            chosen = np.concatenate([chosen, chosen])
            flips = np.concatenate([flips, np.ones_like(flips)])
        self._index_map = chosen
        self._flip_flags = flips

    def _read_image(self, raw_idx):
        raise NotImplementedError

    def _read_labels(self):
        raise NotImplementedError

    def _all_labels(self):
        """Stored labels for every raw image: int64 [N] class ids or float32 [N, D] vectors."""
        if self._cached_labels is None:
            labels = self._read_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._stored_shape[0], 0], dtype=np.float32)
            if labels.dtype == np.int64:
                if labels.ndim != 1 or (labels.size and labels.min() < 0):
                    raise DatasetError(f'{self._name}: class labels must be non-negative integers, one per image; fix dataset.json')
            elif labels.dtype != np.float32 or labels.ndim != 2:
                raise DatasetError(f'{self._name}: labels must be integers or equal-length lists of numbers; fix dataset.json')
            if labels.shape[0] != self._stored_shape[0]:
                raise DatasetError(f'{self._name}: dataset.json has {labels.shape[0]} labels for {self._stored_shape[0]} images; fix dataset.json')
            self._cached_labels = labels
        return self._cached_labels

    def close(self):
        """Release open file handles; the dataset reopens them on demand."""

    def __getstate__(self):
        return dict(self.__dict__)

    def __del__(self):
        try:
            self.close()
        except Exception: # Interpreter shutdown may have torn down what close() needs.
            pass

    def __len__(self):
        return self._index_map.size

    def __getitem__(self, idx):
        image = self._read_image(self._index_map[idx])
        if tuple(image.shape) != tuple(self.image_shape) or image.dtype != np.uint8:
            raise DatasetError(f'{self._name}: image {self._index_map[idx]} decoded as {image.dtype} {list(image.shape)}, expected uint8 {self.image_shape}')
        if self._flip_flags[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx):
        """Label of item `idx` as float32: one-hot for class ids, the stored vector otherwise."""
        stored = self._all_labels()[self._index_map[idx]]
        if self.has_onehot_labels:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[stored] = 1
            return onehot
        return stored.copy()

    def get_details(self, idx):
        """Where item `idx` comes from: raw image index, whether it is mirrored, and its stored label."""
        return dnnlib.EasyDict(
            raw_idx=int(self._index_map[idx]),
            xflip=bool(self._flip_flags[idx]),
            raw_label=self._all_labels()[self._index_map[idx]].copy(),
        )

    @property
    def name(self):
        return self._name

    @property
    def raw_shape(self):
        """[num_stored_images, C, H, W] before subset selection and x-flips."""
        return list(self._stored_shape)

    @property
    def image_shape(self):
        """[C, H, W] of one item."""
        return list(self._stored_shape[1:])

    def _square_side(self):
        """(channels, side) of the stored images, which are CHW and square by construction."""
        channels, height, width = self.image_shape
        if height != width:
            raise DatasetError(f'{self._name}: images are {width}x{height}, not square')
        return channels, height

    @property
    def num_channels(self):
        """1 for grayscale, 3 for RGB."""
        return self._square_side()[0]

    @property
    def resolution(self):
        """Side of the square images in pixels."""
        return self._square_side()[1]

    @property
    def label_shape(self):
        """[num_classes] for class ids (one-hot width), [D] for label vectors, [0] without labels."""
        if self._label_width is None:
            labels = self._all_labels()
            onehot = labels.dtype == np.int64
            if onehot:
                width = [int(labels.max()) + 1] if labels.size else [0]
            else:
                width = list(labels.shape[1:])
            self._label_width = width
        return list(self._label_width)

    @property
    def label_dim(self):
        """Length of the label vector handed to the networks (c_dim)."""
        (width,) = self.label_shape
        return width

    @property
    def has_labels(self):
        return any(size != 0 for size in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._all_labels().dtype == np.int64

#----------------------------------------------------------------------------

def _is_power_of_two(n):
    return n >= 1 and (n & (n - 1)) == 0

def _nearest_power_of_two(n):
    lower = 1 << (max(int(n), 1).bit_length() - 1)
    return lower if n - lower <= 2 * lower - n else 2 * lower

def _channels_of(pil_image, where):
    """Channel count the decoded image will have, or a DatasetError explaining why it cannot be used."""
    mode = pil_image.mode
    if mode in _ALPHA_MODES or (mode in ('P', 'L', 'RGB') and 'transparency' in pil_image.info):
        raise DatasetError(f'{where} has an alpha channel ({mode}); composite it onto a solid background with {_TOOL_HINT} (default: white)')
    if mode not in _MODE_CHANNELS:
        raise DatasetError(f'{where} has pixel mode {mode}, not 8-bit grayscale or RGB; convert it with {_TOOL_HINT}')
    return _MODE_CHANNELS[mode]

def _pil_to_chw(pil_image):
    """Decode a Pillow image into uint8 CHW with 1 or 3 channels."""
    if pil_image.mode not in ('L', 'RGB'):
        pil_image = pil_image.convert('L' if _MODE_CHANNELS.get(pil_image.mode) == 1 else 'RGB')
    pixels = np.asarray(pil_image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return pixels.transpose(2, 0, 1)

#----------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """Images read from a directory tree or a zip; every image must share one square power-of-two size.

    The whole set is checked when opened (by reading image headers only), so a bad file fails here
    with a message naming it, not hours into training.
    """

    def __init__(self,
        path,               # Directory (searched recursively) or .zip of images.
        resolution=None,    # Expected resolution; a mismatch raises an error.
        **super_kwargs,     # max_size, use_labels, xflip, random_seed: see Dataset.
    ):
        self._path = os.fspath(path)
        self._archive = None
        if os.path.isdir(self._path):
            self._kind = 'dir'
            members = []
            for folder, _subdirs, files in os.walk(self._path):
                for file_name in files:
                    members.append(os.path.relpath(os.path.join(folder, file_name), self._path).replace(os.sep, '/'))
        elif os.path.isfile(self._path) and self._path.lower().endswith('.zip'):
            self._kind = 'zip'
            members = [name for name in self._open_archive().namelist() if not name.endswith('/')]
        elif os.path.exists(self._path):
            raise DatasetError(f'Path must point to a directory or zip: {self._path!r} is neither; pass --data=<folder or .zip>')
        else:
            raise DatasetError(f'Path must point to a directory or zip: {self._path!r} does not exist; check the --data path')

        PIL.Image.init()
        known_exts = set(PIL.Image.EXTENSION)
        self._image_names = sorted(name for name in members if os.path.splitext(name)[1].lower() in known_exts)
        if not self._image_names:
            raise DatasetError(f'No image files found in the specified path {self._path!r}; add PNG or JPEG images (see docs/DATASETS.md)')

        shape = self._check_headers()
        if resolution is not None and (shape[1] != resolution or shape[2] != resolution):
            raise DatasetError(f'Image files do not match the specified resolution: {self._path!r} holds {shape[2]}x{shape[1]} images, '
                f'resolution={resolution} was requested; rebuild with dataset_tool.py --resolution={resolution}x{resolution} or drop the resolution setting')
        name = os.path.splitext(os.path.basename(self._path.rstrip('/\\')))[0]
        super().__init__(name=name, raw_shape=[len(self._image_names)] + shape, **super_kwargs)
        self._all_labels()  # a malformed dataset.json fails here, on open, like a bad image header

    def _where(self, member):
        return f'{self._path}/{member}' if self._kind == 'dir' else f'{self._path}:{member}'

    def _open_archive(self):
        assert self._kind == 'zip'
        # A forked DataLoader worker inherits the parent's open file and its offset; reading through
        # the shared offset from two processes garbles members, so each process opens its own.
        if self._archive is not None and getattr(self, '_archive_pid', None) != os.getpid():
            self._archive = None
        if self._archive is None:
            try:
                self._archive = zipfile.ZipFile(self._path)
                self._archive_pid = os.getpid()
            except (zipfile.BadZipFile, OSError) as err:
                raise DatasetError(f'{self._path!r} is not a readable zip ({err}); re-create it with {_TOOL_HINT}') from err
        return self._archive

    def _open_member(self, member):
        if self._kind == 'dir':
            return open(os.path.join(self._path, member), 'rb')
        try:
            return self._open_archive().open(member, 'r')
        except (zipfile.BadZipFile, OSError, RuntimeError) as err:
            raise DatasetError(f'{self._where(member)} cannot be read from the zip ({err}); re-create the zip with {_TOOL_HINT}') from err

    def _check_headers(self):
        """Read every image header (no pixel decoding) and return the common [C, H, W]."""
        reference = None
        for member in self._image_names:
            where = self._where(member)
            try:
                with self._open_member(member) as stream, PIL.Image.open(stream) as pil_image:
                    width, height = pil_image.size
                    channels = _channels_of(pil_image, where)
            except DatasetError:
                raise
            except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as err:
                raise DatasetError(f'{where} is not a readable image ({err}); delete or re-save it, or rebuild with {_TOOL_HINT}, which skips corrupt files') from err
            if reference is None:
                if width != height:
                    side = _nearest_power_of_two(min(width, height))
                    raise DatasetError(f'{where} is {width}x{height}, but images must be square; crop them with '
                        f'dataset_tool.py --transform=center-crop --resolution={side}x{side}')
                if not _is_power_of_two(width):
                    side = _nearest_power_of_two(width)
                    raise DatasetError(f'{where} is {width}x{height}, but the side must be a power of two; resize with dataset_tool.py --resolution={side}x{side}')
                reference = (member, width, height, channels)
            elif (width, height) != reference[1:3]:
                raise DatasetError(f'{where} is {width}x{height} but {self._where(reference[0])} is {reference[1]}x{reference[2]}; '
                    f'all images must be the same size: rebuild with dataset_tool.py --resolution={reference[1]}x{reference[2]}')
            elif channels != reference[3]:
                raise DatasetError(f'{where} has {channels} channel(s) but {self._where(reference[0])} has {reference[3]}; '
                    'all images must be all RGB or all grayscale: rebuild with dataset_tool.py --color=rgb')
        return [reference[3], reference[2], reference[1]]

    def close(self):
        archive = getattr(self, '_archive', None)
        if archive is not None:
            archive.close()
        self._archive = None

    def __getstate__(self):
        # DataLoader workers receive a pickled copy; an open ZipFile cannot travel, so each reopens it.
        state = dict(super().__getstate__())
        state['_archive'] = None
        return state

    def _read_image(self, raw_idx):
        member = self._image_names[raw_idx]
        try:
            with self._open_member(member) as stream:
                data = stream.read()
            pixels = None
            if pyspng is not None and member.lower().endswith('.png'):
                decoded = pyspng.load(data)
                if decoded.ndim == 2:
                    decoded = decoded[:, :, np.newaxis]
                if decoded.dtype == np.uint8 and decoded.shape[2] == self._stored_shape[1]:
                    pixels = decoded.transpose(2, 0, 1)
            if pixels is None: # No pyspng, or a PNG flavour (palette, 16-bit) it decodes differently.
                with PIL.Image.open(io.BytesIO(data)) as pil_image:
                    pixels = _pil_to_chw(pil_image)
        except DatasetError:
            raise
        except (OSError, ValueError, SyntaxError, RuntimeError, zipfile.BadZipFile) as err:  # RuntimeError: pyspng
            failure = DatasetError(f'{self._where(member)} could not be decoded ({err}); delete or re-save it, or rebuild with {_TOOL_HINT}')
            failure.cause = ' '.join(str(err).split()) or type(err).__name__
            raise failure from err
        return pixels

    def _where_raw(self, raw_idx):
        return self._where(self._image_names[raw_idx])

    def _labels_by_name(self, entries, label_file):
        """{image path: label} from the "labels" list of dataset.json, or a DatasetError naming the bad entry."""
        layout = '{"labels": [["00000/img00000000.png", 6], ...]}'
        if not isinstance(entries, list):
            raise DatasetError(f'{self._where(label_file)}: "labels" must be a list or null, not {type(entries).__name__}; '
                               f'it must look like {layout}')
        by_name = {}
        for position, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 2):
                raise DatasetError(f'{self._where(label_file)}: labels entry {position} is {json.dumps(entry)}, '
                                   f'not a [file name, label] pair; it must look like {layout}')
            by_name[str(entry[0]).replace('\\', '/')] = entry[1]
        return by_name

    def _read_labels(self):
        label_file = 'dataset.json'
        if self._kind == 'dir':
            if not os.path.isfile(os.path.join(self._path, label_file)):
                return None
        elif label_file not in self._open_archive().namelist():
            return None
        try:
            with self._open_member(label_file) as stream:
                entries = json.load(stream)['labels']
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f'{self._where(label_file)} is not valid ({err!r}); it must look like {{"labels": [["00000/img00000000.png", 6], ...]}}') from err
        if entries is None:
            return None
        by_name = self._labels_by_name(entries, label_file)
        missing = [name for name in self._image_names if name not in by_name]
        if missing:
            raise DatasetError(f'{self._where(label_file)} has no label for {missing[0]!r} ({len(missing)} images unlabelled); '
                'list every image by its path relative to the dataset root, with "/" separators')
        values = [by_name[name] for name in self._image_names]
        if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            return np.asarray(values, dtype=np.int64)
        try:
            return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
        except (ValueError, TypeError) as err:
            raise DatasetError(f'{self._where(label_file)}: labels must be integers or equal-length lists of numbers ({err})') from err

#----------------------------------------------------------------------------

def _scan_images(dataset, progress_fn=None, progress_every=1000):
    """Decode every stored image `dataset` uses, once each; return [(where, why)] for those that fail.

    A header check misses a file cut short after its header, so this reads every pixel.
    progress_fn(done, total) is called every `progress_every` images and once at the end.
    """
    raw_indices = np.unique(dataset._index_map)  # pylint: disable=protected-access
    where_of = getattr(dataset, '_where_raw', lambda raw_idx: f'{dataset.name}: image {raw_idx}')
    failures = []
    for done, raw_idx in enumerate(raw_indices, start=1):
        raw_idx = int(raw_idx)
        try:
            pixels = dataset._read_image(raw_idx)  # pylint: disable=protected-access
            if tuple(pixels.shape) != tuple(dataset.image_shape):
                raise DatasetError(f'decodes to shape {list(pixels.shape)}, not {dataset.image_shape}')
        except (DatasetError, RuntimeError) as err:  # RuntimeError: a decoder library's own failure
            failures.append((where_of(raw_idx), getattr(err, 'cause', None) or str(err)))
        if progress_fn is not None and (done % progress_every == 0 or done == len(raw_indices)):
            progress_fn(done, len(raw_indices))
    return failures


def find_undecodable_images(dataset, progress_fn=None, progress_every=1000):
    """Decode every stored image `dataset` uses (a header check misses a file cut short after its header).

    Returns one 'where: why' string per image that fails, in file order; an empty list means the whole
    set decodes. progress_fn(done, total) is called every `progress_every` images and once at the end.
    """
    return [f'{where}: {why}' for where, why in _scan_images(dataset, progress_fn, progress_every)]


def verify_all_images(dataset, print_fn=print, progress_every=1000, max_listed=10):
    """Decode every image before training and raise one DatasetError listing the files that fail.

    Sets of more than `progress_every` images print a start line and a progress line every
    `progress_every` images through print_fn (None: silent). The error names up to `max_listed`
    files with their causes and says how many more there are.
    """
    total = len(np.unique(dataset._index_map))  # pylint: disable=protected-access
    progress_fn = None
    if print_fn is not None and total > progress_every:
        print_fn(f'Decoding all {total} images of {dataset.name} to check them...')
        progress_fn = lambda done, count: print_fn(f'  checked {done}/{count} images')
    failures = _scan_images(dataset, progress_fn, progress_every)
    if not failures:
        return
    listed = ', '.join(f'{where} ({why})' for where, why in failures[:max_listed])
    more = f' and {len(failures) - max_listed} more' if len(failures) > max_listed else ''
    raise DatasetError(f'{len(failures)} of {total} images cannot be decoded: {listed}{more}; delete or re-save them, '
                       f'or rebuild the dataset with {_TOOL_HINT}, which skips corrupt files')

#----------------------------------------------------------------------------
