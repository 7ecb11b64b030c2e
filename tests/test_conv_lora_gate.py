"""Conv-LoRA's gate factor (same in train and eval) and its sync-free expert mixing."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from autoseg.config import Config
from autoseg.errors import SettingsError
from autoseg.peft import ConvLoRAConfig, ConvLoRALinear, NoisyTopOneGate, cv_squared
from autoseg.peft.gate import GATE_FACTORS

FACTORS = list(GATE_FACTORS)


def routed_layer(factor: str, num_experts: int = 4, seed: int = 0) -> ConvLoRALinear:
    """A layer whose gate, experts and ``B`` are all non-trivial, so every path matters."""
    torch.manual_seed(seed)
    layer = ConvLoRALinear(nn.Linear(8, 24), rank=3, num_experts=num_experts, gate_factor=factor)
    with torch.no_grad():
        layer.lora_B.weight.normal_(0.0, 0.5)
        layer.gate.w_gate.normal_(0.0, 3.0)
        layer.gate.w_noise.normal_(0.0, 1.0)
        for expert in layer.experts:
            expert.conv.bias.normal_(0.0, 0.1)
    return layer


def inputs(batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, 5, 5, 8, generator=torch.Generator().manual_seed(1))


def without_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero the gate's Gaussian noise (its std stays positive, so the load term is defined)."""
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)


# 1. the factor means the same in train() and eval() ---------------------------------------


@pytest.mark.parametrize("factor", FACTORS)
def test_train_output_equals_eval_output_when_noise_is_zero(
    factor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = routed_layer(factor)
    x = inputs()
    z = layer.lora_A(x)
    assert not torch.allclose(layer.eval().adapt(z), z)  # the expert branch contributes
    routing = layer.gate(z.mean(dim=(1, 2)))
    assert len(set(routing.expert_index.tolist())) > 1  # several experts are used
    without_noise(monkeypatch)
    with torch.no_grad():
        trained = layer.train()(x)
        evaluated = layer.eval()(x)
    assert torch.equal(trained, evaluated)


@pytest.mark.parametrize("factor", FACTORS)
def test_factor_depends_only_on_the_chosen_expert(factor: str) -> None:
    """With real noise: wherever training picks the eval winner, the factor is the same."""
    torch.manual_seed(0)
    gate = NoisyTopOneGate(rank=3, num_experts=8, factor=factor)
    with torch.no_grad():
        gate.w_gate.normal_(0.0, 2.0)
        gate.w_noise.fill_(-2.0)
    pooled = torch.randn(64, 3)
    noisy = gate.train()(pooled)
    clean = gate.eval()(pooled)
    same = noisy.expert_index == clean.expert_index
    assert 0 < same.sum() < len(same)  # the noise changes some choices, not all
    assert torch.equal(noisy.expert_weight[same], clean.expert_weight[same])
    if factor == "straight_through":
        assert torch.equal(noisy.expert_weight, torch.ones(64))


# 2. the task loss alone trains the gate ----------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("factor", FACTORS)
def test_gate_gets_gradient_from_task_loss_alone(factor: str, train: bool) -> None:
    layer = routed_layer(factor).train(train)
    layer(inputs()).square().mean().backward()  # balance weight 0: no balance loss added
    assert layer.gate.w_gate.grad is not None and layer.gate.w_gate.grad.abs().sum() > 0
    # Noise only chooses; w_noise learns from the balance loss's load term.
    noise_grad = layer.gate.w_noise.grad
    assert noise_grad is None or torch.count_nonzero(noise_grad) == 0


def test_straight_through_gradient_is_that_of_log_probability() -> None:
    """d(factor)/d(logits) = d(log p)/d(logits) = onehot(winner) - softmax(clean)."""
    gate = NoisyTopOneGate(rank=2, num_experts=3, factor="straight_through").eval()
    with torch.no_grad():
        gate.w_gate.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]))
    pooled = torch.tensor([[1.0, 0.0]])  # clean logits (1, 0, -1): expert 0 wins
    gate(pooled).expert_weight.sum().backward()
    probs = torch.tensor([1.0, 0.0, -1.0]).softmax(dim=0)
    expected = torch.outer(pooled[0], torch.tensor([1.0, 0.0, 0.0]) - probs)
    torch.testing.assert_close(gate.w_gate.grad, expected)


# 3. the balance loss's importance term uses the probability --------------------------------


@pytest.mark.parametrize("factor", FACTORS)
def test_importance_sums_probabilities_not_factors(factor: str) -> None:
    """One sample per expert, unequal confidence: the load is balanced, importance is not.

    Were importance the sum of straight-through factors (all 1), it would be the load
    counts again: zero loss and, at equal counts, zero gradient.
    """
    gate = NoisyTopOneGate(rank=4, num_experts=4, factor=factor).eval()
    with torch.no_grad():
        gate.w_gate.copy_(torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])))
    routing = gate(torch.eye(4))
    assert routing.expert_index.tolist() == [0, 1, 2, 3]
    probs = (torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])).softmax(dim=1)).diagonal()
    expected = cv_squared(probs) + cv_squared(torch.ones(4))
    torch.testing.assert_close(routing.balance_loss, expected)
    assert routing.balance_loss > 0.01
    routing.balance_loss.backward()
    assert gate.w_gate.grad.abs().sum() > 0


