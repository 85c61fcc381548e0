"""The disk task: classify points of [0,1]^2 by a disk of area 1/2.

Trains the report's two models (2-25-25-25-25-1 with 4 ReLU; Sigmoid + BCE and
Tanh + MSE) and the course handout's 2-25-25-25-2 network (MSE on one-hot
targets) with decayed SGD, several seeds each, prints their train and test
accuracy beside the report's, and where the time went.

    python scripts/disk.py                      # all models, 10,000 epochs, 5 seeds
    python scripts/disk.py --plot figures       # also write the PNG figures
    python scripts/disk.py --no-cache           # compile every program, whatever the cache holds

Each model's seeds train in one compiled program, called once per evaluation
(a point of the learning curves); every program is compiled before any runs,
then all the calls are dispatched at once and the models train at the same
time, a progress bar on stderr following them: one model per device while
every device gets one, the models left over spread over all devices (3 models
on 2 cores: one model per core, then the third split over both).

Programs compiled once are kept in JAX's persistent compilation cache
(`compile_cache`: ~/.cache/fnnet/jax; FNNET_NO_CACHE=1 or --no-cache turns it
off): a second run compiles nothing, and its closing line says
`compilation ... (cached)`.
"""

import argparse
import contextlib
import importlib.util
import sys
import time

STARTED = time.perf_counter()  # the start-up phase runs from here to main()

import host_devices

if __name__ == "__main__":
    host_devices.one_per_core()

import compile_cache
import options
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import fnnet

REPORT = {"sigmoid_bce": 96.0, "tanh_mse": 97.7}


def report_model(output):
    """The report's network: 5 Linear layers 2-25-25-25-25-1, 4 ReLU, then `output`."""
    return fnnet.Sequential(
        fnnet.Linear(2, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 1),
        output,
    )


def handout_model():
    """The course handout's network: 2 inputs, three hidden layers of 25, 2 outputs."""
    return fnnet.Sequential(
        fnnet.Linear(2, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 25),
        fnnet.ReLU(),
        fnnet.Linear(25, 2),
    )


def regularized_model():
    """The report's network with BatchNorm after each hidden Linear and Dropout(0.1) before
    the output: the training mode and running statistics at work on the disk task."""
    hidden = []
    for n_in in (2, 25, 25, 25):
        hidden += [fnnet.Linear(n_in, 25), fnnet.BatchNorm(), fnnet.ReLU()]
    return fnnet.Sequential(*hidden, fnnet.Dropout(0.1), fnnet.Linear(25, 1), fnnet.Sigmoid())


# name -> (model, loss, targets from 0/1 labels, 0/1 prediction from outputs, lr, decay).
# lr and decay: cells of the plateau of `python scripts/sweep.py` (5 lr x 3 decay x 5 seeds,
# 10,000 epochs; docs/sweep.png), its best when chosen and within a standard deviation of
# its best since: which cell of the plateau is best changes with a run's last bits.
MODELS = {
    "sigmoid_bce": (
        report_model(fnnet.Sigmoid()),
        fnnet.LossBCE(),
        lambda y: y,
        lambda out: out[..., 0] > 0.5,
        0.5,
        0.9995,
    ),
    "tanh_mse": (
        report_model(fnnet.Tanh()),
        fnnet.LossMSE(),
        lambda y: 2 * y - 1,
        lambda out: out[..., 0] > 0,
        0.2,
        0.9995,
    ),
    "handout": (
        handout_model(),
        fnnet.LossMSE(),
        lambda y: jnp.concatenate([1 - y, y], axis=-1),
        lambda out: out[..., 1] > out[..., 0],
        0.5,
        0.9999,
    ),
    # not in the report, nor run by default: `--models regularized`
    "regularized": (
        regularized_model(),
        fnnet.LossBCE(),
        lambda y: y,
        lambda out: out[..., 0] > 0.5,
        0.5,
        0.9995,
    ),
}
DEFAULT_MODELS = ["sigmoid_bce", "tanh_mse", "handout"]
# each model's loss and targets, for the learning curves' axes
LOSSES = {
    "sigmoid_bce": "BCE, 0/1 targets",
    "tanh_mse": "MSE, -1/+1 targets",
    "handout": "MSE, one-hot targets",
    "regularized": "BCE, 0/1 targets",
}


def accuracy(predict, out, labels):
    """Fraction of points whose 0/1 prediction equals the label; out (..., n, k), labels (..., n, 1)."""
    return jnp.mean(predict(out) == (labels[..., 0] > 0.5), axis=-1)


def data(seeds, n=1000):
    """Independent train and test sets per seed, stacked: x (seeds, n, 2), y (seeds, n, 1),
    numpy. Drawn eagerly: `fnnet.data.disk` draws and labels a concrete key's points on
    the host, compiling nothing."""
    sets = []
    for seed in range(seeds):
        key = jax.random.key(seed)
        sets.append(
            fnnet.data.disk(jax.random.fold_in(key, 0), n) + fnnet.data.disk(jax.random.fold_in(key, 1), n)
        )
    return tuple(np.stack(arrays) for arrays in zip(*sets))


