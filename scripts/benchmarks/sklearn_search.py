"""The sklearn search table: `fnnet.sklearn.GridSearchCV` against scikit-learn's, each a fresh process.

scikit-learn's digits (1797 x 64, divided by 16), `MLPClassifier(hidden_layer_sizes=(128,),
solver="adam", batch_size=32, max_iter=100, random_state=0)` (default tol and
n_iter_no_change), learning_rate_init in {1e-3, 3e-3, 1e-2} x alpha in {1e-4, 1e-3, 1e-2,
1e-1}: 12 candidates x 5 folds (`StratifiedKFold(5, shuffle=True, random_state=0)`) and
the refit of the best on all samples. scikit-learn: `sklearn.model_selection.GridSearchCV`
of `sklearn.neural_network.MLPClassifier`, n_jobs=1. fnnet: `fnnet.sklearn.GridSearchCV`
of `fnnet.sklearn.MLPClassifier`, n_jobs=None (the group's program on every core: one
thread per core) and n_jobs=1 (one thread). Each search runs in a fresh process
(`python -m benchmarks.sklearn_search SIDE`), timed by this one from the process's start
to its exit (imports, the data's load, compilation included; JAX's persistent
compilation cache off), the variants taking turns for `ROUNDS` rounds; a cell is the
median of the rounds, a ratio the median of the rounds' ratios. Every process has
OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = `THREADS` (XLA's own thread
pool is not governed by them).

    PYTHONPATH=scripts python -m benchmarks.sklearn_search [ROUNDS]
"""

import json
import os
import statistics
import sys
import time

from .children import run_child, search_times

THREADS = 1  # scikit-learn's MLP on the digits runs its small products no faster on two
ROUNDS = 3
TARGET_RATIO = 5.0  # scikit-learn's wall over fnnet's, at least
TARGET_SCORE = 0.005  # |fnnet's best CV score - scikit-learn's|, at most
GRID = {"learning_rate_init": [1e-3, 3e-3, 1e-2], "alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
SETTINGS = dict(hidden_layer_sizes=(128,), solver="adam", batch_size=32, max_iter=100, random_state=0)
VARIANTS = {  # name: (side, n_jobs)
    "scikit-learn GridSearchCV, n_jobs=1": ("sklearn", 1),
    "fnnet GridSearchCV, n_jobs=None (every core)": ("fnnet", None),
    "fnnet GridSearchCV, n_jobs=1": ("fnnet", 1),
}
REFERENCE = "scikit-learn GridSearchCV, n_jobs=1"


def child(side, n_jobs):
    """One search in this fresh process; prints one JSON line of its timings and results."""
    start = time.perf_counter()
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    if side == "fnnet":
        import jax

        from fnnet.sklearn import GridSearchCV, MLPClassifier

        jax.config.update("jax_enable_compilation_cache", False)
    else:
        from sklearn.model_selection import GridSearchCV
        from sklearn.neural_network import MLPClassifier
    imports = time.perf_counter() - start
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter stops some runs
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    search = GridSearchCV(MLPClassifier(**SETTINGS), GRID, cv=cv, n_jobs=n_jobs)
    start = time.perf_counter()
    search.fit(X, y)
    return search_times(search, imports, time.perf_counter() - start)


def run(side, n_jobs):
    """One fresh process: its wall seconds from start to exit and what it printed."""
    env = dict(os.environ)
    env.update(
        {name: str(THREADS) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    )
    scripts = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [scripts, env.get("PYTHONPATH")]))
    wall, printed = run_child("sklearn_search", ["--child", side, json.dumps(n_jobs)], env, timeout=900)
    return {"wall": wall, **printed}


def bench(rounds=ROUNDS):
    """Print and return the table: `rounds` interleaved rounds of fresh processes."""
    load = os.getloadavg()
    results = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, (side, n_jobs) in VARIANTS.items():
            results[name].append(run(side, n_jobs))
    after = os.getloadavg()
    reference = results[REFERENCE]
    header = ["variant", "wall s", "import s", "search s", "refit s", "best candidate", "best CV score"]
    header += ["scikit-learn / this", "targets"]
    rows = []
    for name, cells in results.items():
        ratio = statistics.median(r["wall"] / c["wall"] for c, r in zip(cells, reference))
        gap = abs(
            statistics.median(c["score"] for c in cells) - statistics.median(r["score"] for r in reference)
        )
        best = cells[-1]["best"]
        targets = (
            ""
            if name == REFERENCE
            else f">= {TARGET_RATIO:g}x: {'yes' if ratio >= TARGET_RATIO else 'no'}; "
            f"score within {TARGET_SCORE:g}: {'yes' if gap <= TARGET_SCORE else 'no'} ({gap:.4f})"
        )
        rows.append(
            [
                name,
                *(
                    f"{statistics.median(c[key] for c in cells):.2f}"
                    for key in ("wall", "imports", "search", "refit")
                ),
                ", ".join(f"{k} {v:g}" for k, v in sorted(best.items())),
                f"{statistics.median(c['score'] for c in cells):.4f}",
                f"{ratio:.2f}",
                targets,
            ]
        )
    lines = [
        f"### Search: digits 1797 x 64, 12 candidates x 5 folds and a refit, each a fresh process "
        f"({rounds} rounds, {os.cpu_count()} cores, BLAS threads {THREADS}, load {load[0]:.2f} before, "
        f"{after[0]:.2f} after)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        bench(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
