"""The PEFT registry, and the ``peft`` config section whose keys are the chosen method's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from autoseg.builder import build_model
from autoseg.config import Config, UnknownHyperparameterError
from autoseg.errors import SettingsError
from autoseg.peft import (
    PEFT_METHODS,
    ConvLoRAConfig,
    ConvLoRALinear,
    DecoderOnlyConfig,
    LoRAConfig,
    LoRALinear,
    adapter_parameter_counts,
    apply_peft,
    balance_loss_weight,
    get_peft_method,
    peft_method_names,
    registry,
)
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting

EVERY_METHOD_KEYS = {"rank": 4, "alpha": 16.0, "num_experts": 8, "balance_weight": 0.01}


def test_the_readme_keys_keep_working():
    lora = Config().with_overrides({"peft.method": "lora", "peft.rank": 4, "peft.alpha": 16})
    assert lora.peft == LoRAConfig(rank=4, alpha=16.0)
    conv = Config().with_overrides(
        {"peft.method": "conv_lora", "peft.num_experts": 4, "peft.balance_weight": 0.02}
    )
    assert conv.peft == ConvLoRAConfig(num_experts=4, balance_weight=0.02)
    assert Config().peft == ConvLoRAConfig()  # the default method, the paper's defaults
    # the method is applied first, wherever it stands among the keys
    assert Config().with_overrides({"peft.rank": 4, "peft.method": "lora"}).peft.rank == 4


@pytest.mark.parametrize(
    ("method", "key", "keys"),
    [
        ("lora", "peft.num_experts", "['peft.method', 'peft.rank', 'peft.alpha']"),
        ("lora", "peft.balance_weight", "'peft.alpha'"),
        ("decoder_only", "peft.rank", "['peft.method']"),
    ],
)
def test_a_key_of_another_method_names_the_method_and_its_keys(method, key, keys):
    with pytest.raises(SettingsError) as info:
        Config().with_overrides({"peft.method": method, key: 1})
    message = str(info.value)
    assert key in message and f"peft.method={method!r}" in message and keys in message


def test_unknown_keys_and_methods_are_refused_as_before():
    with pytest.raises(UnknownHyperparameterError, match="Did you mean 'peft.rank'"):
        Config().with_overrides({"peft.rnak": 2})
    with pytest.raises(SettingsError, match=r"one of \['conv_lora', 'lora', 'decoder_only'"):
        Config().with_overrides({"peft.method": "dora"})
    with pytest.raises(SettingsError, match="'peft.method' expects str"):
        Config().with_overrides({"peft.method": 3})


def test_switching_method_keeps_the_settings_both_have():
    base = Config().with_overrides({"peft.rank": 5, "peft.num_experts": 2})
    assert base.with_overrides({"peft.method": "lora"}).peft == LoRAConfig(rank=5)
    assert base.with_overrides({"peft.method": "decoder_only"}).peft == DecoderOnlyConfig()
    back = base.with_overrides({"peft.method": "lora"}).with_overrides({"peft.method": "conv_lora"})
    assert back.peft == ConvLoRAConfig(rank=5)  # num_experts was lora's to drop


@pytest.mark.parametrize("method", ["conv_lora", "lora", "decoder_only"])
def test_to_dict_holds_the_method_and_only_its_settings_and_round_trips(method):
    config = Config().with_overrides({"peft.method": method})
    peft = config.to_dict()["peft"]
    assert list(peft)[0] == "method" and peft["method"] == method
    assert set(peft) - {"method"} == {f.name for f in dataclasses.fields(config.peft)}
    assert list(config.to_dict()) == ["model", "peft", "optim", "data", "loss", "env"]
    assert Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("method", ["conv_lora", "lora", "decoder_only"])
def test_old_saved_configs_with_every_methods_keys_still_load(method):
    old = Config().to_dict()
    old["peft"] = {"method": method, **EVERY_METHOD_KEYS}
    peft = Config.from_dict(old).peft
    assert peft.method == method
    if method != "decoder_only":
        assert (peft.rank, peft.alpha) == (4, 16.0)
    old["peft"]["ranks"] = 3  # a key no method has is still refused
    with pytest.raises(UnknownHyperparameterError, match="ranks"):
        Config.from_dict(old)


def test_a_config_built_directly_checks_its_peft_section():
    assert Config(peft=LoRAConfig(rank=2)).peft.rank == 2
    with pytest.raises(SettingsError, match=r"'peft.rank' must be >= 1, got 0"):
        Config(peft=LoRAConfig(rank=0))

    @dataclass
    class Unregistered(PeftConfig):
        method: ClassVar[str] = "lora"
        rank: int = 3

    for bad in (Unregistered(), {"method": "lora"}):
        with pytest.raises(SettingsError, match="registered PEFT method"):
            Config(peft=bad)


@dataclass
class BiasOnlyConfig(PeftConfig):
    """A method added the way issue 14 adds them: one config, one apply, one registration."""

    method: ClassVar[str] = "bias_only"
    scale: float = setting(1.0, above=0)


def _train_encoder_biases(model: torch.nn.Module, config: BiasOnlyConfig) -> None:
    for name, param in model.image_encoder.named_parameters():
        param.requires_grad_(name.endswith("bias"))


def test_a_newly_registered_method_works_everywhere_without_other_edits(
    monkeypatch, tiny_hyperparameters
):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_peft_method("bias_only", BiasOnlyConfig, None, _train_encoder_biases, position=9)
    names = registry.peft_method_names()
    assert names[:3] == ("conv_lora", "lora", "decoder_only") and "bias_only" in names
    config = Config().with_overrides(
        {**tiny_hyperparameters, "peft.method": "bias_only", "peft.scale": 2}
    )
    assert config.peft == BiasOnlyConfig(scale=2.0)
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(SettingsError, match=r"'peft.scale' must be > 0"):
        config.with_overrides({"peft.scale": 0})
    model, _ = build_model(config, 1, pretrained=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("image_encoder.") and n.endswith("bias") for n in trainable)
    assert not any(n.startswith("image_encoder.") and n.endswith("weight") for n in trainable)


def test_registration_refuses_a_taken_name_or_a_mismatched_config(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dataclass
    class AnotherConvLoRA(ConvLoRAConfig):
        pass

    with pytest.raises(ValueError, match="already registered by ConvLoRAConfig"):
        register_peft_method("conv_lora", AnotherConvLoRA, None, _train_encoder_biases)
    with pytest.raises(ValueError, match="BiasOnlyConfig.method is 'bias_only'"):
        register_peft_method("lora_plus", BiasOnlyConfig, None, _train_encoder_biases)


# 9. the registry ----------------------------------------------------------------------------


def test_builtin_methods_register_themselves_in_the_papers_order() -> None:
    assert PEFT_METHODS == peft_method_names()
    assert PEFT_METHODS[:3] == ("conv_lora", "lora", "decoder_only")
    layers = {name: get_peft_method(name).layer for name in PEFT_METHODS[:3]}
    assert layers == {"conv_lora": ConvLoRALinear, "lora": LoRALinear, "decoder_only": None}
    assert get_peft_method("conv_lora").settings == (
        "rank",
        "alpha",
        "num_experts",
        "balance_weight",
        "gate_factor",
    )
    assert get_peft_method("lora").settings == ("rank", "alpha")
    assert get_peft_method("decoder_only").settings == ()


def test_apply_peft_takes_a_config_or_a_name_with_that_methods_settings() -> None:
    torch.manual_seed(0)
    by_config = apply_peft(_sam(), ConvLoRAConfig(rank=2, num_experts=3))
    torch.manual_seed(0)
    by_name = apply_peft(_sam(), "conv_lora", rank=2, num_experts=3)
    assert adapter_parameter_counts(by_config) == adapter_parameter_counts(by_name)
    layer = by_config.image_encoder.blocks[0].attn.qkv
    assert (layer.rank, len(layer.experts)) == (2, 3)
    with pytest.raises(ValueError, match=r"'lora' has no setting \['num_experts'\]"):
        apply_peft(_sam(), "lora", num_experts=4)
    with pytest.raises(ValueError, match="inside the config"):
        apply_peft(_sam(), LoRAConfig(), rank=2)


def test_balance_weight_lives_in_the_method_config() -> None:
    assert balance_loss_weight(ConvLoRAConfig()) == 0.01
    assert balance_loss_weight(ConvLoRAConfig(balance_weight=0.02)) == 0.02
    assert balance_loss_weight(LoRAConfig()) == 0.0
    assert balance_loss_weight(DecoderOnlyConfig()) == 0.0


def _sam() -> torch.nn.Module:
    from autoseg.models.segmenter import build_segmenter

    return build_segmenter("vit_tiny")[0]
