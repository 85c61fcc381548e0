"""The fixed-cost table: what a fresh process pays before and around its training.

For W1, W4, W5 and two breast-cancer-sized models (284 samples x 30 features,
batch 32, 50 epochs, Adam: a 30-64-1 MLP and 30-64-BatchNorm-ReLU-Dropout-1),
fnnet's `fit` against the plainest `jax.grad` program of the same training
(`jaxgrad.sgd_full_batch` for W1, `jaxgrad.adam_flat_scan` for the rest). Each
cell runs `fresh.py` in its own process, JAX's persistent compilation cache
off, fnnet and plain taking turns; a cell is the median of the rounds. A
first call's tracing, lowering and XLA compiling come from JAX's own compile
events (`jax.monitoring`: jaxpr_trace, jaxpr_to_mlir_module and
backend_compile, each program's and the checks' small ones); "run" is the
rest of its wall time. The first call trains on fold 0's training set of a
5-fold split (`training_sets`); then a second call each with another lr, another
fold (the last fold's training set: the same size or one sample apart), Dropout rate
and epochs: its time and the programs it compiled.
"""

import json
import os
import statistics
import tempfile
from typing import NamedTuple, Optional

import jax
import numpy as np

import fnnet

from . import fresh
from .children import run_child
from .timing import table
from .workloads import W1_SIZES, W4_SIZES, digits

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Workload(NamedTuple):
    """One row pair: the model, loss and run, and the second calls' other settings."""

    title: str
    model: str  # "mlp", "cnn" or "bn_dropout"
    sizes: tuple
    loss: str  # "bce", "bce_logits" or "cross_entropy"
    batch_size: Optional[int]
    epochs: int
    lr: float
    lr2: float
    epochs2: int
    rate: Optional[float] = None  # Dropout's
    rate2: Optional[float] = None
    decay: float = 1.0  # SGD's


WORKLOADS = {
    "W1": Workload(
        "disk 1000 x 2, 2-25-25-25-25-1 Sigmoid, BCE, full-batch SGD, 10,000 epochs",
        "mlp",
        W1_SIZES,
        "bce",
        None,
        10_000,
        0.5,
        0.4,
        5_000,
        decay=0.9999,
    ),
    "W4": Workload(
        "digits 1437 x 64, MLP 64-128-128-10, Adam, batch 32, 100 epochs",
        "mlp",
        W4_SIZES,
        "cross_entropy",
        32,
        100,
        1e-3,
        2e-3,
        50,
    ),
    "W5": Workload(
        "digits 1437 x 8x8, CNN, Adam, batch 32, 20 epochs",
        "cnn",
        (),
        "cross_entropy",
        32,
        20,
        1e-3,
        2e-3,
        10,
    ),
    "MLP": Workload(
        "284 x 30, MLP 30-64-1, BCE on logits, Adam, batch 32, 50 epochs",
        "mlp",
        (30, 64, 1),
        "bce_logits",
        32,
        50,
        1e-3,
        2e-3,
        25,
    ),
    "BN-Dropout": Workload(
        "284 x 30, 30-64-BatchNorm-ReLU-Dropout(0.2)-1, BCE on logits, Adam, batch 32, 50 epochs",
        "bn_dropout",
        (30, 64, 1),
        "bce_logits",
        32,
        50,
        1e-3,
        2e-3,
        25,
        rate=0.2,
        rate2=0.3,
    ),
}


def data(name):
    """x, y of a workload: W1's disk; the digits (W4, W5); the first 284 samples of
    scikit-learn's breast-cancer data in a fixed order, standardized, y `(n, 1)`."""
    if name == "W1":
        x, y = fnnet.data.disk(jax.random.key(1), 1000)
        return np.asarray(x), np.asarray(y)
    if name in ("W4", "W5"):
        x, y = digits()[:2]
        return (x.reshape(-1, 8, 8, 1) if name == "W5" else x), y
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))[:284]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x[order].astype(np.float32), y[order, None].astype(np.float32)


def training_sets(n, folds=5):
    """The training sets of the first and the last fold of a `folds`-fold split of n samples
    (all samples but the fold's), index arrays: `np.array_split` of a fixed permutation, so
    where `folds` does not divide n the last training set is one sample larger."""
    parts = np.array_split(np.random.default_rng(0).permutation(n), folds)
    return [np.concatenate(parts[:k] + parts[k + 1 :]) for k in (0, folds - 1)]


def arrays(name, workload: Workload):
    """The data, the training sets of the first and last folds (`train0`, `train1`) and the plain
    program's initial params: fnnet's `model.init(key(0))`, as `fresh.py`'s fnnet process
    draws them, so both start from the same point."""
    x, y = data(name)
    build, _ = fresh.fnnet_calls(jax, fnnet, {"x": x, "y": y}, workload._asdict())
    _, params = build(workload.rate).init(jax.random.key(0), x.shape)
    linear = [p for p in params if isinstance(p, dict) and "w" in p]
    train0, train1 = training_sets(len(y))
    out = {"x": x, "y": y, "train0": train0, "train1": train1}
    for i, p in enumerate(linear):
        out[f"w{i}"], out[f"b{i}"] = p["w"], p["b"]
    for p in params:
        if isinstance(p, dict) and "running" in p:
            out.update(scale=p["scale"], shift=p["shift"], mean=p["running"]["mean"], var=p["running"]["var"])
    return {k: np.asarray(v) for k, v in out.items()}, len(linear)


