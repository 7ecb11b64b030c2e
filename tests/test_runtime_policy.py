"""The runtime policy's resolution logic: threads, workers, precision (no timing here)."""

from __future__ import annotations

import os

import pytest
import torch

from autoseg import runtime as runtime_module
from autoseg.config import EnvConfig
from autoseg.data.datamodule import LoaderSettings
from autoseg.runtime import (
    Runtime,
    auto_threads,
    auto_workers,
    native_bf16_in_cpuinfo,
    resolve_runtime,
    usable_cores,
)


@pytest.fixture
def torch_threads():
    """Restore torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _cores(monkeypatch, count: int) -> None:
    monkeypatch.setattr(runtime_module, "usable_cores", lambda: count)


def test_usable_cores_follow_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3


def test_usable_cores_without_affinity_use_the_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores() == 6


def test_explicit_threads_are_kept(monkeypatch):
    _cores(monkeypatch, 1)
    assert auto_threads(3) == 3


@pytest.mark.usefixtures("torch_threads")
def test_auto_threads_are_the_usable_cores_capped_by_torch(monkeypatch):
    torch.set_num_threads(4)
    _cores(monkeypatch, 2)
    assert auto_threads(0) == 2
    _cores(monkeypatch, 8)
    assert auto_threads(0) == 4  # torch's own count (physical cores, or the caller's) wins


class _LoadFile:
    """Stands in for ``Path`` in ``autoseg.runtime``: each read gives the next text."""

    texts: list[str] = []

    def __init__(self, path):
        assert path == "/proc/loadavg"

    def read_text(self):
        if not _LoadFile.texts:
            raise OSError("no such file")
        return _LoadFile.texts.pop(0)


@pytest.mark.parametrize(
    ("running", "busy"), [([1], 0), ([4], 3), ([3, 1, 9], 2), ([2, 2, 7, 7], 1)]
)
def test_busy_cores_are_the_other_runnable_threads(monkeypatch, running, busy):
    monkeypatch.setattr(runtime_module, "Path", _LoadFile)
    monkeypatch.setattr(runtime_module, "_own_runnable_threads", lambda: 1)
    monkeypatch.setattr(_LoadFile, "texts", [f"0.50 0.40 0.30 {n}/120 999" for n in running])
    assert runtime_module.busy_cores(samples=len(running), interval_s=0) == busy


def test_busy_cores_leave_out_this_processs_own_threads(monkeypatch):
    monkeypatch.setattr(runtime_module, "Path", _LoadFile)
    monkeypatch.setattr(runtime_module, "_own_runnable_threads", lambda: 3)
    monkeypatch.setattr(_LoadFile, "texts", ["0.5 0.4 0.3 5/120 999", "0.5 0.4 0.3 2/120 9"])
    assert runtime_module.busy_cores(samples=2, interval_s=0) == 0  # median_low of 2 and 0


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc only")
def test_own_runnable_threads_count_at_least_the_caller():
    assert 1 <= runtime_module._own_runnable_threads() <= len(os.listdir("/proc/self/task"))


def test_busy_cores_unknown_count_as_none(monkeypatch):
    monkeypatch.setattr(runtime_module, "Path", _LoadFile)
    monkeypatch.setattr(runtime_module, "_own_runnable_threads", lambda: 1)
    monkeypatch.setattr(_LoadFile, "texts", [])
    assert runtime_module.busy_cores(samples=3, interval_s=0) == 0
    monkeypatch.setattr(_LoadFile, "texts", ["garbled"])
    assert runtime_module.busy_cores(samples=1, interval_s=0) == 0


@pytest.mark.usefixtures("torch_threads")
@pytest.mark.parametrize(("busy", "threads"), [(0, 2), (1, 1), (6, 1)])
def test_load_aware_threads_leave_busy_cores_alone(monkeypatch, busy, threads):
    torch.set_num_threads(2)
    _cores(monkeypatch, 2)
    monkeypatch.setattr(runtime_module, "busy_cores", lambda: busy)
    assert auto_threads(0, load_aware=True) == threads
    assert auto_threads(0) == 2
    assert auto_threads(2, load_aware=True) == 2  # an explicit count is kept


@pytest.mark.usefixtures("no_gpu", "torch_threads")
def test_only_training_threads_follow_the_load(monkeypatch):
    torch.set_num_threads(2)
    _cores(monkeypatch, 2)
    monkeypatch.setattr(runtime_module, "busy_cores", lambda: 1)
    env = EnvConfig(accelerator="cpu", num_threads=0)
    expected = 1 if runtime_module.LOAD_AWARE_TRAINING else 2
    assert resolve_runtime(env).num_threads == expected
    # prediction keeps every core: its outputs must not depend on the machine's load
    assert resolve_runtime(env, inference=True).num_threads == 2


def test_auto_workers_on_a_cpu_keep_every_core_for_the_step(monkeypatch):
    for cores in (1, 2, 16):
        _cores(monkeypatch, cores)
        assert auto_workers(-1, "cpu") == runtime_module.CPU_WORKERS == 0


def test_auto_workers_on_a_gpu_keep_one_core_free(monkeypatch):
    expected = {1: 0, 2: 1, 3: 2, 5: 4, 64: 4}
    for cores, workers in expected.items():
        _cores(monkeypatch, cores)
        assert auto_workers(-1, "gpu") == workers


def test_explicit_workers_are_kept(monkeypatch):
    _cores(monkeypatch, 2)
    assert auto_workers(0, "gpu") == 0
    assert auto_workers(3, "cpu") == 3


@pytest.mark.usefixtures("no_gpu", "torch_threads")
def test_resolve_runtime_fills_the_auto_values(monkeypatch):
    _cores(monkeypatch, 2)
    monkeypatch.setattr(runtime_module, "busy_cores", lambda: 0)
    torch.set_num_threads(2)
    runtime = resolve_runtime(EnvConfig(accelerator="auto", num_workers=-1, num_threads=0))
    assert (runtime.accelerator, runtime.num_threads, runtime.num_workers) == ("cpu", 2, 0)
    assert not runtime.pin_memory and not runtime.compile
    explicit = resolve_runtime(EnvConfig(accelerator="gpu", num_workers=1, num_threads=1))
    assert (explicit.accelerator, explicit.num_threads, explicit.num_workers) == ("cpu", 1, 1)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_a_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: native)
    runtime = resolve_runtime(EnvConfig(accelerator="cpu", precision="auto"))
    expected = runtime_module.CPU_NATIVE_BF16_PRECISION if native else "32-true"
    assert runtime.precision == expected
    assert resolve_runtime(EnvConfig(precision="32-true")).precision == "32-true"


@pytest.mark.usefixtures("no_gpu")
def test_a_mixed_precision_model_predicts_in_the_cpus_own_precision(monkeypatch):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: False)
    env = EnvConfig(accelerator="cpu", precision="bf16-mixed")
    assert resolve_runtime(env).precision == "bf16-mixed"  # training keeps what was asked
    assert resolve_runtime(env, inference=True).precision == "32-true"


def test_native_bf16_is_read_from_the_flags_lines():
    assert native_bf16_in_cpuinfo("processor : 0\nflags : fpu sse amx_bf16 avx2\n")
    assert not native_bf16_in_cpuinfo("flags : fpu sse avx512f\nbugs : avx512_bf16\n")
    assert not native_bf16_in_cpuinfo("")


@pytest.mark.usefixtures("no_gpu")
def test_training_loaders_use_the_resolved_workers(monkeypatch):
    _cores(monkeypatch, 4)
    auto = LoaderSettings.for_training(EnvConfig(accelerator="cpu", num_workers=-1))
    assert (auto.num_workers, auto.pin_memory) == (runtime_module.CPU_WORKERS, False)
    assert LoaderSettings.for_training(EnvConfig(num_workers=2)).num_workers == 2


@pytest.mark.usefixtures("torch_threads")
def test_runtime_threads_restore_the_callers_count():
    torch.set_num_threads(2)
    with Runtime("cpu", "32-true", num_threads=1).threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with Runtime("cpu", "32-true", num_threads=0).threads():
        assert torch.get_num_threads() == 2


class _FakeSegmentor:
    """Records what the demo asks of the predictor; its fit "stops" after ``steps`` steps."""

    steps = 0
    seen: dict = {}

    def __init__(self, **kwargs):
        _FakeSegmentor.seen = {"init": kwargs}
        self.fit_summary_ = {"steps": self.steps}

    def fit(self, train_csv, time_limit=None):
        _FakeSegmentor.seen["time_limit"] = time_limit

    def evaluate(self, test_csv):
        return {"iou": 0.5}

    def predict(self, test_csv, save_dir):
        _FakeSegmentor.seen["save_dir"] = save_dir


@pytest.mark.parametrize(("steps", "warns"), [(7, False), (3, True)])
def test_demo_trains_its_step_budget_and_warns_when_the_cap_cuts_it(
    monkeypatch, tmp_path, steps, warns
):
    import warnings

    from autoseg import demo, predictor

    monkeypatch.setattr(predictor, "SemanticSegmentor", _FakeSegmentor)
    monkeypatch.setattr(_FakeSegmentor, "steps", steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo.run_demo(tmp_path / "demo", time_limit=50.0, verbosity=0, max_steps=7)
    hyperparameters = _FakeSegmentor.seen["init"]["hyperparameters"]
    assert hyperparameters["optim.max_steps"] == 7 and _FakeSegmentor.seen["time_limit"] == 50.0
    # the step budget, not epochs or early stopping, ends the demo's fit
    assert hyperparameters["optim.max_epochs"] * 14 > demo.DEMO_STEPS
    assert hyperparameters["optim.patience"] >= hyperparameters["optim.max_epochs"]
    cut = [w for w in caught if issubclass(w.category, demo.DemoTimeCapWarning)]
    assert len(cut) == int(warns)
    if warns:
        assert "after 3 of 7 steps" in str(cut[0].message)


def test_prepare_stores_conv_weights_channels_last_on_the_cpu():
    from autoseg.builder import build_model  # noqa: PLC0415
    from autoseg.config import Config  # noqa: PLC0415

    config = Config().with_overrides({"model.backbone": "lite_tiny", "data.image_size": 64})
    model, _ = build_model(config, 1, pretrained=False)
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    prepared = Runtime("cpu", "32-true").prepare(model)
    assert prepared is model
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # Same parameter objects and values: an optimiser made before keeps working.
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(v, p) for v, p in zip(values, model.parameters(), strict=True))
    assert not Runtime("gpu", "bf16-mixed").channels_last
