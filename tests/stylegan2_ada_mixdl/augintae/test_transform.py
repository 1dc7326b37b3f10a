"""T(x; rho): explicit-parameter augmentation whose parameter interpolation is the interpolated transformation."""
import math

import numpy as np
import pytest
import torch

from stylegan2_ada_mixdl.augintae import transform as T
from training import augment
from tests._shared import single_torch_thread  # noqa: F401  (autouse fixture)

R = 32
_COORD = torch.arange(R, dtype=torch.float32) - (R - 1) / 2
_YS, _XS = torch.meshgrid(_COORD, _COORD, indexing='ij')


def blob_image(x=8.0, y=0.0, channels=3):
    """A bright Gaussian blob at centred pixel position (x, y) on a dark background, in [-1, 1]."""
    blob = torch.exp(-((_XS - x) ** 2 + (_YS - y) ** 2) / 4) * 2 - 1
    return blob.expand(1, channels, R, R).clone()


def centroid(images):
    weight = (images[0].mean(dim=0) + 1).clamp(min=0)
    return float((weight * _XS).sum() / weight.sum()), float((weight * _YS).sum() / weight.sum())


def screen_angle(images):
    """Angle of the blob's centroid, counter-clockwise on screen (y points down), in degrees."""
    x, y = centroid(images)
    return math.degrees(math.atan2(-y, x))


