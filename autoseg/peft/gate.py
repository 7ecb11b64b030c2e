"""Noisy top-1 gate with the load-balancing loss of Shazeer et al. (2017)."""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.peft.lora import autocast_active

GATE_FACTORS: tuple[str, ...] = ("straight_through", "clean_prob")
"""What multiplies the chosen expert's output (``peft.gate_factor``); see NoisyTopOneGate."""


class Routing(NamedTuple):
    """Routing decision for one batch.

    Attributes:
        expert_index: ``(B,)`` int64, the expert chosen for each sample.
        expert_weight: ``(B,)`` float32, the gate factor that multiplies that expert's output;
            it carries task-loss gradient into ``w_gate``.
        balance_loss: Scalar float32, ``cv^2(importance) + cv^2(load)``.

    """

    expert_index: torch.Tensor
    expert_weight: torch.Tensor
    balance_loss: torch.Tensor


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var(x) / (mean(x)^2 + 1e-10)``.

    Args:
        x: 1-D tensor of per-expert totals.

    Returns:
        Scalar tensor; zero (still attached to the graph) when ``x`` has one element, where
        the unbiased variance is undefined.

    """
    x = x.float()
    if x.numel() <= 1:
        return x.sum() * 0.0
    return x.var() / (x.mean() ** 2 + 1e-10)


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Evaluate the standard normal CDF, differentiably.

    Args:
        x: Any tensor.

    Returns:
        ``P(N(0, 1) <= x)`` elementwise.

    """
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def prob_in_top1(clean: torch.Tensor, noisy: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Probability that each expert wins top-1 if only its own noise were re-drawn.

    This is Shazeer's smooth ``_prob_in_top_k`` for ``k = 1``: the current winner stays in if
    its re-noised logit beats the runner-up's noisy logit; any other expert gets in if its
    re-noised logit beats the winner's.

    Args:
        clean: ``(B, M)`` logits before noise, ``M >= 2``.
        noisy: ``(B, M)`` logits after noise.
        std: ``(B, M)`` noise standard deviations (positive).

    Returns:
        ``(B, M)`` probabilities, differentiable w.r.t. all three inputs.

    """
    top2 = noisy.topk(2, dim=1).values
    threshold_if_in = top2[:, 1:2]
    threshold_if_out = top2[:, 0:1]
    is_in = noisy > threshold_if_in
    prob_if_in = normal_cdf((clean - threshold_if_in) / std)
    prob_if_out = normal_cdf((clean - threshold_if_out) / std)
    return torch.where(is_in, prob_if_in, prob_if_out)


class NoisyTopOneGate(nn.Module):
    """Per-sample top-1 router over ``num_experts`` from a pooled ``(B, rank)`` code.

    Clean logits are ``pooled @ w_gate``; in training mode Gaussian noise with std
    ``softplus(pooled @ w_noise) + noise_epsilon`` is added, and the chosen expert is the
    argmax of the (noisy) logits. Noise only chooses: the router probability ``p`` of the
    chosen expert is always its clean-logit softmax probability, so for the same choice it is
    the same in training and evaluation. The chosen expert's output is multiplied by the gate
    factor:

    - ``"straight_through"``: ``p / p.detach()``, exactly 1 (the reference's value) with the
      gradient of ``log p`` into ``w_gate``;
    - ``"clean_prob"``: ``p`` itself.

    The balance loss's importance term sums ``p`` (not the factor, which is 1 under
    straight-through and would reduce importance to a copy of the load counts); ``w_noise``
    learns from the load term. Both weight matrices start at zero; the gate runs in float32
    even under autocast.

    Args:
        rank: Width of the pooled code (the LoRA rank).
        num_experts: Number of experts ``M``.
        noise_epsilon: Floor added to the noise standard deviation.
        factor: One of :data:`GATE_FACTORS`.
        device: Device of the gate weights (``"meta"`` for shape-only models).
        dtype: Dtype of the gate weights (float32 when None).

    Example:
        >>> gate = NoisyTopOneGate(rank=3, num_experts=8, factor="clean_prob").eval()
        >>> routing = gate(torch.randn(4, 3))
        >>> routing.expert_index.shape, routing.expert_weight[0].item()
        (torch.Size([4]), 0.125)

    """

    def __init__(
        self,
        rank: int,
        num_experts: int,
        noise_epsilon: float = 1e-2,
        factor: str = GATE_FACTORS[0],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if factor not in GATE_FACTORS:
            raise ValueError(f"gate factor must be one of {list(GATE_FACTORS)}, got {factor!r}")
        self.num_experts = num_experts
        self.noise_epsilon = noise_epsilon
        self.factor = factor
        self.w_gate = nn.Parameter(torch.zeros(rank, num_experts, device=device, dtype=dtype))
        self.w_noise = nn.Parameter(torch.zeros(rank, num_experts, device=device, dtype=dtype))

    def forward(self, pooled: torch.Tensor) -> Routing:
        """Route each sample to one expert.

        Args:
            pooled: ``(B, rank)`` spatially averaged low-rank code.

        Returns:
            The :class:`Routing` for the batch.

        """
        device_type = pooled.device.type
        no_autocast = (
            torch.autocast(device_type, enabled=False)
            if autocast_active(device_type)
            else contextlib.nullcontext()
        )
        # Softmax, softplus and the CDF tails lose too much in bf16; the gate is tiny anyway.
        with no_autocast:
            pooled = pooled.float()
            clean = pooled @ self.w_gate.float()
            std = None
            noisy = clean
            if self.training:
                std = F.softplus(pooled @ self.w_noise.float()) + self.noise_epsilon
                noisy = clean + torch.randn_like(clean) * std
            index = noisy.argmax(dim=1)
            prob = clean.softmax(dim=1).gather(1, index[:, None])
            weight = prob / prob.detach() if self.factor == "straight_through" else prob
            importance = torch.zeros_like(clean).scatter(1, index[:, None], prob).sum(dim=0)
            if std is not None and self.num_experts > 1:
                load = prob_in_top1(clean, noisy, std).sum(dim=0)
            else:
                experts = torch.arange(self.num_experts, device=index.device)
                load = (index[:, None] == experts).sum(dim=0).float()
            loss = cv_squared(importance) + cv_squared(load)
        return Routing(index, weight.squeeze(1), loss)

    def extra_repr(self) -> str:
        """Gate shape and noise floor for ``print(model)``."""
        rank, experts = self.w_gate.shape
        return (
            f"rank={rank}, num_experts={experts}, noise_epsilon={self.noise_epsilon:g}, "
            f"factor={self.factor}"
        )
