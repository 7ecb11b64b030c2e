from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autoseg.data import (
    DataValidationError,
    check_with,
    load_table,
    validate_table,
)
from autoseg.labels.masks import (
    binary_target,
)


def _pair(folder: Path, name: str, hw: tuple[int, int] = (10, 14), values: tuple = (0, 255)):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(folder / "images" / name)
    mask = rng.choice(np.array(values, dtype=np.uint8), size=hw)
    Image.fromarray(mask).save(folder / "masks" / name)
    return f"images/{name}", f"masks/{name}"


def _csv(folder: Path, rows: list[tuple[str, str]], header: str = "image,label") -> Path:
    path = folder / "train.csv"
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_csv_paths_resolve_against_csv_folder(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    rows = [_pair(data, f"{i}.png") for i in range(3)]
    monkeypatch.chdir(tmp_path)  # the current folder must not matter
    table = load_table(_csv(data, rows))
    assert list(table.columns) == ["image", "label"]
    assert list(table.index) == [0, 1, 2]
    assert table.image[1] == str(data / "images" / "1.png")
    assert table.label[2] == str(data / "masks" / "2.png")
    assert table.attrs["csv"] == str(data / "train.csv")
    validate_table(table)


def test_dataframe_keeps_index_and_resolves_against_cwd(tmp_path: Path, monkeypatch) -> None:
    rows = [_pair(tmp_path, f"{i}.png") for i in range(2)]
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame(
        {"img": [r[0] for r in rows], "gt": [r[1] for r in rows], "other": [1, 2]}, index=[10, 20]
    )
    table = load_table(frame, image_col="img", label_col="gt")
    assert list(table.columns) == ["image", "label"]
    assert list(table.index) == [10, 20]
    assert table.image[20] == str(tmp_path / "images" / "1.png")
    assert list(frame.columns) == ["img", "gt", "other"]  # input untouched
    validate_table(table)


def test_column_names_tolerate_case_and_spaces(tmp_path: Path) -> None:
    rows = [_pair(tmp_path, "a.png")]
    table = load_table(_csv(tmp_path, rows, header="Image, Label"))
    assert table.label[0].endswith("a.png")


def test_list_single_path_and_folder(tmp_path: Path, monkeypatch) -> None:
    _pair(tmp_path, "b.png")
    _pair(tmp_path, "a.jpg")
    monkeypatch.chdir(tmp_path)
    table = load_table(["images/b.png", Path("images/a.jpg")], require_labels=False)
    assert list(table.columns) == ["image"]
    assert table.image[0] == str(tmp_path / "images" / "b.png")
    single = load_table("images/a.jpg", require_labels=False)
    assert single.image.tolist() == [str(tmp_path / "images" / "a.jpg")]
    folder = load_table(tmp_path / "images", require_labels=False)
    assert [os.path.basename(p) for p in folder.image] == ["a.jpg", "b.png"]
    validate_table(folder, require_labels=False)
    with pytest.raises(DataValidationError, match="folder of images"):
        load_table(tmp_path / "images")
    with pytest.raises(DataValidationError, match="no mask"):
        load_table(["images/b.png"])


def test_missing_columns_message_names_existing_columns(tmp_path: Path) -> None:
    rows = [_pair(tmp_path, "a.png")]
    csv = _csv(tmp_path, rows, header="picture,mask")
    with pytest.raises(DataValidationError) as info:
        load_table(csv)
    message = str(info.value)
    assert "'image' and 'label'" in message
    assert "'picture', 'mask'" in message
    assert "image='<column>'" in message and "label='<column>'" in message
    table = load_table(csv, image_col="picture", label_col="mask")
    validate_table(table)


def test_empty_and_missing_tables(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(DataValidationError, match="no rows"):
        load_table(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        load_table(tmp_path / "blank.csv")
    with pytest.raises(DataValidationError, match="not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(TypeError):
        load_table(42)  # type: ignore[arg-type]


def test_validation_reports_every_problem_at_once(tmp_path: Path) -> None:
    good = _pair(tmp_path, "good.png")
    small = _pair(tmp_path, "small.png", hw=(10, 14))
    Image.fromarray(np.zeros((9, 14), np.uint8)).save(tmp_path / "masks" / "small.png")
    grey = _pair(tmp_path, "grey.png", values=(0, 3, 300 % 256, 1000 % 256))
    Image.fromarray(np.full((10, 14), 700, np.uint16)).save(tmp_path / "masks" / "wide.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"garbage")
    color = np.zeros((10, 14, 3), np.uint8)
    color[0, 0] = (255, 0, 0)
    Image.fromarray(color).save(tmp_path / "masks" / "color.png")
    rows = [
        good,  # row 0: fine
        ("images/missing.png", good[1]),  # row 1: image missing
        small,  # row 2: size mismatch
        ("images/broken.png", "masks/gone.png"),  # row 3: undecodable image + missing mask
        (good[0], "masks/wide.png"),  # row 4: values outside 0..255
        (good[0], "masks/color.png"),  # row 5: color mask
        grey,  # row 6: legal class ids
    ]
    table = load_table(_csv(tmp_path, rows))
    with pytest.raises(DataValidationError) as info:
        validate_table(table, max_workers=2)
    err = info.value
    lines = str(err).splitlines()
    assert lines[0] == "6 problems found in the data:"
    assert lines[1:] == err.problems
    by_row = {p.split(":")[0]: p for p in err.problems}
    assert "row 1 (line 3 of train.csv)" in by_row
    assert "missing.png: file not found" in by_row["row 1 (line 3 of train.csv)"]
    assert "9x14" in by_row["row 2 (line 4 of train.csv)"]
    assert "10x14" in by_row["row 2 (line 4 of train.csv)"]
    row3 = [p for p in err.problems if p.startswith("row 3 ")]
    assert len(row3) == 2
    assert "broken.png: cannot be read as an image" in row3[0]
    assert "gone.png: file not found" in row3[1]
    assert "700" in by_row["row 4 (line 6 of train.csv)"]
    assert "color mask" in by_row["row 5 (line 7 of train.csv)"]
    assert not any(p.startswith("row 0 ") or p.startswith("row 6 ") for p in err.problems)


def test_custom_check_and_dataframe_rows(tmp_path: Path) -> None:
    rows = [_pair(tmp_path, "a.png"), _pair(tmp_path, "b.png", values=(0, 1, 2))]
    frame = pd.DataFrame(
        {
            "image": [str(tmp_path / r[0]) for r in rows],
            "label": [str(tmp_path / r[1]) for r in rows],
        },
        index=["x", "y"],
    )
    table = load_table(frame)
    validate_table(table)  # class ids 0..2 are fine by default
    with pytest.raises(DataValidationError) as info:
        validate_table(table, check_values=check_with(binary_target))
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"row y: {tmp_path / 'masks' / 'b.png'}: found values")


def test_jpeg_masks_get_a_hint(tmp_path: Path) -> None:
    image, _ = _pair(tmp_path, "a.png", hw=(32, 32))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 5:17] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.jpg", quality=75)
    table = load_table(_csv(tmp_path, [(image, "masks/a.jpg")]))
    with pytest.raises(DataValidationError, match="save masks as PNG"):
        validate_table(table)


def test_empty_cells_and_missing_label_column(tmp_path: Path) -> None:
    good = _pair(tmp_path, "a.png")
    path = tmp_path / "t.csv"
    path.write_text(f"image,label\n{good[0]},\n")
    with pytest.raises(DataValidationError, match="row 0 .*no mask path given"):
        validate_table(load_table(path))
    # prediction does not look at masks, even broken ones
    validate_table(load_table(path, require_labels=False), require_labels=False)
    table = load_table([str(tmp_path / good[0])], require_labels=False)
    with pytest.raises(DataValidationError, match="no column 'label'"):
        validate_table(table)


def test_image_col_applies_to_lists_and_folders(tmp_path: Path) -> None:
    _pair(tmp_path, "a.png")
    table = load_table(tmp_path / "images", image_col="img", require_labels=False)
    assert list(table.columns) == ["image"] and len(table) == 1


def test_relative_folder_resolves_once(tmp_path: Path, monkeypatch) -> None:
    _pair(tmp_path, "a.png")
    monkeypatch.chdir(tmp_path)
    table = load_table("images", require_labels=False)
    assert table.image.tolist() == [str(tmp_path / "images" / "a.png")]
    validate_table(table, require_labels=False)


def test_line_numbers_survive_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    good = _pair(tmp_path, "a.png")
    body = (
        f"image,label\n\n{good[0]},{good[1]}\n\n"
        f'"images/x\ny.png",{good[1]}\n   \nnope.png,{good[1]}\n'
    )
    (tmp_path / "t.csv").write_text(body)
    table = load_table(tmp_path / "t.csv")
    assert table.attrs["lines"] == [3, 5, 8]
    with pytest.raises(DataValidationError) as info:
        validate_table(table)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "row 1 (line 5 of t.csv)",
        "row 2 (line 8 of t.csv)",
    ]


def test_dataframe_hint_names_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = load_table(pd.DataFrame({"image": ["x.png"], "label": ["y.png"]}))
    with pytest.raises(DataValidationError) as info:
        validate_table(table)
    assert f"resolve against the current directory, {tmp_path}" in str(info.value)
    assert "CSV" not in str(info.value)


def test_semicolon_csv_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("image;label\na.png;b.png\n")
    with pytest.raises(DataValidationError, match=r"separated by semicolons.*sep=';'"):
        load_table(tmp_path / "t.csv")


def test_every_image_is_fully_decoded(tmp_path: Path) -> None:
    image, mask = _pair(tmp_path, "a.png", hw=(64, 64))
    data = (tmp_path / image).read_bytes()
    (tmp_path / "images" / "cut.png").write_bytes(data[: len(data) // 2])
    table = load_table(_csv(tmp_path, [(image, mask), ("images/cut.png", mask)]))
    with pytest.raises(DataValidationError) as info:
        validate_table(table)
    (problem,) = info.value.problems
    assert problem.startswith("row 1 ") and "truncated" in problem


def test_exif_rotated_image_is_explained(tmp_path: Path) -> None:
    _, mask = _pair(tmp_path, "m.png", hw=(14, 10))
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "images/p.jpg", exif=exif)
    table = load_table(_csv(tmp_path, [("images/p.jpg", mask)]))
    with pytest.raises(DataValidationError, match="EXIF orientation .tag 8"):
        validate_table(table)
