"""Mixup coefficient matrices for MixDL (Kong et al., ECCV 2022, sec. 3.2) and anchor mixing in W."""
import math

import torch

COEFFICIENT_KINDS = ('dirichlet', 'gaussian', 'uniform')

# Marsaglia-Tsang accepts a proposal with probability > 0.95 whenever the shape is >= 1 (we always
# sample with shape + 1 and boost), so 8 vectorised proposals leave a miss chance below 1e-10.
_GAMMA_PROPOSALS = 8


def _log_standard_gamma(shape_param: float, size, device, generator) -> torch.Tensor:
    """log of Gamma(shape_param, 1) samples of the given size, drawn from `generator`.

    torch's own gamma sampler cannot take a Generator, which we need for reproducible per-process
    streams, so this is a vectorised Marsaglia-Tsang sampler with a fixed number of proposals
    (no data-dependent loop, hence no host-device synchronisation). Working in log space keeps
    tiny shapes (alpha = 0.1 boosts by u ** 10) from underflowing to an all-zero Dirichlet row.
    """
    boosted = shape_param + 1.0 if shape_param < 1.0 else shape_param
    d = boosted - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    normal = torch.randn((_GAMMA_PROPOSALS, *size), device=device, generator=generator)
    uniform = torch.rand((_GAMMA_PROPOSALS, *size), device=device, generator=generator)
    cube_root = 1.0 + c * normal
    positive = cube_root > 0
    v = cube_root.clamp_min(1e-6) ** 3
    log_v = torch.log(v)
    accept = positive & (torch.log(uniform.clamp_min(1e-30)) < 0.5 * normal ** 2 + d - d * v + d * log_v)
    # Index of the first accepted proposal; if none was accepted (p < 1e-10) the last one is used.
    accept[-1] = True
    first = accept.to(torch.uint8).argmax(dim=0, keepdim=True)
    log_sample = math.log(d) + torch.gather(log_v, 0, first).squeeze(0)
    if shape_param < 1.0:
        boost = torch.rand(size, device=device, generator=generator).clamp_min(1e-30)
        log_sample = log_sample + torch.log(boost) / shape_param
    return log_sample


def sample_coefficients(batch_size: int, kind: str = 'dirichlet', alpha: float = 1.0,
                        device=None, generator: torch.Generator = None) -> torch.Tensor:
    """Draw the B x B mixup coefficient matrix C; every row is a distribution over the B sources.

    kind='dirichlet': each row ~ Dirichlet(alpha * ones(B)) (the paper's default, alpha = 1).
    kind='gaussian':  each row = softmax of a standard normal vector (alpha is ignored).
    kind='uniform':   each row = U(0, 1) samples divided by their sum (alpha is ignored).
    Returns float32 [batch_size, batch_size] on `device` (or the generator's device).
    """
    if kind not in COEFFICIENT_KINDS:
        raise ValueError(f'Unknown mixup coefficient kind {kind!r}: use one of {", ".join(COEFFICIENT_KINDS)}')
    if batch_size < 1:
        raise ValueError(f'MixDL needs at least one sample per batch, got batch_size={batch_size}')
    if kind == 'dirichlet' and not alpha > 0:
        raise ValueError(f'Dirichlet concentration must be positive, got alpha={alpha}: pass e.g. --mixdl-alpha=1')
    if device is None:
        device = generator.device if generator is not None else torch.device('cpu')
    size = (batch_size, batch_size)
    if kind == 'dirichlet':
        # Normalising independent Gamma(alpha) draws gives a Dirichlet(alpha) row.
        return torch.softmax(_log_standard_gamma(float(alpha), size, device, generator), dim=1)
    if kind == 'gaussian':
        return torch.softmax(torch.randn(size, device=device, generator=generator), dim=1)
    positive = torch.rand(size, device=device, generator=generator).clamp_min(1e-12)
    return positive / positive.sum(dim=1, keepdim=True)


def mix_anchors(coefficients: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Anchors w0(k) = sum_i C[k, i] * w_i over the whole per-layer ws tensor.

    coefficients: [B, B]; ws: [B, num_ws, w_dim] (or [B, w_dim]). Returns ws' shape and dtype.
    Gradients flow to ws (the anchors are synthesised by G, whose mapping trains through them).
    """
    batch = ws.shape[0]
    if coefficients.shape != (batch, batch):
        raise ValueError(f'Mixup coefficients must be [{batch}, {batch}] for a batch of {batch}, got {list(coefficients.shape)}')
    flat = ws.reshape(batch, -1)
    mixed = coefficients.to(flat.dtype) @ flat
    return mixed.reshape(ws.shape)
