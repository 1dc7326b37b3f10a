"""MixDLLoss: StyleGAN2Loss plus mixup-based distance learning (Kong et al., ECCV 2022) on every n-th minibatch."""
import torch
import torch.nn.functional as F

from stylegan2_ada_mixdl.mixdl.coefficients import mix_anchors, sample_coefficients
from stylegan2_ada_mixdl.mixdl.distance import (G_SIMILARITIES, feature_distance_loss, layered_distance_loss,
                                                sample_feature_layers)
from stylegan2_ada_mixdl.mixdl.heads import MixDLModules
from stylegan2_ada_mixdl.mixdl.interp import interp_filename, save_interpolation_strip
from stylegan2_ada_mixdl.mixdl.options import OPTIONS
from torch_utils import training_stats
from training.features import (discriminator_penultimate_name, features_by_name, record_activations,
                               synthesis_conv_names)
from training.loss import StyleGAN2Loss
from training.plugins import PrivateStream, PrivateStreamState

# Offset mixed into the process seed so the plug-in's private stream differs from torch's global one.
_STREAM_OFFSET = 0x4D6978


class MixDLLoss(PrivateStreamState, StyleGAN2Loss):
    """StyleGAN2-ADA loss whose every `interval`-th minibatch is a MixDL minibatch.

    On a MixDL minibatch (paper sec. 3.2-3.4), with B = batch_gpu sources w_i = mapping(z_i) and
    anchors w0 = C @ w for a B x B coefficient matrix C whose rows are mixup distributions:
      G: softplus(-Dpatch(G(w0))) + lambda_G * KL(softmax(C) || softmax(cos of synthesis features))
      D: softplus(-Dpatch(x)) + softplus(Dpatch(G(w0))) + lambda_D * KL(softmax(C) || softmax(cos of proj(d1)))
    With patch discrimination off the ordinary full-image adversarial terms stay and the distance
    terms are added to them; with keep_full_adv they stay beside the patch terms as well. R1 and path
    length always act on the ordinary full-image outputs.
    All MixDL random draws come from a private generator, so when every MixDL term is zero the run
    consumes torch's global RNG exactly like StyleGAN2Loss does.

    Settings (keyword arguments; defaults and checks in stylegan2_ada_mixdl.mixdl.options.OPTIONS):
      lambda_G, lambda_D:   weights of the G and D distance losses (0 = off).
      mixup_alpha:          Dirichlet concentration of each coefficient row.
      coef_kind:            'dirichlet', 'gaussian' or 'uniform' rows.
      interval:             every n-th minibatch (by index) is a MixDL minibatch.
      patch_discrimination: patch logits instead of full-image logits on MixDL minibatches.
      patch_head:           'lrelu' or 'linear' patch heads (see heads.PatchHead).
      keep_full_adv:        also apply the ordinary full-image adversarial terms on MixDL minibatches.
      g_similarity:         'cosine' (the authors') or 'centred' (distance.centred_cosine_similarity_matrix).
    """

    options = OPTIONS
    stream_state_key = 'mixdl_rng'  # where training-state files keep this plug-in's random stream
    snapshot_key = 'mixdl'
    extra_modules_train_with = 'D'

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None,
                 proj_dim=None,   # Output width of the projection (None = D's penultimate width).
                 seed=None,       # Seed of the plug-in's own stream (None = from the process seed).
                 **kwargs):       # The settings above, then StyleGAN2Loss's keyword arguments.
        settings, stylegan2_kwargs = OPTIONS.split(kwargs)
        seed = stylegan2_kwargs.pop('seed', seed)  # given as `mixdl_seed` by older run configurations
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe, **stylegan2_kwargs)
        self.lambda_G = settings['lambda_G']
        self.lambda_D = settings['lambda_D']
        self.mixup_alpha = settings['mixup_alpha']
        self.coef_kind = settings['coef_kind']
        self.interval = settings['interval']
        self.patch_discrimination = settings['patch_discrimination']
        self.patch_head = settings['patch_head']
        self.keep_full_adv = settings['keep_full_adv']
        self.g_similarity = G_SIMILARITIES[settings['g_similarity']]
        self.batch_idx = 0

        self.synthesis_layers = synthesis_conv_names(G_synthesis)
        self.penultimate_name = discriminator_penultimate_name(D)
        self.stream = PrivateStream(_STREAM_OFFSET, seed)
        # Initialise the extras from the private stream too: the global stream must advance exactly
        # as in a StyleGAN2Loss run (the loop broadcasts rank 0's weights to other ranks anyway).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.stream.draw_seed())
            self.extras = MixDLModules.for_discriminator(D, proj_dim=proj_dim, patch_head=self.patch_head)
        self.extras.to(self.device)

    # --- Schedule -----------------------------------------------------------------------------

    @property
    def any_term_enabled(self):
        return self.lambda_G > 0 or self.lambda_D > 0 or self.patch_discrimination

    def is_mixdl_minibatch(self, batch_idx=None):
        """True when minibatch `batch_idx` (default: the current one) gets the MixDL objectives."""
        index = self.batch_idx if batch_idx is None else int(batch_idx)
        return self.any_term_enabled and index % self.interval == 0

    # --- Random draws (host side: no device synchronisation) ----------------------------------

    def draw_coefficients(self, batch_size):
        """C [B, B] float32 on the loss device, rows drawn from the configured distribution."""
        coefs = sample_coefficients(batch_size, self.coef_kind, self.mixup_alpha, generator=self.stream.generator)
        return self.stream.to_device(coefs, self.device)

    def draw_patch_layer(self):
        """Name of the D activation whose patch head is used for this step, drawn uniformly."""
        names = self.extras.patch_layer_names
        return names[int(torch.randint(len(names), [], generator=self.stream.generator))]

    # --- Networks -----------------------------------------------------------------------------

    def synthesise_sources_and_anchors(self, gen_z, gen_c, coefs, record_features):
        """Synthesise [sources; anchors] in one batched call. Returns (images [2B, C, H, W], features or None).

        Sources use truncation 1 and no style mixing; anchors mix the whole ws tensor with C.
        """
        ws = self.G_mapping(gen_z, gen_c)
        all_ws = torch.cat([ws, mix_anchors(coefs, ws)])
        if not record_features:
            return self.G_synthesis(all_ws), None
        with record_activations(self.G_synthesis, self.synthesis_layers) as record:
            images = self.G_synthesis(all_ws)
        return images, features_by_name(record, self.synthesis_layers)

    def run_D_recording(self, img, c, names):
        """Full-image logits [N, 1] plus the named D activations, after augmentation."""
        with record_activations(self.D, names) as record:
            logits = self.run_D(img, c).logits
        return logits, record

    def patch_loss(self, layer_name, activation, real):
        """Softplus patch loss averaged over positions: [N] per image (real=True scores as real)."""
        logits = self.extras.patch_logits(layer_name, activation)
        return F.softplus(-logits if real else logits).mean(dim=1)

    # --- Phases -------------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        if phase not in self._TERMS_BY_PHASE:
            raise ValueError(f'Unknown phase {phase!r}; expected one of {sorted(self._TERMS_BY_PHASE)}')
        if not self.is_mixdl_minibatch() or phase in ('Greg', 'Dreg'):
            return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        batch = gen_z.shape[0]
        if real_img.shape[0] != batch:
            raise ValueError(f'MixDL pairs reals with fakes: got {real_img.shape[0]} reals and {batch} latents')
        if phase in ('Gmain', 'Gboth'):
            self._generator_mixdl(phase, gen_z, gen_c, gain)
            if phase == 'Gboth':
                super().accumulate_gradients('Greg', real_img, real_c, gen_z, gen_c, gain)
        else:
            self._discriminator_mixdl(phase, real_img, real_c, gen_z, gen_c, gain)
            if phase == 'Dboth':
                super().accumulate_gradients('Dreg', real_img, real_c, gen_z, gen_c, gain)

    def generator_terms(self, gen_z, gen_c, coefs, distance=True, patch=True):
        """Unweighted MixDL generator terms for one chunk: {'G_dist': 0-d, 'G_patch': [B]} (those asked for)."""
        batch = gen_z.shape[0]
        images, features = self.synthesise_sources_and_anchors(gen_z, gen_c, coefs, record_features=distance)
        terms = {}
        if distance:
            layers = sample_feature_layers(batch, len(features), generator=self.stream.generator)
            terms['G_dist'] = layered_distance_loss([f[batch:] for f in features], [f[:batch] for f in features],
                                                    layers, coefs, similarity=self.g_similarity)
        if patch:
            layer = self.draw_patch_layer()
            _, record = self.run_D_recording(images[batch:], self.anchor_labels(coefs, gen_c), [layer])
            terms['G_patch'] = self.patch_loss(layer, record[layer], real=True)
        return terms

    def discriminator_terms(self, real_img, real_c, gen_z, gen_c, coefs, distance=True, patch=True):
        """Unweighted MixDL discriminator terms for one chunk.

        Returns {'D_dist': 0-d, 'D_patch_fake': [B], 'D_patch_real': [B], 'real_logits': [B, 1]} (those asked
        for). Images are generated without a graph, so no term reaches G.
        """
        batch = gen_z.shape[0]
        with torch.no_grad():
            images, _ = self.synthesise_sources_and_anchors(gen_z, gen_c, coefs, record_features=False)
        anchors, sources = images[batch:], images[:batch]
        anchor_c = self.anchor_labels(coefs, gen_c)
        layer = self.draw_patch_layer() if patch else None
        names = ([self.penultimate_name] if distance else []) + ([layer] if patch else [])
        terms = {}
        if distance:
            # D sees [anchors; sources] in one call; the anchors' half also feeds the patch term.
            _, record = self.run_D_recording(torch.cat([anchors, sources]), torch.cat([anchor_c, gen_c]), names)
            projected = self.extras.project(record[self.penultimate_name])
            terms['D_dist'] = feature_distance_loss(projected[:batch], projected[batch:], coefs)
        if patch:
            if not distance:
                _, record = self.run_D_recording(anchors, anchor_c, names)
            terms['D_patch_fake'] = self.patch_loss(layer, record[layer][:batch], real=False)
            real_logits, real_record = self.run_D_recording(real_img.detach(), real_c, [layer])
            terms['D_patch_real'] = self.patch_loss(layer, real_record[layer], real=True)
            terms['real_logits'] = real_logits.detach()
        return terms

    @staticmethod
    def anchor_labels(coefs, gen_c):
        """Labels shown to D with anchor images: the same mixture of the sources' labels ([B, c_dim])."""
        return coefs @ gen_c if gen_c.shape[1] > 0 else gen_c

    @staticmethod
    def _report_and_weigh(terms, weights):
        """Report each computed term as Loss/mixdl/<name>; return the sum of weight * mean over the computed ones."""
        total = 0
        for name, weight in weights.items():
            if name in terms:
                training_stats.report(f'Loss/mixdl/{name}', terms[name])
                total = total + weight * terms[name].mean()
        return total

    def _generator_mixdl(self, phase, gen_z, gen_c, gain):
        if self.keep_full_adv or not self.patch_discrimination:
            # Ordinary full-image adversarial term; the MixDL terms are added below.
            super().accumulate_gradients('Gmain', None, None, gen_z, gen_c, gain)
            if not self.patch_discrimination and self.lambda_G == 0:
                return
        with torch.autograd.profiler.record_function('Gmixdl_forward'):
            coefs = self.draw_coefficients(gen_z.shape[0])
            terms = self.generator_terms(gen_z, gen_c, coefs, distance=self.lambda_G > 0,
                                         patch=self.patch_discrimination)
            total = self._report_and_weigh(terms, {'G_dist': self.lambda_G, 'G_patch': 1})
            self.watch_finite(phase, total)
        with torch.autograd.profiler.record_function('Gmixdl_backward'):
            total.mul(gain).backward()

    def _discriminator_mixdl(self, phase, real_img, real_c, gen_z, gen_c, gain):
        if self.keep_full_adv or not self.patch_discrimination:
            super().accumulate_gradients('Dmain', real_img, real_c, gen_z, gen_c, gain)
            if not self.patch_discrimination and self.lambda_D == 0:
                return
        with torch.autograd.profiler.record_function('Dmixdl_forward'):
            coefs = self.draw_coefficients(gen_z.shape[0])
            terms = self.discriminator_terms(real_img, real_c, gen_z, gen_c, coefs, distance=self.lambda_D > 0,
                                             patch=self.patch_discrimination)
            if 'real_logits' in terms and not self.keep_full_adv:
                # Full-image real logits come for free with the patch terms and keep ADA's sign statistic fed
                # (with keep_full_adv the ordinary D term has reported them already).
                training_stats.report('Loss/scores/real', terms['real_logits'])
                training_stats.report('Loss/signs/real', terms['real_logits'].sign())
            total = self._report_and_weigh(terms, {'D_dist': self.lambda_D, 'D_patch_fake': 1, 'D_patch_real': 1})
            self.watch_finite(phase, total)
        with torch.autograd.profiler.record_function('Dmixdl_backward'):
            total.mul(gain).backward()

    # --- Plug-in interface --------------------------------------------------------------------

    def extra_modules(self):
        return {'extras': self.extras}

    def write_snapshot_images(self, G_ema, run_dir, kimg_label):
        path = interp_filename(run_dir, kimg_label)
        save_interpolation_strip(G_ema, path)
        return [path]

    # --- Resume -------------------------------------------------------------------------------

    def state_dict(self):
        return dict(super().state_dict(), mixdl_patch_head=self.patch_head)

    def load_state_dict(self, state):
        state = dict(state)
        # States without the entry were written with linear patch heads.
        saved_head = state.pop('mixdl_patch_head', 'linear')
        if saved_head != self.patch_head:
            raise ValueError(f'This training state was saved with --mixdl-patch-head={saved_head}, but this run uses '
                             f'--mixdl-patch-head={self.patch_head}: resume with --mixdl-patch-head={saved_head}')
        super().load_state_dict(state)
