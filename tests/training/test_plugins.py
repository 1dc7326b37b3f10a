"""The generic plug-in machinery in training/plugins.py: private random streams and option tables."""
import pytest
import torch

from training.plugins import (PluginConfigError, PluginOption, PluginOptions, PrivateStream, PrivateStreamState,
                              load_plugins)


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

#----------------------------------------------------------------------------
# Option tables.

TOY = PluginOptions(
    switch='toy', switch_help='Enable the toy plug-in', loss_class='some.module.ToyLoss',
    settings=(
        PluginOption(name='toy_weight', kwarg='weight', default=1.0, type=float, minimum=0, tag='w', help='weight'),
        PluginOption(name='toy_rate', kwarg='rate', default=0.5, type=float, minimum=0, minimum_open=True, tag='r',
                     help='rate'),
        PluginOption(name='toy_steps', kwarg='steps', default=2, type=int, minimum=1, tag='s', help='steps'),
        PluginOption(name='toy_kind', kwarg='kind', default='a', type=str, choices=('a', 'b'), tag='', help='kind'),
        PluginOption(name='toy_flag', kwarg='flag', default=True, type=bool, tag='f', help='flag'),
    ),
    conflicts={'other': 'they fight'},
    renamed={'toy_weight': 'weight'},
)


@pytest.mark.parametrize('kwargs,match', [
    (dict(weight=-1), r'--toy-weight \(weight\) must be >= 0, got -1: try --toy-weight=1 \(the default\)'),
    (dict(rate=0), r'--toy-rate \(rate\) must be > 0'),
    (dict(rate=float('nan')), 'must be a finite number'),
    (dict(rate=float('inf')), 'must be a finite number'),
    (dict(steps=2.5), 'must be a whole number'),
    (dict(steps=0), 'must be >= 1'),
    (dict(kind='c'), 'must be one of a, b'),
    (dict(flag='yes'), 'must be a boolean'),
])
def test_each_setting_has_one_check_naming_the_option_and_fix(kwargs, match):
    with pytest.raises(PluginConfigError, match=match):
        TOY.split(kwargs)


def test_split_fills_defaults_casts_reads_renamed_keywords_and_passes_the_rest_on():
    settings, rest = TOY.split({'toy_weight': 3, 'steps': 4.0, 'flag': 0, 'r1_gamma': 10})
    assert settings == {'weight': 3.0, 'rate': 0.5, 'steps': 4, 'kind': 'a', 'flag': False}
    assert type(settings['weight']) is float and type(settings['steps']) is int
    assert rest == {'r1_gamma': 10}


def test_configure_writes_kwargs_and_desc_only_when_switched_on():
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss'}
    assert TOY.configure({'toy': False, 'toy_weight': 1.0}, loss_kwargs) == ''
    assert loss_kwargs == {'class_name': 'training.loss.StyleGAN2Loss'}
    assert TOY.configure({'toy': True, 'toy_weight': 0.0, 'toy_kind': 'b', 'toy_flag': False}, loss_kwargs) == \
        '-toy-w0-b-f0'
    assert loss_kwargs == {'class_name': 'some.module.ToyLoss', 'weight': 0.0, 'rate': 0.5, 'steps': 2, 'kind': 'b',
                           'flag': False}


@pytest.mark.parametrize('opts,loss_kwargs,match', [
    ({'toy_steps': 3}, {}, '--toy-steps only has an effect with --toy=1: add --toy=1 or drop --toy-steps'),
    ({'toy': True, 'other': True}, {}, '--toy=1 cannot be combined with --other=1: they fight'),
    ({'toy': True}, {'class_name': 'x.Other'}, r'already enabled \(x.Other\): enable one loss plug-in at a time'),
])
def test_configure_errors(opts, loss_kwargs, match):
    with pytest.raises(PluginConfigError, match=match):
        TOY.configure(opts, loss_kwargs)


def test_registered_plugins_load_and_declare_their_tables():
    import stylegan2_ada_mixdl
    classes = load_plugins(stylegan2_ada_mixdl.LOSS_PLUGINS)
    assert [cls.options.switch for cls in classes] == ['mixdl', 'adaptivemix', 'augintae']
    assert [cls.options.loss_class for cls in classes] == stylegan2_ada_mixdl.LOSS_PLUGINS
    with pytest.raises(TypeError, match='has no `options` PluginOptions table'):
        load_plugins(['training.loss.StyleGAN2Loss'])


def test_training_does_not_import_the_plugin_package():
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[2] / 'training'
    for path in root.glob('*.py'):
        assert not re.search(r'^\s*(from|import)\s+stylegan2_ada_mixdl', path.read_text(), re.M), path.name
