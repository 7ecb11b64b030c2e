"""The benchmark scripts on tiny random models and a tiny synthetic data set (seconds)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import _common  # noqa: E402
import bench_accuracy  # noqa: E402
import bench_predict  # noqa: E402
import bench_train  # noqa: E402
import report  # noqa: E402

FAST = ["--threads", "1", "--no-isolate"]
BINARY_METRICS = {"iou", "dice", "sm", "em", "wfm", "mae", "ber"}


def _load(path: Path) -> dict:
    assert path.is_file() and path.suffix == ".json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One result file of each kind, written into a temporary results folder."""
    from autoseg.data.synthetic import make_synthetic_binary

    out = tmp_path_factory.mktemp("results")
    data = tmp_path_factory.mktemp("data")
    make_synthetic_binary(data, n_images=6, size=(40, 56), split_test=2, seed=0)
    keep = tmp_path_factory.mktemp("predictors")
    train = bench_train.main(
        ["--backbone", "vit_tiny", "--image-size", "64", "--method", "conv_lora", "lora"]
        + ["--steps", "2", "--warmup", "1", "--out", str(out), *FAST]
    )
    predict = bench_predict.main(
        ["--backbone", "lite_tiny", "--image-size", "64", "96", "--num-images", "3"]
        + ["--batch-size", "2", "--repeats", "2", "--input-hw", "40", "56", "--out", str(out)]
        + FAST
    )
    # 3 training images (one of 4 held out): batch 4 = one optimiser step per epoch
    accuracy = bench_accuracy.main(
        ["--data", str(data), "--name", "tiny", "--backbone", "vit_tiny", "--image-size", "64"]
        + ["--max-steps", "1", "--batch-size", "4", "--effective-batch-size", "4"]
        + ["--num-workers", "0", "--threads", "1", "--verbosity", "0"]
        + ["--keep", str(keep), "--out", str(out)]
    )
    return {"out": out, "train": train, "predict": predict, "accuracy": accuracy, "keep": keep}


