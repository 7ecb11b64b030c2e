"""Parameter-efficient fine-tuning of SAM's image encoder: a registry of methods.

Each method is one module here (``conv_lora``, ``lora``, ``decoder_only``, ``bitfit``,
``adapter``, ``vpt``, ``lst``, ``sam_adapter``, ``ssf``, ``full``) that registers its
settings dataclass, adapter layer and apply function with
:func:`~autoseg.peft.registry.register_peft_method`.
"""

from autoseg.peft.adapter import AdapterConfig, AdapterLinear
from autoseg.peft.apply import (
    PEFT_METHODS,
    adapter_parameter_counts,
    apply_peft,
    balance_loss,
    balance_loss_weight,
    trainable_state_dict,
)
from autoseg.peft.bitfit import BitFitConfig
from autoseg.peft.conv_lora import ConvExpert, ConvLoRAConfig, ConvLoRALinear
from autoseg.peft.decoder_only import DecoderOnlyConfig
from autoseg.peft.full import FullConfig
from autoseg.peft.gate import NoisyTopOneGate, Routing, cv_squared
from autoseg.peft.lora import LoRAConfig, LoRALinear
from autoseg.peft.lst import LadderSideNetwork, LSTConfig
from autoseg.peft.registry import (
    PeftConfig,
    PeftMethod,
    get_peft_method,
    peft_config,
    peft_method_names,
    register_peft_method,
)
from autoseg.peft.sam_adapter import SamAdapterConfig, SamAdapterPrompts
from autoseg.peft.ssf import SSFConfig, SSFLayer
from autoseg.peft.vpt import PromptedBlock, VPTConfig

__all__ = [
    "PEFT_METHODS",
    "AdapterConfig",
    "AdapterLinear",
    "BitFitConfig",
    "ConvExpert",
    "ConvLoRAConfig",
    "ConvLoRALinear",
    "DecoderOnlyConfig",
    "FullConfig",
    "LoRAConfig",
    "LSTConfig",
    "LadderSideNetwork",
    "LoRALinear",
    "NoisyTopOneGate",
    "PeftConfig",
    "PeftMethod",
    "PromptedBlock",
    "Routing",
    "VPTConfig",
    "SSFConfig",
    "SamAdapterConfig",
    "SamAdapterPrompts",
    "SSFLayer",
    "adapter_parameter_counts",
    "apply_peft",
    "balance_loss",
    "balance_loss_weight",
    "cv_squared",
    "get_peft_method",
    "peft_config",
    "peft_method_names",
    "register_peft_method",
    "trainable_state_dict",
]
