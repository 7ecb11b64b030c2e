"""Where and how a model runs: one policy for training, inference and benchmarks.

:func:`resolve_runtime` turns the ``env`` settings (``"auto"`` where unset) into a
:class:`Runtime`: accelerator, precision, torch threads, data-loading workers and whether the
image encoder is compiled. The CPU choices were measured on this project's 2-core Intel Xeon
(AVX512-BF16 and AMX-BF16), LiteMedSAM at 256 px with Conv-LoRA and its real weights, under
a load average of 6-9 from other work; benchmarks/README.md has the commands and files:

- precision: bf16 autocast where the CPU has native bf16 instructions (``avx512_bf16`` or
  ``amx_bf16``). There a training step (batch 2, 1 thread) took 1.78x less time than fp32
  (medians 87.9 s and 49.4 s) and inference ran 1.81x faster (0.112 against 0.062
  images/s). The same 32-step PH2 fit scored test IoU 0.850 and 0.854 in bf16 against
  0.861 and 0.862 in fp32 (seeds 0 and 1: a mean gap of 0.0095), and took 1.3-1.4x less
  time.
  CPUs without the instructions emulate bf16, which is slower than fp32: fp32 there.
- threads: the usable cores (``os.sched_getaffinity``), never more than torch's own count
  (physical cores, or what the caller set with ``torch.set_num_threads``). A fit leaves the
  cores that other work keeps busy at its start (:func:`busy_cores`), down to one thread:
  under that load two threads took 1.4-2.2x longer per step than one, for every worker
  count (``bench_threads.py``), since torch's threads wait for each other at every
  operation. Prediction keeps every usable core, so its output never depends on the load.
- workers: none on a CPU: loading a batch took 0.01-0.06 s next to an 8-50 s step, so a
  worker can save almost nothing and its process takes a core from the step; the measured
  step times with 0, 1 or 2 workers differed by less than their noise. On a GPU, up to 4,
  one core kept free.
- compile: off. With shapes left dynamic, compiling TinyViT's Conv-LoRA training step failed
  (an inductor error on a symbolic size); with static shapes (used here: the input size is
  fixed, a smaller last batch compiles once more) the tiny test model's first step took
  389 s against 0.1 s a step after it, under load (``bench_compile.py``), so on a CPU
  compiling costs more than a typical fit gains.
- memory format: channels-last (NHWC) conv weights on the CPU, so oneDNN's convs skip the
  NCHW reorders that were a third of a LiteMedSAM forward: 256-px Conv-LoRA inference (bf16,
  batch 4, 2 threads) ran 1.9x faster (1.01 against 1.93 images/s) and a training step
  (bf16, batch 1) about 1.3x faster. Not measured on GPUs: unchanged there.
- prefix cache: on for CPU fits. Serving TinyViT's patch embedding and conv stage (32% of
  the encoder's bf16 forward) from memory after its first epoch made a LiteMedSAM 256-px
  Conv-LoRA step (bf16, batch 1, 1 thread, real weights) 1.43x faster (medians 5.02 s and
  3.51 s, alternated, ``bench_prefix_cache.py``); it is exact. Not measured on GPUs: off.

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
import statistics
import time
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
CPU_WORKERS = 0
"""Data-loading workers on a CPU (``env.num_workers=-1``), as measured (module notes)."""
LOAD_AWARE_TRAINING = True
"""Whether a fit's automatic thread count leaves busy cores alone (see :func:`auto_threads`)."""
CPU_NATIVE_BF16_PRECISION = "bf16-mixed"
"""``env.precision="auto"`` on a CPU with native bf16, as measured (module notes)."""


