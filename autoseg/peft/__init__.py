"""Parameter-efficient fine-tuning of SAM's image encoder (Conv-LoRA, LoRA, decoder-only)."""

from autoseg.peft.apply import (
    PEFT_METHODS,
    adapter_parameter_counts,
    apply_peft,
    balance_loss,
    trainable_state_dict,
)
from autoseg.peft.conv_lora import ConvExpert, ConvLoRALinear
from autoseg.peft.gate import NoisyTopOneGate, Routing, cv_squared
from autoseg.peft.lora import LoRALinear

__all__ = [
    "PEFT_METHODS",
    "ConvExpert",
    "ConvLoRALinear",
    "LoRALinear",
    "NoisyTopOneGate",
    "Routing",
    "adapter_parameter_counts",
    "apply_peft",
    "balance_loss",
    "cv_squared",
    "trainable_state_dict",
]
