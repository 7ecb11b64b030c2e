"""Fused attention (SDPA) against segment-anything's explicit attention, and TinyViT's."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention, window_partition

from autoseg.models.architectures import VitEncoder
from autoseg.models.attention import (
    KERNELS,
    FusedAttention,
    fuse_vit_attention,
    set_attention_kernel,
)
from autoseg.models.resample import resample_rel_pos
from autoseg.models.segmenter import build_segmenter
from autoseg.models.tiny_vit import WindowAttention
from autoseg.peft import ConvLoRALinear, apply_peft

TOL = 1e-5
FUSED = ("mask", "augmented")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_pos_attention(dim: int, heads: int, grid: int, tables: int) -> Attention:
    """Meta's attention for a ``grid`` x ``grid`` map, tables trained at ``tables`` cells.

    Like a 1024-px checkpoint fitted to a smaller input: the (2 * tables - 1) tables are
    resampled (``autoseg.models.resample``) to the (2 * grid - 1) the block expects.
    """
    torch.manual_seed(grid + heads)
    attn = Attention(dim, num_heads=heads, use_rel_pos=True, input_size=(grid, grid))
    with torch.no_grad():
        for table in (attn.rel_pos_h, attn.rel_pos_w):
            trained = 0.3 * torch.randn(2 * tables - 1, table.shape[1])
            table.copy_(resample_rel_pos(trained, table.shape[0]))
    return attn


def run(attn: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> dict:
    """Output and gradients w.r.t. the input, the rel-pos tables and ``qkv``'s weight."""
    attn.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = attn(x)
    (out * upstream).sum().backward()
    named = {"out": out.detach(), "d_input": x.grad}
    for name in ("rel_pos_h", "rel_pos_w", "qkv.weight"):
        named[f"d_{name}"] = attn.get_parameter(name).grad
    return named


def max_errors(attn: torch.nn.Module, x: torch.Tensor, kernel: str) -> dict[str, float]:
    """Max abs difference of every result, ``kernel`` against Meta's forward (fp32)."""
    upstream = torch.randn(*x.shape[:-1], attn.proj.out_features) / x.shape[1]
    reference = run(attn, x, upstream)
    fused = FusedAttention.from_attention(attn, kernel)
    got = run(fused, x, upstream)
    return {k: (got[k] - reference[k]).abs().max().item() for k in reference}


def windows(size: int, dim: int, batch: int = 1) -> torch.Tensor:
    """The 14 x 14 windows (padded) of the ViT token map for a ``size``-px input."""
    grid = size // 16
    x, _ = window_partition(torch.randn(batch, grid, grid, dim), 14)
    return x


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kernel", FUSED)
@pytest.mark.parametrize("size", [1024, 512, 256])
def test_windowed_block_matches_meta(kernel: str, size: int) -> None:
    attn = rel_pos_attention(32, 2, grid=14, tables=14)
    errors = max_errors(attn, windows(size, 32), kernel)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("kernel", FUSED)
@pytest.mark.parametrize("size", [1024, 512, 256])
def test_global_block_matches_meta(kernel: str, size: int) -> None:
    grid = size // 16
    attn = rel_pos_attention(32, 2, grid=grid, tables=64)
    errors = max_errors(attn, torch.randn(1, grid, grid, 32), kernel)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("kernel", ["mask", "augmented"])
def test_realistic_global_block_matches_meta(kernel: str) -> None:
    """ViT-B's head width (64) over the full 1024-px 64 x 64 grid; two heads for speed."""
    attn = rel_pos_attention(128, 2, grid=64, tables=64)
    errors = max_errors(attn, torch.randn(1, 64, 64, 128), kernel)
    assert max(errors.values()) < TOL, errors


def test_parity_check_can_fail() -> None:
    """A kernel that drops the width term differs far beyond the tolerance."""
    attn = rel_pos_attention(32, 2, grid=14, tables=14)
    x = windows(256, 32)
    reference = attn(x)
    with torch.no_grad():
        attn.rel_pos_w.zero_()
    assert (attn(x) - reference).abs().max() > 100 * TOL


def test_no_rel_pos_and_bf16_autocast_run() -> None:
    attn = Attention(32, num_heads=2)
    x = torch.randn(2, 4, 4, 32)
    fused = FusedAttention.from_attention(attn)
    assert torch.allclose(fused(x), attn(x), atol=TOL)
    rel = FusedAttention.from_attention(rel_pos_attention(32, 2, grid=4, tables=4), "augmented")
    with torch.autocast("cpu", torch.bfloat16):
        out = rel(x.requires_grad_(True))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ checkpoints, wiring
