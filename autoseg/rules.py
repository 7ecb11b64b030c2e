"""Declarative setting rules: a :class:`Rule` per dataclass field, checked field by field.

A config section declares each setting with :func:`setting` (its default and its allowed
range); :func:`check_fields` checks every field of a section instance against its annotated
type and its rule, and :func:`coerce` turns CLI strings into the annotated type.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Optim:
    ...     lr: float = setting(1e-4, above=0)
    >>> check_fields("optim", Optim(lr=0.0))
    Traceback (most recent call last):
    ...
    autoseg.errors.SettingsError: Hyperparameter 'optim.lr' must be > 0, got 0.0.

"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoseg.errors import SettingsError


@dataclass(frozen=True)
class Rule:
    """What one setting accepts besides its type (from the annotation).

    Attributes:
        above: the value must be greater than this.
        at_least: the value must be at least this.
        choices: the allowed values (a function, so heavy modules load only when checked).
        at_most: the value must be at most this.
        also: values allowed besides the range (e.g. ``-1`` = no limit).

    Example:
        >>> Rule(at_least=1, also=(-1,)).describe()
        '>= 1 (or -1)'

    """

    above: float | None = None
    at_least: float | None = None
    choices: Callable[[], Sequence[Any]] | None = None
    at_most: float | None = None
    also: tuple[Any, ...] = ()

    def allows(self, value: Any) -> bool:
        """Whether ``value`` (already of the right type) is in range."""
        if value in self.also:
            return True
        if self.choices is not None:
            return value in self.choices()
        if isinstance(value, float) and not math.isfinite(value):
            return False
        low_ok = self.at_least is None or value >= self.at_least
        high_ok = self.at_most is None or value <= self.at_most
        return low_ok and high_ok and (self.above is None or value > self.above)

    def describe(self) -> str:
        """The allowed range in words."""
        if self.choices is not None:
            text = f"one of {list(self.choices())}"
        else:
            text = f"> {self.above}" if self.above is not None else f">= {self.at_least}"
            text += f" and <= {self.at_most}" if self.at_most is not None else ""
        return text + (f" (or {', '.join(map(repr, self.also))})" if self.also else "")


def setting(default: Any, **rule: Any) -> Any:
    """A dataclass field with a :class:`Rule` that :func:`check_fields` checks."""
    return field(default=default, metadata={"rule": Rule(**rule)})


@functools.cache
def field_types(section: type) -> dict[str, Any]:
    """The evaluated annotations of a section dataclass."""
    return typing.get_type_hints(section)


def _kind(hint: Any) -> tuple[type, bool]:
    """``(type, None allowed)`` of an annotation such as ``int`` or ``str | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), type(None) in typing.get_args(hint)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert CLI strings (and ints for floats) to the setting's type, or refuse."""
    kind, optional = _kind(hint)
    if value is None:
        if optional:
            return None
        raise SettingsError(f"Hyperparameter {key!r} expects {kind.__name__}, got None.")
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            words = {"1": True, "true": True, "yes": True, "on": True}
            words |= {"0": False, "false": False, "no": False, "off": False}
            value = words.get(text, value)
        elif kind is list:
            value = _parse_list(text, value)
        else:
            with contextlib.suppress(ValueError):
                value = float(text) if kind is float else int(text)
    if kind is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is bool and value in (0, 1) and not isinstance(value, float):
        value = bool(value)
    if not _has_type(value, kind):
        raise SettingsError(f"Hyperparameter {key!r} expects {_type_word(kind)}, got {value!r}.")
    return value


def _parse_list(text: str, value: str) -> Any:
    """``"[3, 2, 1]"`` or ``"3,2,1"`` from the command line as a list of numbers."""
    items = text.strip("[]").split(",")
    try:
        return [int(item) if item.strip().lstrip("-").isdigit() else float(item) for item in items]
    except ValueError:
        return value  # not numbers: the type check names the key


def _has_type(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _type_word(kind: type) -> str:
    return {bool: "true/false", int: "an integer", float: "a number"}.get(kind, kind.__name__)


def check_fields(section: str, values: Any) -> None:
    """Check each field of a section instance against its annotated type and its rule.

    Raises:
        SettingsError: the first value of the wrong type or out of range, named by its
            dotted key ``section.field`` with the allowed range and the value given.

    """
    kinds = field_types(type(values))
    for spec in dataclasses.fields(values):
        key, value = f"{section}.{spec.name}", getattr(values, spec.name)
        allowed, optional = _kind(kinds[spec.name])
        if value is None and optional:
            continue
        if not _has_type(value, allowed) and not (allowed is float and _has_type(value, int)):
            raise SettingsError(
                f"Hyperparameter {key!r} expects {_type_word(allowed)}, got {value!r}."
            )
        rule = spec.metadata.get("rule")
        if rule is not None and not rule.allows(value):
            raise SettingsError(f"Hyperparameter {key!r} must be {rule.describe()}, got {value!r}.")
