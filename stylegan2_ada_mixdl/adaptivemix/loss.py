"""AdaptiveMixLoss: StyleGAN2Loss whose D calls shrink D's feature space with mixed images (Liu et al., CVPR 2023)."""
from typing import NamedTuple, Optional

import torch

from stylegan2_ada_mixdl.adaptivemix.options import OPTIONS
from stylegan2_ada_mixdl.mixdl.coefficients import sample_coefficients
from torch_utils import misc
from training.features import (discriminator_features, discriminator_features_shape, discriminator_head,
                               label_embedding)
from training.loss import AuxiliaryLoss, DiscriminatorOutput, StyleGAN2Loss
from training.plugins import PrivateStream, PrivateStreamState

# Offset mixed into the process seed so this plug-in's stream differs from torch's and from MixDL's.
_STREAM_OFFSET = 0x41644D78

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
    """One AdaptiveMix D call (paper sec. 3.1 and 3.3) on already augmented images.

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


class AdaptiveMixLoss(PrivateStreamState, StyleGAN2Loss):
    """StyleGAN2-ADA loss where every D call goes through AdaptiveMix (paper sec. 3.3).

    For each D call on a batch x (fakes or reals, after augmentation), with lambda ~ Beta(alpha, alpha)
    and a random pairing x_b = x[perm]:
      logits = J(lambda F(x) + (1 - lambda) F(x_b)) + J(F(lambda x + (1 - lambda) x_b))
      L_ada  = -cos(F(x_mix), detach(lambda F(x) + (1 - lambda) F(x_b) + sigma * N(0, I)))
    Every D call returns L_ada as its auxiliary term; each adversarial loss (G's, D's on fakes and on
    reals) adds weight * mean(L_ada) of its own D call, and R1 alone (Dreg) adds nothing. R1 is taken
    on these logits too. G and D stay plain StyleGAN2-ADA networks and no module is added.
    Random draws come from a private stream (saved for exact resume), so latents, noise and
    augmentations follow the same global RNG stream as a baseline run.

    Settings (keyword arguments; defaults and checks in stylegan2_ada_mixdl.adaptivemix.options.OPTIONS):
      weight:      weight of L_ada in the G and D losses (0 = mixed logits only).
      mixup_alpha: Beta(alpha, alpha) concentration of lambda.
      sigma:       std of the noise added to the feature target.
    """

    options = OPTIONS
    stream_state_key = 'adaptivemix_rng'  # where training-state files keep this plug-in's random stream

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None,
                 seed=None,   # Seed of the private stream (None = from the process seed).
                 **kwargs):   # The settings above, then StyleGAN2Loss's keyword arguments.
        settings, stylegan2_kwargs = OPTIONS.split(kwargs)
        seed = stylegan2_kwargs.pop('seed', seed)  # given as `adaptivemix_seed` by older run configurations
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe, **stylegan2_kwargs)
        self.weight = settings['weight']
        self.mixup_alpha = settings['mixup_alpha']
        self.sigma = settings['sigma']
        self.stream = PrivateStream(_STREAM_OFFSET, seed)

    def draw_mix(self, batch: int, device):
        """(lambda: float, partner: LongTensor [batch] on device) for one D call, from the private stream."""
        # A Dirichlet(alpha, alpha) pair is (lambda, 1 - lambda) with lambda ~ Beta(alpha, alpha).
        pair = sample_coefficients(2, 'dirichlet', self.mixup_alpha, generator=self.stream.generator)
        partner = torch.randperm(batch, generator=self.stream.generator)
        return float(pair[0, 0]), self.stream.to_device(partner, device)

    def draw_target_noise(self, shape, device) -> Optional[torch.Tensor]:
        """sigma * N(0, I) of `shape`, drawn on the device from a generator seeded by the private stream."""
        if self.sigma == 0:
            return None
        noise = torch.randn(shape, device=device, generator=self.stream.device_generator(device))
        return noise * self.sigma

    def run_D(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        batch = img.shape[0]
        weight, partner = self.draw_mix(batch, img.device)
        noise = self.draw_target_noise([batch] + discriminator_features_shape(self.D), img.device)
        out = adaptivemix_forward(self.D, img, c, weight, partner, noise)
        return DiscriminatorOutput(out.logits, AuxiliaryLoss('adaptivemix', out.ada_loss, self.weight))