def placements(names, devices):
    """name -> the devices its seeds train on: one device, or all of them.

    Models are dealt to the devices whole, one each, while a full round is
    left; the rest are spread over every device (`fnnet.spread`).
    """
    whole = len(names) - len(names) % len(devices)
    return {name: [devices[i % len(devices)]] if i < whole else list(devices) for i, name in enumerate(names)}


def optimizer(name, lr=None, decay=None):
    """The model's SGD: its lr and decay unless overridden; plain SGD, no momentum buffer."""
    *_, default_lr, default_decay = MODELS[name]
    lr, decay = default_lr if lr is None else lr, default_decay if decay is None else decay
    return fnnet.SGD(lr=lr, decay=decay, momentum=None)


def stack(trees):
    """Trees of one structure stacked leaf by leaf on a new leading axis, as numpy arrays."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def starts(name, keys, n_in, lr=None, decay=None):
    """The seeds' initial params and optimizer states, stacked over seeds.

    Made eagerly, seed by seed: `init` draws on the host for a concrete key and
    compiles nothing (a jitted, vmapped `init` would compile a program per model).
    """
    model, opt = MODELS[name][0], optimizer(name, lr, decay)
    params = [model.init(key, (1, n_in))[1] for key in keys]
    return stack(params), stack([opt.init(p) for p in params])


def member_run(name, epochs, lr=None, decay=None):
    """One stretch of one seed's run, `run(params, opt_state, x, y, key) -> (params, opt_state, point)`.

    x `(2, n, 2)` and y `(2, n, 1)` hold the train and the test set. The run
    trains `epochs` full-batch epochs on the train set, then evaluates both
    sets: `point` holds the learning curves' next values "train_loss",
    "test_loss", "train_acc", "test_acc", each a scalar.
    """
    model, loss, targets, predict, _, _ = MODELS[name]
    chunk = fnnet.train(model, loss, optimizer(name, lr, decay), epochs=epochs)

    def measure(params, x, labels):
        out = model.apply(params, x)
        return loss.value(out, targets(labels)), accuracy(predict, out, labels)

    def run(params, opt_state, x, y, key):
        params, opt_state, _ = chunk(params, opt_state, x[0], targets(y[0]), key=key)
        (train_loss, train_acc), (test_loss, test_acc) = (
            measure(params, x[0], y[0]),
            measure(params, x[1], y[1]),
        )
        point = {
            "train_loss": train_loss,
            "test_loss": test_loss,
            "train_acc": train_acc,
            "test_acc": test_acc,
        }
        return params, opt_state, point

    return run


def prepare(name, sets, keys, epochs, devices, lr=None, decay=None):
    """One model's seeds made ready on `devices`: initial params, data and a compiled program.

    Args:
      sets: `(x, y, x_test, y_test)`, each `(seeds, n, ...)`, numpy.
      keys: one random key per seed, for the initial params.
      epochs: the epochs between two evaluations.
      devices: one device, or several to spread the seeds over (padded to a
        multiple of their count).

    Returns:
      `(step, state)`: `step(*state) -> (*state, point)` trains every seed
      `epochs` epochs from `state` (params and optimizer states, leaves
      `(seeds', ...)`; seeds' counts the padding) and evaluates it, point's
      values `(seeds',)`. A call returns at once: JAX runs programs
      asynchronously.
    """
    x, y, x_test, y_test = sets
    params, opt_states = starts(name, keys, x.shape[-1], lr, decay)
    inputs = (params, opt_states, np.stack([x, x_test], 1), np.stack([y, y_test], 1), keys)
    if len(devices) == 1:
        inputs = jax.device_put(inputs, devices[0])
    else:
        inputs = fnnet.spread(inputs, devices)
    run = fnnet.vmapped(member_run(name, epochs, lr, decay), True, len(devices))
    run = run.lower(*inputs).compile()
    params, opt_states, *data = inputs
    return lambda params, opt_states: run(params, opt_states, *data), (params, opt_states)


AHEAD = 8  # steps a model may run ahead of the progress bar


def train(jobs, evaluations, epochs):
    """Every job's `evaluations` steps, the devices running the models side by side, with a
    progress bar on stderr.

    Each job runs up to AHEAD steps ahead of the step the bar waits for, so
    every device always has work queued (JAX runs programs asynchronously; a
    device takes only so many queued programs before a dispatch waits).

    Args:
      jobs: name -> `(step, state)`, as `prepare` returns.
      evaluations: steps per job.
      epochs: epochs per step, for the bar.

    Returns:
      name -> `(params, curves)`: the final params and the learning curves,
      each `(evaluations, seeds')`, numpy.
    """
    states = {name: state for name, (_, state) in jobs.items()}
    points = {name: [] for name in jobs}
    total = len(jobs) * evaluations * epochs
    with tqdm(total=total, unit="epoch", desc=f"training {len(jobs)} model(s)", file=sys.stderr) as bar:
        for i in range(evaluations + AHEAD):
            if i < evaluations:
                for name, (step, _) in jobs.items():
                    *states[name], point = step(*states[name])
                    points[name].append(point)
            if i >= AHEAD:
                jax.block_until_ready([points[name][i - AHEAD] for name in jobs])
                bar.update(len(jobs) * epochs)
    return {
        name: (states[name][0], jax.tree.map(lambda *values: np.stack(values), *points[name]))
        for name in jobs
    }


class Clock:
    """Wall time by phase, for the closing `time:` line; `notes[phase]` is printed beside it."""

    def __init__(self, start_up):
        self.began = time.perf_counter() - start_up
        self.seconds = {"start-up": start_up}
        self.notes = {}

    @contextlib.contextmanager
    def __call__(self, phase):
        began = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began

    def line(self):
        parts = ", ".join(
            f"{phase} {s:.1f} s" + (f" ({self.notes[phase]})" if self.notes.get(phase) else "")
            for phase, s in self.seconds.items()
        )
        return f"time: {parts}, total {time.perf_counter() - self.began:.1f} s"


def require_matplotlib(parser):
    if importlib.util.find_spec("matplotlib") is None:
        parser.error('--plot needs matplotlib: pip install -e ".[plot]"')


def main(argv=None):
    # Start-up (interpreter and imports) counts when this file runs as the script.
    clock = Clock(time.perf_counter() - STARTED if __name__ == "__main__" else 0.0)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=DEFAULT_MODELS,
        help="which of the disk task's models to train",
    )
    parser.add_argument(
        "--epochs", type=options.positive_int, default=10_000, help="full-batch epochs per run"
    )
    parser.add_argument(
        "--seeds", type=options.positive_int, default=5, help="runs per model, each its own data and init"
    )
    parser.add_argument(
        "--evaluations",
        type=options.positive_int,
        default=50,
        help="evaluations along each run (the points of the learning curves); they must divide --epochs",
    )
    parser.add_argument(
        "--lr",
        type=options.positive_float,
        help="every model's learning rate; None: each its own (in MODELS)",
    )
    parser.add_argument(
        "--decay", type=options.decay_factor, help="every model's lr decay; None: each its own (in MODELS)"
    )
    parser.add_argument("--plot", metavar="DIR", help="write Figure 1 and learning curves here")
    parser.add_argument(
        "--no-cache", action="store_true", help="leave JAX's persistent compilation cache off"
    )
    args = parser.parse_args(argv)
    if args.epochs % args.evaluations:
        parser.error(f"--evaluations ({args.evaluations}) must divide --epochs ({args.epochs})")
    if args.plot:
        require_matplotlib(parser)
        options.plot_folder(parser, args.plot)

    compile_cache.enable(args.no_cache)

    every = args.epochs // args.evaluations
    with compile_cache.Compiles() as compiles:
        with clock("compilation"):  # and the data and initial params: small, mostly compilation
            sets = [np.asarray(a) for a in data(args.seeds)]
            keys = jax.random.split(jax.random.key(1234), args.seeds)
            where = placements(args.models, jax.devices())
            jobs = {
                name: prepare(name, sets, keys, every, devices, args.lr, args.decay)
                for name, devices in tqdm(where.items(), desc="compiling", unit="model", file=sys.stderr)
            }
        with clock("training"):  # with the evaluations along the way
            done = train(jobs, args.evaluations, every)
    clock.notes["compilation"] = compiles.summary()
    results = {}
    epoch = np.arange(1, args.evaluations + 1) * every
    for name, (params, curves) in done.items():
        c = {"epoch": epoch, **{k: v[:, : args.seeds] for k, v in curves.items()}}
        results[name] = {
            "params": jax.tree.map(lambda a: np.asarray(a)[: args.seeds], params),
            "curves": c,
            "train_acc": 100 * c["train_acc"][-1],
            "test_acc": 100 * c["test_acc"][-1],
            "final_loss": c["train_loss"][-1],
        }

    print(
        f"{args.seeds} seeds, {args.epochs} epochs, {len(jax.devices())} device(s) "
        f"({jax.devices()[0].platform}); mean +- std over seeds"
    )
    print(f"{'model':<12} {'train acc %':>14} {'test acc %':>14} {'final loss':>18} {'report %':>9}")
    for name, r in results.items():
        tr, te, lo = r["train_acc"], r["test_acc"], r["final_loss"]
        print(
            f"{name:<12} {tr.mean():6.2f} +- {tr.std():4.2f} {te.mean():6.2f} +- {te.std():4.2f} "
            f"{lo.mean():9.5f} +- {lo.std():.5f} {REPORT.get(name, '-'):>9}"
        )
    for name, r in results.items():
        diverged = int(np.sum(~np.isfinite(r["final_loss"])))
        if diverged:
            print(
                f"warning: {name}: {diverged} of {args.seeds} seed(s) diverged (a non-finite loss); "
                f"try a smaller --lr",
                file=sys.stderr,
            )
    if args.plot:
        with clock("plotting"):
            from plots import plot_disk

            written = plot_disk(results, MODELS, LOSSES, args.plot)
        print("wrote", *written)
    print(clock.line())
    return results


if __name__ == "__main__":
    main()
