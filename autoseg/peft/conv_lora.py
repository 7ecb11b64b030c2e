"""Conv-LoRA: LoRA whose low-rank code passes through a gated mixture of multi-scale convs.

Zhong et al., "Convolution Meets LoRA: Parameter Efficient Finetuning for Segment Anything
Model", ICLR 2024. For ``z = A(x)`` on the token map (NHWC),
``y = W0 x + b + (alpha / r) * B(z + g(z) * E_k(z))`` where ``k`` is the top-1 expert.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from autoseg.peft.gate import GATE_FACTORS, NoisyTopOneGate, Routing
from autoseg.peft.lora import LoRALinear, autocast_active, wrap_qkv_layers
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting


@dataclass
class ConvLoRAConfig(PeftConfig):
    """Conv-LoRA's settings, the paper's defaults (r = 3, alpha = 32, M = 8 experts).

    ``balance_weight`` scales the experts' load-balancing loss added to the task loss;
    ``gate_factor`` is what multiplies the chosen expert's output (see
    :class:`~autoseg.peft.gate.NoisyTopOneGate`).

    Example:
        >>> config = ConvLoRAConfig(num_experts=4)
        >>> config.num_experts, config.balance_weight, config.gate_factor
        (4, 0.01, 'straight_through')

    """

    method: ClassVar[str] = "conv_lora"
    rank: int = setting(3, at_least=1)
    alpha: float = setting(32.0, above=0)
    num_experts: int = setting(8, at_least=1)
    balance_weight: float = setting(0.01, at_least=0)
    gate_factor: str = setting(GATE_FACTORS[0], choices=lambda: GATE_FACTORS)


def _inside_backward() -> bool:
    """Whether we run inside an autograd backward pass (e.g. a checkpoint recompute)."""
    graph_task_id = getattr(torch._C, "_current_graph_task_id", None)
    return graph_task_id is not None and graph_task_id() != -1


def bicubic_resize_matrix(
    size_in: int, size_out: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The ``(size_out, size_in)`` matrix of PyTorch's 1-D bicubic resize (align_corners=False).

    Built by resizing the identity, so it is PyTorch's own kernel, border clamping included.
    """
    eye = torch.eye(size_in, device=device, dtype=dtype).view(size_in, 1, size_in, 1)
    columns = F.interpolate(eye, size=(size_out, 1), mode="bicubic", align_corners=False)
    return columns.view(size_in, size_out).T


