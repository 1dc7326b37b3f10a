"""training/networks.py against recorded golden numbers (see tests/training/golden/make_networks_golden.py).

Each configuration is rebuilt from the same seed and loaded with the recorded weights; then every
recorded forward output, first-order gradient, R1 and path-length second-order gradient must agree.
"""

import os

import pytest
import torch

from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from tests.training.golden import make_networks_golden as golden

RTOL = 1e-5
# Absolute floor: this fraction of the largest magnitude in the same recorded quantity (all
# parameter gradients of one loss count as one quantity, as do all submodule outputs of one call).
# An entry that is a sum of terms cancelling to nearly zero carries rounding error of the size of
# those terms, not of its own size, so a purely relative test rejects harmless reorderings of
# float32 arithmetic there (merely running with two CPU threads instead of one moves such entries of
# the R1 gradients by 3e-4 relative). Measured that way, thread-count changes stay below 1e-6 of the
# quantity's scale everywhere, so 1e-5 of it still catches any real change.
ATOL_FRACTION = 1e-5


def _load(name):
    path = golden.golden_path(name)
    if not os.path.exists(path):
        pytest.fail(f'{path} is missing; run python -m tests.training.golden.make_networks_golden')
    return torch.load(path, weights_only=False)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _scale(value):
    return max((float(t.abs().max()) for t in _tensors(value) if t.numel()), default=0.0)


def _compare_outputs(got, want, name):
    """Compare two recorded output dicts; returns a list of mismatch descriptions."""
    problems = []
    if set(got) != set(want):
        problems.append(f'{name}: recorded quantities differ: {sorted(set(got) ^ set(want))}')
    for key in sorted(set(got) & set(want)):
        _compare(got[key], want[key], f'{name}.{key}', problems, ATOL_FRACTION * _scale(want[key]))
    return problems


def _compare(got, want, where, problems, atol):
    if isinstance(want, dict):
        if set(got) != set(want):
            problems.append(f'{where}: keys differ: extra {sorted(set(got) - set(want))}, '
                            f'missing {sorted(set(want) - set(got))}')
        for key in sorted(set(got) & set(want)):
            _compare(got[key], want[key], f'{where}.{key}', problems, atol)
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            problems.append(f'{where}: expected a sequence of {len(want)}, got {type(got).__name__}')
            return
        for index, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f'{where}[{index}]', problems, atol)
    elif want is None or got is None:
        if not (got is None and want is None):
            problems.append(f'{where}: expected {type(want).__name__}, got {type(got).__name__}')
    elif isinstance(want, torch.Tensor):
        if got.shape != want.shape or got.dtype != want.dtype:
            problems.append(f'{where}: {tuple(got.shape)} {got.dtype} != {tuple(want.shape)} {want.dtype}')
            return
        excess = (got - want).abs() - (atol + RTOL * want.abs())
        if want.numel() and float(excess.max()) > 0:
            worst = int(excess.flatten().argmax())
            problems.append(f'{where}: |diff| {float((got - want).abs().flatten()[worst]):.3g} at flat index {worst} '
                            f'(want {float(want.flatten()[worst]):.6g}, atol {atol:.3g})')
    elif got != want:
        problems.append(f'{where}: {got!r} != {want!r}')


def test_golden_files_are_versioned_small_and_match_the_script_configs():
    total = 0
    for name, config in golden.CONFIGS.items():
        data = _load(name)
        assert (data['format'], data['version'], data['name']) == (golden.FORMAT, golden.VERSION, name)
        assert data['config'] == config, f'{name}: the script configuration changed; regenerate it'
        total += os.path.getsize(golden.golden_path(name))
    assert total < 5e6


@pytest.mark.parametrize('name', sorted(golden.CONFIGS))
def test_seeded_construction_reproduces_initial_weights_in_order(name):
    # Same seed, same random draws in the same order, same registration order (named_parameters()
    # order is what optimiser state and pickles follow).
    want = _load(name)['init_state']
    got = golden.build(name).state_dict()
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize('name', sorted(golden.CONFIGS))
def test_outputs_and_gradients_match_golden_data(name):
    data = _load(name)
    got = golden.record(name, state=data['state'])
    problems = _compare_outputs(got['outputs'], data['outputs'], name)
    assert not problems, f'{len(problems)} mismatches:\n' + '\n'.join(problems[:40])


def test_comparison_catches_a_small_change():
    # The comparison itself must notice a 0.1 % change of a single kernel tap deep inside D.
    name = 'd_skip'
    data = _load(name)
    state = {k: v.clone() for k, v in data['state'].items()}
    state['b8.conv0.weight'][0, 0, 0, 0] *= 1 + 1e-3
    problems = _compare_outputs(golden.record(name, state=state)['outputs'], data['outputs'], name)
    assert any('logits' in p for p in problems)
