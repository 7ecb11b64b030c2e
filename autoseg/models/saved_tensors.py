"""The tensors one training forward saves for backward, counted with fake tensors.

:func:`fake_segmenter` builds a segmenter on the meta device (random init, nothing read),
applies a PEFT method and moves it to a fake device (``FakeTensorMode``; ``"cuda"`` needs no
GPU). :func:`trace_saved_tensors` runs one training forward and loss on fake inputs under
``torch.autograd.graph.saved_tensors_hooks`` and records every saved storage once (a view
keeps its whole storage alive) with its bytes in the dtype it has (autocast's bf16 copies of
frozen weights included), and parameters and buffers left out. Autocast is set directly, so
the CUDA policy (which ops run in bf16, which in fp32) applies without a GPU.

Attention. On the meta device ``scaled_dot_product_attention`` dispatches to its math
route, which saves the (B, heads, N, N) probabilities. Neither target takes that route for
autoseg's default kernels: on a GPU, SAM's augmented q/k (no mask) run the flash or
memory-efficient kernel and TinyViT's frozen bias mask the memory-efficient one; on a CPU
(torch >= 2.2) both run ``_scaled_dot_product_flash_attention_for_cpu`` (checked on torch
2.14). All of them save q, k, v (and the mask), the output and a (B, heads, N) fp32
log-sum-exp, no N x N tensor; so the trace sends every SDPA call to
``aten._scaled_dot_product_efficient_attention``, whose saved set is exactly that. SAM ViTs'
``"mask"`` kernel trains with a grad-requiring mask, which takes the math route on a CPU;
that non-default case is not modelled.

Conv-LoRA routes each sample (window) to one expert, a data-dependent split that fake
tensors cannot run: the trace routes them all to the expert with the largest upscaling, the
most memory any routing can take.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from autoseg.models.activation_checkpointing import encoder_blocks
from autoseg.models.segmenter import build_segmenter
from autoseg.peft import apply_peft, balance_loss

__all__ = ["FakeSegmenter", "SavedTensors", "fake_segmenter", "trace_saved_tensors"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SavedTensors:
    """What one forward keeps for backward: one row per storage, in forward order.

    A row is ``(bytes, block, saved, kept_by_checkpoint)``: the encoder block running when
    the storage first appeared (-1: outside every block), whether autograd saved it, and
    whether a checkpointed block keeps it (a block input).

    Example:
        >>> rows = ((8, -1, True, False), (4, 0, True, True), (6, 0, True, False))
        >>> saved = SavedTensors(rows)
        >>> saved.saved_bytes(), saved.checkpointed_bytes(), saved.largest_bytes()
        (18, 18, 8)

    """

    rows: tuple[tuple[int, int, bool, bool], ...]

    def saved_bytes(self) -> int:
        """All saved storages: the activations without checkpointing (all alive at the loss)."""
        return sum(size for size, _, saved, _ in self.rows if saved)

    def largest_bytes(self) -> int:
        """The largest saved storage."""
        return max((size for size, _, saved, _ in self.rows if saved), default=0)

    def checkpointed_bytes(self) -> int:
        """The activations' peak with checkpointed encoder blocks.

        Forward keeps the block inputs and what is saved outside the blocks; that is all
        alive at the loss. Backward runs in reverse, so when it recomputes block ``k``, what
        was kept after block ``k`` has been freed: alive are the kept storages up to block
        ``k`` and block ``k``'s recomputed saved tensors.
        """
        kept = 0
        kept_through: dict[int, int] = {}
        recompute: dict[int, int] = {}
        for size, block, saved, is_input in self.rows:
            if is_input or (saved and block < 0):
                kept += size
            elif saved:
                recompute[block] = recompute.get(block, 0) + size
            if block >= 0:
                kept_through[block] = kept
        during_backward = (kept_through[k] + recompute.get(k, 0) for k in kept_through)
        return max([kept, *during_backward])

    def extrapolated(self, batch_2: SavedTensors, batch_size: int) -> SavedTensors | None:
        """The trace at ``batch_size`` from this one (batch 1) and ``batch_2`` (batch 2).

        Every storage either holds the batch or none of it, so its bytes are linear in the
        batch size. Returns None when the two traces do not pair up row by row.
        """
        if [r[1:] for r in self.rows] != [r[1:] for r in batch_2.rows]:
            return None
        rows = tuple(
            (one[0] + (batch_size - 1) * (two[0] - one[0]), *one[1:])
            for one, two in zip(self.rows, batch_2.rows, strict=True)
        )
        return SavedTensors(rows)


@dataclass
class FakeSegmenter:
    """A segmenter of fake tensors, the mode that owns them, and its parameter sums.

    Example:
        >>> fake = fake_segmenter("vit_tiny", 64, "lora", 1, "cpu")
        >>> fake.image_size, fake.trainable_count < fake.parameter_count
        (64, True)

    """

    mode: FakeTensorMode
    model: nn.Module
    device: str
    image_size: int
    weight_storages: frozenset[StorageWeakRef]
    parameter_bytes: int
    parameter_count: int
    trainable_bytes: int
    trainable_count: int


@functools.lru_cache(maxsize=16)
def fake_segmenter(
    backbone: str, image_size: int | None, method: str, num_classes: int, device: str
) -> FakeSegmenter:
    """Build (and cache) ``backbone`` with ``method`` applied, as fake tensors on ``device``."""
    with torch.device("meta"):
        model, parts = build_segmenter(backbone, num_classes, image_size, pretrained=False)
        apply_peft(model, method)
    mode = FakeTensorMode()
    _to_fake(model, mode, torch.device(device))
    model.train()
    tensors = {StorageWeakRef(t.untyped_storage()): t for t in _weights(model)}
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return FakeSegmenter(
        mode=mode,
        model=model,
        device=device,
        image_size=parts.image_size,
        weight_storages=frozenset(tensors),
        parameter_bytes=sum(t.untyped_storage().nbytes() for t in tensors.values()),
        parameter_count=sum(p.numel() for p in params),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        trainable_count=sum(p.numel() for p in trainable),
    )


def _to_fake(model: nn.Module, mode: FakeTensorMode, device: torch.device) -> None:
    """Swap every meta parameter and buffer for a fake tensor on ``device``, in place.

    Built on the meta device (fast, and ``copy.deepcopy`` works there), the model moves to
    a fake device so that autocast applies its own policy for that device type.
    """
    convert = functools.partial(mode.fake_tensor_converter.from_meta_and_device, mode)
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                fake = convert(param.detach(), device)
                module._parameters[name] = nn.Parameter(fake, requires_grad=param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = convert(buffer, device)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def trace_saved_tensors(
    built: FakeSegmenter, batch_size: int, dtype: torch.dtype | None, loss: Loss | None
) -> SavedTensors:
    """Run one training forward and ``loss`` (None: the logits' sum) on fake inputs.

    ``dtype`` is the autocast dtype (None: full precision). Returns the saved storages.
    """
    rows: dict[StorageWeakRef, list] = {}  # storage -> [bytes, block, saved, block input]
    current = [-1]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = StorageWeakRef(tensor.untyped_storage())
        if key in rows:
            rows[key][2] = True
        elif key not in built.weight_storages:
            rows[key] = [tensor.untyped_storage().nbytes(), current[0], True, False]
        return tensor

    handles = _track_blocks(built.model, rows, current)
    size, device = built.image_size, built.device
    try:
        with (
            built.mode,
            torch.device(device),
            _FusedAttentionRoute(),
            _autocast(device, dtype),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        ):
            images = torch.empty(batch_size, 3, size, size)
            target = torch.zeros(batch_size, size, size, dtype=torch.long)
            logits = built.model(images).float()
            total = loss(logits, target) if loss is not None else logits.sum()
            total = total + balance_loss(built.model)
    finally:
        for handle in handles:
            handle.remove()
    return SavedTensors(tuple(tuple(row) for row in rows.values()))


@contextlib.contextmanager
def _autocast(device: str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``device``, also for CUDA on a machine without a GPU.

    ``torch.autocast("cuda")`` switches itself off when no GPU is present; its CUDA policy
    (which ops run in bf16, which in fp32) still applies to fake CUDA tensors when the
    state is set directly, as here.
    """
    if dtype is None:
        yield
        return
    enabled, previous = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    torch.set_autocast_enabled(device, True)
    torch.set_autocast_dtype(device, dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device, enabled)
        torch.set_autocast_dtype(device, previous)


def _track_blocks(model: nn.Module, rows: dict[StorageWeakRef, list], current: list[int]) -> list:
    """Hooks that note which encoder block runs and what a checkpoint of it would keep."""
    handles = []
    for index, block in enumerate(encoder_blocks(model)):

        def enter(module: nn.Module, args: tuple[Any, ...], index: int = index) -> None:
            current[0] = index
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            trainable = any(p.requires_grad for p in module.parameters())
            if trainable or any(t.requires_grad for t in tensors):  # as the checkpoint decides
                for t in tensors:
                    key = StorageWeakRef(t.untyped_storage())
                    row = rows.setdefault(key, [t.untyped_storage().nbytes(), index, False, True])
                    row[3] = True

        def leave(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            current[0] = -1

        handles += [block.register_forward_pre_hook(enter), block.register_forward_hook(leave)]
    return handles


class _FusedAttentionRoute(TorchFunctionMode):
    """Run SDPA as the fused kernels do on the targets, and Conv-LoRA's worst routing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _efficient_attention(*args, **kwargs)
        if func is torch.bincount:
            # The expert group sizes: a real tensor, so ``.tolist()`` works; all samples
            # go to the last expert, the one with the largest upscaling.
            index, minlength = args[0], kwargs.get("minlength", 0)
            with unset_fake_temporarily():
                counts = torch.zeros(max(minlength, 1), dtype=torch.long, device="cpu")
                counts[-1] = index.numel()
            return counts
        return func(*args, **kwargs)


def _efficient_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    **_: Any,
) -> torch.Tensor:
    device = query.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # SDPA is on autocast's lower-precision list
        dtype = torch.get_autocast_dtype(device)
        query, key, value = (t.to(dtype) for t in (query, key, value))
        attn_mask = None if attn_mask is None else attn_mask.to(dtype)
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*query.shape[:-2], query.shape[-2], key.shape[-2])
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, attn_mask)
    )
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, needs_grad, dropout_p, is_causal, scale=scale
    )
    return out[0]
