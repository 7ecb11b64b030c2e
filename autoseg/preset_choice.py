"""Presets: the YAML starting points of a run, and the one chosen for the hardware."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from autoseg.config import Config, check_overrides
from autoseg.errors import SettingsError

PRESET_DIR = Path(importlib.util.find_spec("autoseg.presets").submodule_search_locations[0])
"""The preset YAML files (``presets/`` in the repository, ``autoseg/presets`` once installed)."""


def available_presets() -> list[str]:
    """Names of the preset YAML files shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Config:
    """Load a named preset.

    Raises:
        SettingsError: no preset of that name; the message lists the available ones.

    """
    if name not in available_presets():
        raise SettingsError(
            f"Unknown preset presets={name!r}. Use 'auto' (chosen by hardware) or one of "
            f"{available_presets()}."
        )
    path = PRESET_DIR / f"{name}.yaml"
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
    """Build the run's config: the preset (``auto`` = by hardware) with the overrides.

    The overrides merge into one (a later dict's key wins) before they apply, so they obey
    the rules of a single dict: a ``peft.*`` setting the final ``peft.method`` lacks is an
    error, wherever the method was switched, and one it has is kept.

    Raises:
        SettingsError: an override is not a dict, or a value or key is refused.

    Example:
        >>> config, _ = resolve_config("cpu_lite", {"peft.num_experts": 8}, {"peft.rank": 4})
        >>> config.peft.num_experts, config.peft.rank
        (8, 4)

    """
    name = preset_for_hardware(detect_gpu_memory_gib()) if presets == "auto" else presets
    merged: dict[str, Any] = {}
    for extra in overrides:
        check_overrides(extra)
        merged.update(extra or {})
    return load_preset(name).with_overrides(merged), name