def bicubic_resize(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(z, size, mode="bicubic", align_corners=False)`` as two matmuls.

    Bicubic resizing is separable, so ``rows @ z @ cols.T`` equals it (to float rounding);
    on the CPU the matmuls and their backward are several times faster than the
    interpolation kernel's, which matters once every expert runs on every sample.

    Example:
        >>> z = torch.randn(2, 3, 5, 7)
        >>> expected = F.interpolate(z, size=(10, 14), mode="bicubic", align_corners=False)
        >>> torch.allclose(bicubic_resize(z, (10, 14)), expected, atol=1e-6)
        True

    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    rows = _resize_matrix(z, z.shape[-2], size[0], dtype)
    cols = _resize_matrix(z, z.shape[-1], size[1], dtype)
    return rows @ z @ cols.T


def _resize_matrix(
    z: torch.Tensor, size_in: int, size_out: int, dtype: torch.dtype
) -> torch.Tensor:
    """The resize matrix for ``z``, kept per size on the CPU.

    Rebuilding it per expert call was a tenth of Conv-LoRA's extra operations. Fake, traced
    and compiled inputs rebuild it, so no graph or fake mode captures the kept tensor.
    """
    kept = (
        z.device.type == "cpu"
        and not isinstance(z, FakeTensor)
        and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
    )
    if kept:
        return _cpu_resize_matrix(size_in, size_out, dtype)
    return bicubic_resize_matrix(size_in, size_out, z.device, dtype)


@functools.lru_cache(maxsize=256)
def _cpu_resize_matrix(size_in: int, size_out: int, dtype: torch.dtype) -> torch.Tensor:
    # Outside inference mode, so the same tensor can be saved for a later training backward.
    with torch.inference_mode(False), torch.no_grad():
        return bicubic_resize_matrix(size_in, size_out, torch.device("cpu"), dtype)


class ConvExpert(nn.Module):
    """One expert: bicubic upscale by ``scale``, 3x3 conv, GELU, bicubic back to input size.

    Args:
        rank: Channels in and out (the LoRA rank).
        scale: Integer upscaling factor; 1 convolves at the input resolution.
        device: Device of the conv weights.
        dtype: Dtype of the conv weights.

    Example:
        >>> expert = ConvExpert(rank=3, scale=2)
        >>> expert(torch.randn(2, 3, 14, 14)).shape
        torch.Size([2, 3, 14, 14])

    """

    def __init__(
        self,
        rank: int,
        scale: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = scale
        self.conv = nn.Conv2d(rank, rank, kernel_size=3, padding=1, device=device, dtype=dtype)
        nn.init.zeros_(self.conv.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the expert to an NCHW map.

        Args:
            z: ``(B, rank, H, W)``.

        Returns:
            ``(B, rank, H, W)``; the conv's dtype (autocast's dtype inside autocast on an
            accelerator; on the CPU the expert runs in the conv's dtype even then).

        """
        if autocast_active(z.device.type) and z.device.type == "cpu":
            # Rank-r convs and resizes in bf16 run slower than in fp32 on a CPU (measured).
            with torch.autocast("cpu", enabled=False):
                return self._convolve(z.to(self.conv.weight.dtype))
        if not autocast_active(z.device.type):
            z = z.to(self.conv.weight.dtype)
        return self._convolve(z)

    def _convolve(self, z: torch.Tensor) -> torch.Tensor:
        height, width = z.shape[-2:]
        if self.scale > 1:
            z = bicubic_resize(z, (height * self.scale, width * self.scale))
        if z.device.type == "cpu":
            # oneDNN's rank-r conv backward is 2-3x faster channels-last, and GELU's backward
            # is fastest on contiguous NCHW (measured, 1 thread: scale 8 expert 8.9 -> 3.9 ms).
            y = F.gelu(self.conv(z.contiguous(memory_format=torch.channels_last)).contiguous())
        else:
            y = F.gelu(self.conv(z))
        if self.scale > 1:
            y = bicubic_resize(y, (height, width))
        return y

    def extra_repr(self) -> str:
        """Upscaling factor for ``print(model)``."""
        return f"scale={self.scale}"


class ConvLoRALinear(LoRALinear):
    """Conv-LoRA around a frozen fused ``qkv`` linear layer.

    The low-rank code ``z = A(x)`` is viewed as a ``(B, H, W, r)`` map (a ``(B, N, r)``
    token sequence is reshaped to ``(B, sqrt(N), sqrt(N), r)``). A noisy top-1 gate on the
    spatially pooled code picks one of ``num_experts`` conv experts (expert ``i`` works at
    ``i + 1`` times the resolution) per sample; that expert's output, times the gate factor,
    is added to ``z`` before ``B``. The last forward's load-balancing loss is kept in
    :attr:`balance_loss`.

    On an accelerator every expert runs on the whole batch and a one-hot weight keeps the
    chosen one: choosing the samples per expert would need their count on the host (a
    device sync, and a graph break under ``torch.compile``). The other experts' outputs are
    multiplied by exactly zero, so the result and the gradients equal running only the
    chosen expert, except that the unchosen experts get zero gradients instead of none
    (AdamW still applies momentum and weight decay to them); an exported or compiled graph
    takes this path too. Otherwise on the CPU, where reading the routing costs no sync,
    each expert runs only on the samples routed to it: the same
    result, the unchosen experts get no gradient, and the step skips the other experts'
    work (expert ``i`` upsamples ``i + 1`` times, so running all eight costs about eight
    times the average chosen one).

    Args:
        base: The fused qkv linear layer; frozen in place and kept as ``self.base``.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank``.
        num_experts: Number of experts ``M`` (scales ``1..M``).
        gate_factor: One of :data:`~autoseg.peft.gate.GATE_FACTORS`.

    Example:
        >>> layer = ConvLoRALinear(nn.Linear(32, 96), rank=3, num_experts=8)
        >>> x = torch.randn(2, 14, 14, 32)
        >>> torch.equal(layer(x), layer.base(x))
        True
        >>> layer.balance_loss.shape
        torch.Size([])

    """

    balance_loss: torch.Tensor | None

    def __init__(
        self,
        base: nn.Linear,
        rank: int = 3,
        alpha: float = 32.0,
        num_experts: int = 8,
        gate_factor: str = GATE_FACTORS[0],
    ) -> None:
        super().__init__(base, rank=rank, alpha=alpha)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        factory = {"device": self.lora_A.weight.device, "dtype": self.lora_A.weight.dtype}
        self.experts = nn.ModuleList(
            ConvExpert(rank, scale=i + 1, **factory) for i in range(num_experts)
        )
        self.gate = NoisyTopOneGate(rank, num_experts, factor=gate_factor, **factory)
        self.balance_loss = None

    def adapt(self, z: torch.Tensor) -> torch.Tensor:
        """Add the gated expert output to the low-rank code.

        Args:
            z: ``(B, H, W, rank)`` map or ``(B, N, rank)`` sequence with ``N`` a square.

        Returns:
            Tensor shaped like ``z``.

        Raises:
            ValueError: If ``z`` is neither 3-D nor 4-D, or ``N`` is not a perfect square.

        """
        if z.dim() == 4:
            return self._mix_experts(z)
        if z.dim() == 3:
            batch, tokens, rank = z.shape
            side = math.isqrt(tokens)
            if side * side != tokens:
                raise ValueError(
                    f"ConvLoRALinear got a token sequence of length {tokens}, which is not a "
                    "perfect square, so it cannot be viewed as a square (side x side) map"
                )
            mixed = self._mix_experts(z.reshape(batch, side, side, rank))
            return mixed.reshape(batch, tokens, rank)
        raise ValueError(
            "ConvLoRALinear expects input of shape (B, H, W, C) or (B, N, C), "
            f"got {z.dim()}-D input"
        )

    def _mix_experts(self, z_map: torch.Tensor) -> torch.Tensor:
        """``z + g * E_k(z)`` on an NHWC map, recording the balance loss."""
        routing = self.gate(z_map.mean(dim=(1, 2)))
        # A checkpointed block re-runs this forward during backward; keeping the recomputed
        # loss would pin that recompute graph (and its activations) until the next step.
        if not _inside_backward():
            self.balance_loss = routing.balance_loss
        expert_out = self._run_chosen_experts(z_map.permute(0, 3, 1, 2), routing)
        return z_map + expert_out.permute(0, 2, 3, 1)

    def _run_chosen_experts(self, z: torch.Tensor, routing: Routing) -> torch.Tensor:
        """``g[b] * E_k[b](z[b])`` for every sample (see the class notes for the two paths)."""
        # Traced or compiled graphs (ONNX export, torch.compile) must not bake in one routing.
        traced = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if z.device.type == "cpu" and not (traced or torch.compiler.is_compiling()):
            return self._run_routed_groups(z, routing)
        return self._run_all_experts(z, routing)

    def _run_all_experts(self, z: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Every expert on the whole batch, one-hot weighted: no value read on the host."""
        experts = torch.arange(len(self.experts), device=z.device)
        # Not F.one_hot: it checks the index range on the host, a device sync.
        chosen = (routing.expert_index[:, None] == experts).to(routing.expert_weight)
        weights = chosen * routing.expert_weight[:, None]
        z = z.contiguous()
        mixed = torch.zeros_like(z)
        for expert, weight in zip(self.experts, weights.unbind(dim=1), strict=True):
            out = expert(z)
            mixed = mixed + out * weight.to(out.dtype).view(-1, 1, 1, 1)
        return mixed.to(z.dtype)

    def _run_routed_groups(self, z: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Each expert on the samples routed to it; reads the group sizes on the host."""
        order = torch.argsort(routing.expert_index, stable=True)
        counts = torch.bincount(routing.expert_index, minlength=len(self.experts)).tolist()
        groups = z[order].contiguous().split(counts)
        factors = routing.expert_weight[order].split(counts)
        outputs = []
        for expert, group, factor, count in zip(self.experts, groups, factors, counts, strict=True):
            if count:
                out = expert(group)
                outputs.append(out * factor.to(out.dtype).view(-1, 1, 1, 1))
        return torch.cat(outputs)[torch.argsort(order)].to(z.dtype)

    def parameter_groups(self) -> dict[str, int]:
        """Adapter parameters by the paper's columns: LoRA and MoE-conv (experts + gate)."""
        moe = sum(p.numel() for part in (self.experts, self.gate) for p in part.parameters())
        return {**super().parameter_groups(), "moe_conv": moe}

    def __getstate__(self) -> dict[str, Any]:
        """Drop the stored loss: a non-leaf tensor would break ``copy.deepcopy``/pickling."""
        state = super().__getstate__()
        return {**state, "balance_loss": None}


def apply_conv_lora(model: nn.Module, config: ConvLoRAConfig) -> None:
    """Wrap the image encoder's ``qkv`` layers in :class:`ConvLoRALinear`."""

    def wrap(base: nn.Linear) -> ConvLoRALinear:
        return ConvLoRALinear(
            base, config.rank, config.alpha, config.num_experts, config.gate_factor
        )

    wrap_qkv_layers(model.image_encoder, wrap)


register_peft_method("conv_lora", ConvLoRAConfig, ConvLoRALinear, apply_conv_lora, position=0)
