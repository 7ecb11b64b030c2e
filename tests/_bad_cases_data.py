"""Bad-input cases for the data: the table (CSV shapes) and the files; labels in ``_labels``.

Every case acts through the public API (``fit``, ``predict``, ``evaluate``) on the good data
set of :meth:`World.data` (``data/train.csv``: 8 rows of ``images/synth_00N.png`` and
``masks/synth_00N.png``, 32x40 px, binary 0/255) or a variant of it.
"""

from __future__ import annotations

import numpy as np
from _bad_cases_labels import LABEL_CASES
from _bad_data_acts import (
    ROWS,
    bomb_png,
    dataframe_relative,
    evaluate,
    exif_rotated,
    fit_csv,
    noise,
    not_utf8,
    predict,
    table,
    truncated,
    with_file,
    with_mask,
)
from _bad_inputs import BadInput

from autoseg.data.table import DataValidationError

E = DataValidationError

TABLE_CASES = [
    BadInput(
        "table/no-label-column",
        fit_csv("image,mask\n" + ROWS[0] + "\n"),
        E,
        names=["'label'", "'mask'"],
        fix=r"label='<column>'",
    ),
    BadInput(
        "table/no-known-columns",
        fit_csv("picture,gt\n" + ROWS[0] + "\n"),
        E,
        names=["'image' and 'label'", "'picture', 'gt'"],
        fix=r"rename the columns",
    ),
    BadInput("table/empty-file", fit_csv(""), E, names=["bad.csv"], fix=r"add a header line"),
    BadInput(
        "table/blank-lines-only",
        fit_csv("\n\n   \n"),
        E,
        names=["bad.csv", "empty"],
        fix=r"add a header line",
    ),
    BadInput(
        "table/header-only",
        fit_csv("image,label\n"),
        E,
        names=["bad.csv", "no rows"],
        fix=r"add one row per image",
    ),
    BadInput(
        "table/semicolons",
        fit_csv("image;label\n" + ROWS[0].replace(",", ";") + "\n"),
        E,
        names=["semicolons", "image;label"],
        fix=r"sep=';'",
    ),
    BadInput(
        "table/tabs-in-csv",
        fit_csv("image\tlabel\n" + ROWS[0].replace(",", "\t") + "\n"),
        E,
        names=["tabs", "bad.csv"],
        fix=r"comma-separated",
    ),
    BadInput(
        "table/backslash-paths",
        fit_csv(table(ROWS[0].replace("/", "\\"), *ROWS[1:])),
        E,
        names=["row 0 (line 2 of bad.csv)", "backslashes", "it exists with '/'"],
        fix=r"with '/'",
    ),
    BadInput(
        "table/blank-lines-shift-line-numbers",
        fit_csv(
            "image,label\n\n"
            + ROWS[0]
            + "\n\n\nimages/nope.png,masks/synth_001.png\n"
            + "\n".join(ROWS[2:])
            + "\n"
        ),
        E,
        names=["row 1 (line 6 of bad.csv)", "nope.png"],
        fix=r"check the path",
    ),
    BadInput(
        "table/quoted-newline-line-numbers",
        fit_csv(
            'image,label\n"images/synth_000.png",masks/synth_000.png\n'
            '"images/\nx.png",masks/synth_001.png\nimages/gone.png,masks/synth_002.png\n'
        ),
        E,
        names=["row 2 (line 5 of bad.csv)", "gone.png"],
        fix=r"check the path",
    ),
    BadInput(
        "table/empty-image-cell",
        fit_csv(table(",masks/synth_000.png", *ROWS[1:])),
        E,
        names=["row 0", "no image path given"],
        fix=r"fill it in or remove the row",
    ),
    BadInput(
        "table/empty-label-cell",
        fit_csv(table("images/synth_000.png,", *ROWS[1:])),
        E,
        names=["row 0", "no mask path given"],
        fix=r"fill it in",
    ),
    BadInput(
        "table/missing-field",
        fit_csv(table("images/synth_000.png", *ROWS[1:])),
        E,
        names=["row 0 (line 2", "no mask path given"],
        fix=r"fill it in",
    ),
    BadInput(
        "table/too-many-fields",
        fit_csv(table("images/synth,000.png,masks/synth_000.png", *ROWS[1:])),
        E,
        names=["line 2", "3 fields", "bad.csv"],
        fix=r"double quotes",
    ),
    BadInput(
        "table/csv-not-found",
        lambda w: w.segmentor().fit("nope.csv"),
        E,
        names=["nope.csv", "not found"],
        fix=r"check the path",
    ),
    BadInput(
        "table/not-utf8", not_utf8, E, names=["bad.csv", "UTF-8"], fix=r"save it as CSV with UTF-8"
    ),
    BadInput(
        "table/dataframe-relative-paths",
        dataframe_relative,
        E,
        names=["row 0", "current directory"],
        fix=r"check the path",
    ),
    BadInput(
        "table/list-for-training",
        lambda w: w.segmentor().fit(["a.png"]),
        E,
        names=["no masks"],
        fix=r"give a CSV with columns image,label",
    ),
    BadInput(
        "table/folder-for-training",
        lambda w: (w.data(), w.segmentor().fit("data/images"))[1],
        E,
        names=["images", "folder of images"],
        fix=r"give a CSV file",
    ),
    BadInput(
        "table/custom-column-absent",
        lambda w: w.segmentor(image="img").fit(w.data()),
        E,
        names=["'img'", "'image', 'label'"],
        fix=r"image='<column>'",
    ),
    BadInput(
        "table/predict-empty-folder",
        predict(lambda w: w.write("empty/notes.txt", "x").parent),
        E,
        names=["empty", "holds no images"],
        fix=r"\.png",
    ),
    BadInput(
        "table/evaluate-without-labels",
        evaluate("image\nimages/synth_000.png\n"),
        E,
        names=["'label'", "eval.csv"],
        fix=r"label='<column>'",
    ),
]

