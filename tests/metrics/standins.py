"""Tiny stand-ins for the metric tests: TorchScript detectors with NVIDIA's call signatures, toy generators and a toy dataset."""

import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from metrics import metric_utils

#----------------------------------------------------------------------------
# Detectors.

class _Mixed6(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 8, kernel_size=1)
        self.other = torch.nn.Conv2d(channels, 8, kernel_size=1)

    def forward(self, x):
        return torch.relu(self.conv(x)) + torch.relu(self.other(x))


class StandInInception(torch.nn.Module):
    """Same call as NVIDIA's inception-2015-12-05.pt: uint8 NCHW in; pool features or class probabilities out."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(OrderedDict([
            ('conv', torch.nn.Conv2d(3, 4, kernel_size=3, stride=60)),
            ('mixed_6', _Mixed6(4)),
            ('pool', torch.nn.AdaptiveAvgPool2d(2)),
            ('flat', torch.nn.Flatten()),
        ]))
        self.output = torch.nn.Linear(32, 6)

    def forward(self, img, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        x = F.interpolate(img.to(torch.float32), size=(299, 299), mode='bilinear', align_corners=False)
        features = self.layers((x - 128) / 128)
        if return_features:
            return features
        logits = features @ self.output.weight.t()
        if not no_output_bias:
            logits = logits + self.output.bias
        return torch.softmax(logits, dim=1)


class StandInVGG16(torch.nn.Module):
    """Same call as NVIDIA's vgg16.pt: fc features with return_features, an LPIPS embedding with return_lpips."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, kernel_size=3, padding=1)
        self.fc = torch.nn.Linear(6, 5)
        self.register_buffer('lin1', torch.rand(4))
        self.register_buffer('lin2', torch.rand(6))

    @torch.jit.export
    def taps(self, img):
        x = img.to(torch.float32) / 127.5 - 1
        first = torch.relu(self.conv1(x))
        second = torch.relu(self.conv2(F.max_pool2d(first, 2)))
        return [first, second]

    def forward(self, img, resize_images: bool = True, return_lpips: bool = False, return_features: bool = False):
        taps = self.taps(img)
        if return_lpips:
            pieces = []
            for activation, weight in zip(taps, [self.lin1, self.lin2]):
                unit = activation / (activation.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                area = float(activation.shape[2] * activation.shape[3])
                pieces.append((unit * weight.sqrt().view(1, -1, 1, 1) / area ** 0.5).flatten(1))
            return torch.cat(pieces, dim=1)
        return self.fc(taps[1].mean(dim=(2, 3)))


def write_standin_detectors(folder, which=('inception', 'vgg16')):
    """Script and save the stand-ins under the URL file names; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(123)
    builders = dict(inception=(StandInInception, metric_utils.INCEPTION_URL), vgg16=(StandInVGG16, metric_utils.VGG16_URL))
    for kind in which:
        cls, url = builders[kind]
        torch.jit.script(cls().eval()).save(os.path.join(folder, metric_utils.detector_filename(url)))
    return folder

#----------------------------------------------------------------------------
# Generators.

class _NoiseHolder(torch.nn.Module):
    def __init__(self, resolution):
        super().__init__()
        self.register_buffer('noise_const', torch.zeros(resolution, resolution))


class ToyMapping(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.num_ws = num_ws
        self.fc = torch.nn.Linear(z_dim, w_dim)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **unused):
        return self.fc(z).unsqueeze(1).repeat(1, self.num_ws, 1)


class ToySynthesis(torch.nn.Module):
    """kind='linear': image linear in w; 'step': one of two images depending on the sign of w[0]; 'smooth': tanh of a projection."""

    def __init__(self, w_dim, resolution, channels, kind):
        super().__init__()
        self.kind = kind
        self.resolution = resolution
        self.channels = channels
        self.b4 = _NoiseHolder(resolution)
        self.proj = torch.nn.Linear(w_dim, channels * resolution * resolution)
        with torch.no_grad():
            self.proj.weight.mul_(0.3)

    def forward(self, ws, noise_mode='random', force_fp32=False, **unused):
        w = ws[:, 0]
        shape = [len(ws), self.channels, self.resolution, self.resolution]
        if self.kind == 'linear':
            return (w @ self.proj.weight.t()).view(shape) * 0.1
        if self.kind == 'step':
            bright = (w[:, :1] > 0).to(torch.float32)
            return (bright * 1.6 - 0.8).view(-1, 1, 1, 1).expand(shape)
        return torch.tanh(self.proj(w)).view(shape) + self.b4.noise_const * 0.01


class ToyGenerator(torch.nn.Module):
    def __init__(self, z_dim=4, w_dim=4, num_ws=3, img_resolution=32, img_channels=3, kind='smooth', c_dim=0):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = ToyMapping(z_dim, w_dim, num_ws)
        self.synthesis = ToySynthesis(w_dim, img_resolution, img_channels, kind)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), **synthesis_kwargs)


class MemorizingGenerator(torch.nn.Module):
    """Replays the toy dataset's images in order, so generated statistics equal the dataset's."""

    def __init__(self, images):
        super().__init__()
        self.z_dim, self.c_dim = 2, 0
        # (v - 127.5) / 127.5 maps back to exactly v under the metrics' x * 127.5 + 128 quantisation.
        self.register_buffer('images', (torch.as_tensor(images, dtype=torch.float32) - 127.5) / 127.5)
        self.register_buffer('counter', torch.zeros([], dtype=torch.long))

    def forward(self, z, c, **unused):
        picks = (self.counter + torch.arange(len(z))) % len(self.images)
        self.counter += len(z)
        return self.images[picks]

#----------------------------------------------------------------------------
# Dataset.

def toy_images(count, resolution=32, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 256, size=[count, channels, 1, 1])
    texture = rng.randint(-40, 40, size=[count, channels, resolution, resolution])
    return np.clip(base + texture, 0, 255).astype(np.uint8)


class ToyDataset(torch.utils.data.Dataset):
    """In-memory dataset with the interface metrics use (name, len, (image, label) items, get_label)."""

    def __init__(self, count=12, resolution=32, channels=3, seed=0, max_size=None, xflip=False, use_labels=False, random_seed=0,
                 name='toy'):
        self.images = toy_images(count, resolution, channels, seed)
        if max_size is not None:
            self.images = self.images[:max_size]
        if xflip:
            self.images = np.concatenate([self.images, self.images[:, :, :, ::-1]])
        self.name = f'{name}{count}'
        self.label_dim = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].copy(), np.zeros([0], dtype=np.float32)

    def get_label(self, index):
        return np.zeros([0], dtype=np.float32)


def toy_dataset_kwargs(**overrides):
    return dict(dict(class_name='tests.metrics.standins.ToyDataset', count=12, resolution=32), **overrides)
