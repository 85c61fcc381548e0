"""The seed's experiment: classify points of [0,1]^2 by a disk of area 1/2.

Trains the report's two models (2-25-25-25-25-1 with 4 ReLU; Sigmoid + BCE and
Tanh + MSE) and the course handout's 2-25-25-25-2 network (MSE on one-hot
targets) with decayed SGD, several seeds at once, and prints their train and
test accuracy beside the report's.

    python scripts/disk.py                      # all models, 10,000 epochs, 5 seeds
    python scripts/disk.py --plot figures       # also write the PNG figures
"""

import argparse
import os
import sys
import time

if __name__ == "__main__" and "jax" not in sys.modules:
    # One host device per core, so seeds train in parallel (set before importing jax).
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import jax
import jax.numpy as jnp
import numpy as np

import fnnet

REPORT = {"sigmoid_bce": 96.0, "tanh_mse": 97.7}


def report_model(output):
    """The report's network: 5 Linear layers 2-25-25-25-25-1, 4 ReLU, then `output`."""
    return fnnet.Sequential(
        fnnet.Linear(2, 25), fnnet.ReLU(), fnnet.Linear(25, 25), fnnet.ReLU(),
        fnnet.Linear(25, 25), fnnet.ReLU(), fnnet.Linear(25, 25), fnnet.ReLU(),
        fnnet.Linear(25, 1), output)


def handout_model():
    """The course handout's network: 2 inputs, three hidden layers of 25, 2 outputs."""
    return fnnet.Sequential(
        fnnet.Linear(2, 25), fnnet.ReLU(), fnnet.Linear(25, 25), fnnet.ReLU(),
        fnnet.Linear(25, 25), fnnet.ReLU(), fnnet.Linear(25, 2))


# name -> (model, loss, targets from 0/1 labels, 0/1 prediction from outputs, lr, decay).
# lr and decay: the best cells of `python scripts/sweep.py` and `python scripts/sweep.py
# --models handout` (5 lr x 3 decay x 5 seeds, 10,000 epochs; the tables are in README.md).
MODELS = {
    "sigmoid_bce": (report_model(fnnet.Sigmoid()), fnnet.LossBCE(),
                    lambda y: y, lambda out: out[..., 0] > 0.5, 0.5, 0.9995),
    "tanh_mse": (report_model(fnnet.Tanh()), fnnet.LossMSE(),
                 lambda y: 2 * y - 1, lambda out: out[..., 0] > 0, 0.2, 0.9995),
    "handout": (handout_model(), fnnet.LossMSE(),
                lambda y: jnp.concatenate([1 - y, y], axis=-1),
                lambda out: out[..., 1] > out[..., 0], 0.5, 0.9999),
}


def accuracy(predict, out, labels):
    """Fraction of points whose 0/1 prediction equals the label; out (..., n, k), labels (..., n, 1)."""
    return jnp.mean(predict(out) == (labels[..., 0] > 0.5), axis=-1)


@jax.jit
def _data(seeds, n=1000):
    def one(seed):
        key = jax.random.key(seed)
        return fnnet.data.disk(n, jax.random.fold_in(key, 0)) + fnnet.data.disk(n, jax.random.fold_in(key, 1))
    return jax.vmap(one)(seeds)


def data(seeds, n=1000):
    """Independent train and test sets per seed, stacked: x (seeds, n, 2), y (seeds, n, 1)."""
    return _data(jnp.arange(seeds))


def train_model(name, seeds, epochs, points, lr=None, decay=None):
    """Train `seeds` copies of a model at once (one vmap, seeds spread over devices).

    Returns stacked params and learning curves, each `(points, seeds)`.
    """
    model, loss, targets, predict, default_lr, default_decay = MODELS[name]
    opt = fnnet.SGD(lr=lr or default_lr, decay=decay or default_decay)
    x, y, x_test, y_test = data(seeds)
    keys = jax.random.split(jax.random.key(1234), seeds)
    params = fnnet.sweep.init_many(model, keys, (x.shape[1], 2))
    states = jax.jit(jax.vmap(opt.init))(params)
    x, y, x_test, y_test, params, states, keys = fnnet.sweep.spread(
        (x, y, x_test, y_test, params, states, keys))
    t, t_test = jax.jit(targets)(y), jax.jit(targets)(y_test)
    evaluate = jax.jit(jax.vmap(lambda p, x, t, labels: (
        loss.value(model.apply(p, x), t), accuracy(predict, model.apply(p, x), labels))))
    curves = {k: [] for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc")}
    chunk, done = max(1, epochs // points), 0
    while done < epochs:
        run = fnnet.train(model, loss, opt, epochs=min(chunk, epochs - done))
        params, states, _ = fnnet.sweep.vmapped(run, True, len(jax.devices()))(params, states, x, t, keys)
        done = min(epochs, done + chunk)
        train_loss, train_acc = evaluate(params, x, t, y)
        test_loss, test_acc = evaluate(params, x_test, t_test, y_test)
        curves["epoch"].append(done)
        for k, v in zip(list(curves)[1:], (train_loss, test_loss, train_acc, test_acc)):
            curves[k].append(np.asarray(v)[:seeds])
    curves = {k: np.asarray(v) for k, v in curves.items()}
    return jax.tree.map(lambda a: np.asarray(a)[:seeds], params), curves


def require_matplotlib(parser):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error('--plot needs matplotlib: pip install -e ".[plot]"')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--points", type=int, default=50, help="evaluations along the run")
    parser.add_argument("--lr", type=float, help="override every model's learning rate")
    parser.add_argument("--decay", type=float, help="override every model's decay")
    parser.add_argument("--plot", metavar="DIR", help="write Figure 1 and learning curves here")
    args = parser.parse_args(argv)
    if args.plot:
        require_matplotlib(parser)

    start = time.perf_counter()
    results = {}
    for name in args.models:
        began = time.perf_counter()
        params, curves = train_model(name, args.seeds, args.epochs, args.points, args.lr, args.decay)
        jax.block_until_ready(params)
        results[name] = {"params": params, "curves": curves, "seconds": time.perf_counter() - began}

    print(f"{args.seeds} seeds, {args.epochs} epochs, {len(jax.devices())} device(s) "
          f"({jax.devices()[0].platform}); mean +- std over seeds")
    print(f"{'model':<12} {'train acc %':>14} {'test acc %':>14} {'final loss':>18} "
          f"{'time s':>7} {'report %':>9}")
    for name, r in results.items():
        c = r["curves"]
        tr, te, lo = 100 * c["train_acc"][-1], 100 * c["test_acc"][-1], c["train_loss"][-1]
        print(f"{name:<12} {tr.mean():6.2f} +- {tr.std():4.2f} {te.mean():6.2f} +- {te.std():4.2f} "
              f"{lo.mean():9.5f} +- {lo.std():.5f} {r['seconds']:7.1f} "
              f"{REPORT.get(name, '-'):>9}")
        r.update(train_acc=tr, test_acc=te, final_loss=lo)
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    if args.plot:
        from plots import plot_disk
        written = plot_disk(results, MODELS, args.plot)
        print("wrote", *written)
    return results


if __name__ == "__main__":
    main()
