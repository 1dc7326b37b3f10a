"""The one image-grid writer: tiles a batch of images into a PNG, written atomically."""

import numpy as np
import PIL.Image
import torch

import dnnlib


def to_uint8(images, drange):
    """Map float images with values in `drange` = (low, high) to uint8, rounding to nearest."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    low, high = drange
    return np.floor((images - low) * (255 / (high - low)) + 0.5).clip(0, 255).astype(np.uint8)


def tile_images(images, grid_size):
    """uint8 [gw*gh, C, H, W] -> uint8 [gh*H, gw*W, C], filled row by row."""
    gw, gh = grid_size
    num, channels, height, width = images.shape
    if num != gw * gh:
        raise ValueError(f'{num} images do not fill a {gw}x{gh} grid')
    if channels not in (1, 3):
        raise ValueError(f'cannot write {channels}-channel images as a PNG grid (need 1 or 3)')
    tiled = images.reshape(gh, gw, channels, height, width).transpose(0, 3, 1, 4, 2)
    return tiled.reshape(gh * height, gw * width, channels)


def write_png(pixels, path):
    """Write uint8 pixels [H, W, C] (C = 1 or 3) as a PNG; the file appears only once it is complete."""
    picture = PIL.Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    dnnlib.util.write_atomically(path, lambda f: picture.save(f, format='PNG'))


def write_image_grid(images, path, drange, grid_size):
    """Write images [gw*gh, C, H, W] (numpy or torch; values in `drange`, or uint8 with drange=(0, 255))
    as one PNG at `path`, row by row."""
    write_png(tile_images(to_uint8(images, drange), grid_size), path)