def test_state_dict_is_metas_and_loads_strictly() -> None:
    arch = VitEncoder(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
    with torch.device("meta"):
        fused = arch.build(1024, 256)
        plain = ImageEncoderViT(
            img_size=1024, embed_dim=768, depth=12, num_heads=12, out_chans=256,
            use_rel_pos=True, window_size=14, global_attn_indexes=(2, 5, 8, 11),
        )  # fmt: skip
    assert all(isinstance(b.attn, FusedAttention) for b in fused.blocks)
    shapes = [(k, tuple(v.shape)) for k, v in fused.state_dict().items()]
    assert shapes == [(k, tuple(v.shape)) for k, v in plain.state_dict().items()]
    fused.load_state_dict(plain.state_dict(), strict=True, assign=True)


def test_fuse_takes_over_parameters_and_checks_the_kernel() -> None:
    enc = ImageEncoderViT(
        img_size=64, embed_dim=32, depth=2, num_heads=2, use_rel_pos=True, window_size=2,
        global_attn_indexes=(1,),
    )  # fmt: skip
    table = enc.blocks[1].attn.rel_pos_h
    assert fuse_vit_attention(enc, "augmented") == 2
    assert fuse_vit_attention(enc) == 0
    assert enc.blocks[1].attn.rel_pos_h is table and enc.blocks[1].attn.kernel == "augmented"
    with pytest.raises(ValueError, match="attention kernel"):
        fuse_vit_attention(enc, "flash")
    with pytest.raises(ValueError, match="attention kernel"):
        VitEncoder(64, 2, 2, (1,), window_size=2, attention="flash").build(64, 32)
    assert set(KERNELS) >= set(FUSED) | {"explicit"}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_conv_lora_sees_the_token_map_and_training_matches(checkpointing: bool) -> None:
    from autoseg.models.activation_checkpointing import enable_activation_checkpointing

    model, _ = build_segmenter("vit_tiny", num_classes=1)
    apply_peft(model, "conv_lora", num_experts=2)
    layers = [m for m in model.modules() if isinstance(m, ConvLoRALinear)]
    for layer in layers:
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    if checkpointing:
        enable_activation_checkpointing(model)
    model.train()
    seen: list[tuple[int, ...]] = []
    for layer in layers:
        layer.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = {}
    for kernel in ("explicit", "augmented"):
        set_attention_kernel(model, kernel)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the gate's noise
        loss = model(images).square().mean()
        loss.backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in trained]
        results[kernel] = (loss.detach(), grads, list(seen))
        seen.clear()
    (loss_e, grads_e, seen_e), (loss_f, grads_f, seen_f) = results["explicit"], results["augmented"]
    assert seen_f == seen_e and all(len(shape) == 4 for shape in seen_f)
    assert torch.allclose(loss_f, loss_e, atol=TOL)
    assert all(torch.allclose(a, b, atol=TOL) for a, b in zip(grads_f, grads_e, strict=True))


# -------------------------------------------------------------------------- TinyViT
@pytest.mark.parametrize("window", [7, 14])
def test_tiny_vit_mask_matches_explicit(window: int) -> None:
    torch.manual_seed(window)
    attn = WindowAttention(dim=64, num_heads=2, window_size=window)
    with torch.no_grad():
        attn.attention_biases.normal_()
    x = torch.randn(3, window * window, 64)
    upstream = torch.randn(3, window * window, 64) / window
    results = {}
    for kernel in ("explicit", "mask"):
        assert set_attention_kernel(torch.nn.Sequential(attn), kernel) == 1
        attn.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        out = attn(xg)
        (out * upstream).sum().backward()
        results[kernel] = (out, xg.grad, attn.attention_biases.grad, attn.qkv.weight.grad)
    for got, ref in zip(results["mask"], results["explicit"], strict=True):
        assert (got - ref).abs().max() < TOL
    assert set_attention_kernel(torch.nn.Sequential(attn), "augmented") == 0


def test_tiny_vit_auto_kernel_is_explicit_in_training_and_fused_in_eval(monkeypatch) -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=32, num_heads=2, window_size=7)
    assert attn.kernel == "auto"
    with torch.no_grad():
        attn.attention_biases.normal_()
    x = torch.randn(5, 49, 32)
    masks = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(*args, **kwargs):
        masks.append(kwargs.get("attn_mask"))
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    trained = attn.train()(x)
    assert masks == []  # training on the CPU: the explicit form, no SDPA call
    evaluated = attn.eval()(x)
    # A 3-D mask would send SDPA to its slow math path; the fused CPU kernel needs 4-D.
    assert len(masks) == 1 and masks[0].dim() == 4
    assert (trained - evaluated).abs().max() < TOL
    with torch.no_grad():
        assert (attn(x) - evaluated).abs().max() < TOL
