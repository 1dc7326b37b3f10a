"""AdaptiveMixLoss: StyleGAN2Loss whose D calls shrink D's feature space with mixed images (Liu et al., CVPR 2023)."""
from typing import NamedTuple, Optional

import click
import torch

from stylegan2_ada_mixdl.coefficients import sample_coefficients
from stylegan2_ada_mixdl.plugin import PluginOption, PluginOptions, PrivateStream, PrivateStreamState
from torch_utils import misc, training_stats
from training.loss import StyleGAN2Loss

# Offset mixed into the process seed so this plug-in's stream differs from torch's and from MixDL's.
_STREAM_OFFSET = 0x41644D78

# Phases whose D calls add L_ada to their loss. Dreg still sees the mixed logits (R1 is taken on
# them) but adds nothing: its loss is R1 alone, scaled by the lazy-regularisation interval.
_PHASES_WITH_TERM = {'Gmain': 'G', 'Gboth': 'G', 'Dmain': 'D', 'Dboth': 'D'}

#----------------------------------------------------------------------------
# D split into the feature extractor F (every block) and the head J (the 4x4 epilogue).


class DiscriminatorFeatures(NamedTuple):
    """What D's blocks hand to the epilogue: x [N, C4, 4, 4], plus the 4x4 image for 'skip' D (else None)."""
    x: torch.Tensor
    img: Optional[torch.Tensor]

    def mixed_with(self, other: 'DiscriminatorFeatures', weight: float) -> 'DiscriminatorFeatures':
        """weight * self + (1 - weight) * other, in float32 (what the epilogue computes in)."""
        def blend(a, b):
            return None if a is None else weight * a.float() + (1 - weight) * b.float()
        return DiscriminatorFeatures(blend(self.x, other.x), blend(self.img, other.img))

    def take(self, index: torch.Tensor) -> 'DiscriminatorFeatures':
        return DiscriminatorFeatures(self.x[index], None if self.img is None else self.img[index])

    def halves(self, size: int):
        """Split a batch of 2 * size along dim 0 into its first and second halves."""
        first = DiscriminatorFeatures(self.x[:size], None if self.img is None else self.img[:size])
        second = DiscriminatorFeatures(self.x[size:], None if self.img is None else self.img[size:])
        return first, second


def discriminator_features(D: torch.nn.Module, img: torch.Tensor) -> DiscriminatorFeatures:
    """F(img): run D's blocks b<res> ... b8 only. img [N, C, R, R] -> features entering D.b4.

    Works on any StyleGAN2-ADA Discriminator (ours, or one rebuilt by legacy.load_network_pkl),
    since it only uses the submodule names every such pickle shares.
    """
    misc.assert_shape(img, [None, D.img_channels, D.img_resolution, D.img_resolution])
    features, image = None, img
    for block in (getattr(D, f'b{res}') for res in D.block_resolutions):
        features, image = block(features, image)
    return DiscriminatorFeatures(features, image)


def label_embedding(D: torch.nn.Module, c: torch.Tensor) -> Optional[torch.Tensor]:
    """D's projection of the labels c [N, c_dim] (None for an unconditional D)."""
    return D.mapping(None, c) if D.c_dim > 0 else None


def discriminator_head(D: torch.nn.Module, features: DiscriminatorFeatures, cmap: Optional[torch.Tensor]) -> torch.Tensor:
    """J(features): D's epilogue (mbstd, conv, fc, out, label projection). Returns logits [N, 1].

    head(features(img), label_embedding(c)) is exactly D(img, c).
    """
    return D.b4(features.x, features.img, cmap)

#----------------------------------------------------------------------------


