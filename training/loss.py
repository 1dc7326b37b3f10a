"""GAN objectives for the training loop: the StyleGAN2 loss (Karras et al. 2020) and the plug-in interface it implements."""

import dataclasses
import math

import torch
import torch.nn.functional as F

from torch_utils import training_stats
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

#----------------------------------------------------------------------------

class Loss:
    """What the training loop needs from an objective. Subclass this to write a plug-in.

    The loop only ever talks to the loss through the members below, so a few-shot regulariser is a
    subclass named by `loss_kwargs.class_name`, never a branch in the loop. docs/PLUGINS.md has a
    worked example. Everything except `accumulate_gradients` has a do-nothing default.

    Call order per minibatch:
        begin_minibatch(batch_idx)
        for each phase due: accumulate_gradients(phase, ...) once per batch_gpu chunk
        first_nonfinite_phase()  (once; stops the run when a reported loss was NaN/inf)
    """

    # Top-level key under which `extra_modules()` are saved in network-snapshot pickles (their
    # state_dicts, so stock StyleGAN2-ADA tools can still unpickle the file). None = nothing to save.
    snapshot_key = None

    # Which network's optimiser and phases the extra modules join: 'D' or 'G'.
    extra_modules_train_with = 'D'

    def phase_plan(self, G_reg_interval, D_reg_interval):
        """List of PhaseSpec in execution order. Override to add phases of your own."""
        return lazy_regularisation_phases(G_reg_interval, D_reg_interval)

    def begin_minibatch(self, batch_idx):
        """Told the index of the minibatch about to run (0, 1, 2, ... continuing across resumes)."""
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

    def write_snapshot_images(self, G_ema, run_dir, cur_nimg):
        """Called on rank 0 at each image snapshot; write extra PNGs into run_dir. Returns their paths."""
        return []

    # Options this loss adds to train.py (see train.py:LOSS_PLUGINS). Kept here so a plug-in's
    # command-line surface lives next to its code.
    @classmethod
    def cli_options(cls):
        """List of click.Option objects to add to train.py."""
        return []

    @classmethod
    def configure_from_cli(cls, opts, loss_kwargs):
        """Turn this plug-in's parsed options into loss kwargs (edit `loss_kwargs` in place).

        opts: dict of every train.py option by parameter name. Returns the run-dir desc suffix
        ('' when the plug-in is not enabled). Raise click.UsageError for bad values.
        """
        return ''

    # --- Non-finite guard -------------------------------------------------------------------

    def watch_finite(self, phase, *terms):
        """Remember whether these loss tensors are finite; checked by the loop once per minibatch.

        Kept on the device so the check costs a single host sync per minibatch.
        """
        flags = getattr(self, '_finite_flags', None)
        if flags is None:
            flags = self._finite_flags = []
        ok = torch.stack([torch.isfinite(t.detach()).all() for t in terms]).all()
        flags.append((phase, ok))

    def first_nonfinite_phase(self):
        """Name of the first phase whose watched terms were NaN/inf since the last call, else None."""
        flags = getattr(self, '_finite_flags', None) or []
        self._finite_flags = []
        if not flags:
            return None
        all_ok = torch.stack([ok for _, ok in flags]).cpu()
        for (phase, _), ok in zip(flags, all_ok.tolist()):
            if not ok:
                return phase
        return None

#----------------------------------------------------------------------------

class StyleGAN2Loss(Loss):
    """Non-saturating logistic GAN loss with R1, path-length regularisation and style mixing.

    G_mapping: z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim].
    G_synthesis: ws -> images [N, C, H, W].
    D: images, c -> logits [N, 1].
    augment_pipe: applied to every image D sees (reals and fakes), or None.
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
        self._queued_d_terms = []

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
        """Discriminator logits [N, 1] for images, after augmentation when a pipe is set."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def add_discriminator_term(self, term):
        """Add a weighted loss term made inside a `run_D` override to the loss of that D call.

        For regularisers that fall out of a discriminator forward pass (e.g. AdaptiveMix's feature
        consistency): the phase that called `run_D` adds `term.mean()` to that call's loss before
        its backward, so the term shares the call's graph and `gain`. term: [N] or 0-d.
        """
        self._queued_d_terms.append(term)

    def _plus_queued_terms(self, phase, loss):
        # Returns `loss` itself when nothing was queued, so the baseline's numbers stay bit-exact.
        queued, self._queued_d_terms = self._queued_d_terms, []
        if not queued:
            return loss
        extra = torch.stack([term.mean() for term in queued]).sum()
        self.watch_finite(phase, extra)
        return loss + extra

    # --- Phases -------------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        if phase not in self._TERMS_BY_PHASE:
            raise ValueError(f'Unknown phase {phase!r}; expected one of {sorted(self._TERMS_BY_PHASE)}')
        terms = set(self._TERMS_BY_PHASE[phase])
        self._queued_d_terms = []  # terms from D calls made outside a phase belong to no loss
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
            fake_logits = self.run_D(fake_img, gen_c)
            training_stats.report('Loss/scores/fake', fake_logits)
            training_stats.report('Loss/signs/fake', fake_logits.sign())
            g_loss = F.softplus(-fake_logits)  # -log(sigmoid(logits))
            training_stats.report('Loss/G/loss', g_loss)
            self.watch_finite(phase, g_loss)
        with torch.autograd.profiler.record_function('G_adversarial_bwd'):
            self._plus_queued_terms(phase, g_loss.mean()).mul(gain).backward()

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
            fake_logits = self.run_D(fake_img, gen_c)
            training_stats.report('Loss/scores/fake', fake_logits)
            training_stats.report('Loss/signs/fake', fake_logits.sign())
            d_fake = F.softplus(fake_logits)  # -log(1 - sigmoid(logits))
            self.watch_finite(phase, d_fake)
        with torch.autograd.profiler.record_function('D_fakes_bwd'):
            self._plus_queued_terms(phase, d_fake.mean()).mul(gain).backward()
        return d_fake.detach()

    def r1_penalty(self, real_img, real_logits):
        """Per-sample squared gradient norm of sum(D(x)) w.r.t. the reals [N]."""
        with conv2d_gradfix.no_weight_gradients():
            (grad_x,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
        return grad_x.square().sum(dim=[1, 2, 3])

    def _discriminator_reals(self, phase, real_img, real_c, gain, fake_term, adversarial, r1):
        with torch.autograd.profiler.record_function('D_reals_fwd'):
            reals = real_img.detach().requires_grad_(r1)
            real_logits = self.run_D(reals, real_c)
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
            self._plus_queued_terms(phase, total.mean()).mul(gain).backward()

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
