"""Typed configuration: one dataclass per section, presets from YAML, flat dotted overrides.

A run is fully described by a :class:`Config`. Presets (``presets/*.yaml``) give the
starting values; users override single values with flat dotted keys such as
``{"peft.rank": 4, "optim.lr": 3e-4}``. Unknown keys are an error that names the close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoseg.errors import AutosegError, SettingsError
from autoseg.rules import check_fields, coerce, field_types, setting

if TYPE_CHECKING:
    from autoseg.peft.registry import PeftConfig


class UnknownHyperparameterError(AutosegError, KeyError):
    """A hyperparameter key that no config section has; the message names close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def _backbones() -> list[str]:
    from autoseg.models.backbones import BACKBONES

    return sorted(BACKBONES)


def _schedules() -> tuple[str, ...]:
    from autoseg.training.schedule import SCHEDULES

    return SCHEDULES


def _binary_losses() -> list[str]:
    from autoseg.training.losses import BINARY_LOSSES

    return list(BINARY_LOSSES)


ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
PRECISIONS += ("transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16")


@dataclass
class ModelConfig:
    """Which SAM to fine-tune.

    Attributes:
        backbone: ``vit_b``, ``vit_l``, ``vit_h``, ``lite`` (LiteMedSAM) or a tiny random test
            model (``vit_tiny``, ``lite_tiny``).
        checkpoint: path to the backbone's checkpoint file; ``None`` searches the cache.
        pretrained: start from the backbone's weights; ``False`` starts from the seeded
            random init and reads no file (with ``peft.method=full``: "SAM from scratch").
        in_channels: image bands the model takes; above 3, a learned 1x1 projection maps
            them to SAM's three input channels, starting as a pick of the first three.

    """

    backbone: str = setting("lite", choices=_backbones)
    checkpoint: str | None = None
    in_channels: int = setting(3, at_least=3)
    pretrained: bool = True


@dataclass
class OptimConfig:
    """Optimiser and schedule (``max_steps=-1``: no step limit).

    ``schedule="budget"`` (default) ends the rate's linear decay at the last step a time
    limit leaves, re-estimated as the fit goes; ``"epochs"`` always decays over the epoch and
    step limits. ``warmup_fraction`` of those steps ramp the rate up first.
    ``warm_start`` > 0 first trains the mask decoder alone on cached image embeddings (see
    :mod:`autoseg.training.warm_start`): for ``warm_start_epochs`` passes, and with a time
    limit within that share of it.
    """

    lr: float = setting(1e-4, above=0)
    weight_decay: float = setting(1e-4, at_least=0)
    max_epochs: int = setting(30, at_least=1)
    max_steps: int = setting(-1, at_least=1, also=(-1,))
    grad_clip: float = setting(1.0, above=0)
    patience: int = setting(10, at_least=0)
    schedule: str = setting("budget", choices=_schedules)
    warmup_fraction: float = setting(0.0, at_least=0, at_most=0.5)
    warm_start: float = setting(0.0, at_least=0, at_most=0.9)
    warm_start_epochs: int = setting(50, at_least=1)


@dataclass
class DataConfig:
    """Input size (a multiple of the backbone's stride) and train-time augmentation."""

    image_size: int = setting(256, at_least=1)
    bands: list | None = None  # 1-based TIFF bands, e.g. [3, 2, 1]; see _check_bands
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    # Train on random crop_size windows at native resolution (scaled by image_size /
    # crop_size), the scale tiled prediction works at; None: whole images. See README.
    crop_size: int | None = setting(None, at_least=16)


@dataclass
class LossConfig:
    """Task loss: ``structure`` or ``balanced_bce`` for binary problems."""

    binary: str = setting("structure", choices=_binary_losses)