def environment():
    """A fresh process's environment: the scripts on its path, no JAX cache folder set."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SCRIPTS, env.get("PYTHONPATH")]))
    return env


def run_fresh(variant, path, opts):
    """One fresh process's measurements (see `fresh.py`)."""
    return run_child("fresh", [variant, path, json.dumps(opts)], environment())[1]


def median(cells, *keys):
    values = []
    for cell in cells:
        for key in keys:
            cell = cell[key]
        values.append(cell)
    return statistics.median(values)


def compilation(cell):
    first = cell["first"]
    return first["trace"] + first["lower"] + first["compile"]


def second_call(cells, what):
    if what not in cells[0]["second"]:
        return "-"
    return f"{median(cells, 'second', what, 'wall'):.3f} ({median(cells, 'second', what, 'programs'):.0f})"


def bench_fixed(quick=False, rounds=3):
    """Print and return the fixed-cost table: `rounds` fresh processes per cell (`--quick`:
    one round of the BN-Dropout model, 2 epochs)."""
    names = ["BN-Dropout"] if quick else list(WORKLOADS)
    try:
        import sklearn  # noqa: F401  (the digits and the breast-cancer data)
    except ImportError:
        names = ["W1"]
    load = os.getloadavg()
    results = {name: {"fnnet": [], "plain": []} for name in names}
    workloads = {name: WORKLOADS[name] for name in names}
    if quick:
        workloads = {
            name: w._replace(
                title=f"{w.title.split(', Adam')[0]}, {w.batch_size} a batch, 2 epochs", epochs=2, epochs2=1
            )
            for name, w in workloads.items()
        }
    with tempfile.TemporaryDirectory() as folder:
        runs, sizes = {}, {}
        for name, workload in workloads.items():
            values, linears = arrays(name, workload)
            path = os.path.join(folder, f"{name}.npz")
            np.savez(path, **values)
            runs[name] = (path, {**workload._asdict(), "linears": linears})
            sizes[name] = (len(values["train0"]), len(values["train1"]))
        for _ in range(rounds):
            for name in names:
                for variant in ("fnnet", "plain"):
                    results[name][variant].append(run_fresh(variant, *runs[name]))
    rows = []
    for name in names:
        cells = results[name]
        for variant, label in (("fnnet", "fnnet fit"), ("plain", "plain jax.grad")):
            c = cells[variant]
            ratio = statistics.median(
                compilation(a) / compilation(b) for a, b in zip(cells["fnnet"], cells["plain"])
            )
            rows.append(
                [
                    name,
                    label,
                    f"{median(c, 'imports', 'jax'):.2f}",
                    f"{median(c, 'imports', 'fnnet'):.2f}" if variant == "fnnet" else "-",
                    *(
                        f"{median(c, 'first', phase):.3f}"
                        for phase in ("trace", "lower", "compile", "run", "wall")
                    ),
                    f"{median(c, 'first', 'programs'):.0f}",
                    *(second_call(c, what) for what in ("lr", "fold", "dropout", "epochs")),
                    f"{ratio:.2f}" if variant == "fnnet" else "",
                ]
            )
    after = os.getloadavg()
    notes = (
        "Each cell: the median of "
        + (f"{rounds} fresh processes" if rounds > 1 else "1 fresh process")
        + ", fnnet and plain taking turns; JAX's persistent compilation cache off. trace, lower, "
        "compile: JAX's compile events during the first call (all its programs: the run's and "
        "the checks' small ones); run: the rest of its wall time (running, checks, Python). "
        "The first call trains on fold 0's training set of a 5-fold split (np.array_split of a "
        "fixed permutation: all samples but fold 0), both variants on the same samples. "
        "2nd: a second call in the same process with another lr, another fold (the last fold's "
        "training set: the same size or one sample apart), Dropout rate or epochs (half): "
        "seconds (programs compiled). Compilation / plain: "
        "trace + lower + compile over the plain program's, the median of the rounds' ratios. "
        f"Load average {load[0]:.2f} before, {after[0]:.2f} after. Workloads: "
        + "; ".join(
            f"{name}: {w.title}, training sets of the first and last folds: {sizes[name][0]} and {sizes[name][1]} samples"
            for name, w in workloads.items()
        )
        + "."
    )
    return table(
        "Fixed costs: a fresh process's imports, first call and second calls",
        [
            "workload",
            "variant",
            "import jax s",
            "import fnnet s",
            "trace s",
            "lower s",
            "compile s",
            "run s",
            "first call s",
            "programs",
            "2nd: lr s (programs)",
            "2nd: another fold",
            "2nd: Dropout",
            "2nd: epochs",
            "compilation / plain",
        ],
        rows,
        notes,
    )
