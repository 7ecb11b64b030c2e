"""Tests for autoseg.peft: LoRA / Conv-LoRA wrappers, gate, apply_peft and helpers."""

from __future__ import annotations

import copy
import pickle
import re
from collections import OrderedDict

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.peft import (
    ConvLoRALinear,
    LoRALinear,
    NoisyTopOneGate,
    PeftConfig,
    adapter_parameter_counts,
    apply_peft,
    balance_loss,
    cv_squared,
    trainable_state_dict,
)

EMBED = 32
DEPTH = 2


def tiny_sam_encoder() -> ImageEncoderViT:
    sizes = {"img_size": 64, "patch_size": 16, "embed_dim": EMBED, "depth": DEPTH, "out_chans": 32}
    return ImageEncoderViT(**sizes, num_heads=2, window_size=2, global_attn_indexes=(1,))


def token_attention(dim: int = 16) -> nn.Sequential:
    """TinyViT-style block: the qkv Linear sees a (B, N, C) token sequence."""
    return nn.Sequential(OrderedDict(qkv=nn.Linear(dim, 3 * dim), proj=nn.Linear(3 * dim, dim)))


class Checkpointed(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)


class TinySam(nn.Module):
    def __init__(self, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.image_encoder = encoder if encoder is not None else tiny_sam_encoder()
        self.prompt_encoder = nn.Embedding(4, 8)
        self.mask_head = nn.Conv2d(32, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_head(self.image_encoder(x))


def checkpointed_conv_lora() -> TinySam:
    _, model = adapted("conv_lora")
    blocks = model.image_encoder.blocks
    for i, block in enumerate(blocks):
        blocks[i] = Checkpointed(block)
    return model.train()


def adapted(method: str, seed: int = 0, **kwargs) -> tuple[TinySam, TinySam]:
    """(reference copy, adapted model) with identical base weights."""
    torch.manual_seed(seed)
    model = TinySam()
    reference = copy.deepcopy(model)
    return reference, apply_peft(model, method, **kwargs)


def wrapped_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def randomize_lora_b(model: nn.Module) -> None:
    with torch.no_grad():
        for layer in wrapped_layers(model):
            layer.lora_B.weight.normal_(0.0, 0.1)


def images(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# 1. every method on every tiny backbone ----------------------------------------------------

# Widths of the attention layers whose qkv each method adapts: two ViT blocks, and the
# three attention stages of the tiny TinyViT (its first stage is convolutional).
ATTENTION_WIDTHS = {"vit_tiny": (64, 64), "lite_tiny": (32, 32, 64)}
ADAPTER_PARAMETERS = {
    "lora": re.compile(r"\.qkv\.lora_[AB]\.weight$"),
    "moe_conv": re.compile(r"\.qkv\.(gate\.w_(gate|noise)|experts\.\d+\.conv\.(weight|bias))$"),
}
GROUPS_BY_METHOD = {"conv_lora": {"lora", "moe_conv"}, "lora": {"lora"}, "decoder_only": set()}


def expected_groups(peft: PeftConfig, widths: tuple[int, ...]) -> dict[str, int]:
    """The paper's counts: LoRA ``r * (d + 3d)`` per qkv, experts ``E * (9 r^2 + r) + 2 r E``."""
    groups = GROUPS_BY_METHOD[peft.method]
    rank = getattr(peft, "rank", 0)
    experts = getattr(peft, "num_experts", 0)
    lora = sum(rank * (width + 3 * width) for width in widths)
    moe = len(widths) * (experts * (9 * rank * rank + rank) + 2 * rank * experts)
    return {"lora": lora if "lora" in groups else 0, "moe_conv": moe if "moe_conv" in groups else 0}


@pytest.mark.parametrize("backbone", list(ATTENTION_WIDTHS))
@pytest.mark.parametrize("method", list(GROUPS_BY_METHOD))  # the paper's baselines: own files
def test_method_on_backbone_counts_trainable_names_and_forward(method, backbone) -> None:
    config = Config().with_overrides(
        {"model.backbone": backbone, "data.image_size": 64, "peft.method": method}
    )
    torch.manual_seed(0)
    model, _ = build_model(config, num_outputs=3)
    plain = build_model(config.with_overrides({"peft.method": "decoder_only"}), 3)[0]
    plain.load_state_dict(model.state_dict(), strict=False)  # same base weights, no adapters
    counts = adapter_parameter_counts(model)
    widths = ATTENTION_WIDTHS[backbone]
    assert {k: counts[k] for k in ("lora", "moe_conv")} == expected_groups(config.peft, widths)
    assert counts["trainable"] == counts["lora"] + counts["moe_conv"] + counts["decoder"]
    assert (
        counts["total"]
        == sum(p.numel() for p in plain.parameters()) + counts["lora"] + (counts["moe_conv"])
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable_state_dict(model)) == trainable
    encoder = {n for n in trainable if n.startswith("image_encoder.")}
    groups = {g for n in encoder for g, pattern in ADAPTER_PARAMETERS.items() if pattern.search(n)}
    assert groups == GROUPS_BY_METHOD[method]
    assert all(any(p.search(n) for p in ADAPTER_PARAMETERS.values()) for n in encoder)
    assert len({n.split(".qkv.")[0] for n in encoder}) == (len(widths) if encoder else 0)
    head = {f"mask_head.{n}" for n, p in model.mask_head.named_parameters() if p.requires_grad}
    assert trainable - encoder == head and counts["decoder"] > 0
    x = images(2)
    for train in (True, False):  # zero-initialised adapters leave the output unchanged
        model.train(train)
        plain.train(train)
        with torch.no_grad():
            out = model(x)
            assert out.shape == (2, 3, 64, 64)
            assert torch.equal(out, plain(x))


def test_wrapping_keeps_qkv_name_and_state_dict_keys() -> None:
    _, model = adapted("conv_lora")
    keys = model.state_dict().keys()
    prefix = "image_encoder.blocks.0.attn.qkv."
    for suffix in (
        "base.weight",
        "base.bias",
        "lora_A.weight",
        "lora_B.weight",
        "experts.0.conv.weight",
        "experts.7.conv.bias",
        "gate.w_gate",
        "gate.w_noise",
    ):
        assert prefix + suffix in keys
    assert isinstance(model.image_encoder.blocks[1].attn.qkv, ConvLoRALinear)
    layer = model.image_encoder.blocks[0].attn.qkv
    assert layer.scaling == 32.0 / 3
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert all(torch.count_nonzero(e.conv.bias) == 0 for e in layer.experts)
    assert [e.scale for e in layer.experts] == list(range(1, 9))


# 2. which parameters train ----------------------------------------------------------------


def test_unknown_method_and_missing_qkv_raise() -> None:
    with pytest.raises(ValueError, match="conv_lora.*lora.*decoder_only"):
        apply_peft(TinySam(), "dora")
    model = TinySam(encoder=nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="qkv"):
        apply_peft(model, "lora")


# 3. gate learns from the task loss ---------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_gate_gets_gradient_from_task_loss_alone(train: bool) -> None:
    _, model = adapted("conv_lora")
    randomize_lora_b(model)
    model.train(train)
    model(images()).square().mean().backward()
    for layer in wrapped_layers(model):
        assert layer.gate.w_gate.grad is not None
        assert layer.gate.w_gate.grad.abs().sum() > 0
        # The factor is the clean-logit probability (or its straight-through form), so the
        # noise weights learn from the balance loss's load term only, never from the task.
        noise_grad = layer.gate.w_noise.grad
        assert noise_grad is None or noise_grad.abs().sum() == 0


def test_reference_top1_softmax_gate_has_no_task_gradient() -> None:
    """Softmax over the top-1 logit alone is constantly 1.0; the full softmax is not."""
    logits = torch.randn(5, 8, requires_grad=True)
    top_value, top_index = logits.topk(1, dim=1)
    top_value.softmax(dim=1).sum().backward()
    assert torch.count_nonzero(logits.grad) == 0
    logits.grad = None
    logits.softmax(dim=1).gather(1, top_index).sum().backward()
    assert torch.count_nonzero(logits.grad) > 0


# 4. balance loss ---------------------------------------------------------------------------


def routed_gate(one_expert: bool, train: bool) -> tuple[NoisyTopOneGate, torch.Tensor]:
    """Gate over 4 experts where sample i goes to expert i (or every sample to expert 0)."""
    gate = NoisyTopOneGate(rank=4, num_experts=4).train(train)
    with torch.no_grad():
        gate.w_gate.copy_(torch.eye(4) * 5.0)
        if one_expert:
            gate.w_gate.zero_()
            gate.w_gate[:, 0] = 5.0
        gate.w_noise.fill_(-30.0)  # noise std ~ 1e-2: routing stays deterministic
    return gate, torch.eye(4)


@pytest.mark.parametrize("train", [True, False])
def test_balance_loss_balanced_vs_collapsed(train: bool) -> None:
    gate, pooled = routed_gate(one_expert=False, train=train)
    routing = gate(pooled)
    assert routing.expert_index.tolist() == [0, 1, 2, 3]
    assert routing.balance_loss.item() < 1e-6
    gate, pooled = routed_gate(one_expert=True, train=train)
    routing = gate(pooled)
    assert routing.expert_index.tolist() == [0, 0, 0, 0]
    assert routing.balance_loss.item() > 1.0


def test_balance_loss_is_differentiable_wrt_gate_weights() -> None:
    torch.manual_seed(0)
    gate = NoisyTopOneGate(rank=3, num_experts=8).train()
    with torch.no_grad():
        gate.w_gate.normal_()
        gate.w_noise.normal_()
    gate(torch.randn(16, 3)).balance_loss.backward()
    assert gate.w_gate.grad.abs().sum() > 0
    assert gate.w_noise.grad.abs().sum() > 0


def test_single_expert_balance_loss_is_zero() -> None:
    assert cv_squared(torch.tensor([3.0])).item() == 0.0
    layer = ConvLoRALinear(nn.Linear(8, 24), rank=2, num_experts=1).train()
    layer(torch.randn(2, 4, 4, 8))
    assert layer.balance_loss.item() == 0.0


def test_model_balance_loss_helper() -> None:
    _, model = adapted("conv_lora")
    assert balance_loss(model).item() == 0.0  # no forward yet
    model.train()
    model(images())
    per_layer = [layer.balance_loss for layer in wrapped_layers(model)]
    total = balance_loss(model)
    assert total.requires_grad and torch.allclose(total, sum(per_layer))
    _, plain = adapted("lora")
    plain(images())
    assert balance_loss(plain).item() == 0.0


# 5. only the chosen expert runs ------------------------------------------------------------


def test_on_the_cpu_each_expert_runs_only_on_its_own_samples() -> None:
    layer = ConvLoRALinear(nn.Linear(8, 24), rank=3, num_experts=4).train()
    calls: list[tuple[int, int]] = []
    for i, expert in enumerate(layer.experts):
        expert.register_forward_hook(lambda _m, args, _o, i=i: calls.append((i, len(args[0]))))
    torch.manual_seed(0)
    z = torch.randn(6, 4, 4, 8)
    routing_seed = torch.random.get_rng_state()
    layer(z)
    torch.random.set_rng_state(routing_seed)  # the same gate noise
    routing = layer.gate(layer.lora_A(z).mean(dim=(1, 2)))
    counts = torch.bincount(routing.expert_index, minlength=4).tolist()
    assert calls == [(i, n) for i, n in enumerate(counts) if n]


def test_the_accelerator_path_runs_every_expert_once_on_the_whole_batch() -> None:
    """Off the CPU, routing never reads the chosen indices on the host: each expert sees
    every sample once and the one-hot weight keeps only the chosen expert's output."""
    layer = ConvLoRALinear(nn.Linear(8, 24), rank=3, num_experts=4).train()
    calls: list[tuple[int, int]] = []
    for i, expert in enumerate(layer.experts):
        expert.register_forward_hook(lambda _m, args, _o, i=i: calls.append((i, len(args[0]))))
    z = torch.randn(6, 3, 4, 4)
    layer._run_all_experts(z, layer.gate(z.mean(dim=(2, 3))))
    assert calls == [(i, 6) for i in range(4)]


def test_grouped_experts_match_per_sample_computation() -> None:
    torch.manual_seed(0)
    layer = ConvLoRALinear(nn.Linear(8, 24), rank=3, num_experts=4).eval()
    with torch.no_grad():
        layer.gate.w_gate.normal_(0, 3.0)
    z = torch.randn(6, 5, 5, 3)
    mixed = layer.adapt(z)
    nchw = z.permute(0, 3, 1, 2)
    routing = layer.gate(z.mean(dim=(1, 2)))
    assert len(set(routing.expert_index.tolist())) > 1
    for b, (k, g) in enumerate(zip(routing.expert_index, routing.expert_weight, strict=True)):
        expected = nchw[b] + g * layer.experts[int(k)](nchw[b : b + 1])[0]
        torch.testing.assert_close(mixed[b], expected.permute(1, 2, 0))


# 6. parameter counts -----------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_parameter_counts_match_paper(device: str) -> None:
    with torch.device(device):
        model = TinySam()
    total_before = sum(p.numel() for p in model.parameters())
    apply_peft(model, "conv_lora", rank=3, num_experts=8)
    assert all(p.device.type == device for p in model.parameters())
    counts = adapter_parameter_counts(model)
    lora_per_layer = 3 * (EMBED + 3 * EMBED)
    moe_per_layer = 8 * (9 * 3 * 3 + 3) + 2 * 3 * 8
    assert moe_per_layer == 720
    decoder = 32 * 2 + 2
    assert counts == {
        "lora": DEPTH * lora_per_layer,
        "moe_conv": DEPTH * 720,
        "decoder": decoder,
        "trainable": DEPTH * (lora_per_layer + 720) + decoder,
        "total": total_before + DEPTH * (lora_per_layer + 720),
    }


# 7. token-sequence path --------------------------------------------------------------------


def test_token_sequence_path_and_non_square_error() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(token_attention(), token_attention())
    reference = copy.deepcopy(encoder)
    model = apply_peft(TinySam(encoder=encoder), "conv_lora")
    tokens = torch.randn(3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(tokens), reference(tokens))
    randomize_lora_b(model)
    out = model.image_encoder(tokens)
    assert out.shape == tokens.shape
    out.sum().backward()
    assert encoder[0].qkv.gate.w_gate.grad is not None
    with pytest.raises(ValueError, match="not a perfect square"):
        model.image_encoder(torch.randn(3, 15, 16))


# 8. checkpointing, autocast, copying -------------------------------------------------------


def test_checkpointed_blocks_carry_task_and_balance_gradients() -> None:
    model = checkpointed_conv_lora()
    randomize_lora_b(model)
    task = model(images()).square().mean()
    aux = balance_loss(model)
    stored = [layer.balance_loss for layer in wrapped_layers(model)]
    assert aux.requires_grad
    (task + 0.01 * aux).backward()
    for layer in wrapped_layers(model):
        assert layer.lora_A.weight.grad.abs().sum() > 0
        assert layer.gate.w_gate.grad.abs().sum() > 0
        assert layer.gate.w_noise.grad.abs().sum() > 0
    # the recompute during backward must not replace (and pin) the stored loss
    after = [layer.balance_loss for layer in wrapped_layers(model)]
    assert all(a is b for a, b in zip(after, stored, strict=True))


def test_balance_loss_alone_backprops_through_checkpoint() -> None:
    model = checkpointed_conv_lora()
    model(images())
    balance_loss(model).backward()
    assert all(layer.gate.w_gate.grad.abs().sum() > 0 for layer in wrapped_layers(model))


def test_bf16_autocast_on_cpu() -> None:
    _, model = adapted("conv_lora")
    randomize_lora_b(model)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(2))
        aux = balance_loss(model)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert aux.dtype == torch.float32
    (out.float().square().mean() + aux).backward()
    for layer in wrapped_layers(model):
        assert layer.lora_A.weight.grad.dtype == torch.float32
        assert layer.gate.w_gate.grad.abs().sum() > 0


def test_bf16_base_gets_fp32_adapters() -> None:
    layer = ConvLoRALinear(nn.Linear(8, 24).to(torch.bfloat16), rank=2, num_experts=2)
    assert layer.lora_A.weight.dtype == torch.float32
    assert layer.experts[0].conv.weight.dtype == torch.float32
    x = torch.randn(2, 3, 3, 8, dtype=torch.bfloat16)
    assert torch.equal(layer(x), layer.base(x))


def test_deepcopy_and_pickle_after_forward() -> None:
    _, model = adapted("conv_lora")
    model.train()
    model(images(2))
    clone = copy.deepcopy(model)
    assert all(layer.balance_loss is None for layer in wrapped_layers(clone))
    restored = pickle.loads(pickle.dumps(model))
    x = images(2)
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
