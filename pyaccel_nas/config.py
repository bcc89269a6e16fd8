"""Run configurations: frozen dataclasses with their presets declared once, and command-line flags made from
their fields.

A configuration subclasses :class:`RunConfig`, lists its presets in ``PRESETS`` (name -> the fields that
differ from the defaults) and marks the fields a user may set from the command line with
``option("help text")``. :meth:`RunConfig.add_arguments` makes one flag per marked field (``--data-root``
for ``data_root``), typed from the field's annotation; :meth:`RunConfig.from_arguments` builds the preset
with the flags given on top. A flag's default is None ("keep the preset's value"), so the preset is the one
place a default lives, and ``--help`` shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection
from typing import Any, ClassVar, TypeVar

from pyaccel_nas.validation import shorten

Config = TypeVar("Config", bound="RunConfig")


def option(help: str, default: Any = dataclasses.MISSING, *, choices: Collection[str] | None = None,
           parse: Callable[[str], Any] | None = None, **field_kwargs) -> Any:
    """A dataclass field that is also a command-line flag, with its ``--help`` text; ``choices`` restrict the
    flag's values, ``parse`` replaces the function its text is parsed with (of each item, for a tuple), e.g.
    :func:`positive_float` to refuse a bad value before anything runs."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if parse is not None:
        metadata["parse"] = parse
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Base of the configurations of runs; see the module's docstring."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls: type[Config], name: str, **overrides) -> Config:
        """The preset ``name`` with ``overrides`` on top (ValueError for an unknown preset or field)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(cls.PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @classmethod
    def option_names(cls) -> list[str]:
        """The fields that are command-line flags, in declaration order."""
        return [f.name for f in dataclasses.fields(cls) if "help" in f.metadata]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, default_preset: str | None,
                      only: Collection[str] | None = None) -> None:
        """``--preset`` (none if ``default_preset`` is None) and one flag per ``option`` field (of those in
        ``only``, if given: a command whose flags another configuration already made)."""
        if default_preset is not None:
            parser.add_argument("--preset", choices=list(cls.PRESETS), default=default_preset,
                                help=f"settings to start from (default: {default_preset}); the flags below change "
                                     f"them")
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if "help" not in field.metadata or (only is not None and field.name not in only):
                continue
            kind, parse = _argument_type(hints[field.name], field.metadata.get("parse"))
            shown = _defaults_text(cls, field.name)
            text = f"{field.metadata['help']} ({shown})" if shown else field.metadata["help"]
            flag = f"--{field.name.replace('_', '-')}"
            if kind is bool:
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif "choices" in field.metadata:
                parser.add_argument(flag, type=parse, choices=field.metadata["choices"], default=None, help=text)
            else:
                parser.add_argument(flag, type=parse, default=None, metavar=field.name.upper(), help=text)

    @classmethod
    def from_arguments(cls: type[Config], args: argparse.Namespace, **overrides) -> Config:
        """The configuration the parsed flags describe: their preset, with every flag given on top, and
        ``overrides`` (settings the command takes from flags of its own) on top of those."""
        given = {name: getattr(args, name) for name in cls.option_names() if getattr(args, name, None) is not None}
        return cls.preset(args.preset, **{**given, **overrides})


def finite_float(text: str) -> float:
    """An argparse type (and the one of float fields' flags): a finite number. NaN would pass any range
    check made later (it compares false with everything), inf any lower bound."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {shorten(text)!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _argument_type(annotation, parse=None) -> tuple[type, Any]:
    """The scalar type of a field (``X | None`` -> X) and the function argparse parses its text with
    (``parse`` if given); tuples are comma-separated lists."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        parse = parse or (finite_float if item is float else item)
        return tuple, lambda text: tuple(parse(part.strip()) for part in text.split(",") if part.strip())
    return annotation, parse or (finite_float if annotation is float else annotation)


def _defaults_text(cls: type[RunConfig], name: str) -> str:
    """What each preset sets a field to, e.g. "smoke: 4, cpu: 100, paper: 1000"; "" if always None or empty
    (the help text says what that means)."""
    def shown(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else value

    default = {f.name: f for f in dataclasses.fields(cls)}[name].default
    values = {preset: overrides.get(name, default) for preset, overrides in cls.PRESETS.items()}
    if len({repr(v) for v in values.values()}) == 1:
        return "" if default is None or default == () else f"default: {shown(default)}"
    return ", ".join(f"{preset}: {shown(value)}" for preset, value in values.items())
