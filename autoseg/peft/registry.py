"""The PEFT registry: a method's name maps to its settings, its layer and its apply function.

Each method lives in one module of this package that defines a :class:`PeftConfig` subclass
(the method's own settings, paper defaults) and calls :func:`register_peft_method`. The
registry imports every module of the package the first time it is read, so adding a method
means adding one module; nothing else is edited.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from autoseg.errors import SettingsError


@dataclass
class PeftConfig:
    """Base of every method's settings; a subclass adds the method's fields and its name.

    Example:
        >>> peft_config({"method": "lora", "rank": 4}).alpha
        32.0

    """

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """``{"method": name, <setting>: value, ...}``, the form a config file holds."""
        return {"method": self.method, **dataclasses.asdict(self)}


ApplyFunction = Callable[[nn.Module, Any], None]


@dataclass(frozen=True)
class PeftMethod:
    """A registered method.

    Attributes:
        name: the value of ``peft.method``.
        config: the dataclass of the method's settings.
        layer: the adapter layer it inserts (None: it inserts none); adapter layers may
            report ``parameter_groups()`` and a ``balance_loss`` tensor.
        apply: ``apply(model, config)`` inserts the adapters into a frozen model, in place.
        position: where listings (errors, ``PEFT_METHODS``) show it; the paper's table order.

    """

    name: str
    config: type[PeftConfig]
    layer: type[nn.Module] | None
    apply: ApplyFunction
    position: int = 100

    @property
    def settings(self) -> tuple[str, ...]:
        """Names of the method's settings (``peft.<name>`` keys besides ``peft.method``)."""
        return tuple(f.name for f in dataclasses.fields(self.config))


_REGISTRY: dict[str, PeftMethod] = {}


def register_peft_method(
    name: str,
    config: type[PeftConfig],
    layer: type[nn.Module] | None,
    apply: ApplyFunction,
    position: int = 100,
) -> PeftMethod:
    """Register a method under ``name`` (its config class must say ``method = name``).

    Raises:
        ValueError: the name is taken by another method, or the config names another one.

    """
    if config.method != name:
        raise ValueError(f"{config.__name__}.method is {config.method!r}, registered as {name!r}")
    known = _REGISTRY.get(name)
    if known is not None and known.config is not config:
        raise ValueError(f"PEFT method {name!r} is already registered by {known.config.__name__}")
    _REGISTRY[name] = PeftMethod(name, config, layer, apply, position)
    return _REGISTRY[name]


@functools.cache
def _discover() -> None:
    """Import every module of this package once, so each method module registers itself."""
    for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def peft_methods() -> tuple[PeftMethod, ...]:
    """All registered methods in listing order."""
    _discover()
    return tuple(sorted(_REGISTRY.values(), key=lambda m: m.position))


def peft_method_names() -> tuple[str, ...]:
    """Names of the registered methods, the default (``conv_lora``) first."""
    return tuple(m.name for m in peft_methods())


def get_peft_method(name: str) -> PeftMethod:
    """The method registered as ``name``.

    Raises:
        SettingsError: no such method; the message lists the registered ones.

    """
    _discover()
    if name not in _REGISTRY:
        raise SettingsError(
            f"Hyperparameter 'peft.method' must be one of {list(peft_method_names())}, "
            f"got {name!r}."
        )
    return _REGISTRY[name]


def peft_config(values: Mapping[str, Any]) -> PeftConfig:
    """Build a method's config from ``{"method": name, <setting>: value, ...}``.

    Raises:
        SettingsError: an unknown method, or a setting the method does not have.

    """
    method = get_peft_method(values.get("method", ""))
    settings = {k: v for k, v in values.items() if k != "method"}
    foreign = sorted(set(settings) - set(method.settings))
    if foreign:
        raise SettingsError(not_a_setting_message(f"peft.{foreign[0]}", method))
    return method.config(**settings)


def not_a_setting_message(key: str, method: PeftMethod) -> str:
    """Why ``key`` is refused for ``method``, naming the keys the method has."""
    keys = ["peft.method", *(f"peft.{name}" for name in method.settings)]
    return (
        f"Hyperparameter {key!r} is not a setting of peft.method={method.name!r}; "
        f"its keys are {keys}."
    )


def switch_method(values: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The ``peft`` section for ``method``: its defaults, keeping the settings it shares.

    Example:
        >>> switch_method({"method": "conv_lora", "rank": 4, "num_experts": 8}, "lora")
        {'method': 'lora', 'rank': 4, 'alpha': 32.0}

    """
    defaults = get_peft_method(method).config().to_dict()
    shared = {key: values[key] for key in defaults if key in values and key != "method"}
    return {**defaults, **shared}


def without_other_methods_settings(values: Mapping[str, Any], default: str) -> dict[str, Any]:
    """Drop the settings of other methods that an older config file holds for every method.

    Older files wrote ``rank``, ``alpha``, ``num_experts`` and ``balance_weight`` whatever
    the method; the method ignored those it did not have. Unknown keys are kept (refused later).

    Example:
        >>> old = {"method": "lora", "rank": 4, "alpha": 16.0, "num_experts": 8}
        >>> without_other_methods_settings(old, "conv_lora")
        {'method': 'lora', 'rank': 4, 'alpha': 16.0}

    """
    method = get_peft_method(values.get("method", default))
    others = {name for m in peft_methods() for name in m.settings} - set(method.settings)
    return {key: value for key, value in values.items() if key not in others}


def is_setting_of_any_method(name: str) -> bool:
    """Whether some registered method has a setting called ``name``."""
    return any(name in m.settings for m in peft_methods())
