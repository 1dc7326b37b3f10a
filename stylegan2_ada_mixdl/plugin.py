"""Machinery shared by the loss plug-ins: option tables -> click options, loss kwargs and run desc; private random streams."""
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import click
import torch

BASELINE_LOSS = 'training.loss.StyleGAN2Loss'


@dataclasses.dataclass(frozen=True)
class PluginOption:
    """One train.py setting of a plug-in, e.g. `--mixdl-g`.

    name:     click parameter name ('mixdl_g'); the flag is the same with dashes.
    kwarg:    the loss-constructor keyword it fills.
    default:  value when the flag is not given; also what the run desc leaves out.
    kind:     click parameter type (a FloatRange, IntRange, Choice, bool, ...).
    cast:     turns the parsed value into the kwarg's Python type (float, int, bool, str).
    help:     --help text.
    tag:      run-desc prefix written before a non-default value ('g' -> '-g0'); '' writes the value alone.
    """
    name: str
    kwarg: str
    default: Any
    kind: Any
    cast: Callable[[Any], Any]
    help: str
    tag: str

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('_', '-')

    def click_option(self) -> click.Option:
        extra = dict(metavar='BOOL') if self.kind is bool else {}
        return click.Option([self.flag], help=self.help, type=self.kind, default=self.default, show_default=True,
                            **extra)


def _desc_text(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return f'{value:g}' if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class PluginOptions:
    """A plug-in's whole command-line surface: an on/off switch plus its settings.

    switch:      parameter name of the BOOL switch ('mixdl'); also the run-desc word ('-mixdl').
    switch_help: --help text of the switch.
    loss_class:  dotted name written to loss_kwargs['class_name'] when the switch is on.
    settings:    the PluginOption entries, in --help and run-desc order.
    validate:    called with the loss kwargs of the settings; raises ValueError naming the problem and fix.
    conflicts:   {other switch: why the two cannot run together}; checked when both are on.
    """
    switch: str
    switch_help: str
    loss_class: str
    settings: Tuple[PluginOption, ...]
    validate: Optional[Callable[..., None]] = None
    conflicts: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def switch_flag(self) -> str:
        return '--' + self.switch.replace('_', '-')

    def setting(self, name: str) -> PluginOption:
        for option in self.settings:
            if option.name == name:
                return option
        raise KeyError(f'{self.switch} has no setting {name!r}')

    def cli_options(self):
        """click options for train.py: the switch first, then the settings."""
        switch = click.Option([self.switch_flag], help=self.switch_help, type=bool, default=False, show_default=True,
                              metavar='BOOL')
        return [switch] + [option.click_option() for option in self.settings]

    def configure(self, opts: Dict[str, Any], loss_kwargs: Dict[str, Any]) -> str:
        """Fill loss_kwargs from parsed train.py options and return the run-desc suffix.

        Switch off: loss_kwargs is left alone and '' is returned (default runs keep upstream's names);
        a setting changed from its default is an error, since it would silently do nothing.
        Switch on: class_name and every setting's kwarg are written; the suffix is '-<switch>' followed
        by '-<tag><value>' for each setting that differs from its default.
        """
        given = {option.name: opts.get(option.name, option.default) for option in self.settings}
        if not opts.get(self.switch, False):
            for option in self.settings:
                if given[option.name] != option.default:
                    raise click.UsageError(f'{option.flag} only has an effect with {self.switch_flag}=1: '
                                           f'add {self.switch_flag}=1 or drop {option.flag}')
            return ''
        for other, reason in self.conflicts.items():
            if opts.get(other, False):
                other_flag = '--' + other.replace('_', '-')
                raise click.UsageError(f'{self.switch_flag}=1 cannot be combined with {other_flag}=1: {reason}')
        claimed = loss_kwargs.get('class_name', BASELINE_LOSS)
        if claimed not in (BASELINE_LOSS, self.loss_class):
            raise click.UsageError(f'{self.switch_flag}=1 cannot be combined with the loss plug-in already enabled '
                                   f'({claimed}): enable one loss plug-in at a time')
        values = {option.kwarg: option.cast(given[option.name]) for option in self.settings}
        if self.validate is not None:
            try:
                self.validate(**values)
            except ValueError as error:
                raise click.UsageError(str(error)) from None
        loss_kwargs['class_name'] = self.loss_class
        loss_kwargs.update(values)
        suffix = '-' + self.switch
        for option in self.settings:
            value = values[option.kwarg]
            if value != option.default:
                suffix += f'-{option.tag}{_desc_text(value)}'
        return suffix


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
