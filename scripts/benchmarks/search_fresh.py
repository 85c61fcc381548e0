"""One process of the search table (`search.py`), fresh: its imports, a grid search, a refit.

    PYTHONPATH=scripts python -m benchmarks.search_fresh SIDE ARRAYS.npz

SIDE is "fnnet" (`fnnet.fit` per candidate and fold) or "sklearn" (`GridSearchCV` of
an `MLPClassifier`); ARRAYS.npz holds x `(n, 30)` and y `(n,)`, float32, and the
folds' indices `train0`, `held0`, ... (`search.arrays`: the folds of `FOLDS`).
fnnet's process turns JAX's persistent compilation cache on as the scripts do
(`compile_cache.enable`: in $FNNET_CACHE_DIR; FNNET_NO_CACHE=1 leaves it off). It
prints one JSON line: the seconds of the imports, the search and the refit, the
best candidate and its score (the mean over the folds of minus the held-out log
loss), and for fnnet the programs JAX got from XLA and how many of them came from
the cache. Only the standard library is imported before the timed imports.
"""

import itertools
import json
import sys
import time

from .children import search_times

FOLDS = "StratifiedKFold(3, shuffle=True, random_state=0)"
N_FOLDS, EPOCHS, BATCH_SIZE, HIDDEN = 3, 50, 32, 64
FNNET_GRID = {"lr": [1e-3, 3e-3], "Dropout": [0.1, 0.3]}  # the Dropout rate
SKLEARN_GRID = {"learning_rate_init": [1e-3, 3e-3], "alpha": [1e-4, 1e-3]}


def fnnet_side(path):
    """fnnet's search: per candidate, `model.init(key(0))` and a `fit` per fold, scored by
    minus the final validation loss; then the best candidate's `fit` on all samples."""
    start = time.perf_counter()
    import jax
    import numpy as np

    import compile_cache
    import fnnet

    if compile_cache.enable() is None:
        jax.config.update("jax_enable_compilation_cache", False)  # every program compiled here
    imports = time.perf_counter() - start
    with np.load(path) as data:
        x, y = data["x"], data["y"][:, None]
        folds = [(data[f"train{k}"], data[f"held{k}"]) for k in range(N_FOLDS)]

    def model(rate):
        return fnnet.Sequential(
            fnnet.Linear(x.shape[1], HIDDEN),
            fnnet.BatchNorm(),
            fnnet.ReLU(),
            fnnet.Dropout(rate),
            fnnet.Linear(HIDDEN, 1),
        )

    def fit(candidate, train, held=None):
        """`candidate` from `model.init(key(0))` on the samples `train`, validated on `held`."""
        net = model(candidate["Dropout"])
        _, params = net.init(jax.random.key(0), x.shape)
        return fnnet.fit(
            net,
            fnnet.LossBCEWithLogits(),
            fnnet.Adam(lr=candidate["lr"]),
            params,
            x[train],
            y[train],
            EPOCHS,
            batch_size=BATCH_SIZE,
            validation=None if held is None else (x[held], y[held]),
            progress=False,
        )

    candidates = [dict(zip(FNNET_GRID, values)) for values in itertools.product(*FNNET_GRID.values())]
    with compile_cache.Compiles() as compiles:
        start = time.perf_counter()
        scores = [-np.mean([fit(c, *fold).val_losses[-1] for fold in folds]) for c in candidates]
        search = time.perf_counter() - start
        best = int(np.argmax(scores))
        start = time.perf_counter()
        jax.block_until_ready(fit(candidates[best], slice(None)).params)
        refit = time.perf_counter() - start
    return {
        "imports": imports,
        "search": search,
        "refit": refit,
        "best": candidates[best],
        "score": float(scores[best]),
        "programs": compiles.programs,
        "cached": compiles.cached,
    }


def sklearn_side(path):
    """scikit-learn's search: `GridSearchCV` with `refit=True`, its ConvergenceWarnings
    (50 epochs stop short of its tolerance) silenced; the refit's seconds are its `refit_time_`."""
    start = time.perf_counter()
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neural_network import MLPClassifier

    imports = time.perf_counter() - start
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    with np.load(path) as data:
        x, y = data["x"], data["y"]
    grid = GridSearchCV(
        MLPClassifier(
            hidden_layer_sizes=(HIDDEN,),
            solver="adam",
            batch_size=BATCH_SIZE,
            max_iter=EPOCHS,
            random_state=0,
        ),
        SKLEARN_GRID,
        cv=StratifiedKFold(N_FOLDS, shuffle=True, random_state=0),
        scoring="neg_log_loss",
        refit=True,
        n_jobs=1,
    )
    start = time.perf_counter()
    grid.fit(x, y)
    return search_times(grid, imports, time.perf_counter() - start)


def main(side, path):
    print(json.dumps((fnnet_side if side == "fnnet" else sklearn_side)(path)))


if __name__ == "__main__":
    main(*sys.argv[1:])
