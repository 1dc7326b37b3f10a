"""GAN objectives for the training loop: the StyleGAN2 loss (Karras et al. 2020) and the plug-in interface it implements."""

import dataclasses
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from torch_utils import training_stats
from torch_utils.nonfinite import NonFiniteWatch
from torch_utils.ops import conv2d_gradfix

#----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PhaseSpec:
    """One optimisation phase as the loop schedules it.

    name:     passed to `Loss.accumulate_gradients` (e.g. 'Gmain').
    network:  'G' or 'D': whose optimiser steps after the phase, and whose parameters (plus the
              loss's extra modules, if they train with that network) get gradients.
    interval: run the phase on minibatches whose index is a multiple of this; also the `gain`.
    """
    name: str
    network: str
    interval: int


def lazy_regularisation_phases(G_reg_interval, D_reg_interval):
    """The StyleGAN2 schedule: <X>main every minibatch and <X>reg every R-th, or <X>both if R is None."""
    plan = []
    for network, reg_interval in (('G', G_reg_interval), ('D', D_reg_interval)):
        if reg_interval is None:
            plan.append(PhaseSpec(f'{network}both', network, 1))
        else:
            plan.append(PhaseSpec(f'{network}main', network, 1))
            plan.append(PhaseSpec(f'{network}reg', network, int(reg_interval)))
    return plan


class AuxiliaryLoss(NamedTuple):
    """A loss term a discriminator call computed besides its logits (e.g. AdaptiveMix's L_ada).

    name:       reported as Loss/<name>/G or Loss/<name>/D, by the phase that adds it.
    per_sample: [N] unweighted values.
    weight:     the phase adds weight * mean(per_sample) to the loss of the D call (0 = report only).
    """
    name: str
    per_sample: torch.Tensor
    weight: float


class DiscriminatorOutput(NamedTuple):
    """What `StyleGAN2Loss.run_D` returns: logits [N, 1], plus an auxiliary term or None."""
    logits: torch.Tensor
    aux: Optional[AuxiliaryLoss] = None

#----------------------------------------------------------------------------

class Loss:
    """What the training loop needs from an objective. Subclass this to write a plug-in.

    The loop only ever talks to the loss through the members below, so a few-shot regulariser is a
    subclass named by `loss_kwargs.class_name`, never a branch in the loop. docs/PLUGINS.md has a
    worked example. Everything except `accumulate_gradients` has a do-nothing default.

    Call order per minibatch (phases from `lazy_regularisation_phases`):
        begin_minibatch(batch_idx)
        for each phase due: accumulate_gradients(phase, ...) once per batch_gpu chunk
        end_minibatch()
    and once per tick first_nonfinite(), which stops the run when a watched loss was NaN/inf.
    Nothing in a minibatch may read a device value on the host (see torch_utils.sync_free).
    """

    batch_idx = 0  # index of the current minibatch, set by begin_minibatch

    # The plug-in's settings as data (a training.plugins.PluginOptions); train.py turns the table
    # into command-line options for the plug-ins listed in stylegan2_ada_mixdl.LOSS_PLUGINS.
    options = None

    # Top-level key under which `extra_modules()` are saved in network-snapshot pickles (their
    # state_dicts, so stock StyleGAN2-ADA tools can still unpickle the file). None = nothing to save.
    snapshot_key = None

    # Which network's optimiser and phases the extra modules join: 'D' or 'G'.
    extra_modules_train_with = 'D'

    def begin_minibatch(self, batch_idx):
        """Told the index of the minibatch about to run (0, 1, 2, ... continuing across resumes).

        A plug-in that treats some minibatches differently (MixDL: every n-th) decides it here.
        """
        self.batch_idx = int(batch_idx)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        """Add this phase's gradients for one batch_gpu chunk into `.grad` (call `.backward()`).

        real_img [N, C, H, W] float in [-1, 1]; real_c [N, c_dim]; gen_z [N, z_dim]; gen_c [N, c_dim].
        gain: multiply the loss by this (lazy regularisation interval / gradient-accumulation rounds).
        """
        raise NotImplementedError

    def extra_modules(self):
        """Trainable modules owned by the loss, {name: torch.nn.Module}.

        The loop moves them to the device, adds their parameters to the optimiser named by
        `extra_modules_train_with` (same Adam settings and phases), averages their gradients across
        processes, and saves/restores them in snapshots and training-state files.
        """
        return {}

    def state_dict(self):
        """Non-module state needed for exact resume: a dict of tensors / plain Python values."""
        return {}

    def load_state_dict(self, state):
        """Inverse of `state_dict`."""
        if state:
            raise ValueError(f'{type(self).__name__} has no resumable state but got keys {sorted(state)}')

    def write_snapshot_images(self, G_ema, run_dir, kimg_label):
        """Called on rank 0 at each image snapshot; write extra PNGs into run_dir. Returns their paths.

        kimg_label: the loop's name for this snapshot, as in fakes<kimg_label>.png ('000012', or '000012.345'
        in runs whose snapshots come less than 1 kimg apart); use it in file names so nothing is overwritten.
        """
        return []

    # --- Non-finite guard -------------------------------------------------------------------

    def watch_finite(self, phase, *terms):
        """Remember on the device whether these loss tensors are finite; the loop reads the record once per tick."""
        self._nonfinite_watch().watch(phase, terms)

    def end_minibatch(self):
        """Told that the phases of minibatch `batch_idx` are done (folds its NaN/inf flags, on the device)."""
        self._nonfinite_watch().end_minibatch(self.batch_idx)

    def first_nonfinite(self, reduce_min=None):
        """(phase, batch_idx) of the first watched NaN/inf since the last call, else None; reads the device once.

        reduce_min: in-place minimum over processes of a 0-d int64 tensor (every rank calls it), or None.
        """
        return self._nonfinite_watch().first(self.batch_idx, reduce_min)

    def first_nonfinite_phase(self):
        """Name of the first phase whose watched terms were NaN/inf since the last call, else None."""
        found = self.first_nonfinite()
        return None if found is None else found[0]

    def _nonfinite_watch(self):
        watch = self.__dict__.get('_nonfinite')
        if watch is None:
            watch = self._nonfinite = NonFiniteWatch()
        return watch

