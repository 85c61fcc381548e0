"""Fresh processes for the benchmarks' cold-start tables (standard library only, so a
child that imports this module has imported nothing it times)."""

import json
import subprocess
import sys
import time


def run_child(module, args, env, timeout=600):
    """`python -m benchmarks.<module> *args` in a fresh process with `env`: its wall seconds
    from start to exit and the JSON line it printed last, or RuntimeError with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"benchmarks.{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def search_times(search, imports, seconds):
    """What a child prints of a fitted scikit-learn-style search that took `seconds`, its
    imports `imports`: the search without its refit, the refit, the best and its score."""
    return {
        "imports": imports,
        "search": seconds - search.refit_time_,
        "refit": search.refit_time_,
        "best": search.best_params_,
        "score": float(search.best_score_),
    }
