"""``SemanticSegmentor``: the three-line facade over data, model, training and inference."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg.comparison import compare_methods, plan_comparison
from autoseg.data.prepare import prepare_evaluation_table, prepare_prediction_table
from autoseg.deployment import DeploymentMixin
from autoseg.errors import AutosegError
from autoseg.evaluation import check_metric_names, evaluate_model
from autoseg.finetune import FitRequest, TrainedPredictor, done_message, finetune
from autoseg.inference import iter_probabilities, predict_masks
from autoseg.loading import load_predictor
from autoseg.outputs import PredictionFolder
from autoseg.persistence import record_evaluation, save_predictor
from autoseg.runtime import Runtime, resolve_runtime
from autoseg.state import PredictorState
from autoseg.tiling import TileSettings
from autoseg.visualize import save_predictions


class NotFittedError(AutosegError, ValueError, AttributeError):
    """The predictor was used before ``fit`` (or ``load``)."""


def _silent(message: str) -> None:
    """A ``say`` that says nothing (verbosity 0)."""


def _learned(read: Callable[[PredictorState], Any], doc: str) -> property:
    """A learned attribute, read from the fitted state (``NotFittedError`` before ``fit``)."""
    return property(lambda self: read(self._fitted()), doc=doc)


class SemanticSegmentor(DeploymentMixin):
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
        class_colors: for color (RGB) masks, which class each color is, e.g.
            ``{(0, 0, 0): "soil", (0, 255, 0): "crop", (255, 0, 0): "weed"}``; class ids
            follow the mapping's order, colors mapped to ``None`` are ignored.

    Example:
        Creating one only stores the settings; ``seg.fit("train.csv")`` then trains,
        ``seg.evaluate("test.csv")`` scores and ``seg.predict("new.csv")`` gives masks.

        >>> seg = SemanticSegmentor(problem_type="binary", hyperparameters={"optim.lr": 3e-4})
        >>> seg.hyperparameters
        {'optim.lr': 0.0003}
        >>> seg.classes_
        Traceback (most recent call last):
        ...
        autoseg.predictor.NotFittedError: This SemanticSegmentor is not fitted yet: ...

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

    # ----------------------------------------------------------- learned state
    model_ = _learned(lambda s: s.model, "The trained segmenter (eval mode).")
    config_ = _learned(lambda s: s.config, "The run's full configuration.")
    preset_ = _learned(lambda s: s.preset, "The preset the run started from.")
    problem_ = _learned(lambda s: s.problem, "The label space (classes, names, colors).")
    problem_type_ = _learned(lambda s: s.problem.problem_type, "``binary`` or ``multiclass``.")
    classes_ = _learned(lambda s: list(s.problem.classes), "Original mask values, by id.")
    class_names_ = _learned(lambda s: list(s.problem.class_names), "One name per class.")
    eval_metric_ = _learned(lambda s: s.eval_metric, "The validation metric.")
    backbone_ = _learned(lambda s: s.backbone, "Backbone name, weights path and sha256.")
    fit_summary_ = _learned(lambda s: s.fit_summary, "Epochs, steps, best score, fit time.")

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
        settings = {name: getattr(self, name) for name in FitRequest.PREDICTOR_SETTINGS}
        request = FitRequest(
            train_data=train_data,
            tuning_data=tuning_data,
            time_limit=time_limit,
            hyperparameters=(self.hyperparameters, hyperparameters),
            resume=resume,
            **settings,
        )
        finetune(request, self._say, finish=self._finish_fit)
        return self

    def _finish_fit(self, trained: TrainedPredictor) -> None:
        """Adopt a finished run, save it in its folder and draw the validation overlays."""
        self.state_, self.path_ = trained.state, trained.folder.root
        if not trained.is_global_zero:
            return  # other DDP processes: rank zero writes the folder
        self.save(self.path_)
        validation = trained.validation
        protected = [*validation["image"], *validation.get("label", [])]
        self._predict_table(validation, trained.folder.overlays, protected=protected)
        self._say(done_message(trained))

    # ---------------------------------------------------------------- inference
    def predict_proba(
        self,
        data: Any,
        tile: bool | str = False,
        tile_size: int | None = None,
        overlap: float = 0.25,
    ) -> list[np.ndarray]:
        """Probabilities at each image's original size.

        Args:
            data: as for :meth:`predict`.
            tile: as for :meth:`predict`.
            tile_size: as for :meth:`predict`.
            overlap: as for :meth:`predict`.

        Returns:
            Binary: (H, W) float32 foreground probabilities; multi-class: (C, H, W) float32.

        """
        tiling = TileSettings(tile, tile_size, overlap)  # checked before any image is read
        state = self._fitted()
        table = prepare_prediction_table(data, image_col=self.image)
        probabilities = iter_probabilities(
            state.model, table, self._runtime(), **self._options(tiling)
        )
        return list(probabilities)

    def predict(
        self,
        data: Any,
        save_dir: str | Path | None = None,
        overwrite: bool = False,
        tile: bool | str = False,
        tile_size: int | None = None,
        overlap: float = 0.25,
    ) -> list[np.ndarray]:
        """Class masks (H, W) uint8 at each image's original size.

        Binary problems give 0/1; multi-class problems give the original mask values.
        With ``save_dir``, masks (binary as 0/255) and color overlays are written there.

        Args:
            data: DataFrame or CSV (image column), a list of image paths, one image path or
                a folder of images.
            save_dir: optional output folder for ``<stem>.png`` masks and
                ``overlays/<stem>.png``. A folder holding files autoseg did not write is
                refused (checked before inference); an input image or mask is never
                written over.
            overwrite: write into ``save_dir`` even if it holds other files (files with the
                same names are replaced; inputs never are).
            tile: ``False`` shrinks each image to the model input; ``True`` predicts it in
                overlapping windows at the model's scale, blended without seams (see the
                README's "Large images"); ``"auto"`` tiles images whose longest side exceeds
                twice the window, and says so once.
            tile_size: window side in image pixels (default: the model input).
            overlap: fraction of a window shared with its neighbour (0 .. 0.9).

        Raises:
            OutputExistsError: ``save_dir`` holds other files (without ``overwrite``), or
                writing there would replace an input image or mask.
            SettingsError: ``tile``, ``tile_size`` or ``overlap`` out of range.

        """
        tiling = TileSettings(tile, tile_size, overlap)  # checked before any image is read
        table = prepare_prediction_table(data, self.image, self.label)
        labels = [p for p in table.get("label", []) if p]
        protected = [*table["image"], *labels]
        return self._predict_table(table, save_dir, overwrite, protected, tiling)

    def _predict_table(
        self,
        table: pd.DataFrame,
        save_dir: str | Path | None,
        overwrite: bool = False,
        protected: Sequence[str] = (),
        tiling: TileSettings | None = None,
    ) -> list[np.ndarray]:
        """Predict a prepared table (columns ``image``[, ``label``]); write to ``save_dir``."""
        state = self._fitted()
        folder = None
        if save_dir is not None:
            own_files = [p for p in Path(self.path_).glob("*") if p.is_file()]
            folder = PredictionFolder(
                save_dir, table["image"].tolist(), [*protected, *own_files], overwrite
            )
        options = self._options(tiling)
        masks = predict_masks(state.model, state.problem, table, self._runtime(), **options)
        if folder is not None:
            save_predictions(folder, table["image"].tolist(), masks, state.problem)
        return masks

    def evaluate(
        self,
        data: Any,
        metrics: list[str] | None = None,
        tile: bool | str = False,
        tile_size: int | None = None,
        overlap: float = 0.25,
    ) -> dict[str, float]:
        """Score predictions against masks at the original resolution, per image averaged.

        Binary: iou, dice, sm, em, wfm, mae, ber. Multi-class: miou, acc, iou/<class>.
        ``tile``, ``tile_size`` and ``overlap`` predict as :meth:`predict` does.
        """
        tiling = TileSettings(tile, tile_size, overlap)
        state = self._fitted()
        check_metric_names(state.problem, metrics)  # before reading any file
        table = prepare_evaluation_table(data, self.image, self.label, state.problem)
        scores = evaluate_model(
            state.model, state.problem, table, metrics, self._runtime(), **self._options(tiling)
        )
        self.state_ = record_evaluation(state, self.path_, len(table), scores, say=self._say)
        return scores

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
        columns = {"image": self.image, "label": self.label}
        state = replace(self._fitted(), columns=columns)
        target = Path(path)
        save_predictor(state, target, standalone, source=self.path_, overwrite=overwrite)
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
        state = load_predictor(Path(path))
        predictor = cls(path=path, verbosity=verbosity, **state.columns)
        predictor.state_, predictor.path_ = state, Path(path)
        return predictor

    @classmethod
    def compare(
        cls,
        train_data: Any,
        test_data: Any,
        methods: Sequence[str] = ("conv_lora", "lora", "decoder_only"),
        seeds: int | Sequence[int] = 3,
        budget: int | None = None,
        time_limit: float | None = None,
        out: str | Path = "autoseg_compare",
        **settings: Any,
    ) -> pd.DataFrame:
        """Fit each PEFT method with paired seeds and the same budget; rank them on test data.

        ``budget`` is optimiser steps per fit, ``time_limit`` seconds per fit; ``settings``
        are the constructor's (``presets``, ``hyperparameters``, ``problem_type``, ...).
        ``out`` (a new folder) receives every fit, ``runs.csv``, ``leaderboard.csv`` and
        ``leaderboard.png``. See the README's "Choosing a method".

        Returns:
            The leaderboard: per method the test metric's mean ± std over seeds, the paired
            difference from the best with a 95 % t interval, steps, time, trainable count.

        """
        plan = plan_comparison(methods, seeds, budget, time_limit)
        base = dict(settings.pop("hyperparameters", None) or {})

        def make(method: str, seed: int, path: Path) -> SemanticSegmentor:
            hyperparameters = {**base, **plan.hyperparameters(method)}
            return cls(path=path, seed=seed, hyperparameters=hyperparameters, **settings)

        columns = (settings.get("image", "image"), settings.get("label", "label"))
        say = print if settings.get("verbosity", 2) >= 1 else _silent
        return compare_methods(make, train_data, test_data, plan, Path(out), say, columns)

    def summary(self) -> dict[str, Any]:
        """Preset, backbone, PEFT method, parameter counts, epochs, best score, fit time."""
        self._fitted()
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
    def _fitted(self) -> PredictorState:
        """The fitted state (``state_``), or a :class:`NotFittedError` saying what to do."""
        state = self.__dict__.get("state_")
        if state is None:
            raise NotFittedError(
                "This SemanticSegmentor is not fitted yet: call fit(train_data) first, or "
                "SemanticSegmentor.load(path) to use a saved one."
            )
        return state

    def _runtime(self) -> Runtime:
        """Where inference runs: the GPU wherever one exists (see ``resolve_runtime``)."""
        return resolve_runtime(self._fitted().config.env, inference=True)

    def _options(self, tiling: TileSettings | None = None) -> dict[str, Any]:
        """The inference options: the saved config's batch size, the call's tiling."""
        config = self._fitted().config
        return {
            "batch_size": config.env.eval_batch_size,
            "tiling": tiling,
            "say": self._say,
        }

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            print(message, flush=True)
