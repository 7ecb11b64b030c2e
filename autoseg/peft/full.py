"""The ``full`` method: every parameter trains (the paper's "SAM trained from scratch" row).

With ``model.pretrained=False`` the model starts from the seeded random init, as the paper's
from-scratch row; with the default it is full fine-tuning of the pretrained SAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from autoseg.peft.registry import PeftConfig, register_peft_method


@dataclass
class FullConfig(PeftConfig):
    """Full training has no settings: image encoder, prompt encoder and mask head all train.

    SAM ViT-H as autoseg builds it has 640,537,804 parameters; Meta's SAM has 641,090,608
    (the paper's 641.09 M): the prompt-free head drops the IoU head (132,612) and the three
    multi-mask tokens with their hypernetwork MLPs (420,192). The prompt encoder's point,
    box and mask embeddings train but get no gradient (no prompts are given), so AdamW
    leaves them as they are. Nothing is inserted: the model starts as the base model.

    Example:
        >>> FullConfig().to_dict()
        {'method': 'full'}

    """

    method: ClassVar[str] = "full"


def apply_full(model: nn.Module, config: FullConfig) -> None:
    """Unfreeze every parameter of the model."""
    model.requires_grad_(True)


register_peft_method("full", FullConfig, None, apply_full, position=9)
