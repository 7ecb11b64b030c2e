"""Compute a frozen encoder prefix once per distinct input: an exact, capped output cache.

Where no trainable parameter sits below a module and nothing in it is random, its output
depends only on its input. TinyViT's patch embedding and conv stage 0 are such a prefix
under PEFT (the adapters sit on attention ``qkv`` layers, later), as is SAM ViT's patch
embedding. :class:`FrozenPrefixCache` keys each sample by a digest of its exact bytes (plus
shape, dtype, device and autocast state), so a flipped or rotated image is simply another
key and augmentation needs no special handling: every distinct (image, augmentation)
variant is computed once and served from memory afterwards.

Design choices:

* Entries are added until ``max_bytes`` is reached, then no more (no eviction): a training
  loop visits every sample once per epoch, and under that cyclic access LRU would evict each
  entry just before its next use, while stop-adding serves the stored share every epoch.
* Misses run under ``no_grad``: the prefix is frozen and its input carries no gradient, so
  no graph would be built without the cache either; outputs and gradients are bit-identical.
* A prefix whose parameters train, whose input requires grad, or which holds a module whose
  output depends on training mode (dropout, drop-path, batch norm in train mode) is run
  normally, uncached: exactness first. :func:`enable_prefix_cache` refuses a trainable
  prefix up front.
* Stored outputs are keyed also by the prefix's weights (each tensor's storage and version
  counter), so loading other weights, or moving the model, empties the cache.
* The cache is not state: it lives outside the module tree (no ``state_dict`` keys), and
  pickling or deep-copying it keeps the settings and drops the entries.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from autoseg.errors import AutosegError
from autoseg.models.tiny_vit import TinyViT

__all__ = [
    "DEFAULT_PREFIX_CACHE_BYTES",
    "FrozenPrefixCache",
    "PrefixCacheError",
    "cached_prefix",
    "default_cache_bytes",
    "disable_prefix_cache",
    "enable_prefix_cache",
    "prefix_cache_of",
    "prefix_modules",
]

DEFAULT_PREFIX_CACHE_BYTES = 1 << 30
"""1 GiB: about 128 LiteMedSAM 256-px variants in fp32 (8 MiB each), 256 under bf16."""


class PrefixCacheError(AutosegError, ValueError):
    """The prefix cannot be cached exactly (a trainable parameter, or no known prefix)."""


def _stochastic_in_training(module: nn.Module) -> bool:
    if not module.training:
        return False
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
        return not isinstance(module, nn.modules.dropout._DropoutNd) or module.p > 0
    drop = getattr(module, "drop_prob", None)
    return "DropPath" in type(module).__name__ or (isinstance(drop, float) and drop > 0)


class FrozenPrefixCache:
    """Per-sample store of a frozen prefix's outputs, keyed by the exact input bytes.

    Args:
        modules: the modules the prefix runs (checked for trainable parameters and
            randomness, and fingerprinted so new weights empty the cache).
        max_bytes: the most bytes of stored outputs; once reached, nothing more is added.

    Raises:
        PrefixCacheError: a parameter of ``modules`` requires grad.

    Example:
        >>> conv = nn.Conv2d(3, 4, 3).requires_grad_(False)
        >>> cache = FrozenPrefixCache([conv], max_bytes=1 << 20)
        >>> x = torch.ones(2, 3, 8, 8)
        >>> torch.equal(cache(conv, x), cache(conv, x)), cache.hits, cache.misses
        (True, 2, 2)

    """

    def __init__(self, modules: Sequence[nn.Module], max_bytes: int) -> None:
        self.modules = list(modules)
        self.max_bytes = int(max_bytes)
        trainable = [
            name
            for module in self.modules
            for name, p in module.named_parameters()
            if p.requires_grad
        ]
        if trainable:
            raise PrefixCacheError(
                f"the encoder prefix has trainable parameters {trainable[:3]}; its output "
                "would change as it trains, so it cannot be cached (freeze it, or turn the "
                "prefix cache off)"
            )
        self.clear()

    def clear(self) -> None:
        """Drop every entry and zero the counters."""
        self._drop_entries()
        self._fingerprint: tuple[tuple[int, int], ...] | None = None
        self._dim_order: list[int] = []
        self.hits = self.misses = self.bypassed = 0

    def _drop_entries(self) -> None:
        self._entries: dict[bytes, torch.Tensor] = {}
        self.stored_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        # The cache is not state: copies and pickles start empty.
        return {"modules": self.modules, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.modules, self.max_bytes = state["modules"], state["max_bytes"]
        self.clear()

    def cacheable(self, x: torch.Tensor) -> bool:
        """Whether ``x``'s prefix output is a function of ``x`` alone right now."""
        if x.requires_grad or any(
            p.requires_grad for module in self.modules for p in module.parameters()
        ):
            return False
        return not any(_stochastic_in_training(m) for root in self.modules for m in root.modules())

    def _weights_fingerprint(self) -> tuple[tuple[int, int], ...]:
        tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    @staticmethod
    def _key(sample: torch.Tensor) -> bytes:
        device = sample.device.type
        autocast = (
            torch.is_autocast_enabled(device),
            str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else "",
        )
        digest = hashlib.blake2b(digest_size=32)
        digest.update(repr((tuple(sample.shape), str(sample.dtype), str(sample.device))).encode())
        digest.update(repr(autocast).encode())
        data = sample.detach().contiguous().cpu()
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        return digest.digest()

    def __call__(
        self, compute: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Return ``compute(x)``, serving samples seen before from the store.

        Args:
            compute: runs the prefix on a batch (it must run exactly ``modules``).
            x: ``(B, ...)`` batch of prefix inputs.

        """
        if not self.cacheable(x):
            self.bypassed += 1
            return compute(x)
        fingerprint = self._weights_fingerprint()
        if fingerprint != self._fingerprint:
            self._drop_entries()
            self._fingerprint = fingerprint
        keys = [self._key(sample) for sample in x]
        missing = [i for i, key in enumerate(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        computed: dict[int, torch.Tensor] = {}
        if missing:
            with torch.no_grad():
                out = compute(x if len(missing) == len(keys) else x[missing])
            # Later layers' results depend (in the last bit) on their input's memory layout.
            self._dim_order = sorted(range(out.ndim), key=lambda d: -out.stride(d))
            for row, i in enumerate(missing):
                computed[i] = out[row]
                self._store(keys[i], out[row])
            if len(missing) == len(keys):
                return out
        return self._assemble([computed.get(i, self._entries.get(k)) for i, k in enumerate(keys)])

    def _assemble(self, samples: list[torch.Tensor]) -> torch.Tensor:
        """Stack samples into a batch laid out in memory as the prefix lays out its output."""
        first = samples[0]
        order = self._dim_order
        shape = (len(samples), *first.shape)
        physical = torch.empty([shape[d] for d in order], dtype=first.dtype, device=first.device)
        batch = physical.permute([order.index(d) for d in range(len(order))])
        for row, sample in enumerate(samples):
            batch[row].copy_(sample)
        return batch

    def _store(self, key: bytes, output: torch.Tensor) -> None:
        size = output.numel() * output.element_size()
        if key in self._entries or self.stored_bytes + size > self.max_bytes:
            return
        # A miss inside inference_mode (the decoder warm start) must still serve training.
        with torch.inference_mode(False):
            self._entries[key] = output.detach().clone()
        self.stored_bytes += size


def prefix_modules(encoder: nn.Module) -> list[nn.Module]:
    """The frozen-prefix modules of a SAM image encoder, in the order they run.

    TinyViT: ``patch_embed`` and ``layers[0]`` (the conv stage and its patch merging);
    Meta's ViT: ``patch_embed``.

    Raises:
        PrefixCacheError: the encoder is neither.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model, _ = build_segmenter("lite_tiny")
        >>> [type(m).__name__ for m in prefix_modules(model.image_encoder)]
        ['_PatchEmbed', '_ConvStage']

    """
    if isinstance(encoder, TinyViT):
        return [encoder.patch_embed, encoder.layers[0]]
    if isinstance(getattr(encoder, "patch_embed", None), nn.Module) and hasattr(encoder, "blocks"):
        return [encoder.patch_embed]
    raise PrefixCacheError(f"no known frozen prefix in {type(encoder).__name__}")


def _cached_forward(module: nn.Module, cache: FrozenPrefixCache, x: torch.Tensor) -> torch.Tensor:
    return cache(functools.partial(type(module).forward, module), x)


def enable_prefix_cache(
    model: nn.Module, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES
) -> FrozenPrefixCache:
    """Cache the image encoder's frozen prefix, in place; returns the (new, empty) cache.

    Call it after :func:`~autoseg.peft.apply_peft` (which freezes the encoder). The module
    tree and ``state_dict`` do not change. Meant for fitting on a small data set: each
    distinct (image, augmentation) input is computed once; inference on new images would
    only fill memory, so :func:`disable_prefix_cache` after the fit.

    Args:
        model: a ``SamSegmenter`` (or its ``image_encoder``).
        max_bytes: the cap on stored outputs.

    Raises:
        PrefixCacheError: a prefix parameter trains, or the encoder has no known prefix.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> from autoseg.peft import apply_peft
        >>> model = apply_peft(build_segmenter("lite_tiny")[0], "conv_lora")
        >>> cache = enable_prefix_cache(model, max_bytes=1 << 24)
        >>> _ = model(torch.rand(1, 3, 64, 64) * 255); _ = model(torch.zeros(1, 3, 64, 64))
        >>> len(cache), prefix_cache_of(model) is cache
        (2, True)

    """
    encoder = getattr(model, "image_encoder", model)
    modules = prefix_modules(encoder)
    disable_prefix_cache(encoder)
    cache = FrozenPrefixCache(modules, max_bytes)
    if len(modules) == 1:  # ViT: route the patch embedding's own forward through the cache
        modules[0].__dict__["forward"] = functools.partial(_cached_forward, modules[0], cache)
    encoder.__dict__["prefix_cache"] = cache
    return cache


def prefix_cache_of(model: nn.Module) -> FrozenPrefixCache | None:
    """The cache installed by :func:`enable_prefix_cache`, or None."""
    encoder = getattr(model, "image_encoder", model)
    return encoder.__dict__.get("prefix_cache")


def disable_prefix_cache(model: nn.Module) -> None:
    """Remove the prefix cache and free its entries (its counters stay); a no-op without one."""
    encoder = getattr(model, "image_encoder", model)
    cache = encoder.__dict__.pop("prefix_cache", None)
    if cache is None:
        return
    for module in cache.modules:
        forward = module.__dict__.get("forward")
        if isinstance(forward, functools.partial) and forward.func is _cached_forward:
            del module.__dict__["forward"]
    cache._drop_entries()


def default_cache_bytes() -> int:
    """The cap a fit uses: :data:`DEFAULT_PREFIX_CACHE_BYTES`, at most a quarter of free RAM."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: keep the default
        return DEFAULT_PREFIX_CACHE_BYTES
    return max(0, min(DEFAULT_PREFIX_CACHE_BYTES, free // 4))


@contextlib.contextmanager
def cached_prefix(
    model: nn.Module, max_bytes: int | None = None
) -> Iterator[FrozenPrefixCache | None]:
    """Cache the frozen prefix for the block (a fit), then remove the cache and its entries.

    Yields None, changing nothing, where the prefix cannot be cached exactly (a method
    that trains it, such as ``full`` or ``bitfit``, or an encoder without a known prefix).

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> from autoseg.peft import apply_peft
        >>> model = apply_peft(build_segmenter("lite_tiny")[0], "lora")
        >>> with cached_prefix(model) as cache:
        ...     _ = model(torch.zeros(1, 3, 64, 64)); _ = model(torch.zeros(1, 3, 64, 64))
        >>> cache.hits, prefix_cache_of(model) is None
        (1, True)

    """
    try:
        cap = default_cache_bytes() if max_bytes is None else max_bytes
        cache = enable_prefix_cache(model, cap)
    except PrefixCacheError:
        cache = None
    try:
        yield cache
    finally:
        if cache is not None:
            disable_prefix_cache(model)
