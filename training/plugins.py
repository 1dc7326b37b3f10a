"""Machinery every loss plug-in shares: its options declared as data, their checks, and a private random stream.

A plug-in is a `training.loss.Loss` subclass with a class attribute `options` (a PluginOptions).
Nothing here knows about click: train.py turns each PluginOption into a command-line option, and
the loss constructor resolves its keyword arguments through the same table, so every setting has
one default and one check wherever it comes from (the command line or a stored run configuration).
"""
import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

import dnnlib

BASELINE_LOSS = 'training.loss.StyleGAN2Loss'


class PluginConfigError(ValueError):
    """A plug-in setting is out of range or conflicts with another; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class PluginOption:
    """One setting of a plug-in, e.g. MixDL's distance weight `--mixdl-g` -> `lambda_G`.

    name:         train.py parameter name ('mixdl_g'); the flag is the same with dashes.
    kwarg:        the loss-constructor keyword it fills ('lambda_G').
    default:      value when not given; the run desc leaves it out.
    type:         float, int, str or bool.
    help:         --help text.
    tag:          run-desc prefix before a non-default value ('g' -> '-g0'); '' writes the value alone.
    minimum:      lowest allowed value (numbers), or None.
    minimum_open: True when `minimum` itself is not allowed (value > minimum).
    choices:      the allowed strings (type str), or None.
    """
    name: str
    kwarg: str
    default: Any
    type: type
    help: str
    tag: str
    minimum: Optional[float] = None
    minimum_open: bool = False
    choices: Optional[Tuple[str, ...]] = None

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('_', '-')

    def check(self, value):
        """`value` cast to `type`; raises PluginConfigError naming the option and the fix."""
        def fail(rule):
            raise PluginConfigError(f'{self.flag} ({self.kwarg}) must be {rule}, got {value!r}: '
                                    f'try {self.flag}={_desc_text(self.default)} (the default)')
        if self.type is bool:
            if value not in (True, False):  # also accepts 0 and 1
                fail('a boolean (0 or 1)')
            return bool(value)
        if self.type is str:
            if self.choices is not None and value not in self.choices:
                fail('one of ' + ', '.join(self.choices))
            return str(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail('a finite number')
        if self.type is int and int(value) != value:
            fail('a whole number')
        if self.minimum is not None and (value <= self.minimum if self.minimum_open else value < self.minimum):
            fail(('> ' if self.minimum_open else '>= ') + _desc_text(self.minimum))
        return self.type(value)


def _desc_text(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return f'{value:g}' if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class PluginOptions:
    """A plug-in's whole configuration surface: an on/off switch plus its settings.

    switch:      parameter name of the BOOL switch ('mixdl'); also the run-desc word ('-mixdl').
    switch_help: --help text of the switch.
    loss_class:  dotted name written to loss_kwargs['class_name'] when the switch is on.
    settings:    the PluginOption entries, in --help and run-desc order.
    conflicts:   {other switch: why the two cannot run together}; checked when both are on.
    renamed:     {keyword in older run configurations: current keyword}, accepted by `split`.
    """
    switch: str
    switch_help: str
    loss_class: str
    settings: Tuple[PluginOption, ...]
    conflicts: Dict[str, str] = dataclasses.field(default_factory=dict)
    renamed: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def switch_flag(self) -> str:
        return '--' + self.switch.replace('_', '-')

    def setting(self, name: str) -> PluginOption:
        for option in self.settings:
            if option.name == name:
                return option
        raise KeyError(f'{self.switch} has no setting {name!r}')

    def split(self, kwargs: Dict[str, Any]):
        """Loss-constructor kwargs -> (settings: every setting's kwarg, checked, defaults filled; the rest).

        Keywords listed in `renamed` are read under their current name.
        """
        kwargs = {self.renamed.get(key, key): value for key, value in kwargs.items()}
        settings = {}
        for option in self.settings:
            settings[option.kwarg] = option.check(kwargs.pop(option.kwarg, option.default))
        return settings, kwargs

    def configure(self, opts: Dict[str, Any], loss_kwargs: Dict[str, Any]) -> str:
        """Fill loss_kwargs from parsed train.py options and return the run-desc suffix.

        Switch off: loss_kwargs is left alone and '' is returned (default runs keep upstream's names);
        a setting changed from its default is an error, since it would silently do nothing.
        Switch on: class_name and every setting's kwarg are written; the suffix is '-<switch>' followed
        by '-<tag><value>' for each setting that differs from its default.
        Raises PluginConfigError for bad values and conflicts.
        """
        given = {option.name: opts.get(option.name, option.default) for option in self.settings}
        if not opts.get(self.switch, False):
            for option in self.settings:
                if given[option.name] != option.default:
                    raise PluginConfigError(f'{option.flag} only has an effect with {self.switch_flag}=1: '
                                            f'add {self.switch_flag}=1 or drop {option.flag}')
            return ''
        for other, reason in self.conflicts.items():
            if opts.get(other, False):
                other_flag = '--' + other.replace('_', '-')
                raise PluginConfigError(f'{self.switch_flag}=1 cannot be combined with {other_flag}=1: {reason}')
        claimed = loss_kwargs.get('class_name', BASELINE_LOSS)
        if claimed not in (BASELINE_LOSS, self.loss_class):
            raise PluginConfigError(f'{self.switch_flag}=1 cannot be combined with the loss plug-in already '
                                    f'enabled ({claimed}): enable one loss plug-in at a time')
        values = {option.kwarg: option.check(given[option.name]) for option in self.settings}
        loss_kwargs['class_name'] = self.loss_class
        loss_kwargs.update(values)
        suffix = '-' + self.switch
        for option in self.settings:
            value = values[option.kwarg]
            if value != option.default:
                suffix += f'-{option.tag}{_desc_text(value)}'
        return suffix


def load_plugins(dotted_names: Sequence[str]):
    """The loss classes named in `dotted_names`, each checked to declare `options` (a PluginOptions)."""
    classes = []
    for name in dotted_names:
        cls = dnnlib.util.get_obj_by_name(name)
        if not isinstance(getattr(cls, 'options', None), PluginOptions):
            raise TypeError(f'{name} is listed as a loss plug-in but has no `options` PluginOptions table')
        classes.append(cls)
    return classes

#----------------------------------------------------------------------------


class PrivateStream:
    """A plug-in's own random stream, so its draws leave torch's global RNG (and so the baseline's
    latents, noise and augmentations) exactly as in a run without the plug-in.

    Draws happen on the host (no device synchronisation); `device_generator` hands out a generator
    on the compute device, reseeded from this stream, for draws too large to copy over each step.
    The stream's state is a uint8 tensor, fit for training-state files read with weights_only=True.
    """

    def __init__(self, offset: int, seed: Optional[int] = None):
        # The loop seeds torch per process (seed * num_gpus + rank), so the default differs across GPUs.
        base = torch.initial_seed() + offset if seed is None else int(seed)
        self.generator = torch.Generator(device='cpu').manual_seed(base % (2 ** 63))
        self._device_generators = {}

    def draw_seed(self) -> int:
        return int(torch.randint(2 ** 62, [], generator=self.generator))

    def device_generator(self, device) -> torch.Generator:
        """A generator on `device`, freshly seeded from this stream (its own state need not be saved)."""
        device = torch.device(device)
        generator = self._device_generators.get(str(device))
        if generator is None:
            generator = self._device_generators[str(device)] = torch.Generator(device=device)
        return generator.manual_seed(self.draw_seed())

    @staticmethod
    def to_device(cpu_tensor: torch.Tensor, device) -> torch.Tensor:
        """Copy a host draw to the compute device without making the host wait for it."""
        device = torch.device(device)
        if device.type == 'cuda':
            cpu_tensor = cpu_tensor.pin_memory()
        return cpu_tensor.to(device, non_blocking=True)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state) -> None:
        self.generator.set_state(torch.as_tensor(state, dtype=torch.uint8))


class PrivateStreamState:
    """Mixin for a loss plug-in that draws from `self.stream` (a PrivateStream): its state rides in the
    loss's state_dict under `stream_state_key`, so a resumed run continues the same draws.

    List it before the loss base class (`class MyLoss(PrivateStreamState, StyleGAN2Loss)`).
    """

    stream_state_key: str = None

    def state_dict(self):
        state = super().state_dict()
        state[self.stream_state_key] = self.stream.get_state()
        return state

    def load_state_dict(self, state):
        state = dict(state)
        stream_state = state.pop(self.stream_state_key, None)
        super().load_state_dict(state)
        if stream_state is not None:
            self.stream.set_state(stream_state)
