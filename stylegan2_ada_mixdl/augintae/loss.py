"""AugIntAE as a loss plug-in (`--augintae=1`): G's synthesis network becomes the decoder of an autoencoder
trained to reconstruct interpolated augmentations (Augmentation-Interpolative AutoEncoders, ICLR 2021
submission, sec. 3), with an LSGAN discriminator on the reconstructions.

Per real image x (mode 'augintae'):
    rho1, rho2 ~ U(ranges), alpha ~ U[0, 1]
    A = T(x; rho1), B = T(x; rho2), C = T(x; alpha * rho1 + (1 - alpha) * rho2)
    m = slerp(E(A), E(B), alpha);  y = G.synthesis(m as every w)
    L_G = |C - y|_1 + adv_weight * k * gamma * (D(y) - 1)^2  [+ seed_recon_weight * (|A - G(E(A))|_1 + |B - G(E(B))|_1)]
    L_D = (D(x) - 1)^2 + D(y)^2   (the y of this minibatch's G phase, decoded before G's update)
gamma balances the two gradients per image (ops.balance_gamma); k follows ops.update_k once per minibatch.
Modes 'ae' and 'intae' are the paper's ablations (plain autoencoder; reconstruction of the images with
the adversarial term also on SLERP mixes of two different images).
"""

import os

import numpy as np
import torch

from torch_utils import training_stats
from training import image_grid
from training.loss import StyleGAN2Loss
from training.plugins import PluginConfigError, PluginOption, PluginOptions, PrivateStream, PrivateStreamState

from . import transform
from .encoder import ENCODER_KEY, Encoder, decode
from .fewshot import SNAPSHOT_KEY
from .ops import balance_gamma, slerp, update_k

MODES = ('augintae', 'intae', 'ae')
AUG_PRESETS = ('auto', 'natural', 'characters')
_STREAM_OFFSET = 0x41756749  # keeps this plug-in's draws apart from the other plug-ins' streams
_SNAPSHOT_ROWS = 8           # training images shown in the snapshot grid

class _AugIntAEOptions(PluginOptions):
    """The option table, plus the checks that involve two settings, so train.py reports them up front."""

    def configure(self, opts, loss_kwargs):
        suffix = super().configure(opts, loss_kwargs)
        if suffix:
            check_settings(loss_kwargs['mode'], loss_kwargs['aug_preset'], loss_kwargs['aug_strength'],
                           loss_kwargs['seed_recon_weight'])
        return suffix


OPTIONS = _AugIntAEOptions(
    switch='augintae',
    switch_help='Train an augmentation-interpolative autoencoder (AugIntAE): an encoder plus G.synthesis as decoder, '
                'for few-shot generation of unseen classes with augintae_generate.py',
    loss_class='stylegan2_ada_mixdl.augintae.AugIntAELoss',
    settings=(
        PluginOption('augintae_mode', 'mode', 'augintae', str,
                     'augintae (interpolated augmentations), intae (mixes of different images) or ae (plain autoencoder)',
                     '', choices=MODES),
        PluginOption('augintae_aug', 'aug_preset', 'auto', str,
                     "Augmentation ranges: natural (RGB), characters (grey: more rotation and shear, no colour), auto = by channel count",
                     'aug', choices=AUG_PRESETS),
        PluginOption('augintae_aug_strength', 'aug_strength', 1.0, float,
                     'Multiply every augmentation range by this (0 = no augmentation)', 'as', minimum=0),
        PluginOption('augintae_adv', 'adv_weight', 1.0, float,
                     'Weight of the gradient-balanced LSGAN term (0 = reconstruction only, D idle)', 'adv', minimum=0),
        PluginOption('augintae_seed_recon', 'seed_recon_weight', 0.0, float,
                     'Weight of reconstructing the two augmented endpoints too (augintae mode only)', 'sr', minimum=0),
        PluginOption('augintae_k_rate', 'k_rate', 0.001, float,
                     'Step of the dynamic adversarial factor k per minibatch', 'kr', minimum=0),
    ),
    conflicts={'mixdl': 'AugIntAE trains an autoencoder, not a sampling GAN', 'adaptivemix': 'AugIntAE trains an autoencoder, not a sampling GAN'},
)


