"""Preset choice by hardware (mocked GPU memory), overrides, and the small-GPU settings."""

from __future__ import annotations

import pytest

import autoseg.runtime as runtime_module
from autoseg import preset_choice as config_module
from autoseg.preset_choice import (
    available_presets,
    load_preset,
    preset_for_hardware,
    resolve_config,
)
from autoseg.runtime import resolve_runtime
from autoseg.training.trainer import resolve_strategy


@pytest.mark.parametrize(
    ("gib", "preset", "backbone"),
    [
        (None, "cpu_lite", "lite"),
        (4.0, "gpu_vit_b_small", "vit_b"),
        (7.9, "gpu_vit_b_small", "vit_b"),
        (8.0, "gpu_vit_b", "vit_b"),
        (16.0, "gpu_vit_b", "vit_b"),
        (24.0, "gpu_vit_l", "vit_l"),
        (40.0, "gpu_vit_h", "vit_h"),
        (80.0, "gpu_vit_h", "vit_h"),
    ],
)
def test_auto_preset_follows_gpu_memory(monkeypatch, gib, preset, backbone):
    monkeypatch.setattr(config_module, "detect_gpu_memory_gib", lambda: gib)
    config, name = resolve_config("auto")
    assert name == preset == preset_for_hardware(gib)
    assert config.model.backbone == backbone
    assert config.data.image_size == (256 if gib is None else 1024)


def test_small_gpu_preset_checkpoints_activations():
    assert load_preset("gpu_vit_b_small").env.activation_checkpointing
    assert not load_preset("gpu_vit_h").env.activation_checkpointing


def test_named_preset_and_dotted_overrides_win(monkeypatch):
    monkeypatch.setattr(config_module, "detect_gpu_memory_gib", lambda: 80.0)
    config, name = resolve_config("cpu_lite", {"optim.lr": 3e-4}, {"peft.rank": "4"})
    assert name == "cpu_lite" and config.optim.lr == 3e-4 and config.peft.rank == 4


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="gpu_vit_h"):
        load_preset("gpu_vit_x")
    assert "cpu_lite" in available_presets()


def test_precision_and_strategy_choices():
    cpu = load_preset("cpu_lite")
    native = runtime_module.cpu_has_native_bf16()
    assert resolve_runtime(cpu.env).precision == ("bf16-mixed" if native else "32-true")
    assert resolve_runtime(cpu.env).num_workers == 0  # measured: workers only take cores
    assert resolve_strategy(cpu) == (1, "auto")
    multi = cpu.with_overrides({"env.num_gpus": 2})
    assert resolve_strategy(multi) == (2, "ddp_find_unused_parameters_true")
    named = cpu.with_overrides({"env.num_gpus": 2, "env.strategy": "ddp_spawn"})
    assert resolve_strategy(named) == (2, "ddp_spawn")
