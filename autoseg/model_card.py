"""The model card: a ``README.md`` in every predictor folder, written with the rest of it.

It says what a reader of the folder needs without running anything: the data it was
trained on, the model and its parameter counts, the validation (and, once evaluated, test)
scores, the training curve, how to load it, and the licence of the backbone weights.
"""

from __future__ import annotations

from typing import Any

from autoseg import __version__
from autoseg.folder import PredictorFolder
from autoseg.models.backbones import BACKBONES
from autoseg.state import PredictorState

EVALUATION_KEY = "evaluation"
"""Where ``fit_summary`` keeps the latest ``evaluate`` result: ``{"rows": n, "metrics": {...}}``."""


def render_model_card(state: PredictorState, folder_name: str, has_curve: bool) -> str:
    """The Markdown model card of ``state``, saved as ``README.md`` in its folder.

    Args:
        state: the fitted predictor.
        folder_name: the predictor folder's name, for the loading example.
        has_curve: whether the folder holds the training-curve image.

    Example:
        >>> from autoseg.config import Config
        >>> from autoseg.labels.problem import Problem
        >>> state = PredictorState(
        ...     config=Config(), preset="cpu_lite", problem=Problem("binary", classes=(0, 1)),
        ...     eval_metric="iou", backbone={"name": "lite_medsam"},
        ...     fit_summary={"best_val_iou": 0.87, "best_epoch": 3})
        >>> card = render_model_card(state, "seg", has_curve=False)
        >>> card.splitlines()[0]
        '# autoseg predictor: binary segmentation'
        >>> "| validation | iou | 0.8700 |" in card
        True

    """
    sections = [
        f"# autoseg predictor: {state.problem.problem_type} segmentation",
        f"Fine-tuned with autoseg {__version__}. This card is written by autoseg each time "
        "the predictor is saved or evaluated.",
        _data_section(state),
        _model_section(state),
        _results_section(state),
        _curve_section(has_curve),
        _loading_section(folder_name),
        _licence_section(state),
    ]
    return "\n\n".join(part for part in sections if part) + "\n"


def _data_section(state: PredictorState) -> str:
    summary, problem = state.fit_summary, state.problem
    lines = ["## Data"]
    for key, label in (("train_rows", "training images"), ("val_rows", "validation images")):
        if key in summary:
            lines.append(f"- {label}: {summary[key]}")
    lines.append(f"- columns: image `{state.columns['image']}`, label `{state.columns['label']}`")
    lines += ["", "| class id | mask value | name |", "|---|---|---|"]
    names = problem.class_names or tuple(str(value) for value in problem.classes)
    for class_id, (value, name) in enumerate(zip(problem.classes, names, strict=False)):
        lines.append(f"| {class_id} | {value} | {name} |")
    if problem.colors is not None:
        colors = ", ".join(
            f"({r}, {g}, {b}) -> {'ignored' if k == 255 else k}"
            for r, g, b, k in problem.colors.entries
        )
        lines.append(f"\nColor masks: {colors}.")
    return "\n".join(lines)


def _model_section(state: PredictorState) -> str:
    config, summary = state.config, state.fit_summary
    lines = [
        "## Model",
        f"- preset: `{state.preset}`",
        f"- backbone: `{config.model.backbone}` at {config.data.image_size} px",
        f"- fine-tuning method: `{config.peft.method}`",
    ]
    trainable, total = summary.get("trainable_parameters"), summary.get("total_parameters")
    if trainable and total:
        lines.append(
            f"- parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)"
        )
    sha = state.backbone.get("checkpoint_sha256")
    if sha:
        lines.append(f"- backbone weights sha256: `{sha}`")
    return "\n".join(lines)


def _results_section(state: PredictorState) -> str:
    summary, metric = state.fit_summary, state.eval_metric
    rows = []
    best = summary.get(f"best_val_{metric}")
    if best is not None:
        rows.append(("validation", metric, best))
    evaluation: dict[str, Any] = summary.get(EVALUATION_KEY) or {}
    for name, value in (evaluation.get("metrics") or {}).items():
        rows.append((f"evaluation ({evaluation.get('rows', '?')} images)", name, value))
    if not rows:
        return ""
    lines = ["## Results", "", "| data | metric | value |", "|---|---|---|"]
    lines += [f"| {data} | {name} | {float(value):.4f} |" for data, name, value in rows]
    facts = []
    if "best_epoch" in summary and "epochs" in summary:
        facts.append(f"best epoch {summary['best_epoch']} (counting from 0) of {summary['epochs']}")
    if "steps" in summary:
        facts.append(f"{summary['steps']} optimizer steps")
    if "fit_time_s" in summary:
        facts.append(f"{summary['fit_time_s']} s of training")
    if facts:
        lines.append("\n" + "; ".join(facts) + ".")
    return "\n".join(lines)


def _curve_section(has_curve: bool) -> str:
    if not has_curve:
        return ""
    curve = PredictorFolder(".").curve.name
    return f"## Training curve\n\n![training curve]({curve})"


def _loading_section(name: str) -> str:
    return (
        "## How to use it\n\n"
        "```python\n"
        "from autoseg import SemanticSegmentor\n\n"
        f'seg = SemanticSegmentor.load("{name}")\n'
        'masks = seg.predict("new.csv")  # masks at each image\'s original size\n'
        "```\n\n"
        f"Or from a shell: `autoseg predict --model {name} --input new.csv --out masks/`."
    )


def _licence_section(state: PredictorState) -> str:
    entry = BACKBONES.get(state.config.model.backbone)
    licence = entry.weights.license if entry is not None else None
    text = licence or "none: this backbone starts from random weights"
    return (
        "## Licence\n\n"
        f"Backbone weights: {text}. The fine-tuned adapter is yours, trained on your data."
    )
