"""The wheel carries every package and the top-level presets/ as ``autoseg.presets``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_module_and_preset(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("autoseg", "presets"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("autoseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "autoseg").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    presets = {f"autoseg/presets/{p.name}" for p in (REPO / "presets").glob("*.yaml")}
    assert len(presets) >= 5 and presets <= names, f"presets missing: {sorted(presets - names)}"
    assert not any(name.startswith("presets/") for name in names), "no top-level presets package"


def test_presets_are_found_from_the_package():
    from autoseg.preset_choice import PRESET_DIR, available_presets

    assert PRESET_DIR.resolve() == (REPO / "presets").resolve()
    assert {"cpu_lite", "gpu_vit_b", "gpu_vit_b_small", "gpu_vit_h", "gpu_vit_l"} <= set(
        available_presets()
    )
