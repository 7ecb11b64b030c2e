"""The paper's baselines bitfit, adapter, ssf and full: counts, init, what trains, training."""

from __future__ import annotations

import re

import pytest
import torch

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.errors import SettingsError
from autoseg.info import HEADROOM, derived_preset_settings, parameter_counts, preset_memory
from autoseg.models import backbones
from autoseg.models.memory import estimate_training_memory, fits_card
from autoseg.models.saved_tensors import fake_segmenter
from autoseg.peft import (
    AdapterConfig,
    AdapterLinear,
    SSFConfig,
    SSFLayer,
    adapter_parameter_counts,
    trainable_state_dict,
)
from autoseg.training.step import make_optimizer, training_loss

METHODS = ("bitfit", "adapter", "ssf", "full")
BACKBONES = ("vit_tiny", "lite_tiny")

# The Conv-LoRA paper's SAM ViT-H binary rows (trainable, millions) and ours, exactly.
PAPER_VIT_H = {"bitfit": 3.96, "adapter": 3.92, "ssf": 4.42}
VIT_H = {"bitfit": 3_957_888, "adapter": 3_915_264, "ssf": 4_411_264, "full": 640_537_804}
DECODER = 3_505_536
VIT = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}
NECK = 256
# Encoder parameters each method trains, per trainable parameter name.
ENCODER_NAMES = {
    "bitfit": re.compile(r"\.bias$"),
    "adapter": re.compile(r"\.(attn\.proj|mlp\.(lin2|fc2))\.adapter_(down|up)\.(weight|bias)$"),
    "ssf": re.compile(r"\.ssf_(scale|shift)$"),
    "full": re.compile(r""),
}


def encoder_values(method: str, width: int, depth: int) -> int:
    """What a method adds or trains in a SAM ViT encoder (the docstrings' formulas).

    A block's ops output ``11 d`` channels (norm1 d, qkv 3d, proj d, norm2 d, MLP 4d + d).
    """
    if method == "bitfit":  # the ops' biases, the patch embedding's, the neck norms'
        return depth * 11 * width + width + 2 * NECK
    if method == "ssf":  # scale + shift after every op, the patch embedding and the neck
        return 2 * (depth * 11 * width + width + 4 * NECK)
    bottleneck = AdapterConfig().width
    return depth * 2 * (2 * width * bottleneck + bottleneck + width)