def augment_ranges(preset: str, strength: float, num_channels: int) -> transform.AugmentRanges:
    """The ranges for a preset ('auto' picks by channel count) with every half-width times `strength`."""
    if preset not in AUG_PRESETS:
        raise PluginConfigError(f'--augintae-aug must be one of {", ".join(AUG_PRESETS)}, got {preset!r}')
    if preset == 'auto':
        preset = 'characters' if num_channels == 1 else 'natural'
    base = transform.default_ranges(1 if preset == 'characters' else 3)
    values = {name: getattr(base, name) * strength for name in base.__dataclass_fields__}
    try:
        return transform.AugmentRanges(**values)
    except ValueError as error:
        raise PluginConfigError(f'--augintae-aug-strength={strength:g} makes {error}; use a smaller strength') from None


def check_settings(mode, aug_preset, aug_strength, seed_recon_weight):
    """Raise PluginConfigError for settings that are valid alone but not together."""
    if seed_recon_weight > 0 and mode != 'augintae':
        raise PluginConfigError(f'--augintae-seed-recon only applies to --augintae-mode=augintae (the {mode} mode '
                                'reconstructs its inputs already); drop it or switch the mode')
    for channels in ((1, 3) if aug_preset == 'auto' else (3,)):
        augment_ranges(aug_preset, aug_strength, channels)


