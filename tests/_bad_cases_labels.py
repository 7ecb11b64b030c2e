"""Bad-input cases for the labels: mask formats and values (errors) and label traps (warnings)."""

from __future__ import annotations

import numpy as np
from _bad_data_acts import (
    EMPTY,
    FULL,
    HW,
    ROWS,
    blocks,
    evaluate_unknown_values,
    fit_csv,
    masks_all,
    png_bytes,
    table,
    tuning_overlap,
    unlabelled_validation,
    with_file,
    with_mask,
)
from _bad_inputs import BadInput

from autoseg.data.table import DataValidationError
from autoseg.errors import AutosegWarning, SettingsError

E, W = DataValidationError, AutosegWarning

LABEL_CASES = [
    BadInput(
        "labels/jpeg-mask",
        with_file(
            "masks/m.jpg",
            png_bytes(blocks((0, 255, 0), 0), "JPEG"),
            "images/synth_000.png,masks/m.jpg",
        ),
        E,
        names=["row 0", "m.jpg", "JPEG"],
        fix=r"save masks as PNG",
    ),
    BadInput(
        "labels/color-mask",
        with_mask(np.dstack([blocks((0, 255), 0), EMPTY, EMPTY])),
        E,
        names=["row 0", "bad.png", "color mask", "(255, 0, 0)"],
        fix=r"class_colors=",
    ),
    BadInput(
        "labels/values-over-255",
        with_mask(np.full(HW, 700, np.uint16)),
        E,
        names=["row 0", "bad.png", "700"],
        fix=r"8-bit class ids",
    ),
    BadInput(
        "labels/float-mask",
        with_mask(np.full(HW, 0.5, np.float32), name="bad.tif"),
        E,
        names=["row 0", "bad.tif", "non-integer"],
        fix=r"whole-number class ids",
    ),
    BadInput(
        "labels/binary-with-class-ids",
        with_mask(blocks((0, 1, 2), 0), problem_type="binary"),
        E,
        names=["row 0", "bad.png", "[0, 1, 2]"],
        fix=r"problem_type='multiclass'",
    ),
    BadInput(
        "labels/multiclass-single-class",
        masks_all(lambda i: blocks((0, 255), i), problem_type="multiclass"),
        E,
        names=["at least 2 classes", "[0]"],
        fix=r"problem_type='binary'",
    ),
    BadInput(
        "labels/class-names-count-binary",
        lambda w: w.segmentor(class_names=["a", "b", "c"], problem_type="binary").fit(w.data()),
        SettingsError,
        names=["3 class names for 2 classes"],
        fix=r"one name per class",
    ),
    BadInput(
        "labels/color-not-in-class-colors",
        with_mask(
            np.dstack([blocks((0, 255), 0), blocks((0, 128), 0), EMPTY]),
            class_colors={(0, 0, 0): "background", (255, 0, 0): "lesion"},
        ),
        E,
        names=["row 0", "bad.png", "(255, 128, 0)"],
        fix=r"class_colors",
    ),
    BadInput(
        "labels/class-names-count",
        lambda w: w.segmentor(class_names=["a", "b", "c"]).fit(w.data()),
        E,
        names=["at least 2 classes", "3 class names"],
        fix=r"give two names",
    ),
    BadInput(
        "labels/evaluate-unknown-values",
        evaluate_unknown_values,
        E,
        names=["row 0", "mc.png", "{0, 1, 2}"],
        fix=r"only 0 and 1, or only 0 and 255",
    ),
    BadInput(
        "labels/all-empty",
        masks_all(lambda i: EMPTY),
        None,
        warning=W,
        names=["every training mask is empty", "trap_0.png", "and 5 more"],
        fix=r"foreground must be 255",
    ),
    BadInput(
        "labels/all-full",
        masks_all(lambda i: FULL),
        None,
        warning=W,
        names=["entirely foreground", "trap_0.png"],
        fix=r"background must be 0",
    ),
    BadInput(
        "labels/grey-levels",
        masks_all(lambda i: blocks((0, 128, 255), i)),
        None,
        warning=W,
        names=["[0, 128, 255]", "treated as ignore", "trap_0.png"],
        fix=r"re-save the masks with class ids 0\.\.K-1",
    ),
    BadInput(
        "labels/duplicate-rows",
        fit_csv(table(*ROWS, ROWS[1], ROWS[1])),
        None,
        warning=W,
        names=["more than once", "row 1 (line 3 of bad.csv)", "row 9 (line 11", "synth_001.png"],
        fix=r"remove the repeated rows",
    ),
    BadInput(
        "labels/duplicate-image-other-mask",
        fit_csv(table(*ROWS, "images/synth_002.png,masks/synth_003.png")),
        None,
        warning=W,
        names=["different masks", "row 2", "row 8", "synth_002.png"],
        fix=r"keep one row",
    ),
    BadInput(
        "labels/tuning-overlaps-training",
        tuning_overlap,
        None,
        warning=W,
        names=["also in the training data", "row 0", "synth_000.png"],
        fix=r"remove them from one of the two tables",
    ),
    BadInput(
        "labels/unlabelled-validation",
        unlabelled_validation,
        None,
        warning=W,
        names=["no validation mask has a labelled pixel", "void_8.png"],
        fix=r"give tuning_data with labelled masks",
    ),
    BadInput(
        "labels/few-images",
        fit_csv(table(*ROWS[:3])),
        None,
        warning=W,
        names=["only 2 training image", "synth_000.png"],
        fix=r"at least 5",
    ),
]
