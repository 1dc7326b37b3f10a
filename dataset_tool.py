"""Convert a folder, zip or archive of images into a training dataset (00000/img00000000.png files plus dataset.json)."""

import gzip
import io
import json
import os
import pickle
import re
import tarfile
import zipfile

import click
import numpy as np
import PIL.Image
import PIL.ImageColor

from dnnlib import cli

MAX_SIDE = 8192 # Largest output width or height; bigger images exhaust memory long before training could use them.

#----------------------------------------------------------------------------

class _Skip(Exception):
    """An input image that cannot be used; it is left out and listed in the final report."""

def _known_image_extensions():
    PIL.Image.init()
    return set(PIL.Image.EXTENSION)

_LABEL_LAYOUT = '{"labels": [["relative/path.png", 6], ...]}'

def _parse_label_json(text, where):
    try:
        entries = json.loads(text)['labels']
    except (ValueError, KeyError, TypeError) as err:
        raise click.ClickException(f'{where} is not valid ({err!r}); it must look like {_LABEL_LAYOUT}')
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise click.ClickException(f'{where}: "labels" must be a list or null, not {type(entries).__name__}; it must look like {_LABEL_LAYOUT}')
    labels = {}
    for position, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise click.ClickException(f'{where}: labels entry {position} is {json.dumps(entry)}, not a [file name, label] pair; '
                                       f'it must look like {_LABEL_LAYOUT}')
        labels[entry[0].replace('\\', '/')] = entry[1]
    return labels

def _decode(data, name):
    """Fully decode image bytes (so truncated files are caught here, not during training)."""
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise _Skip(f'{name}: {err}') from err
    return image

#----------------------------------------------------------------------------
# Sources. Each returns (names, read(i) -> PIL image, labels {name: label} or None).

def _folder_source(root):
    extensions = _known_image_extensions()
    names = []
    for folder, _subdirs, files in os.walk(root):
        for file_name in files:
            if os.path.splitext(file_name)[1].lower() in extensions:
                names.append(os.path.relpath(os.path.join(folder, file_name), root).replace(os.sep, '/'))
    names.sort()
    label_path = os.path.join(root, 'dataset.json')
    labels = None
    if os.path.isfile(label_path):
        with open(label_path, 'r', encoding='utf-8') as f:
            labels = _parse_label_json(f.read(), label_path)

    def read(i):
        with open(os.path.join(root, names[i]), 'rb') as f:
            return _decode(f.read(), names[i])
    return names, read, labels

def _zip_source(path):
    try:
        archive = zipfile.ZipFile(path)
        members = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise click.ClickException(f'{path} is not a readable zip ({err}); check the file or unpack it and pass the folder as --source')
    extensions = _known_image_extensions()
    names = sorted(name for name in members if not name.endswith('/') and os.path.splitext(name)[1].lower() in extensions)
    labels = _parse_label_json(archive.read('dataset.json').decode('utf-8'), f'{path}:dataset.json') if 'dataset.json' in members else None

    def read(i):
        try:
            data = archive.read(names[i])
        except (zipfile.BadZipFile, OSError, RuntimeError) as err:
            raise _Skip(f'{names[i]}: cannot be read from the zip ({err})') from err
        return _decode(data, names[i])
    return names, read, labels

