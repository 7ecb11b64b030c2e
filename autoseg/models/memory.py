"""Peak training memory of one configuration, counted from the real modules with fake tensors.

:func:`estimate_training_memory` builds the segmenter with the PEFT method as fake tensors
(no weights, no GPU needed) and counts what one training forward saves for backward
(:mod:`autoseg.models.saved_tensors`, which also states how attention and Conv-LoRA's
routing are counted). The estimate adds:

- parameters and buffers as built (fp32; mixed precision keeps fp32 master weights);
- gradients of the trainable parameters, and AdamW's two fp32 states per trainable value
  (trainable: what the method leaves requiring grad; every parameter for ``full``);
- the saved activations; with activation checkpointing, the tensors saved outside the
  encoder blocks, each checkpointed block's inputs, and one block's recompute in backward;
- a transient term: the gradients of the largest activation and of its producer's input,
  which coexist while backward passes that node (2 x the largest saved storage);
- on CUDA, a fixed :data:`CUDA_CONTEXT_BYTES` for the context and kernel workspaces.

The peak is taken as all terms at once, an upper bound: backward frees activations as it
makes gradients. ``benchmarks/bench_memory.py`` checks the CPU estimate against measured
peak RSS growth. Traces run at batch 1 and 2; larger batches are extrapolated row by row
(exact: every saved storage is linear in the batch, and the tests check a traced batch 4).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from autoseg.models.saved_tensors import SavedTensors, fake_segmenter, trace_saved_tensors

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "PRECISIONS",
    "MemoryEstimate",
    "estimate_training_memory",
    "fits_card",
]

GIB = 2**30
CUDA_CONTEXT_BYTES = GIB // 2
"""CUDA context, cuBLAS/cuDNN workspaces and allocator slack: a typical half GiB, assumed."""
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""Lightning precision -> autocast dtype; ``"auto"`` is bf16-mixed on CUDA, fp32 on a CPU."""
ADAMW_STATES = 2
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one training step, in bytes, by kind.

    Example:
        >>> est = estimate_training_memory("vit_tiny", 64, batch_size=2, device="cpu")
        >>> est.total_bytes == sum(est.breakdown().values()), est.activations_bytes > 0
        (True, True)

    """

    backbone: str
    image_size: int
    batch_size: int
    precision: str
    activation_checkpointing: bool
    method: str
    device: str
    parameters_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int
    transient_bytes: int
    context_bytes: int
    trainable_parameters: int = field(default=0)
    total_parameters: int = field(default=0)

    def breakdown(self) -> dict[str, int]:
        """The byte terms whose sum is :attr:`total_bytes`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_bytes")}

    @property
    def total_bytes(self) -> int:
        """The estimated peak: every term together."""
        return sum(self.breakdown().values())

    @property
    def total_gib(self) -> float:
        """:attr:`total_bytes` in GiB."""
        return self.total_bytes / GIB


def fits_card(estimate: MemoryEstimate, card_gib: float, headroom: float = 0.10) -> bool:
    """Whether the estimate leaves at least ``headroom`` (a fraction) of a card free.

    Example:
        >>> est = estimate_training_memory("vit_tiny", 64, batch_size=1)
        >>> fits_card(est, 8), fits_card(est, 0.5)
        (True, False)

    """
    return estimate.total_bytes <= (1.0 - headroom) * card_gib * GIB


def estimate_training_memory(
    backbone: str,
    image_size: int | None = None,
    batch_size: int = 1,
    precision: str = "auto",
    activation_checkpointing: bool = False,
    method: str = "conv_lora",
    num_classes: int = 1,
    device: str = "cuda",
    loss: Loss | None = None,
) -> MemoryEstimate:
    """Estimate peak memory of one AdamW training step (see the module docstring).

    Args:
        backbone: A registered backbone (``vit_b``, ``vit_l``, ``vit_h``, ``lite``, ...).
        image_size: Square input side; None: the backbone's native size.
        batch_size: Images per step.
        precision: ``"auto"`` or one of :data:`PRECISIONS`.
        activation_checkpointing: Whether the encoder blocks recompute in backward.
        method: A registered PEFT method, with its default settings.
        num_classes: Logit maps (1 = binary).
        device: ``"cuda"`` (estimated without a GPU) or ``"cpu"``.
        loss: ``loss(logits, target)`` as training applies it to fp32 logits and a
            ``(B, S, S)`` long target; None counts only the logits for the loss.

    Returns:
        The :class:`MemoryEstimate`. Results are cached per argument tuple.

    Raises:
        ValueError: An unknown backbone, method, precision or device, or a bad size.

    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if precision == "auto":
        precision = "bf16-mixed" if device == "cuda" else "32-true"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be 'auto' or one of {list(PRECISIONS)}, got {precision!r}"
        )
    return _estimate(
        backbone, image_size, batch_size, precision, activation_checkpointing, method,
        num_classes, device, loss,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _estimate(
    backbone: str,
    image_size: int | None,
    batch_size: int,
    precision: str,
    checkpointing: bool,
    method: str,
    num_classes: int,
    device: str,
    loss: Loss | None,
) -> MemoryEstimate:
    built = fake_segmenter(backbone, image_size, method, num_classes, device)
    trace = _saved_tensors(
        backbone, image_size, method, num_classes, device, batch_size, precision, loss
    )
    activations = trace.checkpointed_bytes() if checkpointing else trace.saved_bytes()
    return MemoryEstimate(
        backbone=backbone,
        image_size=built.image_size,
        batch_size=batch_size,
        precision=precision,
        activation_checkpointing=checkpointing,
        method=method,
        device=device,
        parameters_bytes=built.parameter_bytes,
        gradients_bytes=built.trainable_bytes,
        optimizer_state_bytes=ADAMW_STATES * 4 * built.trainable_count,
        activations_bytes=activations,
        transient_bytes=2 * trace.largest_bytes(),
        context_bytes=CUDA_CONTEXT_BYTES if device == "cuda" else 0,
        trainable_parameters=built.trainable_count,
        total_parameters=built.parameter_count,
    )


@functools.lru_cache(maxsize=64)
def _saved_tensors(
    backbone: str,
    image_size: int | None,
    method: str,
    num_classes: int,
    device: str,
    batch_size: int,
    precision: str,
    loss: Loss | None,
) -> SavedTensors:
    """One trace per batch size up to 2 (it serves both checkpointing settings)."""
    key = (backbone, image_size, method, num_classes, device)
    if batch_size > 2:
        one, two = (_saved_tensors(*key, batch, precision, loss) for batch in (1, 2))
        scaled = one.extrapolated(two, batch_size)
        if scaled is not None:
            return scaled
    return trace_saved_tensors(fake_segmenter(*key), batch_size, PRECISIONS[precision], loss)
