"""The scripts run through their main(argv): short runs that must still learn the task."""

import os
import re
import subprocess
import sys

import bench
import disk
import jax
import numpy as np
import pytest
from helpers import png_size
import sweep

import fnnet

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "scripts")

pytestmark = pytest.mark.slow  # the scripts run in subprocesses, each compiling its programs


def time_line(out):
    """The phases of disk.py's closing `time:` line, seconds by name, and its total."""
    line = out.strip().splitlines()[-1]
    assert line.startswith("time: "), out
    parts = {name: float(s) for name, s in re.findall(r"([a-z-]+) (\d+\.\d) s", line)}
    return parts, parts.pop("total")


def test_disk_short_run_learns_plots_and_says_where_the_time_went(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results = disk.main(["--epochs", "1500", "--seeds", "1", "--evaluations", "5", "--plot", str(tmp_path)])
    out, err = capsys.readouterr()
    assert set(results) == {"sigmoid_bce", "tanh_mse", "handout"}
    for name, r in results.items():
        assert r["test_acc"].shape == (1,)
        assert r["test_acc"][0] >= 90, (name, r["test_acc"])
        assert name in out
    assert "96.0" in out and "97.7" in out  # the report's figures are printed beside ours
    width, height = png_size(tmp_path / "figure1.png")
    assert (width, height) == (1260, 400)  # three panels of 4.2 x 4 inches at 100 dpi
    assert png_size(tmp_path / "curves.png") == (1080, 640)  # a loss and an accuracy panel per model
    assert "compiling: 100%" in err and "training 3 model(s): 100%" in err and "4500/4500" in err  # the bars
    parts, total = time_line(out)
    assert list(parts) == ["start-up", "compilation", "training", "plotting"]
    assert parts["start-up"] == 0  # main() called from Python: no start-up of its own
    assert parts["compilation"] > 0 and parts["training"] > 0 and parts["plotting"] > 0
    assert abs(sum(parts.values()) - total) <= 0.05 * len(parts) + 0.1, out  # rounding, printing


def test_disk_model_choice_and_curves():
    results = disk.main(["--models", "tanh_mse", "--epochs", "40", "--seeds", "2", "--evaluations", "4"])
    curves = results["tanh_mse"]["curves"]
    assert list(curves["epoch"]) == [10, 20, 30, 40]
    assert curves["test_acc"].shape == (4, 2)
    assert np.all(np.isfinite(curves["train_loss"]))
    assert np.all(curves["train_loss"][-1] < curves["train_loss"][0])  # every seed learns


def test_disk_evaluations_must_divide_epochs(capsys):
    with pytest.raises(SystemExit):
        disk.main(["--epochs", "40", "--evaluations", "3"])
    assert "--evaluations (3) must divide --epochs (40)" in capsys.readouterr().err


def test_disk_deals_whole_models_to_devices_and_spreads_the_rest():
    assert disk.placements(["a", "b", "c"], [0, 1]) == {"a": [0], "b": [1], "c": [0, 1]}
    assert disk.placements(["a"], [0, 1]) == {"a": [0, 1]}
    assert disk.placements(["a", "b"], [0]) == {"a": [0], "b": [0]}


def test_disk_as_a_script_times_its_start_up_and_spreads_seeds_over_the_cores():
    # As the command line runs it: one host device per core, 3 seeds spread (padded) over them.
    command = [
        sys.executable,
        os.path.join(SCRIPTS, "disk.py"),
        "--models",
        "tanh_mse",
        "--seeds",
        "3",
        "--epochs",
        "20",
        "--evaluations",
        "2",
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120, env=env).stdout
    assert f"3 seeds, 20 epochs, {os.cpu_count()} device(s)" in out
    parts, total = time_line(out)
    assert list(parts) == ["start-up", "compilation", "training"]
    assert parts["start-up"] > 0  # imports, jax's above all
    assert abs(sum(parts.values()) - total) <= 0.05 * len(parts) + 0.1, out


def test_sweep_script_finds_the_cell_that_learns_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    table = sweep.main(
        [
            "--plot",
            str(tmp_path),
            "--models",
            "sigmoid_bce",
            "--lrs",
            "0.002",
            "0.5",
            "--decays",
            "0.9995",
            "--seeds",
            "2",
            "--epochs",
            "800",
        ]
    )
    acc = table["sigmoid_bce"]
    assert acc.shape == (2, 1)
    assert acc[1, 0] > 90, acc  # lr 0.5 learns the disk in 800 epochs
    assert acc[0, 0] < 70, acc  # lr 0.002 has barely moved: about one class everywhere
    assert "best: lr=0.5 decay=0.9995" in capsys.readouterr().out
    assert png_size(tmp_path / "sweep.png") == (450, 440)  # one heatmap and the colour bar


def test_bench_quick_runs_and_every_variant_learns(capsys):
    # W4 and W5 (the digits) are left to tests/test_examples.py's runs of the same models:
    # here they would double this test's time.
    results = bench.main(["--quick", "--no-torch", "--only", "W1", "BN", "sweeps", "scaling", "memory"])
    out, err = capsys.readouterr()
    assert "times include compilation" in out and "Targets:" in out
    for title in ("### W1:", "### BN:", "### Sweeps:", "### Scaling", "### Compile time"):
        assert title in out, title
    assert "W4" not in results and "W5" not in results
    assert "epoch/s" not in out + err  # the progress-bar row's bar went to a null stream
    assert {
        "fnnet fit",
        "fnnet fit, progress bar on",
        "jax.grad batch-major",
        "jax.grad feature-major",
    } <= set(results["W1"])
    assert set(results["BN"]) == {"fnnet fit", "jax.grad batch-major", "jax.grad feature-major"}
    # a few epochs in --quick: W1 3000, BN 300
    floors = {"W1": 0.9, "BN": 0.9}
    for workload, rows in results.items():
        for name, row in rows.items():
            assert row.accuracy >= floors[workload], (workload, name, row.accuracy)


def test_disk_regularized_model_trains_with_batchnorm_and_dropout_and_infers_deterministically():
    results = disk.main(["--models", "regularized", "--epochs", "300", "--seeds", "1", "--evaluations", "3"])
    r = results["regularized"]
    assert r["test_acc"][0] >= 90, r["test_acc"]
    model = disk.MODELS["regularized"][0]
    params = jax.tree.map(lambda a: a[0], r["params"])
    running = params[1]["running"]
    assert not np.allclose(running["mean"], 0) and not np.allclose(running["var"], 1)
    x, _ = fnnet.data.disk(jax.random.key(3), 64)
    out = model.apply(params, x)  # inference: running statistics, no dropout
    np.testing.assert_array_equal(out, model.apply(params, x))
    np.testing.assert_allclose(model.apply(params, x[:1]), out[:1], rtol=1e-5)


def test_the_disk_compile_baseline_trains_as_disk_py():
    """The plain jax.grad program the disk table compiles beside disk.py's does the same work:
    from the same params and data, the same losses, accuracies and params, up to rounding."""
    from benchmarks import disk_compile

    sets = [np.asarray(a) for a in disk.data(2, n=100)]
    keys = jax.random.split(jax.random.key(1234), 2)
    x, y = np.stack([sets[0], sets[2]], 1), np.stack([sets[1], sets[3]], 1)
    for name in disk.DEFAULT_MODELS:
        params, opt_states = disk.starts(name, keys, 2)
        ours = fnnet.vmapped(disk.member_run(name, 20), True, 1)(params, opt_states, x, y, keys)
        linear = [(p["w"], p["b"]) for p in params if isinstance(p, dict) and "w" in p]
        plain = disk_compile.plain_program(name, 20)(linear, np.zeros(2, np.int32), x, y)
        (train_loss, train_acc), (test_loss, test_acc) = plain[2], plain[3]
        np.testing.assert_allclose(ours[2]["train_loss"], train_loss, rtol=1e-5)
        np.testing.assert_allclose(ours[2]["test_loss"], test_loss, rtol=1e-5)
        np.testing.assert_array_equal(ours[2]["train_acc"], train_acc)
        np.testing.assert_array_equal(ours[2]["test_acc"], test_acc)
        ours_linear = [p for p in ours[0] if isinstance(p, dict) and "w" in p]
        for p, (w, b) in zip(ours_linear, plain[0]):
            np.testing.assert_allclose(p["w"], w, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(p["b"], b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "script, argv, says",
    [
        (disk, ["--lr", "0"], r"argument --lr: expected a finite number > 0, got '0'"),
        (disk, ["--lr", "nan"], r"argument --lr: expected a finite number > 0"),
        (disk, ["--decay", "2"], r"argument --decay: expected a decay in \(0, 1\], got '2'"),
        (
            disk,
            ["--decay", "0.999999999"],
            r"argument --decay: --decay: decay=0\.999999999 is 1\.0 in float32",
        ),
        (disk, ["--decay", "0.99999997"], r"argument --decay: .* where it acts 1\.99x as fast"),
        (sweep, ["--seeds", "0"], r"argument --seeds: expected an int >= 1, got 0"),
        (sweep, ["--lrs", "0.1", "-1"], r"argument --lrs: expected a finite number > 0, got '-1'"),
        (disk, ["--plot", "FILE"], r"--plot .*: cannot write figures there"),
        (sweep, ["--plot", "FILE"], r"--plot .*: cannot write figures there"),
    ],
)
def test_bad_options_are_refused_before_any_work(script, argv, says, tmp_path, capsys):
    """A number the run cannot use (--lr 0 used to train with the default lr) and a --plot
    folder that cannot be written (found after the whole run) stop the script at once."""
    (tmp_path / "file").write_text("")
    argv = [str(tmp_path / "file") if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit):
        script.main(argv)
    assert re.search(says, capsys.readouterr().err)
