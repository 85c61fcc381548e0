"""The training workloads: fnnet against what its users would run instead, in interleaved rounds.

W1: the report's disk task (1000 points), an MLP, full-batch SGD. W4: scikit-learn's
bundled digits, an MLP, minibatch Adam. W5: the digits as 8x8 images, a CNN.
BN: W1's data through an MLP with BatchNorm. Each `bench_*` prints its table
and returns `(text, {variant: Row})`.
"""

import contextlib
import itertools
import os
from typing import NamedTuple

from . import jaxgrad as jg
import jax
import jax.numpy as jnp
import numpy as np
from .peers import Peer
from .timing import Measured, interleaved, ratio, table, target
from jax.sharding import Mesh

import fnnet

W1_SIZES = (2, 25, 25, 25, 25, 1)
W4_SIZES = (64, 128, 128, 10)
BATCH_SIZE, ADAM_LR = 32, 1e-3
NESTED = "jax.grad, Adam inline, one scan"  # W4's and W5's baselines
FLAT = "jax.grad, Adam inline, one flat scan (remainder dropped)"


class Row(NamedTuple):
    seconds: float  # the best round's
    accuracy: float  # a fraction


def mlp(sizes, output=None):
    """Linear layers of `sizes` with ReLU between them and `output` (if any) at the end."""
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers += [fnnet.Linear(n_in, n_out)] + ([fnnet.ReLU()] if i < len(sizes) - 2 else [])
    return fnnet.serial(*layers, *([output] if output is not None else []))


def flops_per_epoch(sizes, n):
    """Forward 2*n*sum(n_in*n_out); backward twice that (dw and dx)."""
    return 6 * n * sum(a * b for a, b in itertools.pairwise(sizes))


def weights(params):
    """`[(w, b), ...]` of a serial's Linear and Conv2D layers, for the jax.grad baselines."""
    return [(p["w"], p["b"]) for p in params if isinstance(p, dict) and "w" in p]


def as_arrays(pairs):
    """`{"p0": w0, "p1": b0, ...}`: initial params for a peer's process."""
    return {f"p{i}": np.asarray(a) for i, a in enumerate(a for pair in pairs for a in pair)}


def measure(variants, rounds):
    """`variants`: name -> (call, accuracy of its result). Returns (timings, accuracies)."""
    timings = interleaved({name: call for name, (call, _) in variants.items()}, rounds)
    return timings, {name: score(timings[name].result) for name, (_, score) in variants.items()}


def peer_variant(peer):
    return lambda: Measured(*peer.run()), float


def quick_note(rounds):
    return (
        "--quick: one call per variant, so every time includes compilation (and the ratios mean little)"
        if rounds == 0
        else f"best and median of {rounds} interleaved rounds after a warm-up call; each ratio is "
        f"the median over rounds of the two times in the same round"
    )


def bench_w1(epochs, rounds, peers, lr=0.5, decay=0.9999):
    """The report's workload: 1000 points, 2-25-25-25-25-1, Sigmoid + BCE, full-batch SGD."""
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)

    def fit(progress=False, mesh=None):
        return fnnet.fit(
            model,
            fnnet.LossBCE(),
            fnnet.SGD(lr=lr, decay=decay),
            params,
            x,
            y,
            epochs=epochs,
            progress=progress,
            mesh=mesh,
        )

    def fit_with_bar():  # the bar is drawn, to a null stream: nothing between the tables
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            return fit(progress=True)

    def fit_accuracy(result):
        return float(jnp.mean((model.apply(result.params, x) > 0.5) == (y > 0.5)))

    variants = {"fnnet fit": (fit, fit_accuracy), "fnnet fit, progress bar on": (fit_with_bar, fit_accuracy)}
    devices = jax.devices()
    if len(devices) > 1 and 1000 % len(devices) == 0:  # one model's batch split over the cores
        mesh = Mesh(np.array(devices), ("batch",))
        variants[f"fnnet fit, data-parallel over {len(devices)} devices"] = (
            lambda: fit(mesh=mesh),
            fit_accuracy,
        )
    for name, feature_major in (("jax.grad batch-major", False), ("jax.grad feature-major", True)):
        run = jg.sgd_full_batch(epochs, feature_major)
        variants[name] = (
            lambda run=run: run(weights(params), x, y, lr, decay),
            lambda result: jg.binary_accuracy(result[0], x, y),
        )
    with contextlib.ExitStack() as stack:
        if "torch" in peers:
            peer = stack.enter_context(
                Peer(
                    "w1_torch",
                    {"x": x, "y": y, **as_arrays(weights(params))},
                    epochs=epochs,
                    lr=lr,
                    decay=decay,
                )
            )
            variants[f"PyTorch eager, hand backward, {peer.info['threads']} thread(s)"] = peer_variant(peer)
        timings, accuracies = measure(variants, rounds)
    flops = flops_per_epoch(W1_SIZES, 1000) * epochs
    rows = [
        [
            name,
            f"{t.best:.3f}",
            f"{t.median:.3f}",
            f"{1e6 * t.best / epochs:.0f}",
            f"{flops / t.best / 1e9:.1f}",
            f"{ratio(timings, name, 'fnnet fit'):.2f}",
            f"{100 * accuracies[name]:.1f}",
        ]
        for name, t in timings.items()
    ]
    text = table(
        f"W1: {epochs} full-batch SGD epochs, 1000 points, 2-25-25-25-25-1",
        ["variant", "best s", "median s", "us/epoch", "GFLOP/s", "time / fnnet", "train acc %"],
        rows,
        quick_note(rounds),
    )
    return text, {name: Row(t.best, accuracies[name]) for name, t in timings.items()}