@dataclass(frozen=True)
class Runtime:
    """The resolved settings of a run (see :func:`resolve_runtime`).

    Attributes:
        accelerator: ``cpu`` or ``gpu``.
        precision: a Lightning precision string.
        num_threads: torch CPU threads while the run works (0: leave torch's setting).
        num_workers: data-loading worker processes.
        compile: whether the image encoder runs through ``torch.compile``.
        prefix_cache: whether a fit caches the encoder's frozen prefix (see
            :func:`autoseg.training.trainer.run_training`).

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
    prefix_cache: bool = False

    @property
    def device(self) -> torch.device:
        """The torch device: the first CUDA GPU, or the CPU."""
        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype to autocast to (``None``: full precision)."""
        return _AUTOCAST_DTYPES.get(self.precision)

    @property
    def channels_last(self) -> bool:
        """Whether conv weights are stored channels-last (NHWC): on the CPU (module notes)."""
        return self.accelerator == "cpu"

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
        """Set the model's memory format and compile its image encoder; return the model.

        Both act in place and keep parameter names and values (the parameters stay the same
        objects, so an optimiser made before keeps them); saved weights are unchanged.
        """
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        encoder = getattr(model, "image_encoder", model)
        if self.compile and getattr(encoder, "_compiled_call_impl", None) is None:
            encoder.compile(dynamic=False)
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
        num_threads=auto_threads(env.num_threads, load_aware=LOAD_AWARE_TRAINING and not inference),
        num_workers=auto_workers(env.num_workers, accelerator),
        compile=bool(env.compile),  # None (auto): off everywhere, see the module notes
        # Not with a compiled encoder: the cache's lookups would break the compiled graph.
        prefix_cache=not (inference or env.compile)
        and (accelerator == "cpu" if env.prefix_cache is None else env.prefix_cache),
    )


def _auto_precision(accelerator: str) -> str:
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return CPU_NATIVE_BF16_PRECISION if cpu_has_native_bf16() else "32-true"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16``, Linux).

    Elsewhere (other systems, CPUs without the flags) bf16 would be emulated: ``False``.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return native_bf16_in_cpuinfo(text)


def native_bf16_in_cpuinfo(text: str) -> bool:
    """Whether ``/proc/cpuinfo`` text lists a native bf16 flag on a ``flags`` line.

    Example:
        >>> native_bf16_in_cpuinfo("flags : fpu avx2 avx512_bf16")
        True
        >>> native_bf16_in_cpuinfo("flags : fpu avx2 avx512f")
        False

    """
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 5, interval_s: float = 0.01) -> int:
    """Threads of other processes runnable right now (Linux ``/proc``; 0 where unknown).

    ``/proc/loadavg``'s fourth field counts the runnable threads at this instant; this
    process's own runnable threads (the reader, torch threads still spinning) are taken off.
    The median of a few samples ``interval_s`` apart steadies it. Unlike the load average it
    carries no memory of this process's own earlier work.
    """
    counts = []
    for index in range(samples):
        try:
            running = Path("/proc/loadavg").read_text().split()[3].partition("/")[0]
            counts.append(max(0, int(running) - _own_runnable_threads()))
        except (OSError, IndexError, ValueError):
            return 0
        if index + 1 < samples:
            time.sleep(interval_s)
    return int(statistics.median_low(counts))


def _own_runnable_threads() -> int:
    """Count the threads of this process in state R (at least 1: the caller)."""
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            # The state follows the parenthesised name, which may itself hold spaces.
            count += stat.read_text().rpartition(")")[2].split()[0] == "R"
    return max(1, count)


def auto_threads(num_threads: int, load_aware: bool = False) -> int:
    """``env.num_threads``: 0 = the usable cores, capped at torch's current thread count.

    The cap keeps torch's choice of physical cores over hyper-threads, and a caller's own
    ``torch.set_num_threads``; the affinity keeps a container or ``taskset`` limit. With
    ``load_aware`` (training), cores that other work keeps busy (:func:`busy_cores`) are
    left to it, down to one thread: torch's threads wait for one another at every
    operation, so a thread that shares its core stalls all of them (module notes).
    """
    if num_threads > 0:
        return num_threads
    threads = min(usable_cores(), torch.get_num_threads())
    if load_aware:
        threads = max(1, min(threads, usable_cores() - busy_cores()))
    return threads


def auto_workers(num_workers: int, accelerator: str) -> int:
    """``env.num_workers``: -1 = none on a CPU; on a GPU up to 4, one core kept for the step."""
    if num_workers >= 0:
        return num_workers
    if accelerator == "cpu":
        return CPU_WORKERS
    return max(0, min(GPU_MAX_WORKERS, usable_cores() - 1))