@dataclass
class EnvConfig:
    """Hardware and loop settings; ``auto`` values are resolved by :mod:`autoseg.runtime`.

    Attributes:
        batch_size: images per forward pass.
        effective_batch_size: images per optimiser step (gradient accumulation fills the gap).
        num_workers: data-loading worker processes; -1 (or ``"auto"``): none on a CPU, up to
            4 on a GPU.
        precision: ``auto`` (bf16-mixed on GPUs that support it and on CPUs with native bf16,
            else 16-mixed on GPUs and fp32 on CPUs), or any Lightning precision string.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        num_threads: torch CPU threads; 0 (or ``"auto"``): the usable cores.
        eval_batch_size: images per forward pass in predict/evaluate.
        compile: run the image encoder through ``torch.compile``; ``None`` (or ``"auto"``):
            off, as measured on CPUs.
        prefix_cache: compute the encoder's frozen prefix once per distinct training input
            (:mod:`autoseg.models.prefix_cache`); ``None`` (or ``"auto"``): on for CPU fits
            where the prefix is frozen, as measured, off on GPUs.

    """

    batch_size: int = setting(2, at_least=1)
    effective_batch_size: int = setting(4, at_least=1)
    num_workers: int = setting(-1, at_least=0, also=(-1,))
    precision: str = setting("auto", choices=lambda: PRECISIONS)
    accelerator: str = setting("auto", choices=lambda: ACCELERATORS)
    num_threads: int = setting(0, at_least=0)
    eval_batch_size: int = setting(4, at_least=1)
    activation_checkpointing: bool = False
    checkpoint_every_n_steps: int = setting(10, at_least=1)
    num_gpus: int = setting(1, at_least=1)
    num_nodes: int = setting(1, at_least=1)
    strategy: str = "auto"
    compile: bool | None = None
    prefix_cache: bool | None = None


AUTO_VALUES: dict[str, Any] = {
    "env.num_workers": -1,
    "env.num_threads": 0,
    "env.compile": None,
    "env.prefix_cache": None,
}
"""Settings that also take the word ``"auto"``, and the value it stands for."""


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "env": EnvConfig,
}
"""The sections with fixed fields. The ``peft`` section's fields are those of the chosen
method's config (:mod:`autoseg.peft.registry`): ``peft.method`` picks the dataclass."""

DEFAULT_PEFT_METHOD = "conv_lora"


def _default_peft() -> PeftConfig:
    from autoseg.peft.registry import get_peft_method

    return get_peft_method(DEFAULT_PEFT_METHOD).config()


@dataclass
class Config:
    """The complete description of a run; saved inside every predictor folder.

    Every new ``Config`` checks each value's type and range (see :class:`Rule`).

    Example:
        >>> Config().with_overrides({"optim.lr": "3e-4"}).optim.lr
        0.0003

    """

    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=_default_peft)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the nested plain-data form (for YAML); ``peft`` starts with its method."""
        return {**dataclasses.asdict(self), "peft": self.peft.to_dict()}

    @classmethod
    def from_dict(cls, nested: dict[str, dict[str, Any]]) -> Config:
        """Build from the nested form written by :meth:`to_dict`, validating every key.

        Older files hold every method's ``peft`` settings; those of other methods are dropped.
        """
        from autoseg.peft.registry import without_other_methods_settings

        if not isinstance(nested, Mapping) or not all(
            isinstance(values, Mapping) for values in nested.values()
        ):
            sections = [spec.name for spec in dataclasses.fields(cls)]
            raise SettingsError(
                f"A config maps sections {sections} to their settings, got {nested!r:.200}"
            )
        if "peft" in nested:
            peft = without_other_methods_settings(nested["peft"], DEFAULT_PEFT_METHOD)
            nested = {**nested, "peft": peft}
        return cls().with_overrides(flatten(nested))

    def flat(self) -> dict[str, Any]:
        """Return ``{"section.key": value}`` for every setting."""
        return flatten(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Config:
        """Return a copy with dotted keys replaced.

        Raises:
            UnknownHyperparameterError: a key is unknown; the message lists the closest
                valid keys.
            SettingsError: a value has the wrong type or is out of range.

        """
        check_overrides(overrides)
        from autoseg.peft.registry import get_peft_method, peft_config, switch_method

        nested, given = self.to_dict(), dict(overrides or {})
        if "peft.method" in given:  # first: it decides which peft keys exist
            method = coerce(given.pop("peft.method"), str, "peft.method")
            nested["peft"] = switch_method(nested["peft"], method)
        kinds = {**SECTIONS, "peft": get_peft_method(nested["peft"]["method"]).config}
        valid = list(flatten(nested))
        for key, value in given.items():
            if key not in valid:
                _refuse_key(key, valid, nested["peft"]["method"])
            section, name = key.split(".", 1)
            if key in AUTO_VALUES and isinstance(value, str) and value.strip().lower() == "auto":
                value = AUTO_VALUES[key]
            nested[section][name] = coerce(value, field_types(kinds[section])[name], key)
        sections = {name: kind(**nested[name]) for name, kind in SECTIONS.items()}
        return Config(peft=peft_config(nested["peft"]), **sections)


def check_overrides(overrides: Any) -> None:
    """Refuse hyperparameters that are not a mapping (``None`` means none)."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise SettingsError(
            "hyperparameters must be a dict of dotted keys such as {'optim.lr': 3e-4}, "
            f"got {type(overrides).__name__} {overrides!r:.80}."
        )


