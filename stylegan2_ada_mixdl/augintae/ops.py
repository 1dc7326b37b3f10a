"""The small pieces of maths in AugIntAE (ICLR 2021 submission, sec. 3): spherical code mixing, the per-image
balance between reconstruction and adversarial gradients (gamma), and the dynamic adversarial factor k."""

import torch

# Below this angle (radians) between two codes, SLERP is replaced by normalised LERP: the two agree
# to within floating-point error there, and the sin(theta) division would not.
PARALLEL_ANGLE = 1e-4


def slerp(a: torch.Tensor, b: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical interpolation of codes a, b [N, D] with weight alpha (scalar or [N]) on `a`.

    The direction moves along the great circle from b (alpha = 0) to a (alpha = 1) at constant
    angular speed; the length is the linear blend of the two lengths, so unit codes stay unit and
    codes of length sqrt(D) stay that long. Endpoints are returned exactly. Nearly parallel pairs
    (angle below PARALLEL_ANGLE) take the normalised LERP direction. Differentiable everywhere.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f'slerp expects two codes [N, D] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}')
    alpha = torch.as_tensor(alpha, dtype=a.dtype, device=a.device)
    alpha = alpha.reshape(-1, 1) if alpha.ndim == 1 else alpha
    len_a, len_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    unit_a, unit_b = a / len_a, b / len_b
    # The half-angle form is accurate for small and for large angles alike.
    theta = 2 * torch.atan2((unit_a - unit_b).norm(dim=1, keepdim=True), (unit_a + unit_b).norm(dim=1, keepdim=True))
    parallel = theta < PARALLEL_ANGLE
    safe_theta = torch.where(parallel, torch.ones_like(theta), theta)
    weight_a = torch.where(parallel, alpha, torch.sin(alpha * safe_theta) / torch.sin(safe_theta))
    weight_b = torch.where(parallel, 1 - alpha, torch.sin((1 - alpha) * safe_theta) / torch.sin(safe_theta))
    direction = weight_a * unit_a + weight_b * unit_b
    direction = torch.where(parallel, direction / direction.norm(dim=1, keepdim=True), direction)
    mixed = direction * (alpha * len_a + (1 - alpha) * len_b)
    # Exact endpoints (the trigonometry above is only accurate to rounding).
    mixed = torch.where(alpha == 1, a, mixed)
    return torch.where(alpha == 0, b, mixed)


def balance_gamma(recon_per_image: torch.Tensor, adv_per_image: torch.Tensor, images, eps: float = 1e-12) -> torch.Tensor:
    """gamma [N] = ||d recon_i / d x_i|| / ||d adv_i / d x_i|| per image, detached.

    recon_per_image, adv_per_image: [N] losses of the reconstructions `images` [N, C, H, W] (part of
    the autograd graph), or of several such tensors given as a sequence: then x_i is the i-th row of
    all of them together and the norms run over all of them. Weighting the adversarial term of image
    i by gamma_i gives its gradient w.r.t. that image the reconstruction gradient's norm, so it never
    outweighs it (paper sec. 3, "gradient balancing"). Both gradients are taken with respect to the
    reconstructed images, not the network weights: one extra backward pass to the images.
    """
    images = [images] if isinstance(images, torch.Tensor) else list(images)

    def per_row_norm(total):
        grads = torch.autograd.grad(total, images, retain_graph=True, allow_unused=True)
        squares = [g.flatten(1).square().sum(dim=1) for g in grads if g is not None]
        return torch.stack(squares).sum(dim=0).sqrt() if squares else torch.zeros(len(images[0]), device=images[0].device)

    norm_recon = per_row_norm(recon_per_image.sum())
    norm_adv = per_row_norm(adv_per_image.sum())
    return (norm_recon / (norm_adv + eps)).detach()


def update_k(k, d_real_mean, d_fake_mean, rate: float = 0.001):
    """k <- clip(k - rate * (1 - (mean D(real) - mean D(fake))), 0, 1)  (paper sec. 3).

    With LSGAN targets 1 (real) and 0 (fake), a D that separates real from fake by less than 1 makes k
    shrink, so G leans on reconstruction until D catches up; a wider gap lets k grow back to 1.
    Python numbers give a float; tensors (any of the arguments) give a tensor, computed on their
    device without reading it back.
    """
    k = k - rate * (1 - (d_real_mean - d_fake_mean))
    return k.clamp(0, 1) if torch.is_tensor(k) else min(max(float(k), 0.0), 1.0)
