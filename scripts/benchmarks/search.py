"""The search table: a small grid search with cross-validation and a refit, as a script runs it.

scikit-learn's breast-cancer data (569 x 30, standardized by the whole set's mean
and std, float32), 4 candidates x 3 folds (`search_fresh.FOLDS`) and a refit of
the best candidate on all samples: fnnet's `fit` of Linear-BatchNorm-ReLU-Dropout-
Linear against scikit-learn's `GridSearchCV` of an `MLPClassifier`, both Adam,
batch 32, 50 epochs. Each search runs in a fresh process (`search_fresh.py`),
its imports included, timed by this one from the process's start to its exit.
fnnet runs twice a round: "cold", JAX's persistent compilation cache off, and
"warm", the cache on in a fresh folder that an untimed process of the same
search filled before the rounds. The variants take turns, a cell is the
median of the rounds, a ratio the median of the rounds' ratios.
"""

import math
import os
import statistics
import tempfile

import numpy as np

from . import search_fresh as fresh
from .children import run_child
from .fixed import environment
from .timing import table, target

VARIANTS = {  # name: (side, cache on)
    "scikit-learn GridSearchCV, MLPClassifier": ("sklearn", False),
    "fnnet fit, cold (compilation cache off)": ("fnnet", False),
    "fnnet fit, warm (compilation cache filled)": ("fnnet", True),
}
REFERENCE = "scikit-learn GridSearchCV, MLPClassifier"
TARGETS = {"fnnet fit, warm": 1.0, "fnnet fit, cold": 2.0}  # fnnet's wall over scikit-learn's


def arrays():
    """x `(569, 30)` standardized and y `(569,)`, float32, and the folds' indices `train0`,
    `held0`, ... of `search_fresh.FOLDS`, the folds scikit-learn's process draws itself."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    out = {"x": x, "y": y.astype(np.float32)}
    folds = StratifiedKFold(fresh.N_FOLDS, shuffle=True, random_state=0).split(x, y)
    for k, (train, held) in enumerate(folds):
        out[f"train{k}"], out[f"held{k}"] = train, held
    return out


def run(side, path, cache=None):
    """One fresh process of `side`, the compilation cache on in the folder `cache` (if
    given): its wall seconds from start to exit, and what it printed (`search_fresh.py`)."""
    env = environment()
    env.pop("FNNET_CACHE_DIR", None)
    env.pop("FNNET_NO_CACHE", None)
    env.update({"FNNET_CACHE_DIR": cache} if cache else {"FNNET_NO_CACHE": "1"})
    wall, printed = run_child("search_fresh", [side, path], env)
    return {"wall": wall, **printed}


def grid_text(grid):
    """`{"lr": [0.001, 0.003], ...}` as "lr in {0.001, 0.003} x ..."."""
    return " x ".join(f"{k} in {{{', '.join(f'{v:g}' for v in values)}}}" for k, values in grid.items())


def programs(cells):
    """XLA's compilations (and the programs loaded from the cache), the rounds' median."""
    if "programs" not in cells[0]:
        return "-"
    cached = statistics.median(c["cached"] for c in cells)
    return f"{statistics.median(c['programs'] - c['cached'] for c in cells):.0f} ({cached:.0f})"


def row(name, cells, reference):
    """A variant's table row from its rounds `cells` and scikit-learn's `reference`."""
    ratio = statistics.median(c["wall"] / r["wall"] for c, r in zip(cells, reference))
    limit = next((v for k, v in TARGETS.items() if name.startswith(k)), None)
    return [
        name,
        *(
            f"{statistics.median(c[key] for c in cells):.2f}"
            for key in ("wall", "imports", "search", "refit")
        ),
        programs(cells),
        ", ".join(f"{k} {v:g}" for k, v in cells[-1]["best"].items()),
        f"{statistics.median(c['score'] for c in cells):.4f}",
        f"{ratio:.2f}",
        "" if limit is None else target(ratio, limit, f"fnnet <= {limit:.1f}x scikit-learn"),
    ]


def bench_search(rounds=3):
    """Print and return the search table: `rounds` interleaved rounds of fresh processes."""
    load = os.getloadavg()
    results = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        path, cache = os.path.join(folder, "arrays.npz"), os.path.join(folder, "cache")
        np.savez(path, **arrays())
        run("fnnet", path, cache)  # untimed: fills the cache
        for _ in range(rounds):
            for name, (side, cached) in VARIANTS.items():
                results[name].append(run(side, path, cache if cached else None))
    after = os.getloadavg()
    rows = [row(name, cells, results[REFERENCE]) for name, cells in results.items()]
    candidates = math.prod(len(values) for values in fresh.FNNET_GRID.values())
    notes = (
        f"Each a fresh process, {'the median of ' + str(rounds) + ' rounds' if rounds > 1 else '1 round'}, "
        "the variants taking turns. wall: from the process's start to its exit, as the parent "
        f"times it; import, search ({candidates * fresh.N_FOLDS} fits and their scores) and refit "
        "(the best candidate on all samples): as the process times them; the rest of wall is "
        "Python's start, the data's load and the exit. The data and the folds' indices come "
        "from an .npz file: fnnet's process does not import scikit-learn. fnnet: "
        f"Sequential(Linear(30, {fresh.HIDDEN}), BatchNorm(), ReLU(), Dropout(rate), "
        f"Linear({fresh.HIDDEN}, 1)), LossBCEWithLogits, Adam(lr), params from model.init(key(0)), "
        f"{grid_text(fresh.FNNET_GRID)} (the Dropout rate), score: minus the final validation "
        f"loss. scikit-learn: MLPClassifier(hidden_layer_sizes=({fresh.HIDDEN},), its own init, "
        f"the L2 penalty alpha), {grid_text(fresh.SKLEARN_GRID)}, scoring neg_log_loss, n_jobs=1. "
        "best score: the best candidate's mean over the folds, minus the held-out log loss. "
        "XLA compiles: the programs XLA compiled (those loaded from the cache instead). cold: "
        "JAX's persistent compilation cache off; warm: on (scripts/compile_cache.py) in a fresh "
        "folder that an untimed fnnet process filled before the rounds. Load average "
        f"{load[0]:.2f} before, {after[0]:.2f} after."
    )
    return table(
        f"Search: breast cancer 569 x 30, {candidates} candidates x {fresh.N_FOLDS} folds ({fresh.FOLDS}) "
        f"and a refit, batch {fresh.BATCH_SIZE}, {fresh.EPOCHS} epochs, each side a fresh process",
        [
            "variant",
            "wall s",
            "import s",
            "search s",
            "refit s",
            "XLA compiles (cached)",
            "best candidate",
            "best score",
            "wall / scikit-learn",
            "target",
        ],
        rows,
        notes,
    )