def test_balance_loss_is_the_same_under_both_factors() -> None:
    losses = []
    for factor in FACTORS:
        layer = routed_layer(factor).train()
        torch.manual_seed(5)  # the same noise draw
        layer(inputs())
        losses.append(layer.balance_loss)
    assert torch.equal(losses[0], losses[1])


# 4. every expert runs; only the chosen one counts; no host sync ----------------------------


@pytest.mark.parametrize("factor", FACTORS)
def test_mixture_equals_running_the_chosen_expert_per_sample(factor: str) -> None:
    layer = routed_layer(factor, num_experts=8).eval()
    z = torch.randn(6, 5, 5, 3, generator=torch.Generator().manual_seed(2))
    mixed = layer.adapt(z)  # on the CPU: each expert on its own samples
    nchw = z.permute(0, 3, 1, 2)
    routing = layer.gate(z.mean(dim=(1, 2)))
    chosen = set(routing.expert_index.tolist())
    assert 1 < len(chosen) < len(layer.experts)
    for b, (k, g) in enumerate(zip(routing.expert_index, routing.expert_weight, strict=True)):
        expected = nchw[b] + g * layer.experts[int(k)](nchw[b : b + 1])[0]
        torch.testing.assert_close(mixed[b], expected.permute(1, 2, 0))
    mixed.square().sum().backward()
    for i, expert in enumerate(layer.experts):
        grad = expert.conv.weight.grad
        assert (grad is not None and torch.count_nonzero(grad) > 0) == (i in chosen)


@pytest.mark.parametrize("factor", FACTORS)
def test_the_accelerator_path_gives_the_cpu_path_result_and_gradients(factor: str) -> None:
    layer = routed_layer(factor, num_experts=8).eval()
    z = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    routing = layer.gate(z.mean(dim=(2, 3)))
    results = []
    for run in (layer._run_routed_groups, layer._run_all_experts):
        out = run(z, routing)
        out.square().sum().backward(inputs=[e.conv.weight for e in layer.experts])
        grads = [e.conv.weight.grad for e in layer.experts]
        results.append((out.detach(), [None if g is None else g.clone() for g in grads]))
        layer.zero_grad(set_to_none=True)
    (grouped, grouped_grads), (dense, dense_grads) = results
    torch.testing.assert_close(grouped, dense)
    for i, (g, d) in enumerate(zip(grouped_grads, dense_grads, strict=True)):
        if i in set(routing.expert_index.tolist()):
            torch.testing.assert_close(g, d)
        else:  # the dense path multiplies them by zero; the grouped one never runs them
            assert g is None and not torch.count_nonzero(d)


@pytest.mark.parametrize("shape", [(2, 4, 4, 8), (2, 16, 8)])
def test_forward_and_backward_never_read_values_on_the_host(shape: tuple[int, ...]) -> None:
    """Meta tensors have no values: any ``.tolist()``, ``.item()`` or ``if tensor`` fails."""
    with torch.device("meta"):
        layer = ConvLoRALinear(nn.Linear(8, 24), rank=3, num_experts=4).train()
        x = torch.randn(shape, requires_grad=True)
        out = layer(x)
        (out.sum() + layer.balance_loss).backward()
    assert out.shape == (*shape[:-1], 24)
    assert layer.gate.w_gate.grad is not None


# 5. the setting ------------------------------------------------------------------------------


def test_gate_factor_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match=r"peft\.gate_factor.*straight_through.*clean_prob"):
        Config().with_overrides({"peft.gate_factor": "noisy_prob"})
    with pytest.raises(ValueError, match="gate factor must be one of"):
        NoisyTopOneGate(rank=3, num_experts=2, factor="noisy_prob")


def test_gate_factor_round_trips_through_yaml_and_reaches_the_layers() -> None:
    from autoseg.models.segmenter import build_segmenter
    from autoseg.peft import apply_peft

    other = next(f for f in FACTORS if f != ConvLoRAConfig().gate_factor)
    config = Config().with_overrides({"peft.gate_factor": other})
    loaded = Config.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert loaded.peft.gate_factor == other
    model = apply_peft(build_segmenter("vit_tiny")[0], loaded.peft)
    factors = {m.gate.factor for m in model.modules() if isinstance(m, ConvLoRALinear)}
    assert factors == {other}


def test_saved_config_without_gate_factor_loads_the_default() -> None:
    old = Config().to_dict()
    del old["peft"]["gate_factor"]
    assert Config.from_dict(old).peft.gate_factor == ConvLoRAConfig().gate_factor


def test_kept_resize_matrices_serve_prediction_then_training():
    import torch.nn.functional as F  # noqa: PLC0415, N812

    from autoseg.peft.conv_lora import bicubic_resize  # noqa: PLC0415

    z = torch.randn(2, 3, 5, 9)
    expected = F.interpolate(z, size=(35, 63), mode="bicubic", align_corners=False)
    with torch.inference_mode():  # the first use of this size keeps its matrices
        assert torch.allclose(bicubic_resize(z, (35, 63)), expected, atol=1e-5)
    trained = z.clone().requires_grad_(True)
    out = bicubic_resize(trained, (35, 63))
    out.sum().backward()  # an inference tensor saved for backward would raise here
    assert torch.allclose(out, expected, atol=1e-5)
    assert trained.grad is not None and trained.grad.abs().sum() > 0
