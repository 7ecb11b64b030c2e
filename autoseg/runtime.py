"""Where and at which precision a model runs: one policy for training, inference and benchmarks.

Example:
    >>> from autoseg.config import EnvConfig
    >>> runtime = resolve_runtime(EnvConfig(accelerator="cpu"))
    >>> runtime.accelerator, runtime.precision, runtime.autocast_dtype, runtime.pin_memory
    ('cpu', '32-true', None, False)

"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoseg.config import EnvConfig

_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The accelerator (``cpu`` or ``gpu``) and Lightning precision of a run."""

    accelerator: str
    precision: str

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


def resolve_runtime(env: EnvConfig, inference: bool = False) -> Runtime:
    """Choose accelerator and precision from the settings and the hardware.

    ``accelerator="auto"`` takes the GPU when there is one; ``precision="auto"`` is bf16 mixed
    precision on GPUs that support it, 16-mixed on older GPUs, fp32 on CPUs. ``inference``
    ignores the accelerator a preset chose for training (``cpu_lite`` trains on the CPU), so
    a trained model predicts on the GPU wherever one exists.

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
    if precision == "auto" or (inference and accelerator == "gpu"):
        precision = _auto_precision(accelerator)
    return Runtime(accelerator, precision)


def _auto_precision(accelerator: str) -> str:
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"