def digits():
    """scikit-learn's bundled digits (1797 8x8 images), pixels / 16, split 80/20 by a fixed
    permutation: x_train (1437, 64) float32, y_train (1437,) int32, x_test, y_test (360)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data / 16).astype(np.float32), data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[: int(0.8 * len(y))], order[int(0.8 * len(y)) :]
    return x[train], y[train], x[test], y[test]


def cnn():
    return fnnet.serial(
        fnnet.Conv2D(1, 16, 3),
        fnnet.ReLU(),
        fnnet.MaxPool2D(2),
        fnnet.Conv2D(16, 32, 3),
        fnnet.ReLU(),
        fnnet.MaxPool2D(2),
        fnnet.Flatten(),
        fnnet.Linear(32 * 2 * 2, 10),
    )


def fit_digits(model, params, x, y, epochs):
    """fnnet's run of W4 and W5: minibatch Adam under softmax cross-entropy, no progress bar."""
    return fnnet.fit(
        model,
        fnnet.LossCrossEntropy(),
        fnnet.Adam(lr=ADAM_LR),
        params,
        x,
        y,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        progress=False,
    )


class Digits(NamedTuple):
    """W4's or W5's data, fnnet model and initial params, the baseline's logits, and the two
    runs every table times: fnnet's `fit` and the jax.grad baseline (`() -> result`)."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    model: fnnet.Layer
    params: object
    logits: object
    fnnet_run: object
    baseline_run: object


def digits_workload(workload, epochs) -> Digits:
    """W4 (an MLP on the 64 pixels) or W5 (the CNN on 8x8 images): minibatch Adam, batch 32,
    shuffled every epoch, every sample once per epoch (the last batch of 29 smaller)."""
    x, y, x_test, y_test = digits()
    if workload == "W4":
        model, logits = mlp(W4_SIZES), jg.logits_mlp
    else:
        x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
        model, logits = cnn(), jg.logits_cnn
    _, params = model.init(jax.random.key(0), x.shape)
    run = jg.adam_minibatch(logits, epochs, BATCH_SIZE)
    return Digits(
        x,
        y,
        x_test,
        y_test,
        model,
        params,
        logits,
        lambda: fit_digits(model, params, x, y, epochs),
        lambda: run(weights(params), x, y, jax.random.key(0), ADAM_LR),
    )


def flat_run(w: Digits, epochs):
    """The plainest JAX program of W4's or W5's training (`jaxgrad.adam_flat_scan`): every
    epoch's permutation drawn up front, the remainder dropped, one flat scan; `() -> result`."""

    def loss(params, state, x, labels, key):
        return jg.cross_entropy(w.logits(params, x), labels), state

    run = jg.adam_flat_scan(loss, epochs, BATCH_SIZE)
    return lambda: run(weights(w.params), None, w.x, w.y, jax.random.key(0), ADAM_LR)


