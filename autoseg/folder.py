"""The predictor folder's layout: every file ``fit`` and ``save`` write, named in one place."""

from __future__ import annotations

from pathlib import Path


class PredictorFolder:
    """The paths inside one predictor folder (nothing is created or read here).

    Args:
        path: the predictor folder.

    Example:
        >>> folder = PredictorFolder("models/seg")
        >>> folder.config.as_posix(), folder.resume_checkpoint.as_posix()
        ('models/seg/config.yaml', 'models/seg/resume/last.ckpt')

    """

    CONFIG = "config.yaml"
    ADAPTER = "adapter.safetensors"
    FULL_WEIGHTS = "model.safetensors"
    LOGS = "logs"
    RESUME = "resume"

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)

    def __repr__(self) -> str:
        return f"PredictorFolder({str(self.root)!r})"

    @property
    def config(self) -> Path:
        """``config.yaml``: the saved state (settings, label space, fit summary)."""
        return self.root / self.CONFIG

    @property
    def adapter(self) -> Path:
        """``adapter.safetensors``: the trained (adapter and head) weights."""
        return self.root / self.ADAPTER

    @property
    def full_weights(self) -> Path:
        """``model.safetensors``: all weights, written by ``save(standalone=True)``."""
        return self.root / self.FULL_WEIGHTS

    @property
    def logs(self) -> Path:
        """``logs/``: the training logs (CSV and TensorBoard)."""
        return self.root / self.LOGS

    @property
    def metrics_csv(self) -> Path:
        """``logs/metrics.csv``: per-step and per-epoch losses and validation metrics."""
        return self.logs / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        """``logs/tensorboard/``: the TensorBoard event files."""
        return self.logs / "tensorboard"

    @property
    def curve(self) -> Path:
        """``training_curve.png``: loss and validation metric per epoch."""
        return self.root / "training_curve.png"

    @property
    def overlays(self) -> Path:
        """``validation_overlays/``: predictions on a few validation images."""
        return self.root / "validation_overlays"

    @property
    def resume_dir(self) -> Path:
        """``resume/``: what an interrupted fit continues from; removed once saved."""
        return self.root / self.RESUME

    @property
    def resume_checkpoint(self) -> Path:
        """``resume/last.ckpt``: the resume checkpoint (Lightning's ``save_last`` name)."""
        return self.resume_dir / "last.ckpt"

    @property
    def run_file(self) -> Path:
        """``resume/run.yaml``: the interrupted run's preset and config."""
        return self.resume_dir / "run.yaml"

    @property
    def model_card(self) -> Path:
        """``README.md``: the model card describing the predictor."""
        return self.root / "README.md"