def negative_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-cos(flatten(a_i), flatten(b_i)) per sample: [N, ...] x [N, ...] -> [N], in [-1, 1].

    Written as <a, b> / sqrt(|a|^2 |b|^2) so that bitwise-equal inputs give exactly -1 (a correctly
    rounded sqrt(s * s) is s); F.cosine_similarity can land an ulp away from it.
    """
    a, b = a.flatten(1), b.flatten(1)
    norms_squared = a.square().sum(dim=1) * b.square().sum(dim=1)
    return -(a * b).sum(dim=1) / norms_squared.clamp_min(1e-16).sqrt()


class AdaptiveMixOutput(NamedTuple):
    logits: torch.Tensor          # [N, 1]: J(mix of F(x_a), F(x_b)) + J(F(x_mix)), for the adversarial losses.
    ada_loss: torch.Tensor        # [N]: -cos(F(x_mix), detached target), in [-1, 1].
    features: torch.Tensor        # [N, C4, 4, 4]: F(x_a).
    mixed_features: torch.Tensor  # [N, C4, 4, 4]: lambda F(x_a) + (1 - lambda) F(x_b), float32.
    mix_features: torch.Tensor    # [N, C4, 4, 4]: F(x_mix).


def adaptivemix_forward(D: torch.nn.Module, img: torch.Tensor, c: torch.Tensor, weight: float,
                        partner: torch.Tensor, target_noise: Optional[torch.Tensor] = None) -> AdaptiveMixOutput:
    """One AdaptiveMix D call (adaptivemix_spec.md) on already augmented images.

    img [N, C, R, R]; c [N, c_dim]; weight: lambda in [0, 1]; partner: LongTensor [N], image i is
    mixed with image partner[i]; target_noise: sigma * N(0, I) of F's shape, or None for sigma = 0.
    x_mix = lambda x + (1 - lambda) x[partner], with labels mixed the same way. D's blocks run
    once, on [x; x_mix]; F(x_b) is F(x)[partner], so the partner costs no pass of its own. Only the
    target is detached: gradients reach D's parameters and `img` through every other path.
    """
    batch = img.shape[0]
    misc.assert_shape(c, [batch, None])
    misc.assert_shape(partner, [batch])
    mixed_img = weight * img + (1 - weight) * img[partner]
    own, of_mixed_img = discriminator_features(D, torch.cat([img, mixed_img])).halves(batch)
    blended = own.mixed_with(own.take(partner), weight)
    cmap = label_embedding(D, weight * c + (1 - weight) * c[partner])
    # Two separate epilogue calls keep minibatch-std groups as in a plain D call of N images.
    logits = discriminator_head(D, blended, cmap) + discriminator_head(D, of_mixed_img, cmap)

    target = blended.x.detach()
    if target_noise is not None:
        misc.assert_shape(target_noise, list(target.shape))
        target = target + target_noise.to(target.dtype)
    ada_loss = negative_cosine(of_mixed_img.x.float(), target)
    return AdaptiveMixOutput(logits, ada_loss, own.x, blended.x, of_mixed_img.x)

#----------------------------------------------------------------------------


def validate(adaptivemix_weight, adaptivemix_alpha, adaptivemix_sigma):
    """Raise ValueError naming the bad AdaptiveMix setting and how to fix it."""
    if not adaptivemix_weight >= 0:
        raise ValueError(f'AdaptiveMix weight must be >= 0, got {adaptivemix_weight}: try --adaptivemix-weight=1')
    if not adaptivemix_alpha > 0:
        raise ValueError(f'AdaptiveMix Beta concentration must be > 0, got {adaptivemix_alpha}: '
                         f'try --adaptivemix-alpha=1')
    if not adaptivemix_sigma >= 0:
        raise ValueError(f'AdaptiveMix target noise must be >= 0, got {adaptivemix_sigma}: '
                         f'try --adaptivemix-sigma=0.05')


OPTIONS = PluginOptions(
    switch='adaptivemix',
    switch_help='Enable AdaptiveMix feature-space shrinkage of D',
    loss_class='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss',
    settings=(
        PluginOption(name='adaptivemix_weight', kwarg='adaptivemix_weight', default=1.0,
                     kind=click.FloatRange(min=0), cast=float, tag='w',
                     help='Weight of the AdaptiveMix term L_ada in the G and D losses'),
        PluginOption(name='adaptivemix_alpha', kwarg='adaptivemix_alpha', default=1.0,
                     kind=click.FloatRange(min=0, min_open=True), cast=float, tag='alpha',
                     help='Beta(alpha, alpha) concentration of the mixing weight lambda'),
        PluginOption(name='adaptivemix_sigma', kwarg='adaptivemix_sigma', default=0.05,
                     kind=click.FloatRange(min=0), cast=float, tag='sigma',
                     help='Std of the Gaussian noise added to the feature target'),
    ),
    validate=validate,
    conflicts={'mixdl': 'MixDL replaces the adversarial logits of its minibatches with patch logits, while '
                        'AdaptiveMix replaces every D call with mixed-feature logits; enable one of them'},
)


class AdaptiveMixLoss(PrivateStreamState, StyleGAN2Loss):
    """StyleGAN2-ADA loss where every D call goes through AdaptiveMix (adaptivemix_spec.md).

    For each D call on a batch x (fakes or reals, after augmentation), with lambda ~ Beta(alpha, alpha)
    and a random pairing x_b = x[perm]:
      logits = J(lambda F(x) + (1 - lambda) F(x_b)) + J(F(lambda x + (1 - lambda) x_b))
      L_ada  = -cos(F(x_mix), detach(lambda F(x) + (1 - lambda) F(x_b) + sigma * N(0, I)))
    The adversarial losses and R1 use these logits; G's and D's main phases add weight * mean(L_ada)
    for every D call they make. G and D stay plain StyleGAN2-ADA networks and no module is added.
    Random draws come from a private stream (saved for exact resume), so latents, noise and
    augmentations follow the same global RNG stream as a baseline run.
    """

    stream_state_key = 'adaptivemix_rng'  # where training-state files keep this plug-in's random stream

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None,
                 adaptivemix_weight=1.0,   # Weight of L_ada in the G and D losses (0 = logits only).
                 adaptivemix_alpha=1.0,    # Beta(alpha, alpha) concentration of lambda.
                 adaptivemix_sigma=0.05,   # Std of the noise added to the feature target.
                 adaptivemix_seed=None,    # Seed of the private stream (None = from the process seed).
                 **stylegan2_kwargs):
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe, **stylegan2_kwargs)
        validate(adaptivemix_weight=adaptivemix_weight, adaptivemix_alpha=adaptivemix_alpha,
                 adaptivemix_sigma=adaptivemix_sigma)
        self.adaptivemix_weight = float(adaptivemix_weight)
        self.adaptivemix_alpha = float(adaptivemix_alpha)
        self.adaptivemix_sigma = float(adaptivemix_sigma)
        self.stream = PrivateStream(_STREAM_OFFSET, adaptivemix_seed)
        self.current_phase = None

    def draw_mix(self, batch: int, device):
        """(lambda: float, partner: LongTensor [batch] on device) for one D call, from the private stream."""
        # A Dirichlet(alpha, alpha) pair is (lambda, 1 - lambda) with lambda ~ Beta(alpha, alpha).
        pair = sample_coefficients(2, 'dirichlet', self.adaptivemix_alpha, generator=self.stream.generator)
        partner = torch.randperm(batch, generator=self.stream.generator)
        return float(pair[0, 0]), self.stream.to_device(partner, device)

    def draw_target_noise(self, shape, device) -> Optional[torch.Tensor]:
        """sigma * N(0, I) of `shape`, drawn on the device from a generator seeded by the private stream."""
        if self.adaptivemix_sigma == 0:
            return None
        noise = torch.randn(shape, device=device, generator=self.stream.device_generator(device))
        return noise * self.adaptivemix_sigma

    def run_D(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        batch = img.shape[0]
        weight, partner = self.draw_mix(batch, img.device)
        epilogue = self.D.b4
        noise = self.draw_target_noise([batch, epilogue.in_channels, epilogue.resolution, epilogue.resolution],
                                       img.device)
        out = adaptivemix_forward(self.D, img, c, weight, partner, noise)
        network = _PHASES_WITH_TERM.get(self.current_phase)
        if network is not None:
            training_stats.report(f'Loss/adaptivemix/{network}', out.ada_loss)
            if self.adaptivemix_weight > 0:
                self.add_discriminator_term(out.ada_loss * self.adaptivemix_weight)
        return out.logits

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        self.current_phase = phase
        try:
            super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        finally:
            self.current_phase = None

    # --- Plug-in interface --------------------------------------------------------------------

    @classmethod
    def cli_options(cls):
        return OPTIONS.cli_options()

    @classmethod
    def configure_from_cli(cls, opts, loss_kwargs):
        return OPTIONS.configure(opts, loss_kwargs)
