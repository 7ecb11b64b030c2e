"""Fit a SAM ViT state_dict trained at one input size to an encoder built for another.

Meta's ``ImageEncoderViT`` sizes two things by the token grid (input size / patch size):
the absolute ``pos_embed`` (1, grid, grid, C) and, in the global-attention blocks only, the
relative-position tables ``rel_pos_h`` / ``rel_pos_w`` (2 * grid - 1, head_dim). Windowed
blocks keep (2 * window - 1) tables whatever the input size. Resampling the grid-sized
tensors before ``load_state_dict(strict=True)`` lets a 1024-px checkpoint run at 512 or 256.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["resample_vit_state_dict", "resample_pos_embed", "resample_rel_pos"]


def resample_pos_embed(pos_embed: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample an absolute position embedding (1, h, w, C) to (1, *size, C), bicubically.

    Example:
        >>> resample_pos_embed(torch.zeros(1, 64, 64, 8), (32, 32)).shape
        torch.Size([1, 32, 32, 8])

    """
    if tuple(pos_embed.shape[1:3]) == tuple(size):
        return pos_embed
    grid = pos_embed.permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, size=tuple(size), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resample_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resample a relative-position table (L, D) to (length, D), linearly along L.

    This is the interpolation Meta's ``get_rel_pos`` would apply at run time, done once on
    the weights instead, so the parameter has the shape the encoder expects.

    Example:
        >>> resample_rel_pos(torch.zeros(127, 64), 63).shape
        torch.Size([63, 64])

    """
    if table.shape[0] == length:
        return table
    line = table.float().t().unsqueeze(0)
    out = F.interpolate(line, size=length, mode="linear", align_corners=False)
    return out[0].t().to(table.dtype).contiguous()


def resample_vit_state_dict(
    state_dict: Mapping[str, torch.Tensor], target_shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Resample every ``pos_embed`` / ``rel_pos_h`` / ``rel_pos_w`` whose shape differs.

    Keys are matched exactly; tensors whose shapes already agree (windowed blocks' tables,
    everything else) pass through untouched, so resampling to the same size is the identity.
    Other shape mismatches are left for ``load_state_dict`` to report. The input mapping is
    not modified.

    Args:
        state_dict: the checkpoint's tensors.
        target_shapes: the shape each key has in the module to load into, e.g.
            ``{k: v.shape for k, v in module.state_dict().items()}`` (meta tensors work).

    Returns:
        A new dict with the resampled tensors.

    Example:
        >>> resampled = resample_vit_state_dict({"pos_embed": torch.zeros(1, 64, 64, 8)},
        ...                                     {"pos_embed": torch.Size([1, 16, 16, 8])})
        >>> resampled["pos_embed"].shape
        torch.Size([1, 16, 16, 8])

    """
    fitted = dict(state_dict)
    for key, tensor in state_dict.items():
        shape = target_shapes.get(key)
        if shape is None or tuple(tensor.shape) == tuple(shape):
            continue
        leaf = key.rsplit(".", 1)[-1]
        same_width = tensor.ndim == len(shape) and tensor.shape[-1] == shape[-1]
        if leaf == "pos_embed" and same_width and tensor.ndim == 4:
            fitted[key] = resample_pos_embed(tensor, (shape[1], shape[2]))
        elif leaf in ("rel_pos_h", "rel_pos_w") and same_width and tensor.ndim == 2:
            fitted[key] = resample_rel_pos(tensor, shape[0])
    return fitted
