"""Tests for the shared plug-in machinery: private random streams and their place in the loss state."""
import torch

from stylegan2_ada_mixdl.plugin import PrivateStream, PrivateStreamState


class _Base:
    def __init__(self):
        self.pl_mean = torch.tensor(0.5)

    def state_dict(self):
        return {'pl_mean': self.pl_mean.clone()}

    def load_state_dict(self, state):
        assert set(state) == {'pl_mean'}, f'the base saw keys it does not own: {sorted(state)}'
        self.pl_mean = state['pl_mean'].clone()


class _Plugin(PrivateStreamState, _Base):
    stream_state_key = 'toy_rng'

    def __init__(self, seed):
        super().__init__()
        self.stream = PrivateStream(offset=0, seed=seed)


def test_stream_does_not_touch_the_global_rng_and_is_reproducible():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    first = [PrivateStream(offset=0, seed=7).draw_seed() for _ in range(2)]
    assert torch.equal(torch.rand(4), expected)
    assert first[0] == first[1]
    assert PrivateStream(offset=0, seed=8).draw_seed() != first[0]


def test_stream_state_rides_in_the_loss_state_and_resumes_the_same_draws():
    source = _Plugin(seed=1)
    source.stream.draw_seed()
    source.pl_mean = torch.tensor(2.0)
    state = source.state_dict()
    assert set(state) == {'pl_mean', 'toy_rng'} and state['toy_rng'].dtype == torch.uint8
    upcoming = [source.stream.draw_seed() for _ in range(3)]

    resumed = _Plugin(seed=99)
    resumed.load_state_dict(state)
    assert [resumed.stream.draw_seed() for _ in range(3)] == upcoming
    assert resumed.pl_mean.item() == 2.0
    assert set(state) == {'pl_mean', 'toy_rng'}, 'load_state_dict must not consume the caller\'s dict'


def test_state_without_a_stream_entry_keeps_the_fresh_stream():
    plugin = _Plugin(seed=5)
    fresh = _Plugin(seed=5).stream.draw_seed()
    plugin.load_state_dict({'pl_mean': torch.tensor(1.0)})
    assert plugin.stream.draw_seed() == fresh