def config(backbone: str, method: str, **overrides: object) -> Config:
    settings = {"model.backbone": backbone, "data.image_size": 64, "peft.method": method}
    return Config().with_overrides({**settings, **overrides})


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 255


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def perturb_trainable(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every trained weight off its init, so a zero-initialised branch has an effect."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


# 1. counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(VIT_H))
def test_vit_h_counts_match_the_paper_within_0_01_m(method):
    counts = parameter_counts("vit_h", method)
    assert counts["trainable"] == VIT_H[method]
    if method == "full":  # Meta's SAM ViT-H is 641,090,608 with its IoU head and 4 tokens
        assert counts["trainable"] == counts["total"]
        return
    assert counts["decoder"] == DECODER
    assert counts["trainable"] - DECODER == encoder_values(method, *VIT["vit_h"])
    assert abs(counts["trainable"] / 1e6 - PAPER_VIT_H[method]) <= 0.01


@pytest.mark.parametrize("backbone", ["vit_b", "vit_l"])
def test_vit_b_and_l_counts_follow_the_same_formulas(backbone):
    for method in ("bitfit", "adapter", "ssf"):
        counts = parameter_counts(backbone, method)
        assert counts["trainable"] - DECODER == encoder_values(method, *VIT[backbone])
    base = parameter_counts(backbone, "decoder_only")["total"]
    assert parameter_counts(backbone, "full")["trainable"] == base


# 2. init and what trains -------------------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_starts_as_the_base_model_and_trains_only_its_parameters(method, backbone):
    model = build_model(config(backbone, method), 3)[0]
    base = build_model(config(backbone, "decoder_only"), 3)[0]
    base.load_state_dict(model.state_dict(), strict=False)  # e.g. full: same keys anyway
    x = images()
    for train in (True, False):
        model.train(train)
        base.train(train)
        with torch.no_grad():
            assert (model(x) - base(x)).abs().max().item() == 0.0
    names = trainable(model)
    assert set(trainable_state_dict(model)) == names
    encoder = {n for n in names if n.startswith("image_encoder.")}
    head = {f"mask_head.{n}" for n, _ in model.mask_head.named_parameters()}
    assert encoder and all(ENCODER_NAMES[method].search(n) for n in encoder)
    if method == "full":
        assert names == {n for n, _ in model.named_parameters()}
        return
    assert names - encoder == head  # the prompt encoder stays frozen
    if method == "bitfit":
        every_bias = {n for n, _ in model.image_encoder.named_parameters() if n.endswith(".bias")}
        assert encoder == {f"image_encoder.{n}" for n in every_bias}
    else:
        counts = adapter_parameter_counts(model)
        assert counts[method] == sum(model.get_parameter(n).numel() for n in encoder)
        assert counts["trainable"] == counts[method] + counts["decoder"]


def test_layers_per_backbone():
    """Adapters on every transformer block's attention and MLP; SSF on every op."""
    layers = {}
    for backbone in BACKBONES:
        for method, kind in (("adapter", AdapterLinear), ("ssf", SSFLayer)):
            model = build_model(config(backbone, method), 1)[0]
            layers[backbone, method] = sum(isinstance(m, kind) for m in model.modules())
    # vit_tiny: 2 blocks of 6 ops, the patch embedding, the neck's 4 ops. lite_tiny: every
    # linear, LayerNorm and Conv-BN's batch norm, and the neck's 2 convs and 2 LayerNorm2d.
    assert layers["vit_tiny", "adapter"] == 4 and layers["lite_tiny", "adapter"] == 6
    assert layers["vit_tiny", "ssf"] == 2 * 6 + 1 + 4
    lite = build_model(config("lite_tiny", "decoder_only"), 1)[0].image_encoder
    ops = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    expected = sum(isinstance(m, ops) for m in lite.modules()) + 4  # + the neck's 4 ops
    assert layers["lite_tiny", "ssf"] == expected


def test_settings_are_checked_and_init_std_gives_the_papers_init():
    assert config("vit_tiny", "adapter", **{"peft.width": 8}).peft == AdapterConfig(width=8)
    with pytest.raises(SettingsError, match=r"'peft.width' must be >= 1"):
        config("vit_tiny", "adapter", **{"peft.width": 0})
    with pytest.raises(SettingsError, match=r"'peft.init_std' must be >= 0"):
        config("vit_tiny", "ssf", **{"peft.init_std": -1.0})
    with pytest.raises(SettingsError, match="not a setting of peft.method='bitfit'"):
        config("vit_tiny", "bitfit", **{"peft.rank": 2})
    model = build_model(config("vit_tiny", "ssf", **{"peft.init_std": 0.02}), 1)[0]
    layer = model.image_encoder.blocks[0].attn.qkv
    assert SSFConfig(init_std=0.02).init_std == 0.02 and not torch.all(layer.ssf_scale == 1)
    assert 0.9 < layer.ssf_scale.mean().item() < 1.1


# 3. save / load, checkpointing, bf16 -------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_trainable_state_dict_round_trip(method, backbone):
    model = build_model(config(backbone, method), 1)[0].eval()
    perturb_trainable(model)
    saved = trainable_state_dict(model)
    fresh = build_model(config(backbone, method), 1)[0].eval()
    x = images()
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))
        missing, unexpected = fresh.load_state_dict(saved, strict=False)
        assert not unexpected and not set(missing) & set(saved)
        assert torch.equal(fresh(x), model(x))


def _loss_and_grads(method: str, backbone: str, checkpointing: bool) -> tuple[float, dict]:
    overrides = {"env.activation_checkpointing": checkpointing}
    cfg = config(backbone, method, **overrides)
    torch.manual_seed(0)  # the adapters' random init
    model = build_model(cfg, 1)[0].train()
    perturb_trainable(model)
    target = (images(2, seed=5)[:, 0] > 127).long()
    total, _, _ = training_loss(model, images(), target, cfg.loss, 0.0)
    total.backward()
    return total.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(method, backbone):
    loss, grads = _loss_and_grads(method, backbone, checkpointing=False)
    loss_ckpt, grads_ckpt = _loss_and_grads(method, backbone, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys()
    encoder = [n for n in grads if n.startswith("image_encoder.") and grads[n] is not None]
    assert any(grads[n].abs().sum() > 0 for n in encoder)
    for name, grad in grads.items():
        if grad is None:  # full: the unused prompt embeddings get no gradient either way
            assert grads_ckpt[name] is None and method == "full"
            continue
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_forward_backward_on_cpu(method, backbone):
    cfg = config(backbone, method, **{"env.activation_checkpointing": True})
    model = build_model(cfg, 1)[0].train()
    perturb_trainable(model)
    target = (images(2, seed=5)[:, 0] > 127).long()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _, logits = training_loss(model, images(), target, cfg.loss, 0.0)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(total)
    total.backward()
    encoder = [p for n, p in model.named_parameters() if p.requires_grad and "image_encoder" in n]
    assert all(p.dtype == torch.float32 for p in encoder)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in encoder)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder)


@pytest.mark.parametrize("kind", ["adapter", "ssf"])
def test_a_bf16_base_gets_fp32_adapters_and_an_unchanged_output(kind):
    base = torch.nn.Linear(8, 16).to(torch.bfloat16)
    layer = AdapterLinear(base, width=2) if kind == "adapter" else SSFLayer(base, 16)
    assert all(p.dtype == torch.float32 for p in layer.parameters() if p.requires_grad)
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    assert torch.equal(layer(x), base(x)) and layer(x).dtype == torch.bfloat16


