"""Activation checkpointing of the encoder blocks: same losses and gradients, less memory."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoseg.models.activation_checkpointing as ckpt
from autoseg.models.activation_checkpointing import (
    checkpointed_blocks,
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    encoder_blocks,
)
from autoseg.models.segmenter import SamSegmenter, build_segmenter
from autoseg.peft import ConvLoRALinear, apply_peft, balance_loss

BACKBONES = ("vit_tiny", "lite_tiny")
NUM_BLOCKS = {"vit_tiny": 2, "lite_tiny": 4}
BALANCE_WEIGHT = 0.01


def adapted(backbone: str, full: bool = False) -> SamSegmenter:
    """Conv-LoRA model in train mode whose adapters change the output (random lora_B)."""
    model, _ = build_segmenter(backbone, num_classes=1)
    apply_peft(model, "conv_lora", num_experts=4)
    generator = torch.Generator().manual_seed(1)
    for layer in conv_lora_layers(model):
        weight = layer.lora_B.weight
        weight.data = 0.02 * torch.randn(weight.shape, generator=generator)
    if full:
        # Full fine-tuning: the frozen TinyViT conv stage then records a graph too.
        model.requires_grad_(True)
    return model.train()


def conv_lora_layers(model: nn.Module) -> list[ConvLoRALinear]:
    return [m for m in model.modules() if isinstance(m, ConvLoRALinear)]


def batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 64, 64, generator=generator)
    masks = (torch.rand(n, 1, 64, 64, generator=generator) > 0.5).float()
    return images, masks


def losses(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(task loss, balance loss) of one forward; seeded so the gate draws the same noise."""
    images, masks = batch()
    torch.manual_seed(123)
    logits = model(images)
    return F.binary_cross_entropy_with_logits(logits.float(), masks), balance_loss(model)


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def count_child_calls(model: nn.Module) -> list[int]:
    """Per encoder block, a live count of its first child's forward calls (recomputes too)."""
    counts = [0] * len(encoder_blocks(model))
    for i, block in enumerate(encoder_blocks(model)):

        def hook(module: nn.Module, args: tuple, index: int = i) -> None:
            counts[index] += 1

        next(block.children()).register_forward_pre_hook(hook)
    return counts


def copy_adapters(source: SamSegmenter, target: SamSegmenter) -> SamSegmenter:
    """Adapt ``target`` like ``source`` and give it all of ``source``'s weights."""
    apply_peft(target, "conv_lora", num_experts=4)
    target.load_state_dict(source.state_dict())
    return target.train()