def _refuse_key(key: str, valid: list[str], method: str) -> None:
    """Raise the error for a key the config does not have (another method's, or unknown)."""
    from autoseg.peft.registry import (
        get_peft_method,
        is_setting_of_any_method,
        not_a_setting_message,
    )

    section, _, name = str(key).partition(".")
    if section == "peft" and is_setting_of_any_method(name):
        raise SettingsError(not_a_setting_message(key, get_peft_method(method)))
    close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownHyperparameterError(f"Unknown hyperparameter {key!r}.{hint} Valid keys: {valid}")


def flatten(nested: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Turn ``{"a": {"b": 1}}`` into ``{"a.b": 1}``."""
    return {f"{section}.{k}": v for section, values in nested.items() for k, v in values.items()}


def check_config(config: Config) -> None:
    """Check every setting's type and range, and the image size against the backbone.

    Raises:
        SettingsError: the first setting out of range; the message names its dotted key,
            the allowed range and the value given.

    """
    for section in SECTIONS:
        check_fields(section, getattr(config, section))
    _check_peft(config)
    _check_image_size(config)
    _check_bands(config)


def _check_bands(config: Config) -> None:
    """``data.bands``: positive band numbers, one per model channel (or one band for RGB)."""
    bands, channels = config.data.bands, config.model.in_channels
    if bands is None:
        return
    whole = all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands)
    if not bands or not whole:
        raise SettingsError(
            f"Hyperparameter 'data.bands' must list band numbers >= 1 (1-based), got {bands!r}."
        )
    if len(bands) != channels and not (channels == 3 and len(bands) == 1):
        raise SettingsError(
            f"Hyperparameter 'data.bands' lists {len(bands)} band(s) {bands} but "
            f"model.in_channels={channels}; list exactly {channels} bands or change in_channels."
        )


def _check_peft(config: Config) -> None:
    from autoseg.peft.registry import PeftConfig, get_peft_method

    peft = config.peft
    if not isinstance(peft, PeftConfig) or type(peft) is not get_peft_method(peft.method).config:
        raise SettingsError(
            f"Config.peft must be a registered PEFT method's settings (e.g. "
            f"{type(_default_peft()).__name__}()), got {config.peft!r:.100}."
        )
    check_fields("peft", config.peft)


def _check_image_size(config: Config) -> None:
    from autoseg.models.backbones import pretrained_weights

    stride = pretrained_weights(config.model.backbone).size_multiple
    if config.data.image_size % stride:
        low = max(stride, config.data.image_size // stride * stride)
        raise SettingsError(
            f"Hyperparameter 'data.image_size' must be a positive multiple of {stride} for "
            f"model.backbone={config.model.backbone!r}, got {config.data.image_size} "
            f"(try {low} or {low + stride})."
        )