def test_train_json(results):
    path = results["train"]
    assert path.parent == results["out"] and path.name.startswith("train_vit_tiny_64_")
    result = _load(path)
    assert result["kind"] == "train"
    assert result["settings"]["methods"] == ["conv_lora", "lora"]
    assert result["settings"]["image_size"] == 64 and result["settings"]["device"] == "cpu"
    machine = result["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["torch"]
    assert machine["autoseg"] and "gpu" in machine
    for method in ("conv_lora", "lora"):
        run = result["results"][method]
        assert len(run["step_times_s"]) == 2 and len(run["warmup_times_s"]) == 1
        assert all(t > 0 for t in run["step_times_s"]) and run["step_median_s"] > 0
        assert run["memory"]["kind"] == "rss" and run["memory"]["peak_bytes"] > 0
        assert 0 < run["parameters"]["trainable"] < run["parameters"]["total"]
        assert run["threads"] == 1
    conv, lora = result["results"]["conv_lora"], result["results"]["lora"]
    assert conv["parameters"]["moe_conv"] > 0 and lora["parameters"]["moe_conv"] == 0
    ratio = result["conv_lora_over_lora"]
    assert ratio == pytest.approx(conv["step_median_s"] / lora["step_median_s"])


def test_train_single_method_has_no_ratio(tmp_path):
    path = bench_train.main(
        ["--backbone", "lite_tiny", "--image-size", "64", "--method", "decoder_only"]
        + ["--steps", "1", "--warmup", "0", "--batch-size", "2", "--out", str(tmp_path), *FAST]
    )
    result = _load(path)
    assert list(result["results"]) == ["decoder_only"]
    assert "conv_lora_over_lora" not in result
    assert result["results"]["decoder_only"]["parameters"]["lora"] == 0


def test_predict_json(results):
    result = _load(results["predict"])
    assert result["kind"] == "predict" and result["settings"]["image_sizes"] == [64, 96]
    assert [run["image_size"] for run in result["results"]] == [64, 96]
    for run in result["results"]:
        assert run["images_per_s"] > 0 and len(run["pass_times_s"]) == 2
        assert run["memory"]["peak_bytes"] > 0


def test_predict_saved_predictor(results, tmp_path):
    folder = next(results["keep"].glob("tiny_conv_lora_*"))
    path = bench_predict.main(
        ["--model", str(folder), "--num-images", "2", "--repeats", "1", "--input-hw", "32", "48"]
        + ["--image-kind", "noise", "--out", str(tmp_path), *FAST]
    )
    result = _load(path)
    assert result["settings"]["weights"] == "saved predictor"
    assert result["settings"]["backbone"] == "vit_tiny" and result["results"][0]["image_size"] == 64
    with pytest.raises(SystemExit, match="64 px"):
        bench_predict.main(["--model", str(folder), "--image-size", "96", "--out", str(tmp_path)])


def test_accuracy_json(results):
    path = results["accuracy"]
    assert path.name.startswith("accuracy_tiny_")
    result = _load(path)
    assert result["settings"]["train_rows"] == 4 and result["settings"]["test_rows"] == 2
    assert list(result["results"]) == ["conv_lora", "lora", "decoder_only"]
    for method, run in result["results"].items():
        assert set(run["metrics"]) == BINARY_METRICS
        assert run["steps"] == 1 and run["epochs"] >= 1 and run["fit_time_s"] >= 0
        assert run["eval_metric"] == "iou" and run["best_val_score"] is not None
        assert run["config"]["peft.method"] == method
        assert run["config"]["optim.max_steps"] == 1
        assert Path(run["predictor"]).is_dir()


def test_accuracy_data_resolution(tmp_path):
    args = bench_accuracy.parse_args(["--data", "ph2"])
    train, test, name = bench_accuracy.resolve_data(args)
    assert train == bench_accuracy.SHARED_DATA / "ph2" / "train.csv" or not train.exists()
    with pytest.raises(SystemExit):
        bench_accuracy.resolve_data(bench_accuracy.parse_args(["--data", str(tmp_path)]))
    with pytest.raises(SystemExit):
        bench_accuracy.parse_args(["--train", "a.csv"])
    hp = bench_accuracy.hyperparameters(
        bench_accuracy.parse_args(["--time-limit", "60", "--hp", "peft.rank=4"]), "lora"
    )
    assert hp["peft.method"] == "lora" and hp["peft.rank"] == "4"
    assert hp["optim.max_steps"] == -1 and hp["optim.max_epochs"] == bench_accuracy.UNBOUNDED_EPOCHS


def test_report_renders_tables(results, tmp_path):
    text = report.main([str(results["out"])])
    assert "### Training step" in text and "### Inference" in text
    assert "### Accuracy: tiny" in text
    assert "| vit_tiny | 64 | 1 | cpu | fp32 | 1 | conv_lora |" in text
    assert "| lite_tiny conv_lora | random (pretrained=False) | 96 |" in text
    assert "| decoder_only |" in text and "RSS" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{report.BEGIN}\nold\n{report.END}\n\ntail\n")
    report.main([str(results["out"]), "--readme", str(readme)])
    filled = readme.read_text()
    assert "old" not in filled and "### Accuracy: tiny" in filled and filled.endswith("tail\n")


def test_report_without_results_names_the_commands(tmp_path):
    text = report.main([str(tmp_path)])
    assert text == report.NO_RESULTS and "bench_train.py --backbone vit_b" in text


def test_readme_has_results_markers():
    readme = (BENCH_DIR / "README.md").read_text()
    assert report.BEGIN in readme and report.END in readme


def test_run_isolated_uses_a_fresh_process():
    # The child only imports _common (no torch), so its peak RSS is far below this process's.
    child_peak = _common.run_isolated(_common.peak_rss_bytes)
    assert 0 < child_peak < _common.peak_rss_bytes()
    assert _common.run_isolated(os.getpid) != os.getpid()
    assert _common.run_isolated(os.getpid, isolate=False) == os.getpid()


def test_accuracy_caption_names_the_budget():
    assert report._budget_text(64, 2400.0) == "64 steps (time cap 2400 s)"
    assert report._budget_text(64, None) == "64 steps"
    assert report._budget_text(None, 1200.0) == "1200 s"
    assert report._budget_text(None, None) == "preset epochs"


@pytest.mark.slow
def test_accuracy_with_paired_seeds_reports_intervals(tmp_path):
    from autoseg.data.synthetic import make_synthetic_binary

    make_synthetic_binary(tmp_path / "d", n_images=6, size=(40, 56), split_test=2, seed=0)
    path = bench_accuracy.main(
        ["--data", str(tmp_path / "d"), "--name", "pair", "--backbone", "vit_tiny"]
        + ["--image-size", "64", "--max-steps", "1", "--seeds", "0", "1"]
        + ["--methods", "lora", "decoder_only", "--batch-size", "4"]
        + ["--effective-batch-size", "4", "--num-workers", "0", "--threads", "1"]
        + ["--verbosity", "0", "--out", str(tmp_path / "out")]
    )
    result = _load(path)
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [
        ("lora", 0),
        ("decoder_only", 0),
        ("lora", 1),
        ("decoder_only", 1),
    ]
    paired = result["comparison"]["paired"]["lora - decoder_only"]
    scores = {(r["method"], r["seed"]): r["metrics"]["iou"] for r in result["runs"]}
    expected = (
        (scores["lora", 0] - scores["decoder_only", 0])
        + (scores["lora", 1] - scores["decoder_only", 1])
    ) / 2
    assert paired["pairs"] == 2 and paired["mean"] == pytest.approx(expected)
    text = report.main([str(tmp_path / "out")])
    assert "vs best [95 % interval]" in text and "lora - decoder_only:" in text


def test_gate_pairs_both_factors_per_seed(tmp_path):
    import bench_gate

    from autoseg.data.synthetic import make_synthetic_binary

    make_synthetic_binary(tmp_path / "d", n_images=6, size=(40, 56), split_test=2, seed=0)
    path = bench_gate.main(
        ["--data", str(tmp_path / "d"), "--backbone", "vit_tiny", "--image-size", "64"]
        + ["--max-steps", "1", "--seeds", "0", "1", "--batch-size", "4"]
        + ["--effective-batch-size", "4", "--threads", "1", "--out", str(tmp_path / "out")]
    )
    result = _load(path)
    pairs = [(r["seed"], r["gate_factor"]) for r in result["results"]]
    assert pairs == [
        (0, "straight_through"),
        (0, "clean_prob"),
        (1, "clean_prob"),
        (1, "straight_through"),
    ]
    assert len(result["summary"]["test_score_differences"]) == 2
