"""Helpers shared by the benchmark scripts: machine info, devices, timing, memory, JSON.

Heavy libraries (torch, autoseg) are imported inside the functions that need them, so a
worker process started by :func:`run_isolated` pays only for what it uses.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def repo_relative(path: str | os.PathLike[str] | None) -> str | None:
    """A path as results record it: relative to the repository, never this machine's root."""
    return None if path is None else os.path.relpath(Path(path).resolve(), REPO_ROOT)


RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_METHODS = ("conv_lora", "lora", "decoder_only")
"""The paper's three headline rows; ``--method(s)`` takes any registered PEFT method."""


def method_choices() -> list[str]:
    """Every registered PEFT method (``autoseg.peft``'s registry)."""
    from autoseg.peft import peft_method_names

    return list(peft_method_names())


SCHEMA_VERSION = 1


# ------------------------------------------------------------------ machine and settings
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    """The checked-out commit (read-only ``git rev-parse``), or ``None`` outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Describe the machine and software a result was measured with."""
    import torch

    import autoseg

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": _total_memory_gib(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "autoseg": autoseg.__version__,
        "git_commit": _git_commit(),
    }


def _total_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA GPU")
    return name


def prepare_like_a_run(model: Any, device: str) -> Any:
    """Give ``model`` the memory format a fit or ``predict`` gives it on ``device``.

    ``Runtime.prepare`` is the one place that policy lives (channels-last conv weights on
    the CPU); compilation stays off, as its own benchmark measures it.
    """
    from autoseg.runtime import Runtime

    return Runtime("gpu" if device == "cuda" else "cpu", "32-true").prepare(model)


def set_threads(threads: int) -> int:
    """Set torch's CPU threads (0 = leave torch's default, all cores); return the count used."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def autocast_dtype(precision: str) -> Any:
    """``bf16`` -> ``torch.bfloat16``; ``fp32`` -> ``None`` (no autocast), as autoseg runs them."""
    from autoseg.runtime import Runtime

    lightning = {"fp32": "32-true", "bf16": "bf16-mixed"}.get(precision)
    if lightning is None:
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return Runtime("cpu", lightning).autocast_dtype


def add_run_options(parser: argparse.ArgumentParser, isolate_what: str) -> None:
    """Add ``--device``, ``--threads``, ``--out`` and ``--no-isolate`` to a script's parser."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default: all cores)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help=f"measure every {isolate_what} in this process, not a fresh one each "
        "(faster to start; the CPU peak RSS then accumulates)",
    )


# ------------------------------------------------------------------------ timing, memory
def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are honest (no-op on CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmRSS``; ``None`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``; the peak where that is missing)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``), since start or the last reset.

    ``VmHWM`` belongs to the process's own address space; ``getrusage``'s ``ru_maxrss``
    (the fallback off Linux) also carries over the parent's RSS at fork time across exec.
    """
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0 ``clear_refs``); True if done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def track_peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """Record the peak memory of the enclosed block into the yielded dict.

    CUDA: peak allocated (and reserved) bytes since a reset at entry, i.e. this block only.
    CPU: the process's peak RSS, reset at entry where the kernel allows it
    (``rss_peak_reset``); it includes everything still resident from before (imported
    libraries), so measure in a fresh process (:func:`run_isolated`) for comparable numbers.
    """
    import torch

    record: dict[str, Any] = {"rss_peak_reset": reset_peak_rss()}
    record["rss_at_start_bytes"] = current_rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        record["cuda_allocated_at_start_bytes"] = torch.cuda.memory_allocated()
    try:
        yield record
    finally:
        record["kind"] = "cuda" if device.startswith("cuda") else "rss"
        record["peak_rss_bytes"] = peak_rss_bytes()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            record["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
            record["peak_cuda_reserved_bytes"] = torch.cuda.max_memory_reserved()
            record["peak_bytes"] = record["peak_cuda_allocated_bytes"]
        else:
            record["peak_bytes"] = record["peak_rss_bytes"]


def summarize_times(times: list[float]) -> dict[str, float]:
    """Median, mean, min and max of a list of durations in seconds."""
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
    }


# --------------------------------------------------------------------------- processes
def run_isolated(fn: Callable[..., Any], isolate: bool = True, **kwargs: Any) -> Any:
    """Call ``fn(**kwargs)`` in a fresh spawned Python process (or here if not ``isolate``).

    A fresh process per measurement makes the CPU peak RSS belong to that measurement alone
    and keeps caches, allocator state and thread pools of earlier measurements out of it.
    ``fn`` must be a module-level function and its arguments and result picklable.
    """
    if not isolate:
        return fn(**kwargs)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, **kwargs).result()


# -------------------------------------------------------------------------------- output
def timestamp() -> str:
    """Local time as ``YYYYmmdd_HHMMSS`` for file names."""
    return dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def write_result(out_dir: str | Path, stem: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as ``<out_dir>/<stem>_<timestamp>.json``; never overwrite a file."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}_{timestamp()}"
    path = folder / f"{base}.json"
    n = 1
    while path.exists():
        path = folder / f"{base}_{n}.json"
        n += 1
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def envelope(kind: str, settings: dict[str, Any], command: list[str] | None) -> dict[str, Any]:
    """The common head of every result file: kind, time, command line, settings, machine."""
    return {
        "kind": kind,
        "schema": SCHEMA_VERSION,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "settings": settings,
        "machine": machine_info(),
    }


def log(message: str) -> None:
    """Progress to stderr (stdout stays free for the result path)."""
    print(message, file=sys.stderr, flush=True)