def random_images(n=4, channels=3):
    return torch.rand([n, channels, R, R], generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_zero_parameters_are_the_identity():
    for channels in (1, 3):
        images = random_images(channels=channels)
        assert torch.equal(T.transform_images(images, torch.zeros([4, T.NUM_PARAMS])), images)


def test_interpolation_endpoints_are_the_endpoint_transforms():
    images = random_images()
    ranges = T.AugmentRanges()
    rho1 = T.sample_params(4, R, ranges, generator=torch.Generator().manual_seed(2))
    rho2 = T.sample_params(4, R, ranges, generator=torch.Generator().manual_seed(3))
    assert torch.equal(T.transform_images(images, T.interpolate(rho1, rho2, 1.0)), T.transform_images(images, rho1))
    assert torch.equal(T.transform_images(images, T.interpolate(rho1, rho2, 0.0)), T.transform_images(images, rho2))
    per_row = T.interpolate(rho1, rho2, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.equal(per_row[0], rho1[0]) and torch.equal(per_row[1], rho2[1])


def test_interpolated_rotation_is_the_rotation_by_the_interpolated_angle():
    # -5 and 10 degrees at alpha = 1/3 (alpha weighting the first): 1/3 * -5 + 2/3 * 10 = 5 degrees.
    rho = T.interpolate(T.make_params(1, rotate=-5.0), T.make_params(1, rotate=10.0), 1 / 3)
    assert float(T.param(rho, 'rotate')) == pytest.approx(5.0, abs=1e-5)
    expected = augment.turn2d(torch.tensor([math.radians(5.0)]), torch.zeros([1]))
    assert torch.allclose(T.geometric_matrix(rho), expected, atol=1e-6)
    image = blob_image()
    assert screen_angle(T.transform_images(image, rho)) == pytest.approx(5.0, abs=0.1)
    assert screen_angle(T.transform_images(image, T.make_params(1, rotate=10.0))) == pytest.approx(10.0, abs=0.1)
    # Interpolating the two images instead would leave two half-bright blobs, not one at 5 degrees.
    blended = (T.transform_images(image, T.make_params(1, rotate=-5.0)) + 2 * T.transform_images(image, T.make_params(1, rotate=10.0))) / 3
    assert float(blended.max()) < float(T.transform_images(image, rho).max()) - 0.1


def test_each_geometric_parameter_moves_the_content_as_documented():
    image = blob_image(x=6.0, y=2.0)
    x, y = centroid(T.transform_images(image, T.make_params(1, translate_x=3.0, translate_y=-2.0)))
    assert (x, y) == (pytest.approx(9.0, abs=0.05), pytest.approx(0.0, abs=0.05))
    x, y = centroid(T.transform_images(image, T.make_params(1, scale=0.25)))
    assert (x, y) == (pytest.approx(7.5, abs=0.05), pytest.approx(2.5, abs=0.05))
    # Horizontal shear by 10 degrees: a point 8 rows below the centre moves 8 * tan(10 deg) to the right.
    x, y = centroid(T.transform_images(blob_image(x=0.0, y=8.0), T.make_params(1, shear=10.0)))
    assert (x, y) == (pytest.approx(8 * math.tan(math.radians(10)), abs=0.05), pytest.approx(8.0, abs=0.05))


def test_colour_parameters():
    images = random_images(n=2)
    lifted = T.transform_images(images, T.make_params(2, brightness=0.2))
    assert torch.allclose((lifted + 1) / 2, (images + 1) / 2 * 1.2, atol=1e-5)
    assert torch.allclose(T.transform_images(images, T.make_params(2, contrast=-0.5)), images * 0.5, atol=1e-6)
    grey = images[:, :1].expand(-1, 3, -1, -1)
    for name in ('saturation', 'hue'):
        # Grey pixels lie on the axis that saturation scales from and hue turns about.
        assert torch.allclose(T.transform_images(grey, T.make_params(2, **{name: 0.3})), grey, atol=1e-5)
    assert torch.allclose(T.transform_images(images, T.make_params(2, hue=1.0)), images, atol=1e-5)
    desaturated = T.transform_images(images, T.make_params(2, saturation=-1 + 1e-7))
    assert float((desaturated - desaturated.mean(dim=1, keepdim=True)).abs().max()) < 1e-5
    # Interpolating colour parameters interpolates the colour transform's parameters, not the images.
    rho = T.interpolate(T.make_params(2, hue=0.1), T.make_params(2, hue=-0.05), 0.5)
    assert torch.allclose(T.transform_images(images, rho), T.transform_images(images, T.make_params(2, hue=0.025)), atol=1e-6)


def test_single_channel_images_ignore_colour():
    images = random_images(channels=1)
    assert torch.equal(T.transform_images(images, T.make_params(4, brightness=0.2, hue=0.1)), images)


def test_batched_call_equals_one_image_at_a_time():
    images = random_images()
    rho = T.sample_params(4, R, T.AugmentRanges(), generator=torch.Generator().manual_seed(4))
    rho[1] = 0  # an untouched row inside a warped batch
    batched = T.transform_images(images, rho)
    for i in range(4):
        assert torch.allclose(batched[i:i + 1], T.transform_images(images[i:i + 1], rho[i:i + 1]), atol=1e-4)
    assert torch.equal(batched[1], images[1])


def test_reflect_padding_keeps_a_flat_image_flat():
    flat = torch.full([3, 3, R, R], 0.7)
    rho = T.make_params(3, rotate=torch.tensor([10.0, -10.0, 3.0]), translate_x=torch.tensor([2.0, -2.0, 0.5]),
                        translate_y=torch.tensor([-2.0, 2.0, 0.5]), scale=torch.tensor([-0.2, 0.2, 0.0]))
    assert torch.allclose(T.transform_images(flat, rho), flat, atol=1e-5)
    # The ADA pipe shares the warp, so its borders are reflected too.
    pipe = augment.AugmentPipe(xfrac=1, rotate=1, scale=1)
    assert torch.allclose(pipe(flat), flat, atol=1e-5)


def test_gradient_reaches_the_images():
    images = random_images(n=2).requires_grad_(True)
    rho = T.sample_params(2, R, T.AugmentRanges(), generator=torch.Generator().manual_seed(5))
    T.transform_images(images, rho).square().sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0


def test_sampled_parameters_stay_in_range_and_scale_with_resolution():
    ranges = T.AugmentRanges()
    rho = T.sample_params(4000, 128, ranges, generator=torch.Generator().manual_seed(6))
    widths = torch.as_tensor(ranges.half_widths(128), dtype=torch.float32)
    assert bool((rho.abs() <= widths).all())
    assert bool((rho.abs().max(dim=0).values > 0.95 * widths).all())  # the whole range is used
    assert float(widths[T.PARAM_NAMES.index('translate_x')]) == 8.0  # the paper's 8 px at 128 px
    assert float(ranges.half_widths(32)[T.PARAM_NAMES.index('translate_x')]) == 2.0
    grey = T.default_ranges(1)
    assert (grey.rotate, grey.shear) == (20.0, 6.0)
    assert float(grey.half_widths(28)[1]) == pytest.approx(4.0)
    grey_rho = T.sample_params(100, 28, grey)
    assert bool((grey_rho[:, [T.PARAM_NAMES.index(n) for n in T.COLOUR]] == 0).all())
    # Same generator seed, same draws.
    again = T.sample_params(4000, 128, ranges, generator=torch.Generator().manual_seed(6))
    assert torch.equal(rho, again)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='scale'):
        T.AugmentRanges(scale=1.5)
    with pytest.raises(ValueError, match='rotate'):
        T.AugmentRanges(rotate=-1)
    with pytest.raises(ValueError, match='unknown augmentation parameters'):
        T.make_params(1, zoom=1.0)
    with pytest.raises(ValueError, match='rho'):
        T.transform_images(random_images(), torch.zeros([3, T.NUM_PARAMS]))
    with pytest.raises(ValueError, match='1 or 3'):
        T.transform_images(torch.zeros([1, 2, R, R]), torch.zeros([1, T.NUM_PARAMS]))
    assert np.allclose(T.AugmentRanges().half_widths(64)[:3], [10, 4, 4])