#----------------------------------------------------------------------------

class StyleGAN2Loss(Loss):
    """Non-saturating logistic GAN loss with R1, path-length regularisation and style mixing.

    G_mapping: z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim].
    G_synthesis: ws -> images [N, C, H, W].
    D: images, c -> logits [N, 1].
    augment_pipe: applied to every image D sees (reals and fakes), or None.

    A plug-in whose D calls compute a loss term of their own overrides `run_D` to return it in
    `DiscriminatorOutput.aux`; every adversarial term (G's, D's on fakes, D's on reals) adds the aux
    term of its own D call, while R1 alone (Dreg) does not.
    """

    _TERMS_BY_PHASE = {
        'Gmain': ('G_adv',),
        'Greg': ('G_pl',),
        'Gboth': ('G_adv', 'G_pl'),
        'Dmain': ('D_adv',),
        'Dreg': ('D_r1',),
        'Dboth': ('D_adv', 'D_r1'),
    }

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9,
                 r1_gamma=10, pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        super().__init__()
        self.device = torch.device(device)
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = float(style_mixing_prob)
        self.r1_gamma = float(r1_gamma)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_weight = float(pl_weight)
        # Running mean of path lengths: part of the loss, not of G, so G's state_dict stays upstream's.
        self.pl_mean = torch.zeros([], device=self.device)

    # --- Network evaluation -------------------------------------------------------------------

    def run_G(self, z, c):
        """Generate images; returns (img [N, C, H, W], ws [N, num_ws, w_dim])."""
        ws = self.G_mapping(z, c)
        if self.style_mixing_prob > 0:
            ws = self._mix_styles(ws, z, c)
        img = self.G_synthesis(ws)
        return img, ws

    def _mix_styles(self, ws, z, c):
        # One crossover layer for the whole batch, drawn on the device so no host sync is needed;
        # num_ws means "no mixing" for this minibatch.
        num_ws = ws.shape[1]
        crossover = torch.randint(1, num_ws, [], device=ws.device) if num_ws > 1 else torch.ones([], dtype=torch.int64, device=ws.device)
        skip = torch.rand([], device=ws.device) >= self.style_mixing_prob
        crossover = torch.where(skip, torch.full_like(crossover, num_ws), crossover)
        other_ws = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
        from_other = torch.arange(num_ws, device=ws.device) >= crossover
        return torch.where(from_other[None, :, None], other_ws, ws)

    def run_D(self, img, c):
        """D on images (after augmentation when a pipe is set): DiscriminatorOutput(logits [N, 1], aux=None)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return DiscriminatorOutput(self.D(img, c))

    def plus_aux(self, phase, network, loss, output):
        """`loss` (0-d) plus the weighted mean of the aux term of the D call `output`, reported per network.

        Returns `loss` itself when the call has no aux term, so the baseline's numbers stay bit-exact.
        """
        if output.aux is None:
            return loss
        training_stats.report(f'Loss/{output.aux.name}/{network}', output.aux.per_sample)
        if output.aux.weight == 0:
            return loss
        term = (output.aux.per_sample * output.aux.weight).mean()
        self.watch_finite(phase, term)
        return loss + term

    # --- Phases -------------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        if phase not in self._TERMS_BY_PHASE:
            raise ValueError(f'Unknown phase {phase!r}; expected one of {sorted(self._TERMS_BY_PHASE)}')
        terms = set(self._TERMS_BY_PHASE[phase])
        if self.pl_weight == 0:
            terms.discard('G_pl')
        if self.r1_gamma == 0:
            terms.discard('D_r1')

        if 'G_adv' in terms:
            self._generator_adversarial(phase, gen_z, gen_c, gain)
        if 'G_pl' in terms:
            self._path_length(phase, gen_z, gen_c, gain)
        fake_term = None
        if 'D_adv' in terms:
            fake_term = self._discriminator_fakes(phase, gen_z, gen_c, gain)
        if 'D_adv' in terms or 'D_r1' in terms:
            self._discriminator_reals(phase, real_img, real_c, gain, fake_term,
                                      adversarial='D_adv' in terms, r1='D_r1' in terms)

    def _generator_adversarial(self, phase, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('G_adversarial_fwd'):
            fake_img, _ = self.run_G(gen_z, gen_c)
            fake = self.run_D(fake_img, gen_c)
            training_stats.report('Loss/scores/fake', fake.logits)
            training_stats.report('Loss/signs/fake', fake.logits.sign())
            g_loss = F.softplus(-fake.logits)  # -log(sigmoid(logits))
            training_stats.report('Loss/G/loss', g_loss)
            self.watch_finite(phase, g_loss)
        with torch.autograd.profiler.record_function('G_adversarial_bwd'):
            self.plus_aux(phase, 'G', g_loss.mean(), fake).mul(gain).backward()

    def path_length_terms(self, fake_img, ws):
        """Per-sample path lengths |J_w^T y| [N] for a random image-space direction y."""
        height, width = fake_img.shape[2], fake_img.shape[3]
        direction = torch.randn_like(fake_img) / math.sqrt(height * width)
        with conv2d_gradfix.no_weight_gradients():
            (grad_ws,) = torch.autograd.grad(outputs=[(fake_img * direction).sum()], inputs=[ws], create_graph=True)
        return grad_ws.square().sum(dim=2).mean(dim=1).sqrt()

    def _path_length(self, phase, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('G_path_length_fwd'):
            num = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            fake_img, ws = self.run_G(gen_z[:num], gen_c[:num])
            lengths = self.path_length_terms(fake_img, ws)
            # The updated mean keeps its graph (as in StyleGAN2), so the penalty also pulls on it.
            updated_mean = self.pl_mean.lerp(lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(updated_mean.detach())
            pl_penalty = (lengths - updated_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            g_reg = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', g_reg)
            self.watch_finite(phase, g_reg)
        with torch.autograd.profiler.record_function('G_path_length_bwd'):
            # The zero-weighted image term keeps every synthesis parameter in the graph.
            (fake_img[:, 0, 0, 0] * 0 + g_reg).mean().mul(gain).backward()

    def _discriminator_fakes(self, phase, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('D_fakes_fwd'):
            fake_img, _ = self.run_G(gen_z, gen_c)
            fake = self.run_D(fake_img, gen_c)
            training_stats.report('Loss/scores/fake', fake.logits)
            training_stats.report('Loss/signs/fake', fake.logits.sign())
            d_fake = F.softplus(fake.logits)  # -log(1 - sigmoid(logits))
            self.watch_finite(phase, d_fake)
        with torch.autograd.profiler.record_function('D_fakes_bwd'):
            self.plus_aux(phase, 'D', d_fake.mean(), fake).mul(gain).backward()
        return d_fake.detach()

    def r1_penalty(self, real_img, real_logits):
        """Per-sample squared gradient norm of sum(D(x)) w.r.t. the reals [N]."""
        with conv2d_gradfix.no_weight_gradients():
            (grad_x,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
        return grad_x.square().sum(dim=[1, 2, 3])

    def _discriminator_reals(self, phase, real_img, real_c, gain, fake_term, adversarial, r1):
        with torch.autograd.profiler.record_function('D_reals_fwd'):
            reals = real_img.detach().requires_grad_(r1)
            real = self.run_D(reals, real_c)
            real_logits = real.logits
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())
            total = real_logits * 0
            if adversarial:
                d_real = F.softplus(-real_logits)
                training_stats.report('Loss/D/loss', d_real + fake_term)
                self.watch_finite(phase, d_real)
                total = total + d_real
            if r1:
                penalty = self.r1_penalty(reals, real_logits)
                training_stats.report('Loss/r1_penalty', penalty)
                d_reg = penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/D/reg', d_reg)
                self.watch_finite(phase, d_reg)
                total = total + d_reg.reshape([-1] + [1] * (total.ndim - 1))
        with torch.autograd.profiler.record_function('D_reals_bwd'):
            # The aux term belongs to the adversarial loss: R1 alone (Dreg) leaves it out.
            total = self.plus_aux(phase, 'D', total.mean(), real) if adversarial else total.mean()
            total.mul(gain).backward()

    # --- Resume -------------------------------------------------------------------------------

    def state_dict(self):
        return {'pl_mean': self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state):
        state = dict(state)
        if 'pl_mean' in state:
            self.pl_mean.copy_(torch.as_tensor(state.pop('pl_mean'), dtype=self.pl_mean.dtype))
        if state:
            raise ValueError(f'{type(self).__name__}.load_state_dict: unexpected keys {sorted(state)}')

#----------------------------------------------------------------------------
