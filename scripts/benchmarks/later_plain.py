"""The sklearn table's later fit against the plain `jax.grad` program of the same training.

`fnnet.sklearn.MLPClassifier` on the digits (1797 x 64, standardized) with scikit-learn's
defaults (64-100-10, ReLU, Adam 1e-3, batches of 200) but a fixed number of epochs (no
stopping rule), against `jaxgrad.adam_minibatch`: what a JAX user writes for it, one
jitted program of `EPOCHS` epochs, each a permutation of its own, a scan over the full
batches and one step on the smaller last batch (every sample once an epoch, as both
estimators), Adam inline. Both compiled before the timed rounds, taking turns, each round
another seed; milliseconds an epoch, the median and best of the rounds. One XLA device.

    cd scripts && python -m benchmarks.later_plain 7
"""

import statistics
import sys
import time
import warnings

import jax
import numpy as np

from .jaxgrad import adam_minibatch, logits_mlp
from .sklearn_fit import SETTLE, digits

EPOCHS = 130  # about the epochs scikit-learn's default fit on the digits runs


def _params(seed):
    rng = np.random.default_rng(seed)
    sizes = [(64, 100), (100, 10)]
    return [(rng.normal(0, 0.1, s).astype(np.float32), np.zeros(s[1], np.float32)) for s in sizes]


def bench_later_plain(rounds=7):
    """Print (and return) each side's milliseconds an epoch: median and best of `rounds`."""
    from sklearn.exceptions import ConvergenceWarning

    from fnnet.sklearn import MLPClassifier

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    x, y = digits()
    x = x.astype(np.float32)
    labels = jax.device_put(np.unique(y, return_inverse=True)[1].astype(np.int32))
    xs = jax.device_put(x)
    run = adam_minibatch(logits_mlp, EPOCHS, 200)
    fixed = dict(max_iter=EPOCHS, tol=0.0, n_iter_no_change=10**6)
    jax.block_until_ready(run(_params(0), xs, labels, jax.random.key(0), 1e-3))  # compiled
    MLPClassifier(random_state=0, **fixed).fit(x, y)
    times: dict = {"plain jax.grad": [], "fnnet.sklearn": []}
    for seed in range(1, rounds + 1):
        time.sleep(SETTLE)
        start = time.perf_counter()
        jax.block_until_ready(run(_params(seed), xs, labels, jax.random.key(seed), 1e-3))
        times["plain jax.grad"].append((time.perf_counter() - start) / EPOCHS * 1e3)
        time.sleep(SETTLE)
        start = time.perf_counter()
        fitted = MLPClassifier(random_state=seed, **fixed).fit(x, y)
        times["fnnet.sklearn"].append((time.perf_counter() - start) / fitted.n_iter_ * 1e3)
    lines = [
        f"{name}: {statistics.median(ms):.3f} ms an epoch (best {min(ms):.3f})" for name, ms in times.items()
    ]
    text = "\n".join(lines)
    print(text)
    return times


if __name__ == "__main__":
    bench_later_plain(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