class AugIntAELoss(PrivateStreamState, StyleGAN2Loss):
    """The StyleGAN2 loss's plumbing (phases, R1, augment pipe, finite guard) with the AugIntAE objective.

    Phases: Gmain/Gboth train G.synthesis and the encoder on the objective above; Greg does nothing
    (the mapping network and path-length regulariser are unused); Dmain/Dboth train D with LSGAN;
    Dreg/Dboth add R1 as usual.
    """

    options = OPTIONS
    snapshot_key = SNAPSHOT_KEY
    extra_modules_train_with = 'G'
    stream_state_key = 'augintae_rng'

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, augintae_seed=None, **kwargs):
        settings, rest = OPTIONS.split(kwargs)
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe, **rest)
        self.mode = settings['mode']
        self.adv_weight = settings['adv_weight']
        self.seed_recon_weight = settings['seed_recon_weight']
        self.k_rate = settings['k_rate']
        check_settings(self.mode, settings['aug_preset'], settings['aug_strength'], self.seed_recon_weight)
        self.resolution = int(G_synthesis.img_resolution)
        self.ranges = augment_ranges(settings['aug_preset'], settings['aug_strength'], int(G_synthesis.img_channels))
        self.encoder = Encoder.like_discriminator(D, w_dim=G_synthesis.w_dim).to(self.device)
        self.stream = PrivateStream(_STREAM_OFFSET, augintae_seed)
        # The dynamic adversarial factor lives on the device, so updating it never waits for the device.
        self._k = torch.ones([], dtype=torch.float64, device=self.device)
        self._d_sums = torch.zeros([3], dtype=torch.float64, device=self.device)  # sum D(real), sum D(fake), count
        self._preview = None
        self._fakes_for_D = []                           # the G phase's decoded images, per round, for the D phase

    def extra_modules(self):
        return {ENCODER_KEY: self.encoder}

    @property
    def k(self) -> float:
        """The dynamic adversarial factor (reads it from the device)."""
        return float(self._k)

    # --- The autoencoder pass ------------------------------------------------------------------

    def _draws(self, batch):
        generator = self.stream.device_generator(self.device)
        rho1 = transform.sample_params(batch, self.resolution, self.ranges, device=self.device, generator=generator)
        rho2 = transform.sample_params(batch, self.resolution, self.ranges, device=self.device, generator=generator)
        alpha = torch.rand([batch], device=self.device, generator=generator)
        return rho1, rho2, alpha

    def autoencode(self, x):
        """One pass of the mode's autoencoder on reals x [N, C, R, R].

        Returns (targets, outputs, fakes): L1 pairs (target, output) whose per-image means make the
        reconstruction loss (the first pair is the main term, any others the seed-reconstruction
        term), and the decoded images the adversarial term and D see.
        """
        batch = x.shape[0]
        if self.mode == 'ae':
            out = decode(self.G_synthesis, self.encoder(x))
            return [(x, out)], [out]
        if self.mode == 'intae':
            codes = self.encoder(x)
            _, _, alpha = self._draws(batch)
            partner = torch.roll(torch.arange(batch, device=x.device), 1)  # a different image whenever N > 1
            both = decode(self.G_synthesis, torch.cat([codes, slerp(codes, codes[partner], alpha)]))
            recon, mixed = both[:batch], both[batch:]
            return [(x, recon)], [recon, mixed]
        rho1, rho2, alpha = self._draws(batch)
        ends = transform.transform_images(torch.cat([x, x]), torch.cat([rho1, rho2]))
        middle = transform.transform_images(x, transform.interpolate(rho1, rho2, alpha))
        codes = self.encoder(ends)
        a, b = codes[:batch], codes[batch:]
        mixed_codes = slerp(a, b, alpha)
        if self.seed_recon_weight > 0:
            decoded = decode(self.G_synthesis, torch.cat([mixed_codes, codes]))
            return [(middle, decoded[:batch]), (ends, decoded[batch:])], [decoded[:batch]]
        out = decode(self.G_synthesis, mixed_codes)
        return [(middle, out)], [out]

    @staticmethod
    def _l1(target, output):
        return (target - output).abs().flatten(1).mean(dim=1)

    # --- Phases -------------------------------------------------------------------------------

    def begin_minibatch(self, batch_idx):
        super().begin_minibatch(batch_idx)
        self._fakes_for_D = []
        self._apply_k_update()

    def _apply_k_update(self):
        # D scores of the previous minibatch's D phase, summed over its rounds (and processes); a
        # minibatch without a D phase (count 0) leaves k alone.
        sums = self._d_sums
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
        count = sums[2].clamp(min=1)
        updated = update_k(self._k, sums[0] / count, sums[1] / count, rate=self.k_rate)
        self._k.copy_(torch.where(sums[2] > 0, updated, self._k))
        self._d_sums.zero_()

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        if phase not in self._TERMS_BY_PHASE:
            raise ValueError(f'Unknown phase {phase!r}; expected one of {sorted(self._TERMS_BY_PHASE)}')
        x = real_img.detach()
        if self._preview is None:
            self._preview = x[:_SNAPSHOT_ROWS].clone()  # stays on the device until a snapshot needs it
        if phase in ('Gmain', 'Gboth'):
            self._generator_step(phase, x, real_c, gain)
        if phase in ('Dmain', 'Dboth'):
            self._discriminator_step(phase, x, real_c, gain, r1=(phase == 'Dboth' and self.r1_gamma > 0))
        if phase == 'Dreg' and self.r1_gamma > 0:
            self._discriminator_step(phase, x, real_c, gain, r1=True, adversarial=False)

    def _generator_step(self, phase, x, c, gain):
        with torch.autograd.profiler.record_function('AugIntAE_G_fwd'):
            pairs, fakes = self.autoencode(x)
            # D's phase of this minibatch trains on these same reconstructions instead of decoding again.
            self._fakes_for_D.append([fake.detach() for fake in fakes])
            recon = self._l1(*pairs[0])
            training_stats.report('Loss/AugIntAE/recon', recon)
            total = recon.mean()
            self.watch_finite(phase, recon)
            if len(pairs) > 1:
                seeds = self._l1(*pairs[1])
                seeds = seeds[:len(x)] + seeds[len(x):]
                training_stats.report('Loss/AugIntAE/seed_recon', seeds)
                total = total + self.seed_recon_weight * seeds.mean()
            training_stats.report('Loss/AugIntAE/k', self._k.reshape(1))
            if self.adv_weight > 0:
                adv = 0
                for fake in fakes:
                    logits = self.run_D(fake, c).logits.squeeze(1)
                    adv = adv + (logits - 1).square()
                gamma = balance_gamma(recon, adv, fakes)
                training_stats.report('Loss/AugIntAE/adv', adv)
                training_stats.report('Loss/AugIntAE/gamma', gamma)
                weighted = self.adv_weight * self._k.to(adv.dtype) * gamma * adv
                self.watch_finite(phase, weighted)
                total = total + weighted.mean()
            training_stats.report('Loss/G/loss', total)
        with torch.autograd.profiler.record_function('AugIntAE_G_bwd'):
            total.mul(gain).backward()

    def _discriminator_step(self, phase, x, c, gain, r1, adversarial=True):
        total = 0
        if adversarial and self.adv_weight > 0:
            with torch.autograd.profiler.record_function('AugIntAE_D_fwd'):
                if self._fakes_for_D:
                    fakes = self._fakes_for_D.pop(0)
                else:
                    with torch.no_grad():
                        _, fakes = self.autoencode(x)
                fake_logits = torch.cat([self.run_D(fake.detach(), c).logits for fake in fakes]).squeeze(1)
                d_fake = fake_logits.square()
                training_stats.report('Loss/scores/fake', fake_logits)
                training_stats.report('Loss/signs/fake', (fake_logits - 0.5).sign())
                total = total + d_fake.mean()
        reals = x.requires_grad_(r1)
        if (adversarial and self.adv_weight > 0) or r1:
            real_logits = self.run_D(reals, c).logits.squeeze(1)
            training_stats.report('Loss/scores/real', real_logits)
            # LSGAN scores aim at 1 (real) and 0 (fake); ADA's heuristic reads the sign around 0.5.
            training_stats.report('Loss/signs/real', (real_logits - 0.5).sign())
        if adversarial and self.adv_weight > 0:
            d_real = (real_logits - 1).square()
            training_stats.report('Loss/D/loss', d_real + d_fake.reshape(len(fakes), -1).mean(dim=0))
            self.watch_finite(phase, d_real, d_fake)
            total = total + d_real.mean()
            self._d_sums += torch.stack([real_logits.detach().sum(), fake_logits.detach().reshape(len(fakes), -1).mean(dim=0).sum(),
                                         torch.tensor(float(len(x)), device=x.device)]).to(torch.float64)
        if r1:
            penalty = self.r1_penalty(reals, real_logits.unsqueeze(1))
            training_stats.report('Loss/r1_penalty', penalty)
            d_reg = penalty * (self.r1_gamma / 2)
            training_stats.report('Loss/D/reg', d_reg)
            self.watch_finite(phase, d_reg)
            total = total + d_reg.mean()
        if torch.is_tensor(total):
            with torch.autograd.profiler.record_function('AugIntAE_D_bwd'):
                total.mul(gain).backward()

    # --- Resume and snapshots -----------------------------------------------------------------

    def state_dict(self):
        state = super().state_dict()
        state['augintae_k'] = self.k
        state['augintae_d_sums'] = self._d_sums.detach().cpu().clone()
        return state

    def load_state_dict(self, state):
        state = dict(state)
        self._k.fill_(float(state.pop('augintae_k', 1.0)))
        if 'augintae_d_sums' in state:
            self._d_sums.copy_(torch.as_tensor(state.pop('augintae_d_sums'), dtype=torch.float64))
        super().load_state_dict(state)

    @torch.no_grad()
    def write_snapshot_images(self, G_ema, run_dir, kimg_label):
        """augintae-<kimg_label>.png: training images, their reconstructions, and midpoints of neighbouring pairs."""
        del G_ema  # the encoder was trained against G, so G decodes its codes
        if self._preview is None or len(self._preview) < 2:
            return []
        x = self._preview.to(self.device)
        was_training = self.encoder.training
        self.encoder.eval()
        codes = self.encoder(x)
        self.encoder.train(was_training)
        following = torch.roll(torch.arange(len(x), device=x.device), -1)
        rows = decode(self.G_synthesis, torch.cat([codes, slerp(codes, codes[following], 0.5)]), noise_mode='const')
        path = os.path.join(run_dir, f'augintae-{kimg_label}.png')
        image_grid.write_image_grid(torch.cat([x, rows]), path, (-1, 1), (len(x), 3))
        return [path]
