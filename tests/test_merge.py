"""merge_lora: plain LoRA folds into qkv exactly; Conv-LoRA is left alone; the original too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoseg.models.segmenter import build_segmenter
from autoseg.peft.conv_lora import ConvLoRAConfig, ConvLoRALinear, apply_conv_lora
from autoseg.peft.lora import LoRAConfig, LoRALinear, apply_lora
from autoseg.peft.merge import merge_lora, merged_linear


def _trained(model: nn.Module) -> nn.Module:
    """Give every adapter non-zero B (as after training) so merging has something to do."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            weight = module.lora_B.weight
            weight.data = torch.randn(weight.shape, generator=generator) * 0.05
    return model.eval()


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
def test_merged_lora_model_matches_and_has_no_lora_left(backbone: str) -> None:
    model, _ = build_segmenter(backbone, num_classes=2)
    apply_lora(model, LoRAConfig(rank=3))
    _trained(model)
    images = torch.rand(2, 3, 64, 64) * 255
    valid_hw = torch.tensor([[64, 64], [40, 64]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(images, valid_hw)
        merged = merge_lora(model)
        got = merged(images, valid_hw)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    base_qkv = next(m for m in model.modules() if isinstance(m, LoRALinear)).base
    merged_qkv = next(m for n, m in merged.named_modules() if n.endswith("qkv"))
    assert not torch.allclose(merged_qkv.weight, base_qkv.weight)  # the adapters did count
    # The original keeps its adapters and weights.
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_merged_weight_is_w_plus_scaled_b_a() -> None:
    layer = _trained(nn.Sequential(LoRALinear(nn.Linear(16, 48), rank=4, alpha=8.0)))[0]
    merged = merged_linear(layer)
    expected = layer.base.weight + 2.0 * layer.lora_B.weight @ layer.lora_A.weight
    assert torch.allclose(merged.weight, expected, atol=1e-6)
    assert torch.equal(merged.bias, layer.base.bias)
    assert not merged.weight.requires_grad


def test_conv_lora_layers_are_kept_unmerged() -> None:
    model, _ = build_segmenter("vit_tiny", num_classes=1)
    apply_conv_lora(model, ConvLoRAConfig(num_experts=2))
    merged = merge_lora(model)
    kept = [m for m in merged.modules() if isinstance(m, ConvLoRALinear)]
    assert len(kept) == sum(isinstance(m, ConvLoRALinear) for m in model.modules()) > 0
    with pytest.raises(TypeError, match="cannot merge"):
        merged_linear(kept[0])
