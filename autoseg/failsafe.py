"""A fit that fails late leaves a usable state: a folder to resume from, or nothing at all.

Once the predictor folder exists, any exception (``KeyboardInterrupt`` included) either
keeps the folder, when it holds a resume checkpoint that ``fit(resume=True)`` continues from,
or removes everything autoseg created there (the folder was absent or empty when the fit
claimed it), so that rerunning with the same ``path`` works. A note on the re-raised error
says which happened and what to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from autoseg.folder import PredictorFolder


def is_ddp_worker() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run the script)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


@contextlib.contextmanager
def keep_usable(folder: Path) -> Iterator[None]:
    """Run the fit; on any exception keep ``folder`` resumable or remove autoseg's files."""
    created = first_missing(folder.absolute())
    try:
        yield
    except BaseException as error:
        if not is_ddp_worker():
            note = settle_failed_fit(folder, created)
            if note:
                error.add_note(note)
        raise


def settle_failed_fit(folder: Path, created: Path | None) -> str | None:
    """Keep a resumable ``folder`` or remove what autoseg wrote; return what to tell the user.

    Args:
        folder: the predictor folder of the failed fit.
        created: the outermost folder the fit created (removed whole), or ``None`` when
            ``folder`` already existed (then only its contents are removed).

    """
    if not folder.exists():
        return None
    paths = PredictorFolder(folder)
    checkpoint = paths.resume_checkpoint
    if checkpoint.is_file() and paths.run_file.is_file():
        return (
            f"autoseg: the fit stopped; {folder} keeps its resume checkpoint ({checkpoint}). "
            "Fix the cause, then call fit(..., resume=True) with the same path and data to "
            "continue (command line: --resume), or delete the folder to start over."
        )
    try:
        if created is not None:
            shutil.rmtree(created)
        else:
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    except OSError as error:
        return (
            f"autoseg: the fit stopped before a resume checkpoint was saved, and removing its "
            f"files from {folder} failed ({error}); delete that folder, then fit again."
        )
    return (
        f"autoseg: the fit stopped before a resume checkpoint was saved; autoseg removed the "
        f"files it had written in {folder}, so fitting again with the same path starts afresh."
    )
