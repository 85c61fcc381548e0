"""The scripts run through their main(argv): short runs that must still learn the task."""

import importlib.util
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import disk  # noqa: E402


def png_size(path):
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    with open(path, "rb") as file:
        head = file.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_disk_short_run_learns_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results = disk.main(["--epochs", "1500", "--seeds", "1", "--points", "5",
                         "--plot", str(tmp_path)])
    out = capsys.readouterr().out
    assert set(results) == {"sigmoid_bce", "tanh_mse", "handout"}
    for name, r in results.items():
        assert r["test_acc"].shape == (1,)
        assert r["test_acc"][0] >= 90, (name, r["test_acc"])
        assert name in out
    assert "96.0" in out and "97.7" in out  # the report's figures are printed beside ours
    width, height = png_size(tmp_path / "figure1.png")
    assert (width, height) == (1260, 400)  # three panels of 4.2 x 4 inches at 100 dpi
    assert png_size(tmp_path / "curves.png") == (1000, 400)


def test_disk_model_choice_and_curves():
    results = disk.main(["--models", "tanh_mse", "--epochs", "40", "--seeds", "2", "--points", "4"])
    curves = results["tanh_mse"]["curves"]
    assert list(curves["epoch"]) == [10, 20, 30, 40]
    assert curves["test_acc"].shape == (4, 2)
    assert np.all(np.isfinite(curves["train_loss"]))


def test_sweep_script_prints_a_grid(capsys):
    import sweep
    table = sweep.main(["--models", "sigmoid_bce", "--lrs", "0.2", "0.5", "--decays", "1.0",
                        "--seeds", "2", "--epochs", "50"])
    assert table["sigmoid_bce"].shape == (2, 1)
    assert np.all((table["sigmoid_bce"] >= 0) & (table["sigmoid_bce"] <= 100))
    assert "best: lr=" in capsys.readouterr().out


def test_bench_quick_runs_and_every_variant_learns(capsys):
    import bench
    results = bench.main(["--quick", "--no-torch"])
    out, err = capsys.readouterr()
    assert "times include compilation" in out and "Targets:" in out
    for title in ("### W1:", "### BN:", "### Sweeps:", "### Scaling", "### Compile time"):
        assert title in out, title
    assert "epoch/s" not in out + err  # the progress-bar row's bar went to a null stream
    assert {"fnnet fit", "fnnet fit, progress bar on", "jax.grad batch-major",
            "jax.grad feature-major"} <= set(results["W1"])
    assert set(results["BN"]) == {"fnnet fit", "jax.grad batch-major", "jax.grad feature-major"}
    if importlib.util.find_spec("sklearn") is None:  # the digits come with scikit-learn
        assert "W4" not in results and "W5" not in results
    else:
        for workload in ("W4", "W5"):
            assert {"fnnet fit", "jax.grad, Adam inline, one scan"} <= set(results[workload])
        assert any(name.startswith("scikit-learn MLPClassifier") for name in results["W4"])
    # a few epochs in --quick: W1 3000, W4 and W5 3, BN 300
    floors = {"W1": 0.9, "W4": 0.85, "W5": 0.7, "BN": 0.9}
    for workload, rows in results.items():
        for name, row in rows.items():
            assert row.accuracy >= floors[workload], (workload, name, row.accuracy)