FILES_CASES = [
    BadInput(
        "files/image-missing",
        fit_csv(table(*ROWS[:2], "images/gone.png,masks/synth_002.png")),
        E,
        names=["row 2 (line 4 of bad.csv)", "gone.png", "its folder"],
        fix=r"check the path",
    ),
    BadInput(
        "files/mask-missing",
        fit_csv(table("images/synth_000.png,masks/gone.png", *ROWS[1:])),
        E,
        names=["row 0", "gone.png", "file not found"],
        fix=r"check the path",
    ),
    BadInput(
        "files/image-is-folder",
        fit_csv(table("images,masks/synth_000.png", *ROWS[1:])),
        E,
        names=["row 0", "is a folder"],
        fix=r"fix the path",
    ),
    BadInput(
        "files/truncated-png-image",
        with_file(
            "images/cut.png", truncated(noise(), "PNG"), "images/cut.png,masks/synth_000.png"
        ),
        E,
        names=["row 0", "cut.png", "cannot be read as an image"],
        fix=r"re-export",
    ),
    BadInput(
        "files/truncated-jpeg-image",
        with_file(
            "images/cut.jpg",
            truncated(noise(), "JPEG", 0.5),
            "images/cut.jpg,masks/synth_000.png",
        ),
        E,
        names=["row 0", "cut.jpg", "truncated"],
        fix=r"re-export",
    ),
    BadInput(
        "files/decompression-bomb",
        with_file("images/huge.png", bomb_png(), "images/huge.png,masks/synth_000.png"),
        E,
        names=["row 0", "huge.png", "too large"],
        fix=r"MAX_IMAGE_PIXELS|tiles",
    ),
    BadInput(
        "files/zero-byte-image",
        with_file("images/empty.png", b"", "images/empty.png,masks/synth_000.png"),
        E,
        names=["row 0", "empty.png", "0 bytes"],
        fix=r"replace it",
    ),
    BadInput(
        "files/text-named-png",
        with_file(
            "images/notes.png", b"these are my notes\n", "images/notes.png,masks/synth_000.png"
        ),
        E,
        names=["row 0", "notes.png", "cannot be read as an image"],
        fix=r"PNG, JPEG",
    ),
    BadInput(
        "files/truncated-mask",
        with_file(
            "masks/cut.png",
            truncated(noise()[:, :, 0], "PNG", 0.5),
            "images/synth_000.png,masks/cut.png",
        ),
        E,
        names=["row 0", "cut.png", "cannot be read as a mask"],
        fix=r"re-export",
    ),
    BadInput(
        "files/zero-byte-mask",
        with_file("masks/empty.png", b"", "images/synth_000.png,masks/empty.png"),
        E,
        names=["row 0", "empty.png", "0 bytes"],
        fix=r"replace it",
    ),
    BadInput(
        "files/mask-size-mismatch",
        with_mask(np.zeros((30, 40), np.uint8)),
        E,
        names=["row 0", "bad.png", "30x40", "32x40"],
        fix=r"must match their image",
    ),
    BadInput(
        "files/exif-orientation",
        exif_rotated,
        E,
        names=["row 0", "photo.png", "EXIF orientation"],
        fix=r"exif_transpose|rotate the mask",
    ),
    BadInput(
        "files/predict-truncated-image",
        predict(lambda w: [w.write("cut.png", truncated(noise(), "PNG"))]),
        E,
        names=["row 0", "cut.png"],
        fix=r"re-export",
    ),
    BadInput(
        "files/predict-missing-image",
        predict(lambda w: ["nowhere.png"]),
        E,
        names=["row 0", "nowhere.png", "current directory"],
        fix=r"check the path",
    ),
    BadInput(
        "files/evaluate-missing-mask",
        evaluate(table("images/synth_008.png,masks/gone.png")),
        E,
        names=["row 0", "gone.png"],
        fix=r"check the path",
    ),
]

CASES = [*TABLE_CASES, *FILES_CASES, *LABEL_CASES]