def bench_digits(workload, epochs, rounds, peers):
    """W4 (with the MLPClassifier peer) or W5 against their two baselines, nested scans
    (`digits_workload`, every variant on the same samples each epoch) and one flat scan
    (`flat_run`), and the peers."""
    w = digits_workload(workload, epochs)
    x, y, x_test, y_test, model, params, logits = w[:7]
    if workload == "W4":
        task, title = "mlp_torch", "64-128-128-10 MLP, ReLU"
        targets = {NESTED: 0.7, FLAT: 1.0, "PyTorch": 1 / 5, "scikit-learn": 1 / 3}
    else:
        task = "cnn_torch"
        title = "CNN: Conv2D(1, 16, 3) ReLU MaxPool2D(2) Conv2D(16, 32, 3) ReLU MaxPool2D(2) Flatten Linear(128, 10)"
        targets = {NESTED: 1.0, FLAT: 1.0, "PyTorch": 1 / 3}

    def baseline_accuracy(result):
        return jg.class_accuracy(logits, result[0], x_test, y_test)

    variants = {
        "fnnet fit": (
            w.fnnet_run,
            lambda r: float(jnp.mean(jnp.argmax(model.apply(r.params, x_test), -1) == y_test)),
        ),
        NESTED: (w.baseline_run, baseline_accuracy),
        FLAT: (flat_run(w, epochs), baseline_accuracy),
    }
    data = {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}
    options = {"epochs": epochs, "batch_size": BATCH_SIZE, "lr": ADAM_LR}
    with contextlib.ExitStack() as stack:
        if "torch" in peers:
            peer = stack.enter_context(Peer(task, {**data, **as_arrays(weights(params))}, **options))
            variants[f"PyTorch eager, autograd, {peer.info['threads']} thread(s)"] = peer_variant(peer)
        if "sklearn" in peers and workload == "W4":
            peer = stack.enter_context(Peer("mlp_sklearn", data, hidden=W4_SIZES[1:-1], **options))
            variants[f"scikit-learn MLPClassifier, {peer.info['threads']} thread(s), its own init"] = (
                peer_variant(peer)
            )
        timings, accuracies = measure(variants, rounds)
    rows = []
    for name, t in timings.items():
        limit = next((v for k, v in targets.items() if name.startswith(k)), None)
        check = (
            ""
            if limit is None
            else target(ratio(timings, "fnnet fit", name), limit, f"fnnet <= {limit:.2f}x this")
        )
        rows.append(
            [
                name,
                f"{1e3 * t.best / epochs:.2f}",
                f"{1e3 * t.median / epochs:.2f}",
                f"{ratio(timings, name, 'fnnet fit'):.2f}",
                f"{100 * accuracies[name]:.1f}",
                check,
            ]
        )
    goals = "; ".join(f"fnnet <= {v:.2f}x {k}" for k, v in targets.items())
    text = table(
        f"{workload}: digits, {title}; Adam lr {ADAM_LR}, batch {BATCH_SIZE}, {epochs} epochs, "
        f"{len(y)} train / {len(y_test)} test",
        ["variant", "ms/epoch", "median ms/epoch", "time / fnnet", "test acc %", "target"],
        rows,
        f"Targets: {goals}. {quick_note(rounds)}.",
    )
    return text, {name: Row(t.best, accuracies[name]) for name, t in timings.items()}


def bench_bn(epochs, rounds, lr=0.5):
    """W1's data through 2-64-BN-ReLU-64-BN-ReLU-1 Sigmoid, BCE, full-batch SGD: fnnet's
    BatchNorm (hand VJP, running statistics from `update_state`) against jax.grad through
    the same forward, its running statistics returned as aux."""
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    model = fnnet.serial(
        fnnet.Linear(2, 64),
        fnnet.BatchNorm(),
        fnnet.ReLU(),
        fnnet.Linear(64, 64),
        fnnet.BatchNorm(),
        fnnet.ReLU(),
        fnnet.Linear(64, 1),
        fnnet.Sigmoid(),
    )
    _, params = model.init(jax.random.key(0), x.shape)
    norms = [p for p in params if isinstance(p, dict) and "running" in p]
    base = {"linear": weights(params), "bn": [(p["scale"], p["shift"]) for p in norms]}
    running = [(p["running"]["mean"], p["running"]["var"]) for p in norms]

    def fit():
        return fnnet.fit(
            model, fnnet.LossBCE(), fnnet.SGD(lr=lr), params, x, y, epochs=epochs, progress=False
        )

    variants = {"fnnet fit": (fit, lambda r: float(jnp.mean((model.apply(r.params, x) > 0.5) == (y > 0.5))))}
    for name, feature_major in (("jax.grad batch-major", False), ("jax.grad feature-major", True)):
        run = jg.bn_sgd_full_batch(epochs, feature_major)
        variants[name] = (
            lambda run=run: run(base, running, x, y, lr),
            lambda result: jg.bn_accuracy(*result[0], x, y),
        )
    timings, accuracies = measure(variants, rounds)
    rows = [
        [
            name,
            f"{t.best:.3f}",
            f"{t.median:.3f}",
            f"{1e6 * t.best / epochs:.0f}",
            f"{ratio(timings, name, 'fnnet fit'):.2f}",
            f"{100 * accuracies[name]:.1f}",
            ""
            if name == "fnnet fit"
            else target(ratio(timings, "fnnet fit", name), 1.0, "fnnet <= 1.00x this"),
        ]
        for name, t in timings.items()
    ]
    text = table(
        f"BN: {epochs} full-batch SGD epochs (lr {lr}), W1's 1000 points, "
        f"2-64-BatchNorm-ReLU-64-BatchNorm-ReLU-1 Sigmoid, BCE",
        [
            "variant",
            "best s",
            "median s",
            "us/epoch",
            "time / fnnet",
            "train acc % (running statistics)",
            "target",
        ],
        rows,
        f"Target: fnnet no slower than jax.grad. {quick_note(rounds)}.",
    )
    return text, {name: Row(t.best, accuracies[name]) for name, t in timings.items()}
