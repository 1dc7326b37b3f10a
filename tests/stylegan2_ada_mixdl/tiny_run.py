"""Tiny CPU networks and training runs for the plug-in tests: networks, a random image folder, a config, a run's files."""
import copy
import glob
import json
import os
import pickle

import numpy as np
import PIL.Image
import torch

from training import networks, training_loop


def write_image_folder(folder, res, count=6, seed=0):
    """`count` random RGB PNGs of res x res in `folder` (created); returns the folder as a string."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    for index in range(count):
        PIL.Image.fromarray((rng.rand(res, res, 3) * 255).astype(np.uint8)).save(os.path.join(folder, f'img{index}.png'))
    return str(folder)


def tiny_networks(res, z_dim=8, w_dim=8, widths=dict(channel_base=128, channel_max=16), seed=0):
    """(G, D): an unconditional Generator and Discriminator of res x res RGB images, tiny widths, fp32."""
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(widths))
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, epilogue_kwargs=dict(mbstd_group_size=2),
                               **widths)
    return G, D


def tiny_config(data, loss_kwargs, minibatches, res, batch=4, z_dim=16, w_dim=16,
                widths=dict(channel_base=256, channel_max=16), **overrides):
    """training_loop kwargs for `minibatches` minibatches of `batch` images, two minibatches per tick.

    R1 and path length run every second minibatch, so they meet a plug-in's phases early.
    """
    widths = dict(widths, num_fp16_res=0, conv_clamp=None)
    config = dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
                                 max_size=None, xflip=False, resolution=res),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=z_dim, w_dim=w_dim,
                      mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(widths)),
        D_kwargs=dict(class_name='training.networks.Discriminator', block_kwargs={}, mapping_kwargs={},
                      epilogue_kwargs=dict(mbstd_group_size=2), **widths),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(loss_kwargs, r1_gamma=1.0),
        metrics=[], random_seed=3, batch_size=batch, batch_gpu=batch, ema_kimg=0.01,
        total_kimg=minibatches * batch / 1000, kimg_per_tick=2 * batch / 1000,
        image_snapshot_ticks=None, network_snapshot_ticks=100, device='cpu',
        G_reg_interval=2, D_reg_interval=2,
    )
    config.update(overrides)
    return config


def train_run(run_dir, config, **overrides):
    """Run training_loop into run_dir (created) with config updated by overrides; returns run_dir as a string."""
    os.makedirs(run_dir, exist_ok=True)
    training_loop.training_loop(run_dir=str(run_dir), **copy.deepcopy(dict(config, **overrides)))
    return str(run_dir)


def read_stats(run_dir):
    """The records of <run_dir>/stats.jsonl, one dict per tick."""
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


def last_file(run_dir, pattern):
    return sorted(glob.glob(os.path.join(run_dir, pattern)))[-1]


def last_snapshot(run_dir):
    with open(last_file(run_dir, 'network-snapshot-*.pkl'), 'rb') as f:
        return pickle.load(f)
