"""Noisy top-1 gate with the load-balancing loss of Shazeer et al. (2017)."""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.peft.lora import autocast_active


class Routing(NamedTuple):
    """Routing decision for one batch.

    Attributes:
        expert_index: ``(B,)`` int64, the expert chosen for each sample.
        expert_weight: ``(B,)`` float32, the router probability of that expert (a full-softmax
            probability, so it carries task-loss gradient into the gate).
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
    ``softplus(pooled @ w_noise) + noise_epsilon`` is added. The chosen expert is the argmax
    of the (noisy) logits and is weighted by its full-softmax probability, so the gate is
    trained by the task loss as well as by the balance loss. Both weight matrices start at
    zero; the gate runs in float32 even under autocast.

    Args:
        rank: Width of the pooled code (the LoRA rank).
        num_experts: Number of experts ``M``.
        noise_epsilon: Floor added to the noise standard deviation.
        device: Device of the gate weights (``"meta"`` for shape-only models).
        dtype: Dtype of the gate weights (float32 when None).

    Example:
        >>> gate = NoisyTopOneGate(rank=3, num_experts=8).eval()
        >>> routing = gate(torch.randn(4, 3))
        >>> routing.expert_index.shape, routing.expert_weight[0].item()
        (torch.Size([4]), 0.125)

    """

    def __init__(
        self,
        rank: int,
        num_experts: int,
        noise_epsilon: float = 1e-2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts = num_experts
        self.noise_epsilon = noise_epsilon
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
            probs = noisy.softmax(dim=1)
            index = noisy.argmax(dim=1)
            weight = probs.gather(1, index[:, None])
            sparse_gates = torch.zeros_like(probs).scatter(1, index[:, None], weight)
            importance = sparse_gates.sum(dim=0)
            if std is not None and self.num_experts > 1:
                load = prob_in_top1(clean, noisy, std).sum(dim=0)
            else:
                load = F.one_hot(index, self.num_experts).sum(dim=0).float()
            loss = cv_squared(importance) + cv_squared(load)
        return Routing(index, weight.squeeze(1), loss)

    def extra_repr(self) -> str:
        """Gate shape and noise floor for ``print(model)``."""
        rank, experts = self.w_gate.shape
        return f"rank={rank}, num_experts={experts}, noise_epsilon={self.noise_epsilon:g}"
