"""Typed configuration: one dataclass per section, presets from YAML, flat dotted overrides.

A run is fully described by a :class:`Config`. Presets (``presets/*.yaml``) give the
starting values; users override single values with flat dotted keys such as
``{"peft.rank": 4, "optim.lr": 3e-4}``. Unknown keys are an error that names the close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoseg.errors import AutosegError

PRESET_DIR = Path(importlib.util.find_spec("autoseg.presets").submodule_search_locations[0])
"""The preset YAML files (``presets/`` in the repository, ``autoseg/presets`` once installed)."""


class UnknownHyperparameterError(AutosegError, KeyError):
    """A hyperparameter key that no config section has; the message names close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ModelConfig:
    """Which SAM to fine-tune.

    Attributes:
        backbone: ``vit_b``, ``vit_l``, ``vit_h``, ``lite`` (LiteMedSAM) or a tiny random test
            model (``vit_tiny``, ``lite_tiny``).
        checkpoint: path to the backbone's checkpoint file; ``None`` searches the cache.

    """

    backbone: str = "lite"
    checkpoint: str | None = None


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning method and its sizes (Conv-LoRA paper defaults)."""

    method: str = "conv_lora"
    rank: int = 3
    alpha: float = 32.0
    num_experts: int = 8
    balance_weight: float = 0.01


@dataclass
class OptimConfig:
    """Optimiser and schedule."""

    lr: float = 1e-4
    weight_decay: float = 1e-4
    max_epochs: int = 30
    max_steps: int = -1
    grad_clip: float = 1.0
    patience: int = 10


@dataclass
class DataConfig:
    """Input size and train-time augmentation."""

    image_size: int = 256
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False


@dataclass
class LossConfig:
    """Task loss: ``structure`` or ``balanced_bce`` for binary problems."""

    binary: str = "structure"


@dataclass
class EnvConfig:
    """Hardware and loop settings.

    Attributes:
        batch_size: images per forward pass.
        effective_batch_size: images per optimiser step (gradient accumulation fills the gap).
        num_workers: data-loading worker processes.
        precision: ``auto`` (bf16-mixed on GPUs that support it, else fp32), or any Lightning
            precision string.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        num_threads: torch CPU threads; 0 = all cores.
        eval_batch_size: images per forward pass in predict/evaluate.

    """

    batch_size: int = 2
    effective_batch_size: int = 4
    num_workers: int = 2
    precision: str = "auto"
    accelerator: str = "auto"
    num_threads: int = 0
    eval_batch_size: int = 4
    activation_checkpointing: bool = False
    checkpoint_every_n_steps: int = 10
    num_gpus: int = 1
    num_nodes: int = 1
    strategy: str = "auto"


@dataclass
class Config:
    """The complete description of a run; saved inside every predictor folder."""

    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the nested plain-data form (for YAML)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, nested: dict[str, dict[str, Any]]) -> Config:
        """Build from the nested form written by :meth:`to_dict`, validating every key."""
        return cls().with_overrides(flatten(nested))

    def flat(self) -> dict[str, Any]:
        """Return ``{"section.key": value}`` for every setting."""
        return flatten(self.to_dict())

    def with_overrides(self, overrides: dict[str, Any] | None) -> Config:
        """Return a copy with dotted keys replaced.

        Raises:
            UnknownHyperparameterError: a key is unknown; the message lists the closest
                valid keys.

        """
        nested = self.to_dict()
        valid = list(flatten(nested))
        for key, value in (overrides or {}).items():
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise UnknownHyperparameterError(
                    f"Unknown hyperparameter {key!r}.{hint} Valid keys: {valid}"
                )
            section, name = key.split(".", 1)
            nested[section][name] = _coerce(value, nested[section][name], key)
        return Config(
            model=ModelConfig(**nested["model"]),
            peft=PeftConfig(**nested["peft"]),
            optim=OptimConfig(**nested["optim"]),
            data=DataConfig(**nested["data"]),
            loss=LossConfig(**nested["loss"]),
            env=EnvConfig(**nested["env"]),
        )


def flatten(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Turn ``{"a": {"b": 1}}`` into ``{"a.b": 1}``."""
    return {f"{section}.{k}": v for section, values in nested.items() for k, v in values.items()}


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Convert CLI strings and ints to the type of the default value."""
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"Hyperparameter {key!r} expects true/false, got {value!r}.")
        return bool(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Hyperparameter {key!r} expects {kind.__name__}, got {value!r}."
        ) from None


def available_presets() -> list[str]:
    """Names of the preset YAML files shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Config:
    """Load a named preset.

    Raises:
        ValueError: no preset of that name; the message lists the available ones.

    """
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"Unknown preset {name!r}. Available presets: {available_presets()}")
    with path.open() as f:
        values = yaml.safe_load(f) or {}
    return Config().with_overrides(values.get("hyperparameters", {}))


# (minimum total GPU memory in GiB, preset) from largest to smallest; SPEC section 6.
GPU_PRESETS: tuple[tuple[float, str], ...] = (
    (40.0, "gpu_vit_h"),
    (20.0, "gpu_vit_l"),
    (8.0, "gpu_vit_b"),
    (0.0, "gpu_vit_b_small"),
)


def preset_for_hardware(gpu_memory_gib: float | None) -> str:
    """Name the preset for a machine: ``None`` = no GPU (CPU preset).

    Example:
        >>> preset_for_hardware(80.0), preset_for_hardware(None)
        ('gpu_vit_h', 'cpu_lite')

    """
    if gpu_memory_gib is None:
        return "cpu_lite"
    return next(name for minimum, name in GPU_PRESETS if gpu_memory_gib >= minimum)


def detect_gpu_memory_gib() -> float | None:
    """Total memory of the first CUDA GPU in GiB, or ``None`` without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def resolve_config(presets: str = "auto", *overrides: dict[str, Any] | None) -> tuple[Config, str]:
    """Build the run's config: preset (``auto`` = by hardware), then each override in turn."""
    name = preset_for_hardware(detect_gpu_memory_gib()) if presets == "auto" else presets
    config = load_preset(name)
    for extra in overrides:
        config = config.with_overrides(extra)
    return config, name
