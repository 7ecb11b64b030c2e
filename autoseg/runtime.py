"""Where and how a model runs: one policy for training, inference and benchmarks.

:func:`resolve_runtime` turns the ``env`` settings (``"auto"`` where unset) into a
:class:`Runtime`: accelerator, precision, torch threads, data-loading workers and whether the
image encoder is compiled. The CPU choices were measured on a 2-core AVX512-BF16 machine
(``benchmarks/bench_precision.py``, ``bench_threads.py``, ``bench_compile.py``):

- precision: bf16 autocast where the CPU has native bf16 instructions (``avx512_bf16`` or
  ``amx_bf16``); it trained LiteMedSAM 1.4x faster there and predicted 1.8x faster, at the
  same accuracy. CPUs without them emulate bf16, which is slower than fp32: fp32 there.
- threads: the usable cores (``os.sched_getaffinity``), never more than torch's own count
  (physical cores, or what the caller set with ``torch.set_num_threads``).
- workers: none on a CPU (loading a batch costs milliseconds next to a seconds-long step,
  and a worker process takes a core from the step); on a GPU, up to 4, one core kept free.
- compile: off (on a CPU, compiling costs more than a typical fit gains).

Example:
    >>> from autoseg.config import EnvConfig
    >>> runtime = resolve_runtime(EnvConfig(accelerator="cpu", precision="32-true"))
    >>> runtime.accelerator, runtime.precision, runtime.autocast_dtype, runtime.pin_memory
    ('cpu', '32-true', None, False)
    >>> runtime.num_workers, runtime.compile
    (0, False)

"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoseg.config import EnvConfig

_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_MIXED = ("bf16-mixed", "16-mixed", "bf16", "16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
GPU_MAX_WORKERS = 4


@dataclass(frozen=True)
class Runtime:
    """The resolved settings of a run (see :func:`resolve_runtime`).

    Attributes:
        accelerator: ``cpu`` or ``gpu``.
        precision: a Lightning precision string.
        num_threads: torch CPU threads while the run works (0: leave torch's setting).
        num_workers: data-loading worker processes.
        compile: whether the image encoder runs through ``torch.compile``.

    Example:
        >>> runtime = Runtime("cpu", "bf16-mixed", num_threads=1)
        >>> runtime.autocast_dtype
        torch.bfloat16
        >>> with runtime.threads():
        ...     torch.get_num_threads()
        1

    """

    accelerator: str
    precision: str
    num_threads: int = 0
    num_workers: int = 0
    compile: bool = False

    @property
    def device(self) -> torch.device:
        """The torch device: the first CUDA GPU, or the CPU."""
        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype to autocast to (``None``: full precision)."""
        return _AUTOCAST_DTYPES.get(self.precision)

    @property
    def pin_memory(self) -> bool:
        """Page-locked loader memory speeds host-to-GPU copies; it only costs on a CPU."""
        return self.accelerator == "gpu"

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        """Run the block with ``num_threads`` torch threads, then restore the caller's count."""
        before = torch.get_num_threads()
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Compile the model's image encoder in place when ``compile`` is on; return the model.

        ``nn.Module.compile`` keeps parameter names, so saved weights are unchanged.
        """
        encoder = getattr(model, "image_encoder", model)
        if self.compile and getattr(encoder, "_compiled_call_impl", None) is None:
            encoder.compile()
        return model


def resolve_runtime(env: EnvConfig, inference: bool = False) -> Runtime:
    """Choose accelerator, precision, threads, workers and compilation.

    ``accelerator="auto"`` takes the GPU when there is one. ``inference`` ignores the
    accelerator a preset chose for training (``cpu_lite`` trains on the CPU), so a trained
    model predicts on the GPU wherever one exists; there, and on a CPU for a model trained
    with mixed precision, the hardware's own precision applies. ``precision="auto"``: bf16
    mixed on GPUs that support it, 16-mixed on older GPUs; on CPUs see the module notes.

    Args:
        env: the run's hardware settings.
        inference: choose for prediction and evaluation rather than training.

    Returns:
        The runtime to use.

    """
    has_gpu = torch.cuda.is_available()
    wanted = "auto" if inference else env.accelerator
    accelerator = "gpu" if has_gpu and wanted in ("auto", "gpu") else "cpu"
    precision = env.precision
    if precision == "auto" or (inference and (accelerator == "gpu" or precision in _MIXED)):
        precision = _auto_precision(accelerator)
    return Runtime(
        accelerator,
        precision,
        num_threads=auto_threads(env.num_threads),
        num_workers=auto_workers(env.num_workers, accelerator),
        compile=bool(env.compile),  # None (auto): off everywhere, see the module notes
    )


def _auto_precision(accelerator: str) -> str:
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16``, Linux).

    Elsewhere (other systems, CPUs without the flags) bf16 would be emulated: ``False``.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_threads(num_threads: int) -> int:
    """``env.num_threads``: 0 = the usable cores, capped at torch's current thread count.

    The cap keeps torch's choice of physical cores over hyper-threads, and a caller's own
    ``torch.set_num_threads``; the affinity keeps a container or ``taskset`` limit.
    """
    if num_threads > 0:
        return num_threads
    return min(usable_cores(), torch.get_num_threads())


def auto_workers(num_workers: int, accelerator: str) -> int:
    """``env.num_workers``: -1 = none on a CPU; on a GPU up to 4, one core kept for the step."""
    if num_workers >= 0:
        return num_workers
    if accelerator == "cpu":
        return 0
    return max(0, min(GPU_MAX_WORKERS, usable_cores() - 1))