# 4. the method's own parameters learn ------------------------------------------------------


def squares(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright noisy squares on a dark background, and their masks."""
    generator = torch.Generator().manual_seed(seed)
    x, target = torch.full((batch, 3, 64, 64), 30.0), torch.zeros(batch, 64, 64, dtype=torch.long)
    for i in range(batch):
        row, col = torch.randint(0, 40, (2,), generator=generator).tolist()
        x[i, :, row : row + 24, col : col + 24] = 220.0
        target[i, row : row + 24, col : col + 24] = 1
    return x + 10 * torch.randn(x.shape, generator=generator), target


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_an_encoder_only_step_lowers_the_loss(method, backbone):
    """With the decoder frozen, one small AdamW step on the method's encoder parameters lowers
    the loss: they are wired into the forward and get the gradient's sign right.

    (Fits that beat the untrained model, decoder included, are ``tests/test_learning.py``'s,
    parametrised over every registered method.)
    """
    cfg = config(backbone, method, **{"optim.lr": 1e-4, "optim.weight_decay": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg, 1)[0].train()
    perturb_trainable(model)  # the adapter's up-projection starts at zero: no gradient below
    model.mask_head.requires_grad_(False)
    optimizer = make_optimizer(model, cfg.optim)
    x, target = squares(4, seed=0)
    before, _, _ = training_loss(model, x, target, cfg.loss, 0.0)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after, _, _ = training_loss(model, x, target, cfg.loss, 0.0)
    assert after.item() < before.item()


# 5. memory and training from scratch -------------------------------------------------------


def test_memory_model_counts_every_gradient_and_adamw_state_for_full():
    full = estimate_training_memory("vit_tiny", 64, 1, device="cpu", method="full")
    lora = estimate_training_memory("vit_tiny", 64, 1, device="cpu", method="lora")
    model = build_model(config("vit_tiny", "full"), 1)[0]
    values = sum(p.numel() for p in model.parameters())
    assert full.trainable_parameters == full.total_parameters == values
    assert full.gradients_bytes == 4 * values and full.optimizer_state_bytes == 8 * values
    assert full.total_bytes > lora.total_bytes
    vit_h = fake_segmenter("vit_h", 1024, "full", 1, "cuda")  # what the estimate counts
    assert vit_h.trainable_count == VIT_H["full"] and vit_h.trainable_bytes == 4 * VIT_H["full"]


def test_pretrained_false_reads_no_weights_file(monkeypatch):
    def no_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("a weights file was looked for")

    monkeypatch.setattr(backbones, "resolve_checkpoint", no_file)
    scratch = config("vit_b", "full", **{"model.pretrained": False, "data.image_size": 1024})
    with torch.device("meta"):
        model, parts = build_model(scratch, 1)
        assert parts.checkpoint_path is None and trainable(model) == {
            n for n, _ in model.named_parameters()
        }
        with pytest.raises(AssertionError, match="weights file"):
            build_model(scratch.with_overrides({"model.pretrained": True}), 1)
    assert Config.from_dict(scratch.to_dict()).model.pretrained is False


@pytest.mark.slow  # four ViT-B traces, about 17 s on a 2-core machine
def test_full_training_needs_a_smaller_batch_on_the_gpu_vit_b_preset():
    """The README's line: full fine-tuning of ViT-B fits the 8 GiB card at batch 2, not 4."""
    assert derived_preset_settings("gpu_vit_b") == (4, False)  # the preset's own method
    assert derived_preset_settings("gpu_vit_b", method="full") == (2, False)
    assert not fits_card(preset_memory("gpu_vit_b", 4, False, "full"), 8, HEADROOM)


@pytest.mark.parametrize("method", METHODS)
def test_a_fitted_predictor_saves_and_loads_identically(method, tmp_path):
    """fit -> folder (adapter.safetensors: the trained weights only) -> load -> same output."""
    import numpy as np
    from _tiny import TINY
    from safetensors.torch import load_file

    from autoseg.data.synthetic import make_synthetic_binary
    from autoseg.predictor import SemanticSegmentor

    train_csv, test_csv = make_synthetic_binary(
        tmp_path / "data", n_images=10, size=(48, 64), split_test=3, seed=1
    )
    settings = {**TINY, "peft.method": method}
    if method == "full":
        settings["model.pretrained"] = False  # the paper's "SAM trained from scratch" row
    seg = SemanticSegmentor(hyperparameters=settings, path=tmp_path / "seg", verbosity=0)
    seg.fit(train_csv)
    saved = load_file(str(seg.path_ / "adapter.safetensors"))
    assert set(saved) == trainable(seg.model_)
    loaded = SemanticSegmentor.load(seg.path_, verbosity=0)
    assert loaded.summary()["trainable_parameters"] == seg.summary()["trainable_parameters"]
    for a, b in zip(seg.predict_proba(test_csv), loaded.predict_proba(test_csv), strict=True):
        np.testing.assert_array_equal(a, b)