@pytest.fixture
def checkpoint_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record each torch checkpoint call made by autoseg (its use_reentrant argument)."""
    calls: list[bool] = []
    original = ckpt.checkpoint

    def spy(function: Callable, *args, use_reentrant: bool, **kwargs):
        calls.append(use_reentrant)
        return original(function, *args, use_reentrant=use_reentrant, **kwargs)

    monkeypatch.setattr(ckpt, "checkpoint", spy)
    return calls


# equality with and without checkpointing ----------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "full", "before_peft"),
    [
        ("vit_tiny", False, False),
        ("lite_tiny", False, False),
        ("lite_tiny", True, False),
        ("vit_tiny", False, True),
    ],
    ids=["vit_tiny", "lite_tiny", "lite_tiny-full", "vit_tiny-before-peft"],
)
def test_losses_and_all_gradients_match(backbone: str, full: bool, before_peft: bool) -> None:
    reference = adapted(backbone, full)
    if before_peft:
        model, _ = build_segmenter(backbone, num_classes=1)
        enable_activation_checkpointing(model)
        model = copy_adapters(reference, model)
    else:
        model = copy.deepcopy(reference)
        assert enable_activation_checkpointing(model) == NUM_BLOCKS[backbone]
    recomputes = count_child_calls(model)
    results = []
    for net in (reference, model):
        task, aux = losses(net)
        (task + BALANCE_WEIGHT * aux).backward()
        results.append((task, aux, gradients(net)))
    (task0, aux0, grads0), (task1, aux1, grads1) = results
    assert aux0.item() > 0
    torch.testing.assert_close(task1, task0, rtol=0, atol=0)
    torch.testing.assert_close(aux1, aux0, rtol=0, atol=0)
    assert grads1.keys() == grads0.keys()
    for name, grad in grads0.items():
        if grad is None:  # an expert no sample was routed to, or an unused prompt table
            assert grads1[name] is None, name
            continue
        torch.testing.assert_close(grads1[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    lora = [g for n, g in grads1.items() if "lora_A" in n]
    assert lora and all(g.abs().sum() > 0 for g in lora)
    # Each block ran twice (forward + recompute), except a frozen block on a constant input
    # (TinyViT's conv stage under PEFT), which has nothing to recompute.
    expected = [2] * len(recomputes)
    if backbone == "lite_tiny" and not full:
        expected[0] = 1
    assert recomputes == expected


@pytest.mark.parametrize("backbone", BACKBONES)
def test_keeps_fewer_activations_for_backward(backbone: str) -> None:
    plain = adapted(backbone)
    model = copy.deepcopy(plain)
    enable_activation_checkpointing(model)
    saved = []
    for net in (plain, model):
        nbytes = [0]

        def pack(tensor: torch.Tensor, total: list[int] = nbytes) -> torch.Tensor:
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        # Checkpointed blocks save through their own hooks, so only their inputs reach ours.
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            losses(net)
        saved.append(nbytes[0])
    assert saved[1] < 0.6 * saved[0]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_balance_loss_alone_trains_the_gates(backbone: str, checkpoint_calls) -> None:
    reference = adapted(backbone)
    model = copy.deepcopy(reference)
    enable_activation_checkpointing(model)
    for net in (reference, model):
        _, aux = losses(net)
        stored = [layer.balance_loss for layer in conv_lora_layers(net)]
        aux.backward()
        # the recompute in backward must not replace the loss the forward stored
        after = [layer.balance_loss for layer in conv_lora_layers(net)]
        assert all(a is b for a, b in zip(stored, after, strict=True))
    assert checkpoint_calls and not any(checkpoint_calls)  # all use_reentrant=False
    for ref_layer, layer in zip(conv_lora_layers(reference), conv_lora_layers(model), strict=True):
        for name in ("w_gate", "w_noise"):
            grad = getattr(layer.gate, name).grad
            assert grad is not None and grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, getattr(ref_layer.gate, name).grad)


# transparency: keys, eval outputs, idempotence, copies --------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_keys_and_tree_unchanged(backbone: str) -> None:
    plain = adapted(backbone)
    model = copy.deepcopy(plain)
    enable_activation_checkpointing(model)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in plain.named_modules()]
    assert repr(model) == repr(plain)
    # weights saved either way load strictly into the other
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_eval_and_no_grad_run_the_plain_blocks(backbone: str, checkpoint_calls) -> None:
    plain = adapted(backbone)
    model = copy.deepcopy(plain)
    enable_activation_checkpointing(model)
    images, _ = batch()
    plain.eval()
    model.eval()
    with torch.no_grad():
        expected = plain(images)
    assert torch.equal(model(images), expected)  # eval mode, grad enabled
    with torch.no_grad():
        assert torch.equal(model(images), expected)
    with torch.inference_mode():
        assert torch.equal(model(images), expected)
    model.train()
    with torch.no_grad():
        model(images)
    assert checkpoint_calls == []
    model(images)
    assert len(checkpoint_calls) > 0


def test_idempotent_and_reversible(checkpoint_calls) -> None:
    model = adapted("vit_tiny")
    assert checkpointed_blocks(model) == 0
    assert enable_activation_checkpointing(model) == 2
    forwards = [block.forward for block in encoder_blocks(model)]
    assert enable_activation_checkpointing(model.image_encoder) == 2  # encoder alone works
    assert [block.forward for block in encoder_blocks(model)] == forwards
    recomputes = count_child_calls(model)
    task, _ = losses(model)
    task.backward()
    assert recomputes == [2, 2] and len(checkpoint_calls) == 2  # not wrapped twice
    assert disable_activation_checkpointing(model) == 2
    assert checkpointed_blocks(model) == 0 and disable_activation_checkpointing(model) == 0
    assert all("forward" not in block.__dict__ for block in encoder_blocks(model))


def test_deepcopy_and_pickle_keep_checkpointing(checkpoint_calls) -> None:
    model = adapted("lite_tiny")
    enable_activation_checkpointing(model)
    losses(model)  # a stored balance loss must not break copying
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert checkpointed_blocks(clone) == 4
        # each copy's forward runs its own block, not the original's
        assert all(block.forward.args[0] is block for block in encoder_blocks(clone))
    checkpoint_calls.clear()
    task, _ = losses(clone)
    task.backward()
    assert len(checkpoint_calls) == 3  # the three attention blocks; the conv stage is frozen


def test_rejects_a_model_without_encoder_blocks() -> None:
    with pytest.raises(ValueError, match="no transformer blocks"):
        enable_activation_checkpointing(nn.Sequential(nn.Linear(2, 2)))


# mixed precision ---------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
def test_bf16_autocast_step_on_cpu(backbone: str) -> None:
    reference = adapted(backbone)
    model = copy.deepcopy(reference)
    enable_activation_checkpointing(model)
    for net in (reference, model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            task, aux = losses(net)
        assert aux.dtype == torch.float32
        (task + BALANCE_WEIGHT * aux).backward()
    grads, ref_grads = gradients(model), gradients(reference)
    checked = [n for n in grads if any(k in n for k in ("lora_", "gate.", "mask_head."))]
    assert any("gate.w_gate" in n for n in checked) and any("lora_B" in n for n in checked)
    for name in checked:
        grad = grads[name]
        assert grad is not None and grad.dtype == torch.float32, name
        assert torch.isfinite(grad).all(), name
        # autocast is replayed in the recompute, so even bf16 gradients agree
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_lightning_fit_bf16_mixed_with_checkpointing(
    tmp_path: Path, checkpoint_calls, tiny_hyperparameters
) -> None:
    from autoseg import SemanticSegmentor
    from autoseg.data.synthetic import make_synthetic_binary

    train_csv, test_csv = make_synthetic_binary(
        tmp_path / "data", n_images=6, size=(40, 56), split_test=2
    )
    hyperparameters = {
        **tiny_hyperparameters,
        "env.precision": "bf16-mixed",
        "env.activation_checkpointing": True,
    }
    seg = SemanticSegmentor(
        presets="cpu_lite", hyperparameters=hyperparameters, path=tmp_path / "m", verbosity=0
    )
    seg.fit(train_csv)
    assert checkpointed_blocks(seg.model_) == 2  # from env.activation_checkpointing
    assert checkpoint_calls and not any(checkpoint_calls)  # training went through them
    assert seg.fit_summary_["steps"] >= 1
    probabilities = seg.predict_proba(test_csv)
    assert [p.shape for p in probabilities] == [(40, 56)] * 2
    for p in probabilities:
        assert p.dtype == np.float32 and np.isfinite(p).all()
        assert ((p >= 0) & (p <= 1)).all()
