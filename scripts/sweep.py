"""A grid of learning rate x decay x seeds for each of the disk task's models, as one program.

    python scripts/sweep.py                       # 3 models x 5 lr x 3 decay x 5 seeds, 10,000 epochs
    python scripts/sweep.py --plot figures        # also write figures/sweep.png

Every member of a model's grid trains in one compiled program (`fnnet.sweep` over
initial keys, data sets and optimizer hyperparameters, spread over the local
devices). Prints the mean +- std test accuracy per cell; `scripts/disk.py`'s
defaults are cells of its plateau.
"""

import argparse
import itertools
import os
import time

import host_devices

if __name__ == "__main__":
    host_devices.one_per_core()

import compile_cache
import options
import jax
import jax.numpy as jnp
import numpy as np
from disk import DEFAULT_MODELS, MODELS, accuracy, data, require_matplotlib

import fnnet


def sweep_model(name, lrs, decays, seeds, epochs):
    """Test accuracy (%) of every (lr, decay, seed), shape (len(lrs), len(decays), seeds)."""
    model, loss, targets, predict, _, _ = MODELS[name]
    opt = fnnet.SGD(lr=1.0)  # lr and decay come from the grid, through opt.init
    grid = list(itertools.product(lrs, decays, range(seeds)))
    lr, decay, seed = (jnp.asarray(v) for v in zip(*grid))
    x, y, x_test, y_test = (a[seed] for a in data(seeds))
    keys = jax.random.split(jax.random.key(1234), seeds)[seed]
    params = fnnet.init_many(keys, model, (x.shape[1], 2))
    states = jax.jit(jax.vmap(lambda p, lr, decay: opt.init(p, lr=lr, decay=decay)))(params, lr, decay)
    run = fnnet.train(model, loss, opt, epochs=epochs)
    result = fnnet.sweep(run, params, states, x, jax.jit(targets)(y), keys=keys, per_member_data=True)
    params = result.params
    if not result.finite.all():
        print(
            f"{name}: {int((~result.finite).sum())} of {len(grid)} runs diverged (non-finite loss "
            f"or params); their accuracy is that of their non-finite params"
        )
    out = jax.jit(jax.vmap(model.apply))(params, x_test)
    test_acc = 100 * np.asarray(accuracy(predict, out, y_test))
    return test_acc.reshape(len(lrs), len(decays), seeds)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=DEFAULT_MODELS,
        help="the disk task's models to sweep (each its own program)",
    )
    parser.add_argument(
        "--lrs",
        nargs="+",
        type=options.positive_float,
        default=[0.05, 0.1, 0.2, 0.5, 1.0],
        help="learning rates, the grid's rows",
    )
    parser.add_argument(
        "--decays",
        nargs="+",
        type=options.decay_factor,
        default=[0.9995, 0.9999, 1.0],
        help="per-step lr decays, the grid's columns",
    )
    parser.add_argument(
        "--seeds", type=options.positive_int, default=5, help="runs per cell, each its own data and init"
    )
    parser.add_argument(
        "--epochs", type=options.positive_int, default=10_000, help="full-batch epochs per run"
    )
    parser.add_argument("--plot", metavar="DIR", help="write sweep.png (a heatmap per model) here")
    parser.add_argument(
        "--no-cache", action="store_true", help="leave JAX's persistent compilation cache off"
    )
    args = parser.parse_args(argv)
    if args.plot:
        require_matplotlib(parser)
        options.plot_folder(parser, args.plot)
    compile_cache.enable(args.no_cache)
    table, spread = {}, {}
    for name in args.models:
        start = time.perf_counter()
        acc = sweep_model(name, args.lrs, args.decays, args.seeds, args.epochs)
        table[name], spread[name] = acc.mean(axis=-1), acc.std(axis=-1)
        members = acc.size
        print(
            f"\n{name}: test accuracy %, mean +- std over {args.seeds} seeds, {args.epochs} epochs "
            f"({members} runs in {time.perf_counter() - start:.1f} s)"
        )
        print(f"{'lr / decay':>10} " + " ".join(f"{d:>15}" for d in args.decays))
        for i, lr in enumerate(args.lrs):
            cells = " ".join(
                f"{table[name][i, j]:7.2f} +- {spread[name][i, j]:4.2f}" for j in range(len(args.decays))
            )
            print(f"{lr:>10} {cells}")
        i, j = np.unravel_index(np.argmax(table[name]), table[name].shape)
        print(f"best: lr={args.lrs[i]} decay={args.decays[j]} ({table[name][i, j]:.2f}%)")
    if args.plot:
        from plots import plot_heatmap

        os.makedirs(args.plot, exist_ok=True)
        print(
            "wrote",
            plot_heatmap(
                {name: (table[name], spread[name]) for name in table},
                args.lrs,
                args.decays,
                os.path.join(args.plot, "sweep.png"),
                f"test accuracy %, mean ± std over {args.seeds} seeds, {args.epochs} epochs (boxed: the best)",
            ),
        )
    return table


if __name__ == "__main__":
    main()
