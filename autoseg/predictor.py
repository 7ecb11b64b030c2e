"""``SemanticSegmentor``: the three-line facade over data, model, training and inference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autoseg import __version__
from autoseg.builder import normalization_for
from autoseg.config import Config
from autoseg.data.prepare import prepare_prediction_table
from autoseg.errors import AutosegError
from autoseg.evaluation import evaluate_model
from autoseg.fitting import FitOutcome, fit_segmentor
from autoseg.inference import iter_probabilities, probabilities_to_ids
from autoseg.loading import load_predictor_state
from autoseg.outputs import PredictionFolder, input_labels
from autoseg.peft import trainable_state_dict
from autoseg.persistence import save_predictor_folder
from autoseg.problem import Problem
from autoseg.visualize import save_predictions


class NotFittedError(AutosegError, ValueError, AttributeError):
    """The predictor was used before ``fit`` (or ``load``)."""


class SemanticSegmentor:
    """Fine-tune SAM with Conv-LoRA on your own images, then evaluate and predict.

    Follows scikit-learn's rules: ``__init__`` only stores its arguments, ``fit`` returns
    ``self``, and everything learned ends in ``_`` (``model_``, ``classes_``, ``preset_``).

    Args:
        problem_type: ``auto`` (decided from the training masks), ``binary`` or ``multiclass``.
        label: column holding mask paths.
        image: column holding image paths.
        presets: ``auto`` (chosen from the hardware) or a preset name (``cpu_lite``,
            ``gpu_vit_b``, ...).
        eval_metric: validation metric for early stopping and model selection
            (default ``iou`` for binary, ``miou`` for multi-class).
        path: folder the predictor is saved in (default: a new timestamped folder under
            ``./autoseg_models/``); an existing non-empty folder is never overwritten.
        hyperparameters: flat dotted keys over the preset, e.g. ``{"optim.lr": 3e-4}``.
        seed: seed for the split, augmentation and initialisation.
        verbosity: 0 silent, 1 messages, 2 messages and progress bars.
        class_names: optional names of the classes in class-id order.
        class_colors: for colour (RGB) masks, which class each colour is, e.g.
            ``{(0, 0, 0): "soil", (0, 255, 0): "crop", (255, 0, 0): "weed"}``; class ids
            follow the mapping's order, colours mapped to ``None`` are ignored.

    Example:
        >>> seg = SemanticSegmentor(problem_type="binary").fit("train.csv")  # doctest: +SKIP
        >>> seg.evaluate("test.csv")  # doctest: +SKIP
        {'iou': 0.83, 'dice': 0.90, ...}
        >>> masks = seg.predict("new.csv")  # doctest: +SKIP

    """

    def __init__(
        self,
        problem_type: str = "auto",
        label: str = "label",
        image: str = "image",
        presets: str = "auto",
        eval_metric: str | None = None,
        path: str | Path | None = None,
        hyperparameters: dict[str, Any] | None = None,
        seed: int = 0,
        verbosity: int = 2,
        class_names: list[str] | None = None,
        class_colors: Mapping[Any, str | None] | None = None,
    ) -> None:
        self.problem_type = problem_type
        self.label = label
        self.image = image
        self.presets = presets
        self.eval_metric = eval_metric
        self.path = path
        self.hyperparameters = hyperparameters
        self.seed = seed
        self.verbosity = verbosity
        self.class_names = class_names
        self.class_colors = class_colors

    # ----------------------------------------------------------------- training
    def fit(
        self,
        train_data: pd.DataFrame | str | Path,
        tuning_data: pd.DataFrame | str | Path | None = None,
        time_limit: float | None = None,
        hyperparameters: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> SemanticSegmentor:
        """Validate the data, fine-tune, keep the best validated model and save it.

        Args:
            train_data: DataFrame or CSV path with image and mask path columns.
            tuning_data: validation data; ``None`` holds out a seeded 10% (at least one).
            time_limit: seconds of training, its validation passes included; training stops
                in time and keeps the best model so far.
            hyperparameters: dotted keys applied over the constructor's ones.
            resume: continue an interrupted fit in ``path`` from its last checkpoint (call
                with the same data; the interrupted run's settings are reused).

        Returns:
            ``self``, fitted and saved in ``path_``.

        """
        fit_segmentor(
            self, train_data, tuning_data, time_limit, hyperparameters, resume, self._finish_fit
        )
        return self

    def _finish_fit(self, outcome: FitOutcome) -> None:
        """Adopt a finished fit, save it in its folder and draw the validation overlays."""
        self._set_state(
            outcome.model,
            outcome.config,
            outcome.preset,
            outcome.problem,
            outcome.eval_metric,
            outcome.folder,
        )
        self.backbone_ = {
            "name": outcome.config.model.backbone,
            "checkpoint_path": outcome.parts.checkpoint_path,
            "checkpoint_sha256": outcome.parts.checkpoint_sha256,
        }
        self.fit_summary_ = outcome.summary
        if not outcome.is_global_zero:
            return  # other DDP processes: rank zero writes the folder
        self.save(outcome.folder)
        validation = outcome.validation
        self._predict_table(
            validation,
            outcome.folder / "validation_overlays",
            protected=[*validation["image"], *validation.get("label", [])],
        )
        summary = outcome.summary
        self._say(
            f"autoseg: done in {summary['fit_time_s']:.0f} s; best validation "
            f"{outcome.eval_metric} {summary[f'best_val_{outcome.eval_metric}']}.\n"
            f"  folder: {outcome.folder} (config.yaml, adapter.safetensors, logs/metrics.csv, "
            "TensorBoard logs in logs/tensorboard, training_curve.png, validation_overlays/)\n"
            f"  load it with: SemanticSegmentor.load({str(outcome.folder)!r})"
        )

    # ---------------------------------------------------------------- inference
    def predict_proba(self, data: Any) -> list[np.ndarray]:
        """Probabilities at each image's original size.

        Returns:
            Binary: (H, W) float32 foreground probabilities; multi-class: (C, H, W) float32.

        """
        table = prepare_prediction_table(data, image_col=self.image)
        return list(self._iter_proba(table))

    def predict(
        self, data: Any, save_dir: str | Path | None = None, overwrite: bool = False
    ) -> list[np.ndarray]:
        """Class masks (H, W) uint8 at each image's original size.

        Binary problems give 0/1; multi-class problems give the original mask values.
        With ``save_dir``, masks (binary as 0/255) and colour overlays are written there.

        Args:
            data: DataFrame or CSV (image column), a list of image paths, one image path or
                a folder of images.
            save_dir: optional output folder for ``<stem>.png`` masks and
                ``overlays/<stem>.png``. A folder holding files autoseg did not write is
                refused (checked before inference); an input image or mask is never
                written over.
            overwrite: write into ``save_dir`` even if it holds other files (files with the
                same names are replaced; inputs never are).

        Raises:
            OutputExistsError: ``save_dir`` holds other files (without ``overwrite``), or
                writing there would replace an input image or mask.

        """
        table = prepare_prediction_table(data, image_col=self.image)
        protected = [*table["image"], *input_labels(data, self.image, self.label)]
        return self._predict_table(table, save_dir, overwrite, protected)

    def _predict_table(
        self,
        table: pd.DataFrame,
        save_dir: str | Path | None,
        overwrite: bool = False,
        protected: Sequence[str] = (),
    ) -> list[np.ndarray]:
        """Predict a prepared table (columns ``image``[, ``label``]); write to ``save_dir``."""
        self._check_fitted()
        folder = None
        if save_dir is not None:
            own_files = [p for p in Path(self.path_).glob("*") if p.is_file()]
            folder = PredictionFolder(
                save_dir, table["image"].tolist(), [*protected, *own_files], overwrite
            )
        masks = [
            self.problem_.to_original(probabilities_to_ids(p)) for p in self._iter_proba(table)
        ]
        if folder is not None:
            save_predictions(folder, table["image"].tolist(), masks, self.problem_)
        return masks

    def evaluate(self, data: Any, metrics: list[str] | None = None) -> dict[str, float]:
        """Score predictions against masks at the original resolution, per image averaged.

        Binary: iou, dice, sm, em, wfm, mae, ber. Multi-class: miou, acc, iou/<class>.
        """
        self._check_fitted()
        return evaluate_model(self, data, metrics)

    def _iter_proba(self, table: pd.DataFrame):
        self._check_fitted()
        device = (
            "cuda" if torch.cuda.is_available() and self.config_.env.accelerator != "cpu" else "cpu"
        )
        precision = None
        if device == "cuda":
            precision = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return iter_probabilities(
            self.model_,
            table,
            normalization_for(self.config_.model.backbone),
            batch_size=self.config_.env.eval_batch_size,
            device=device,
            precision=precision,
        )

    # ------------------------------------------------------------ save and load
    def save(self, path: str | Path, standalone: bool = False, overwrite: bool = False) -> Path:
        """Save as a folder: config.yaml + adapter.safetensors (+ model.safetensors).

        Args:
            path: target folder; an existing non-empty folder other than this predictor's
                own is refused unless ``overwrite``.
            standalone: also store all weights, so loading needs no SAM checkpoint.
            overwrite: replace an existing folder (atomically: the old one is moved aside,
                the new one renamed in, then the old one deleted).

        Raises:
            OutputExistsError: ``path`` is a file, or another non-empty folder and
                ``overwrite`` is False.

        """
        self._check_fitted()
        record = {
            "autoseg_version": __version__,
            "preset": self.preset_,
            "config": self.config_.to_dict(),
            "problem": self.problem_.to_dict(),
            "eval_metric": self.eval_metric_,
            "backbone": self.backbone_,
            "summary": self.fit_summary_,
            "columns": {"image": self.image, "label": self.label},
        }
        full = self.model_.state_dict() if standalone else None
        target = Path(path)
        save_predictor_folder(
            target,
            record,
            trainable_state_dict(self.model_),
            full,
            source=self.path_,
            overwrite=overwrite,
        )
        return target

    @classmethod
    def load(cls, path: str | Path, verbosity: int = 2) -> SemanticSegmentor:
        """Rebuild a saved predictor (backbone verified by sha256, adapter applied).

        Every file is checked before any model is built; the column names saved with the
        predictor are restored (``image``/``label`` for folders saved without them).

        Raises:
            PredictorFolderError: the folder is missing, damaged, tampered with or from
                another format version; the message names the file.

        """
        state = load_predictor_state(Path(path))
        predictor = cls(path=path, verbosity=verbosity, **state.columns)
        predictor._set_state(
            state.model, state.config, state.preset, state.problem, state.eval_metric, Path(path)
        )
        predictor.backbone_ = state.backbone
        predictor.fit_summary_ = state.summary
        return predictor

    def summary(self) -> dict[str, Any]:
        """Preset, backbone, PEFT method, parameter counts, epochs, best score, fit time."""
        self._check_fitted()
        return {
            "preset": self.preset_,
            "backbone": self.config_.model.backbone,
            "image_size": self.config_.data.image_size,
            "peft_method": self.config_.peft.method,
            "problem_type": self.problem_type_,
            "classes": list(self.classes_),
            "eval_metric": self.eval_metric_,
            "path": str(self.path_),
            **self.fit_summary_,
        }

    # ------------------------------------------------------------------ helpers
    def _set_state(
        self, model, config: Config, preset: str, problem: Problem, eval_metric: str, folder: Path
    ) -> None:
        self.model_ = model.eval()
        self.config_ = config
        self.preset_ = preset
        self.problem_ = problem
        self.problem_type_ = problem.problem_type
        self.classes_ = list(problem.classes)
        self.class_names_ = list(problem.class_names)
        self.eval_metric_ = eval_metric
        self.path_ = folder

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "This SemanticSegmentor is not fitted yet: call fit(train_data) first, or "
                "SemanticSegmentor.load(path) to use a saved one."
            )

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            print(message, flush=True)