def _cifar10_source(path):
    pixels, classes = [], []
    with tarfile.open(path, 'r:gz') as archive:
        for batch in range(1, 6):
            member = archive.extractfile(f'cifar-10-batches-py/data_batch_{batch}')
            content = pickle.load(member, encoding='latin1')
            pixels.append(np.asarray(content['data'], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            classes.extend(int(label) for label in content['labels'])
    pixels = np.concatenate(pixels)
    names = [f'{i:08d}.png' for i in range(len(pixels))]
    return names, (lambda i: PIL.Image.fromarray(pixels[i], 'RGB')), dict(zip(names, classes))

def _mnist_source(path):
    label_path = path.replace('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz')
    if not os.path.isfile(label_path):
        raise click.ClickException(f'MNIST labels {label_path} are missing; put train-labels-idx1-ubyte.gz next to the images file')
    with gzip.open(path, 'rb') as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(label_path, 'rb') as f:
        classes = np.frombuffer(f.read(), np.uint8, offset=8)
    if len(pixels) != len(classes):
        raise click.ClickException(f'MNIST files disagree: {len(pixels)} images but {len(classes)} labels')
    pixels = np.pad(pixels, [(0, 0), (2, 2), (2, 2)]) # 28x28 -> 32x32, a power of two.
    names = [f'{i:08d}.png' for i in range(len(pixels))]
    return names, (lambda i: PIL.Image.fromarray(pixels[i], 'L')), dict(zip(names, classes.tolist()))

def _lmdb_source(path):
    try:
        import lmdb # Optional: only LSUN sources need it.
    except ImportError:
        raise click.ClickException(f'{path} looks like an LMDB database, which needs the lmdb package: python -m pip install lmdb')
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1)
    with env.begin(write=False) as txn:
        keys = [key for key, _value in txn.cursor()]
    names = [f'{i:08d}.png' for i in range(len(keys))]

    def read(i):
        with env.begin(write=False) as txn:
            return _decode(txn.get(keys[i]), names[i])
    return names, read, None

def _open_source(path):
    if os.path.isdir(path):
        return _lmdb_source(path) if path.rstrip('/\\').endswith('_lmdb') else _folder_source(path)
    if not os.path.isfile(path):
        raise click.ClickException(f'Missing input file or directory: {path}')
    base = os.path.basename(path)
    if base == 'cifar-10-python.tar.gz':
        return _cifar10_source(path)
    if base == 'train-images-idx3-ubyte.gz':
        return _mnist_source(path)
    if path.lower().endswith('.zip'):
        return _zip_source(path)
    raise click.ClickException(f'unknown archive type: {path}; pass a folder of images, a .zip, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz or an *_lmdb folder')

#----------------------------------------------------------------------------
# Per-image conversion.

_ALPHA_MODES = {'RGBA', 'RGBa', 'LA', 'La', 'PA'}

def _to_plain_mode(image, background):
    """Return an 'L' or 'RGB' image; transparency is composited onto `background` (an RGB tuple)."""
    if image.mode in _ALPHA_MODES or 'transparency' in image.info:
        was_gray = image.mode in ('LA', 'La', 'L')
        rgba = image.convert('RGBA')
        flat = PIL.Image.alpha_composite(PIL.Image.new('RGBA', rgba.size, tuple(background) + (255,)), rgba).convert('RGB')
        return flat.convert('L') if was_gray and len(set(background)) == 1 else flat
    if image.mode in ('L', 'RGB'):
        return image
    if image.mode == '1':
        return image.convert('L')
    if image.mode.startswith('I'):
        # 16-bit grayscale: keep the top 8 bits' worth of range.
        values = np.asarray(image, dtype=np.float64)
        return PIL.Image.fromarray(np.clip(np.round(values / 257), 0, 255).astype(np.uint8), 'L')
    if image.mode in ('P', 'CMYK', 'YCbCr', 'LAB', 'HSV'):
        return image.convert('RGB')
    raise _Skip(f'unsupported pixel mode {image.mode}')

def _center_crop(image, width, height, resample):
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((width, height), resample)

def _center_crop_wide(image, width, height, resample):
    """Keep the full width, crop rows to the output aspect, letterbox into a black width x width square."""
    kept_rows = int(np.round(width * image.height / image.width))
    if image.width < width or kept_rows < height:
        return None
    top = (image.height - kept_rows) // 2
    image = image.crop((0, top, image.width, top + kept_rows)).resize((width, height), resample)
    canvas = PIL.Image.new(image.mode, (width, width), 0)
    canvas.paste(image, (0, (width - height) // 2))
    return canvas

def _is_power_of_two(n):
    return n >= 1 and (n & (n - 1)) == 0

#----------------------------------------------------------------------------
# Destinations.

class _ZipDest:
    """Builds the zip as <dest>.partial and renames it to <dest> only once it is complete."""

    def __init__(self, path, overwrite):
        if os.path.isdir(path):
            raise click.ClickException(f'--dest={path} is a folder; give a .zip file name, or a folder without the .zip suffix')
        if os.path.exists(path) and not overwrite:
            raise click.ClickException(f'--dest={path} already exists; add --overwrite to replace it, or choose another name')
        self.path = path
        self.partial = path + '.partial'
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.archive = zipfile.ZipFile(self.partial, 'w', compression=zipfile.ZIP_STORED)

    def write(self, name, data):
        # A fixed timestamp makes the zip byte-identical when rebuilt from the same inputs.
        entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        entry.compress_type = zipfile.ZIP_STORED
        entry.external_attr = 0o644 << 16
        with cli.about_path(self.path):
            self.archive.writestr(entry, data)

    def finish(self, ok):
        try:
            with cli.about_path(self.path):
                self.archive.close() # Writes the central directory, which can fail on a full disk too.
            if ok:
                os.replace(self.partial, self.path) # The destination appears only once it is complete.
        except OSError:
            if ok:
                raise
            # Already failing: keep the first error, which says what went wrong.
        finally:
            if os.path.exists(self.partial):
                os.remove(self.partial)

class _FolderDest:
    def __init__(self, path):
        if os.path.isdir(path) and os.listdir(path):
            raise click.ClickException(f'--dest folder {path} must be empty; pick a new folder or a .zip')
        self.path = path
        os.makedirs(path, exist_ok=True)

    def write(self, name, data):
        target = os.path.join(self.path, *name.split('/'))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as f:
            f.write(data)

    def finish(self, ok):
        pass

#----------------------------------------------------------------------------

def _parse_resolution(ctx, param, value):
    if value is None:
        return None
    match = re.fullmatch(r'\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?', value)
    if not match:
        raise click.BadParameter(f'expected WxH such as 256x256, got {value!r}')
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if width < 1 or height < 1:
        raise click.BadParameter(f'width and height must be positive, got {value!r}')
    return width, height

def _parse_colour(ctx, param, value):
    text = value.strip()
    if re.fullmatch(r'\d+\s*,\s*\d+\s*,\s*\d+', text):
        text = f'rgb({text})'
    try:
        rgb = PIL.ImageColor.getrgb(text)
    except ValueError:
        raise click.BadParameter(f'{value!r} is not a colour; use a name (white), #rrggbb or r,g,b')
    return tuple(rgb[:3])

@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--source', help='Folder, zip, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz or *_lmdb folder', required=True, metavar='PATH')
@click.option('--dest', help='Output .zip (uncompressed) or empty folder', required=True, metavar='PATH')
@click.option('--max-images', help='Stop after this many output images', type=click.IntRange(min=1), metavar='INT')
@click.option('--resize-filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True,
              help='How images are resampled; box matches the FFHQ-256 numbers in the StyleGAN2-ADA paper')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']),
              help='Crop applied before resizing to the output size')
@click.option('--width', help='Output width', type=click.IntRange(min=1), metavar='INT')
@click.option('--height', help='Output height', type=click.IntRange(min=1), metavar='INT')
@click.option('--resolution', help='Output size as WxH (same as --width and --height)', callback=_parse_resolution, metavar='WxH')
@click.option('--background', help='Colour that transparent pixels are composited onto', callback=_parse_colour, default='white', show_default=True, metavar='COLOUR')
@click.option('--color', 'color_mode', help='Output channels: follow the first image, or force RGB / grayscale', type=click.Choice(['auto', 'rgb', 'grayscale']), default='auto', show_default=True)
@click.option('--compress-level', help='PNG compression level of the output images (0 = fastest to read)', type=click.IntRange(0, 9), default=0, show_default=True)
@click.option('--overwrite', is_flag=True, help='Replace an existing --dest zip')
@cli.one_line_errors
def main(source, dest, max_images, resize_filter, transform, width, height, resolution, background, color_mode, compress_level, overwrite):
    """Convert an image collection into a dataset for train.py.

    Every output image has the same square power-of-two size and the same channel count; images
    with transparency are composited onto --background. Corrupt or unreadable inputs are skipped
    and listed at the end. Labels come from dataset.json at the source root:
    {"labels": [["relative/path.png", class_index], ...]}.

    \b
    Examples:
      python dataset_tool.py --source=~/photos --dest=~/datasets/photos256.zip --resolution=256x256 --transform=center-crop
      python dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10.zip
    """
    if resolution is not None:
        if (width is not None and width != resolution[0]) or (height is not None and height != resolution[1]):
            raise click.ClickException(f'--resolution={resolution[0]}x{resolution[1]} disagrees with --width/--height; give only one of them')
        width, height = resolution
    if (width is None) != (height is None):
        width = height = width or height # One side given: square output.
    if width is not None and max(width, height) > MAX_SIDE:
        raise click.ClickException(f'output size {width}x{height} is above the limit of {MAX_SIDE} pixels per side; '
                                   'choose a smaller --resolution (StyleGAN2 trains at 1024x1024 or less)')
    if transform is not None and width is None:
        raise click.ClickException(f'--transform={transform} needs an output size: add --resolution=WxH (or --width and --height)')
    resample = {'box': PIL.Image.BOX, 'lanczos': PIL.Image.LANCZOS}[resize_filter]

    names, read, source_labels = _open_source(source)
    if not names:
        raise click.ClickException(f'No image files found in {source}; supported extensions include .png and .jpg')
    writer = _ZipDest(dest, overwrite) if dest.lower().endswith('.zip') else _FolderDest(dest)

    skipped = []
    written_labels = []
    reference = None
    ok = False
    try:
        for index, name in enumerate(names):
            if max_images is not None and len(written_labels) >= max_images:
                break
            try:
                image = _to_plain_mode(read(index), background)
            except _Skip as reason:
                skipped.append(str(reason) if str(reason).startswith(name) else f'{name}: {reason}')
                continue
            if color_mode == 'rgb' and image.mode != 'RGB':
                image = image.convert('RGB')
            elif color_mode == 'grayscale' and image.mode != 'L':
                image = image.convert('L')

            original_size = image.size
            if transform == 'center-crop':
                image = _center_crop(image, width, height, resample)
            elif transform == 'center-crop-wide':
                image = _center_crop_wide(image, width, height, resample)
                if image is None:
                    skipped.append(f'{name}: {original_size[0]}x{original_size[1]} is too small for center-crop-wide to {width}x{height}')
                    continue
            elif width is not None and image.size != (width, height):
                image = image.resize((width, height), resample)

            channels = 1 if image.mode == 'L' else 3
            if reference is None:
                if image.width != image.height:
                    raise click.ClickException(f'Image dimensions after scale and crop are required to be square.  Got {image.width}x{image.height} ({name}); '
                        'add --transform=center-crop --resolution=WxH with W == H')
                if not _is_power_of_two(image.width):
                    raise click.ClickException(f'Image width/height after scale and crop are required to be power-of-two; got {image.width}x{image.height} ({name}); '
                        'add --resolution=WxH with a power of two such as 256x256')
                reference = (name, image.width, image.height, channels)
            elif (image.width, image.height, channels) != reference[1:]:
                raise click.ClickException(f'{name} is {image.width}x{image.height} with {channels} channel(s), but {reference[0]} is '
                    f'{reference[1]}x{reference[2]} with {reference[3]}; add --resolution=WxH to resize all images'
                    + (' and --color=rgb to make them all RGB' if channels != reference[3] else ''))

            out_index = len(written_labels)
            archive_name = f'{out_index // 1000:05d}/img{out_index:08d}.png'
            encoded = io.BytesIO()
            image.save(encoded, format='png', compress_level=compress_level)
            writer.write(archive_name, encoded.getvalue())
            written_labels.append([archive_name, None if source_labels is None else source_labels.get(name)])

        if not written_labels:
            raise click.ClickException(f'No usable images in {source}: all {len(skipped)} were skipped (first: {skipped[0] if skipped else "none"})')
        unlabelled = sum(label is None for _name, label in written_labels)
        if source_labels is not None and unlabelled:
            print(f'Warning: {unlabelled} of {len(written_labels)} images have no entry in dataset.json, so the output has no labels')
        labels = None if unlabelled else written_labels
        writer.write('dataset.json', json.dumps({'labels': labels}).encode('utf-8'))
        ok = True
    finally:
        writer.finish(ok)

    kind = 'RGB' if reference[3] == 3 else 'grayscale'
    print(f'Wrote {len(written_labels)} {kind} images of {reference[1]}x{reference[2]} to {dest}'
        + (' with labels' if labels is not None else ''))
    if skipped:
        print(f'Skipped {len(skipped)} input(s):')
        for line in skipped[:20]:
            print(f'  {line}')
        if len(skipped) > 20:
            print(f'  ... and {len(skipped) - 20} more')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
