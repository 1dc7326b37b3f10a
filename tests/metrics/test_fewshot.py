"""Tests for the few-shot metrics: smoothness on step vs linear generators, mode counting, diversity."""

import numpy as np
import torch

from metrics import fewshot, lpips, metric_main

from .standins import MemorizingGenerator, ToyDataset, ToyGenerator, toy_dataset_kwargs


def _w_pair(G, value0, value1):
    w0 = torch.full([1, 3, G.w_dim], float(value0))
    w1 = torch.full([1, 3, G.w_dim], float(value1))
    return w0, w1


def test_subintervals_of_a_step_generator_have_a_large_std():
    G = ToyGenerator(kind='step').eval()
    w0, w1 = _w_pair(G, -1, 1)   # the jump at w[0] = 0 sits in the middle of the path
    steps, ends = fewshot.subinterval_distances(G, lpips.PixelEmbedder(), w0, w1, num_steps=10)
    mean, std, end = fewshot.smoothness_summary(steps.numpy(), ends.numpy())
    # One sub-interval carries the whole (1.6)^2 jump, the other nine nothing.
    np.testing.assert_allclose(steps[0].numpy(), [0] * 5 + [1.6 ** 2] + [0] * 4, atol=1e-5)
    assert abs(end - 1.6 ** 2) < 1e-5 and abs(mean - 0.256) < 1e-5
    assert abs(std - 0.768) < 1e-4                # sqrt(mean(x^2) - mean^2) of that row


def test_subintervals_of_a_linear_generator_are_equal():
    torch.manual_seed(0)
    G = ToyGenerator(kind='linear').eval()
    w0, w1 = torch.randn([2, 3, G.w_dim]), torch.randn([2, 3, G.w_dim])
    with torch.no_grad():
        steps, ends = fewshot.subinterval_distances(G, lpips.PixelEmbedder(), w0, w1, num_steps=10)
    mean, std, end = fewshot.smoothness_summary(steps.numpy(), ends.numpy())
    # Squared distance of a linear map: each tenth of the path gives 1/100 of the end-to-end value.
    np.testing.assert_allclose(steps.numpy(), (ends / 100).unsqueeze(1).expand_as(steps).numpy(), rtol=1e-3)
    assert std < 1e-3 * mean


def _run(metric, G, **kw):
    return metric_main.calc_metric(metric, G=G, dataset_kwargs=toy_dataset_kwargs(), device=torch.device('cpu'),
                                   num_workers=0, **kw)


def test_smoothness_metric_separates_step_and_linear(metric_env):
    step = _run('pix_smooth1k', ToyGenerator(kind='step'), item_cap=16).results
    linear = _run('pix_smooth1k', ToyGenerator(kind='linear'), item_cap=16).results
    assert step.pix_smooth1k_std > 2 * step.pix_smooth1k_mean > 0   # a crossing path: std = 3 x mean
    assert linear.pix_smooth1k_std < 0.01 * linear.pix_smooth1k_mean


def test_count_distinct_nearest_on_hand_made_points():
    real = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    gen = torch.tensor([[1.0, 0.5], [0.2, 0.1], [9.0, 1.0], [8.0, 2.0], [11.0, 0.0]])
    assert fewshot.count_distinct_nearest(gen, real) == 2      # only (0,0) and (10,0) are anybody's nearest
    assert fewshot.count_distinct_nearest(real, real) == 4


def test_modes_of_a_memorizing_generator_is_number_of_real_images(metric_env):
    G = MemorizingGenerator(ToyDataset(count=12).images)
    result = _run('pix_modes500', G, item_cap=24)
    assert result.results.pix_modes500 == 12
    assert result.details['num_real'] == 12 and result.details['distance'] == 'pixel_mse'


def test_diversity_of_a_constant_generator_is_zero(metric_env):
    G = ToyGenerator(kind='step')
    with torch.no_grad():
        G.mapping.fc.weight.zero_()
        G.mapping.fc.bias.fill_(1)
    assert _run('pix_div1k', G, item_cap=8).results.pix_div1k == 0
    assert _run('pix_div1k', ToyGenerator(kind='smooth'), item_cap=8).results.pix_div1k > 0.01


def test_lpips_metrics_report_their_distance(metric_env):
    result = _run('lpips_div1k', ToyGenerator(), item_cap=4)
    assert result.details['distance'] == 'lpips_vgg16 (NVIDIA vgg16.pt)' and result.results.lpips_div1k > 0
