"""autoseg: fine-tune Segment Anything for semantic segmentation with Conv-LoRA."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["NotFittedError", "SemanticSegmentor", "__version__"]


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import; load the facade only when it is asked for, so
    # `autoseg info` and the data/metrics modules stay quick to import.
    if name in {"SemanticSegmentor", "NotFittedError"}:
        from autoseg import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'autoseg' has no attribute {name!r}")
