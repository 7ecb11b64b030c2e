"""After a fit: the training-curve plot drawn from the CSV log."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def epoch_table(metrics_csv: Path) -> pd.DataFrame:
    """One row per epoch with the epoch-level columns Lightning logged (NaN where absent)."""
    log = pd.read_csv(metrics_csv)
    columns = [c for c in log.columns if c.endswith("_epoch") or c.startswith("val_")]
    return log.groupby("epoch")[columns].mean(numeric_only=True)


def plot_training_curve(metrics_csv: Path, path: Path, eval_metric: str) -> Path | None:
    """Draw loss and validation metric per epoch from ``metrics_csv`` into the PNG ``path``.

    Returns:
        ``path``, or ``None`` when the log holds no completed epoch yet.

    """
    if not metrics_csv.is_file():
        return None
    table = epoch_table(metrics_csv)
    if table.empty:
        return None
    # Figure (not pyplot): draws off-screen without touching the user's notebook backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    loss_ax, metric_ax = fig.subplots(1, 2)
    for column, label in (("train_loss_epoch", "train"), ("val_loss", "validation")):
        if column in table:
            series = table[column].dropna()
            loss_ax.plot(series.index, series.values, marker="o", label=label)
    loss_ax.set(title="loss", xlabel="epoch")
    loss_ax.legend()
    metric_column = f"val_{eval_metric}"
    if metric_column in table:
        series = table[metric_column].dropna()
        metric_ax.plot(series.index, series.values, marker="o", color="tab:green")
    metric_ax.set(title=f"validation {eval_metric}", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
