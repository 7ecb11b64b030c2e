"""The ``sam_adapter`` method: SAM-Adapter (Chen et al., "SAM Fails to Segment Anything?", 2023).

Task-specific knowledge enters every block of the frozen ViT as an additive prompt, built as
in SAM-Adapter's code (which follows EVP, Liu et al., CVPR 2023) from two features:

- the hand-crafted feature ``F_hfc``: the high-frequency components of the (normalised)
  input image -- the FFT with the centred ``sqrt(rate) * side`` square of low frequencies
  masked out, transformed back and taken in absolute value -- embedded by a patch-sized
  stride-``patch`` conv to ``C / s`` channels;
- the embedding feature ``F_pe``: the patch embedding projected to ``C / s`` by a linear
  layer (``s`` is the scale factor).

Block ``i`` gets ``x_i + shared(MLP_i(F_hfc + F_pe))``: ``MLP_i`` is a per-block
``Linear(C/s, C/s)`` + GELU and ``shared`` one up-projection ``Linear(C/s, C)`` for all
blocks. ``shared`` starts at zero (SAM-Adapter initialises it randomly), so every prompt
is exactly zero and the adapted model starts equal to the base model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from autoseg.peft.lora import adapter_dtype, autocast_active
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.peft.vpt import vit_encoder
from autoseg.rules import setting

__all__ = ["SamAdapterConfig", "SamAdapterPrompts", "apply_sam_adapter", "high_frequency"]

ATTRIBUTE = "sam_adapter"
"""The child of ``image_encoder`` that holds the adapter (``image_encoder.sam_adapter.*``)."""


@dataclass
class SamAdapterConfig(PeftConfig):
    """SAM-Adapter's settings: the bottleneck scale factor ``s`` and the FFT mask rate.

    ``freq_rate`` 0.25 is SAM-Adapter's ``freq_nums``. Its released config uses
    ``scale_factor`` 32; 16 reproduces the Conv-LoRA paper's SAM-Adapter row. With
    ``r = C / s`` (80 on ViT-H), patch ``P`` = 16 and ``L`` blocks, the adapter has
    ``(C r + r)`` (embedding projection) ``+ (3 P^2 r + r)`` (FFT patch conv)
    ``+ L (r^2 + r)`` (per-block MLPs) ``+ (r C + C)`` (shared up-projection)
    ``= 102,480 + 61,520 + 207,360 + 103,680 = 475,040`` parameters on ViT-H; with the mask
    decoder's 3,505,536 that is 3,980,576 = 3.98 M.

    Example:
        >>> SamAdapterConfig().to_dict()
        {'method': 'sam_adapter', 'scale_factor': 16, 'freq_rate': 0.25}

    """

    method: ClassVar[str] = "sam_adapter"
    scale_factor: int = setting(16, at_least=1)
    freq_rate: float = setting(0.25, above=0, at_most=1)


@functools.lru_cache(maxsize=8)
def _band_pass(size: int, line: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the 1-D operator ``ifft(ifftshift(band * fftshift(fft)))``.

    ``band`` keeps the centred (shifted) indices ``size // 2 - line .. size // 2 + line``.
    Built with NumPy, so an ONNX trace sees two constant matrices, not FFT operators.
    """
    band = np.zeros(size)
    band[size // 2 - line : size // 2 + line] = 1.0
    spectrum = np.fft.fftshift(np.fft.fft(np.eye(size), axis=0, norm="forward"), axes=0)
    operator = np.fft.ifft(
        np.fft.ifftshift(spectrum * band[:, None], axes=0), axis=0, norm="forward"
    )
    return (
        torch.tensor(operator.real, dtype=torch.float32, device=device),
        torch.tensor(operator.imag, dtype=torch.float32, device=device),
    )


def high_frequency(images: torch.Tensor, rate: float) -> torch.Tensor:
    """``|ifft2(fft2(x) * high-pass mask)|``: SAM-Adapter's/EVP's hand-crafted feature.

    The mask zeroes the centred (shifted) square of side ``2 * (sqrt(H * W * rate) // 2)``,
    the low frequencies. That square is a row band times a column band, so the removed part
    is ``L_h x L_w^T`` with 1-D band operators ``L``, and the feature is
    ``|x - Re(L_h) x Re(L_w)^T + Im(L_h) x Im(L_w)^T|``: four real matmuls that equal the
    FFT route to float rounding and, unlike ``torch.fft``, export to ONNX. Computed in
    float32.

    Example:
        >>> flat = torch.ones(1, 3, 8, 8)  # a constant image has no high frequencies
        >>> bool(high_frequency(flat, 0.25).abs().max() < 1e-6)
        True

    """
    x = images.float()
    height, width = x.shape[-2:]
    line = int((height * width * rate) ** 0.5 // 2)
    real_h, imag_h = _band_pass(height, line, x.device)
    real_w, imag_w = _band_pass(width, line, x.device)
    low = real_h @ x @ real_w.T - imag_h @ x @ imag_w.T
    return (x - low).abs()


class SamAdapterPrompts(nn.Module):
    """SAM-Adapter's prompt generator for a ViT of width ``dim`` and ``depth`` blocks.

    Args:
        dim: The ViT's width ``C``.
        depth: Number of blocks ``L`` (one light MLP each).
        patch_size: The ViT's patch size (the FFT feature's patch conv matches it).
        scale_factor: ``s``; the bottleneck has ``C // s`` channels.
        freq_rate: Share of the spectrum (a centred square) removed as low frequency.
        device: Device of the new weights.
        dtype: Dtype of the new weights.

    Example:
        >>> gen = SamAdapterPrompts(dim=64, depth=2, patch_size=16, scale_factor=16)
        >>> feature = gen.features(torch.randn(1, 3, 64, 64), torch.randn(1, 4, 4, 64))
        >>> feature.shape, torch.count_nonzero(gen.prompt(1, feature)).item()
        (torch.Size([1, 4, 4, 4]), 0)

    """

    def __init__(
        self,
        dim: int,
        depth: int,
        patch_size: int,
        scale_factor: int = 16,
        freq_rate: float = 0.25,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        hidden = dim // scale_factor
        if hidden < 1:
            raise ValueError(f"scale_factor {scale_factor} leaves no channels of width {dim}")
        factory = {"device": device, "dtype": dtype}
        self.freq_rate = freq_rate
        self.embedding_generator = nn.Linear(dim, hidden, **factory)
        self.handcrafted_generator = nn.Conv2d(
            3, hidden, kernel_size=patch_size, stride=patch_size, **factory
        )
        self.lightweight_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden, **factory), nn.GELU()) for _ in range(depth)
        )
        self.shared_mlp = nn.Linear(hidden, dim, **factory)
        nn.init.zeros_(self.shared_mlp.weight)
        nn.init.zeros_(self.shared_mlp.bias)

    def features(self, images: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``F_hfc + F_pe``: ``(B, h, w, C // s)`` from the encoder input and patch embedding."""
        with torch.autocast(images.device.type, enabled=False):
            hfc = high_frequency(images, self.freq_rate)
        dtype = self.handcrafted_generator.weight.dtype
        if not autocast_active(embedding.device.type):
            embedding = embedding.to(dtype)  # a bf16 base feeds the fp32 adapter
        handcrafted = self.handcrafted_generator(hfc.to(dtype)).permute(0, 2, 3, 1)
        return handcrafted + self.embedding_generator(embedding)

    def prompt(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s prompt ``(B, h, w, C)``; zero until ``shared_mlp`` trains."""
        return self.shared_mlp(self.lightweight_mlps[index](features))


def _adapted_forward(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Meta's ``ImageEncoderViT.forward`` with SAM-Adapter's prompt added before each block."""
    adapter: SamAdapterPrompts = getattr(encoder, ATTRIBUTE)
    images = x
    x = encoder.patch_embed(x)
    features = adapter.features(images, x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for index, block in enumerate(encoder.blocks):
        # Prompts are made one block at a time: all L at once would hold L extra maps.
        x = block(x + adapter.prompt(index, features).to(x.dtype))
    return encoder.neck(x.permute(0, 3, 1, 2))


def apply_sam_adapter(model: nn.Module, config: SamAdapterConfig) -> None:
    """Attach :class:`SamAdapterPrompts` as ``image_encoder.sam_adapter`` and route the forward.

    The encoder keeps its class and its blocks (activation checkpointing still finds and
    wraps them; the base weights keep their keys); an instance-level ``forward`` (a
    ``functools.partial``, as activation checkpointing uses) adds the prompts.

    Raises:
        SettingsError: a TinyViT encoder.
        ValueError: not a SAM ViT encoder, or one already adapted.

    """
    encoder = vit_encoder(
        model,
        "sam_adapter",
        "SAM-Adapter adds one prompt of the ViT's single width to each "
        "block's input, and TinyViT's stages have different widths and resolutions",
    )
    if ATTRIBUTE in encoder._modules or "forward" in encoder.__dict__:
        raise ValueError("the image encoder already has an adapted forward")
    weight = encoder.patch_embed.proj.weight
    adapter = SamAdapterPrompts(
        dim=weight.shape[0],
        depth=len(encoder.blocks),
        patch_size=encoder.patch_embed.proj.kernel_size[0],
        scale_factor=config.scale_factor,
        freq_rate=config.freq_rate,
        device=weight.device,
        dtype=adapter_dtype(weight.dtype),
    )
    encoder.add_module(ATTRIBUTE, adapter)
    encoder.__dict__["forward"] = functools.partial(_adapted_forward, encoder)


register_peft_method(
    "sam_adapter", SamAdapterConfig, SamAdapterPrompts, apply_sam_adapter, position=7
)
