"""Tests for torch_utils.misc: constants, shape asserts, sampler, copying by name, summary table."""

import numpy as np
import pytest
import torch

from torch_utils import misc


def test_constant_is_cached_per_key():
    a = misc.constant([1, 2, 3])
    assert a is misc.constant([1, 2, 3])
    assert a.dtype == torch.get_default_dtype() and a.device.type == 'cpu'
    assert a.tolist() == [1.0, 2.0, 3.0]
    assert misc.constant([1, 2, 3], dtype=torch.int64) is not a
    assert misc.constant([1, 2, 4]) is not a
    b = misc.constant(np.array([0.5, 1.5]), shape=[3, 2])
    assert b.shape == (3, 2) and b.is_contiguous()
    assert b.tolist() == [[0.5, 1.5]] * 3
    assert misc.constant(np.array([0.5, 1.5]), shape=(3, 2)) is b


def test_constant_from_inference_mode_is_usable_by_autograd():
    with torch.inference_mode():
        c = misc.constant(2.0, shape=[2])
    x = torch.ones(2, requires_grad=True)
    (x * c).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_nan_to_num():
    x = torch.tensor([float('nan'), float('inf'), -float('inf'), 1.0])
    out = misc.nan_to_num(x, nan=7.0)
    assert out[0] == 7.0 and out[1] == torch.finfo(x.dtype).max and out[2] == torch.finfo(x.dtype).min
    assert out[3] == 1.0


def test_assert_shape_checks_rank_and_sizes():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, None, 4])
    with pytest.raises(AssertionError, match='Wrong number of dimensions'):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match='Wrong size for dimension 1'):
        misc.assert_shape(x, [2, 5, 4])


def test_assert_shape_with_tensor_size():
    x = torch.zeros(2, 3)
    misc.assert_shape(x, [torch.tensor(2), 3])
    with pytest.raises(Exception, match='Wrong size for dimension 0'):
        misc.assert_shape(x, [torch.tensor(5), 3])


def test_suppress_tracer_warnings_hides_only_tracer_warnings():
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with misc.suppress_tracer_warnings():
            warnings.warn('trace', torch.jit.TracerWarning)
            warnings.warn('other', UserWarning)
    assert [str(w.message) for w in caught] == ['other']


def test_profiled_function_keeps_name_and_result():
    @misc.profiled_function
    def add_one(v):
        return v + 1
    assert add_one.__name__ == 'add_one'
    assert add_one(1) == 2


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_infinite_sampler_is_deterministic_and_covers_dataset():
    data = list(range(10))
    first = _take(iter(misc.InfiniteSampler(data, seed=3)), 40)
    again = _take(iter(misc.InfiniteSampler(data, seed=3)), 40)
    other = _take(iter(misc.InfiniteSampler(data, seed=4)), 40)
    assert first == again
    assert first != other
    assert set(first) == set(range(10))
    assert _take(iter(misc.InfiniteSampler(data, shuffle=False)), 12) == list(range(10)) + [0, 1]
    counts = np.bincount(_take(iter(misc.InfiniteSampler(data, seed=3)), 1000), minlength=10)
    assert counts.min() >= 60 and counts.max() <= 140  # every item keeps being visited


def test_infinite_sampler_splits_ranks():
    data = list(range(7))
    whole = _take(iter(misc.InfiniteSampler(data, seed=1)), 21)
    rank0 = _take(iter(misc.InfiniteSampler(data, rank=0, num_replicas=3, seed=1)), 7)
    rank2 = _take(iter(misc.InfiniteSampler(data, rank=2, num_replicas=3, seed=1)), 7)
    assert rank0 == whole[0::3]
    assert rank2 == whole[2::3]
    with pytest.raises(ValueError, match='rank'):
        misc.InfiniteSampler(data, rank=3, num_replicas=3)


def test_infinite_sampler_matches_naive_window_shuffle():
    n, window_size, seed = 9, 0.5, 5
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    rng.shuffle(order)
    window = int(np.rint(n * window_size))
    expected = []
    for step in range(30):
        i = step % n
        expected.append(int(order[i]))
        j = (i - rng.randint(window)) % n
        order[[i, j]] = order[[j, i]]
    assert _take(iter(misc.InfiniteSampler(list(range(n)), seed=seed, window_size=window_size)), 30) == expected


class _Tiny(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = torch.nn.Linear(width, 2)
        self.register_buffer('stat', torch.zeros(width))


def test_params_and_buffers_order():
    net = _Tiny(3)
    assert [n for n, _ in misc.named_params_and_buffers(net)] == ['fc.weight', 'fc.bias', 'stat']
    assert len(misc.params_and_buffers(net)) == 3


def test_copy_params_and_buffers_by_name():
    src, dst = _Tiny(3), _Tiny(3)
    src.stat.fill_(4.0)
    dst.fc.weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)
    assert torch.equal(dst.fc.weight, src.fc.weight) and torch.equal(dst.stat, src.stat)
    assert dst.fc.weight.requires_grad is False and dst.fc.bias.requires_grad is True


def test_copy_params_and_buffers_require_all():
    src = torch.nn.Module()
    src.fc = torch.nn.Linear(3, 2)
    with pytest.raises(AssertionError, match='stat'):
        misc.copy_params_and_buffers(src, _Tiny(3), require_all=True)
    misc.copy_params_and_buffers(src, _Tiny(3))  # without require_all a missing name is fine


def test_copy_params_and_buffers_shape_mismatch_message():
    src, dst = _Tiny(4), _Tiny(3)
    before = dst.fc.bias.detach().clone()
    with pytest.raises(RuntimeError) as info:
        misc.copy_params_and_buffers(src, dst)
    message = str(info.value)
    assert "'fc.weight'" in message and '[2, 4]' in message and '[2, 3]' in message
    assert '1 more' in message and '--cfg' in message and 'resolution' in message
    assert torch.equal(dst.fc.bias, before)  # nothing copied on failure


def test_ddp_sync_plain_module_is_noop():
    net = _Tiny(2)
    with misc.ddp_sync(net, sync=False):
        pass


def test_print_module_summary(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    out = misc.print_module_summary(net, [torch.zeros(5, 4)])
    assert out.shape == (5, 2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines[0].split() == ['Sequential', 'Parameters', 'Buffers', 'Output', 'shape', 'Datatype']
    assert lines[2].split() == ['0', '15', '-', '[5,', '3]', 'float32']
    assert lines[4].split() == ['2', '8', '-', '[5,', '2]', 'float32']
    assert lines[-1].split() == ['Total', '23', '0']


def test_print_module_summary_multiple_outputs_show_their_own_shapes(capsys):
    class Split(torch.nn.Module):
        def forward(self, x):
            return x[:, :1], x
    misc.print_module_summary(Split(), [torch.zeros(2, 3)])
    text = capsys.readouterr().out
    assert '[2, 1]' in text and '<top-level>:1' in text and '[2, 3]' in text
