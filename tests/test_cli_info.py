"""Parameter counts (paper's table) and the command line."""

from __future__ import annotations

import json

import pytest
from _cli import fit_args
from _tiny import as_cli_settings

from autoseg.cli import main
from autoseg.info import parameter_counts

# Conv-LoRA paper, SAM ViT-H, binary: LoRA 491,520 + MoE-conv 23,040 + decoder 3,505,536.
VIT_H_TRAINABLE = {"conv_lora": 4_020_096, "lora": 3_997_056, "decoder_only": 3_505_536}


@pytest.mark.parametrize("method", list(VIT_H_TRAINABLE))
def test_vit_h_trainable_counts_match_the_paper(method):
    counts = parameter_counts("vit_h", method)
    assert counts["trainable"] == VIT_H_TRAINABLE[method]
    assert counts["decoder"] == 3_505_536
    assert counts["lora"] == (491_520 if method != "decoder_only" else 0)
    assert counts["moe_conv"] == (23_040 if method == "conv_lora" else 0)


def test_multiclass_head_adds_one_token_and_mlp_per_class():
    binary = parameter_counts("vit_b", "conv_lora", num_classes=1)["decoder"]
    five = parameter_counts("vit_b", "conv_lora", num_classes=5)["decoder"]
    token_and_mlp = 256 + (256 * 256 + 256) * 2 + (256 * 32 + 32)
    assert five - binary == 4 * token_and_mlp


def test_info_command_prints_the_table(capsys):
    assert main(["info", "--backbone", "vit_h"]) == 0
    out = capsys.readouterr().out
    for number in ("4,020,096", "3,997,056", "3,505,536"):
        assert number in out
    # bitfit, adapter, ssf (paper: 3.96, 3.92, 4.42 M) and full, every parameter: 100%
    for number in ("3,957,888", "3,915,264", "4,411,264", "640,537,804   640,537,804  100.00%"):
        assert number in out


def test_cli_user_errors_exit_2(tmp_path, capsys):
    code = main(["fit", "--train", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m")])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err


def test_cli_fit_predict_evaluate(tmp_path, capsys, tiny_hyperparameters):
    from autoseg.data.synthetic import make_synthetic_binary

    train_csv, test_csv = make_synthetic_binary(
        tmp_path / "data", n_images=6, size=(40, 56), split_test=2, seed=3
    )
    sets = as_cli_settings(tiny_hyperparameters)
    assert main(fit_args(train_csv, tmp_path / "model", sets)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backbone"] == "vit_tiny"
    assert (
        main(
            [
                "-v",
                "0",
                "predict",
                "--model",
                str(tmp_path / "model"),
                "--input",
                str(test_csv),
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2
    capsys.readouterr()
    assert (
        main(
            [
                "-v",
                "0",
                "evaluate",
                "--model",
                str(tmp_path / "model"),
                "--data",
                str(test_csv),
                "--metrics",
                "iou",
                "dice",
            ]
        )
        == 0
    )
    assert set(json.loads(capsys.readouterr().out)) == {"iou", "dice"}


def test_info_memory_prints_the_estimate_and_card_fits(capsys):
    argv = ["info", "--memory", "--backbone", "vit_tiny", "--image-size", "64"]
    assert main([*argv, "--batch-size", "1", "2", "--precision", "bf16-mixed", "32-true"]) == 0
    out = capsys.readouterr().out
    assert "peak GiB" in out and "   80" in out
    rows = [line for line in out.splitlines() if line.startswith("vit_tiny")]
    assert len(rows) == 2 * 2 * 2  # batch x precision x checkpointing


@pytest.mark.slow  # four GPU presets' estimates (tests/test_memory.py checks their fit)
def test_info_memory_presets_shows_each_gpu_preset_as_derived(capsys):
    assert main(["info", "--memory", "--backbone", "vit_tiny", "--image-size", "64",
                 "--batch-size", "1", "--presets"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for preset in ("gpu_vit_h", "gpu_vit_l", "gpu_vit_b", "gpu_vit_b_small"):
        assert preset in out
    assert "differs" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--batch-size", "0"], "--batch-size"), (["--image-size", "66"], "multiple of 16")],
)
def test_info_memory_refuses_bad_sizes_before_building(extra, message, capsys):
    assert main(["info", "--memory", "--backbone", "vit_b", *extra]) == 2
    assert message in capsys.readouterr().err
