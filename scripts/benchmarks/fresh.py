"""One cell of the fixed-cost table (`fixed.py`), in a fresh process: nothing compiled yet.

    PYTHONPATH=scripts python -m benchmarks.fresh VARIANT ARRAYS.npz OPTIONS_JSON

VARIANT is "fnnet" (`fnnet.fit`) or "plain" (the `jax.grad` program of `jaxgrad.py`);
ARRAYS.npz holds x, y, the training sets' indices of the first and last folds (`train0`,
`train1`) and the plain program's initial params (`fixed.arrays`);
OPTIONS_JSON the workload (`fixed.Workload`). It times `import jax` (and `import
fnnet`), then the first call on fold 0's training set (`train0`), split by JAX's own
compile events, then a second call each with another lr, another fold (`train1`),
Dropout rate and epochs, and prints one JSON line. Only the standard library is
imported before the timed imports.
"""

import json
import sys
import time

TRACE = "/jax/core/compile/jaxpr_trace_duration"  # a function traced to a jaxpr
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # a jaxpr lowered to MLIR
COMPILE = "/jax/core/compile/backend_compile_duration"  # XLA compiles one program


def covered(spans):
    """The seconds covered by `(start, end)` spans, nested or overlapping ones once: a jit
    traced inside another reports its own span within its caller's."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


class Events:
    """JAX's compile events while open: the spans of tracing, lowering and compiling, and
    the names of the programs XLA compiled."""

    def __init__(self, monitoring):
        self.monitoring = monitoring
        self.spans = {TRACE: [], LOWER: [], COMPILE: []}
        self.programs = []

    def _span(self, event, start, end, **kwargs):
        if event in self.spans:
            self.spans[event].append((start, end))
        if event == COMPILE:
            self.programs.append(str(kwargs.get("fun_name")))

    def __enter__(self):
        self.monitoring.register_event_time_span_listener(self._span)
        return self

    def __exit__(self, *exc_info):
        self.monitoring.unregister_event_time_span_listener(self._span)

    def seconds(self, event):
        return covered(self.spans[event])


def timed(jax, call):
    """One call, blocked until done: its wall time, tracing, lowering and compiling seconds,
    the programs compiled and the rest (running, checks, Python)."""
    with Events(jax.monitoring) as events:
        start = time.perf_counter()
        jax.block_until_ready(call())
        wall = time.perf_counter() - start
    phases = {
        "trace": events.seconds(TRACE),
        "lower": events.seconds(LOWER),
        "compile": events.seconds(COMPILE),
    }
    return {
        "wall": wall,
        **phases,
        "run": wall - sum(phases.values()),
        "programs": len(events.programs),
        "names": events.programs,
    }


def fnnet_calls(jax, fnnet, arrays, o):
    """`(build(rate), fit(model, lr, (x, y), epochs))` for the workload `o`."""
    from .workloads import cnn, mlp

    sizes = o["sizes"]

    def build(rate):
        if o["model"] == "cnn":
            return cnn()
        if o["model"] == "bn_dropout":
            n_in, hidden, n_out = sizes
            return fnnet.serial(
                fnnet.Linear(n_in, hidden),
                fnnet.BatchNorm(),
                fnnet.ReLU(),
                fnnet.Dropout(rate),
                fnnet.Linear(hidden, n_out),
            )
        return mlp(sizes, fnnet.Sigmoid() if o["loss"] == "bce" else None)

    loss = {
        "bce": fnnet.LossBCE,
        "bce_logits": fnnet.LossBCEWithLogits,
        "cross_entropy": fnnet.LossCrossEntropy,
    }
    _, params = build(o["rate"]).init(jax.random.key(0), arrays["x"].shape)

    def fit(model, lr, data, epochs):
        opt = fnnet.SGD(lr=lr, decay=o["decay"]) if o["batch_size"] is None else fnnet.Adam(lr=lr)
        return fnnet.fit(
            model,
            loss[o["loss"]](),
            opt,
            params,
            *data,
            epochs,
            batch_size=o["batch_size"],
            progress=False,
        )

    return build, fit


def plain_calls(jax, arrays, o):
    """The same two functions for the plain `jax.grad` program: `build(rate)` is a function
    of the epochs giving a jitted run; the rate, a Python number in the loss, is baked in."""
    from . import jaxgrad as jg

    jnp = jax.numpy
    linear = [(jnp.asarray(arrays[f"w{i}"]), jnp.asarray(arrays[f"b{i}"])) for i in range(o["linears"])]
    key, runs = jax.random.key(0), {}

    def run_of(make, epochs):  # a user keeps the jitted run of given epochs and reuses it
        if (make, epochs) not in runs:
            runs[make, epochs] = make(epochs)
        return runs[make, epochs]

    if o["batch_size"] is None:  # W1: full-batch SGD, a scan of epochs

        def build_sgd(rate):
            return lambda epochs: jg.sgd_full_batch(epochs, False)

        def fit_sgd(make, lr, data, epochs):
            return run_of(make, epochs)(linear, *data, lr, o["decay"])

        return build_sgd, fit_sgd
    if o["model"] == "bn_dropout":
        params = {"linear": linear, "bn": (jnp.asarray(arrays["scale"]), jnp.asarray(arrays["shift"]))}
        state = (jnp.asarray(arrays["mean"]), jnp.asarray(arrays["var"]))

        def loss_of(rate):
            def loss(params, running, x, y, key):
                z, running = jg.bn_dropout_logits(params, running, x, key, rate, True)
                return jg.bce_logits(z, y), running

            return loss

    else:
        params, state = linear, None
        logits = jg.logits_cnn if o["model"] == "cnn" else jg.logits_mlp
        value = jg.bce_logits if o["loss"] == "bce_logits" else jg.cross_entropy

        def loss_of(rate):
            return lambda params, state, x, y, key: (value(logits(params, x), y), state)

    def build(rate):
        loss = loss_of(rate)
        return lambda epochs: jg.adam_flat_scan(loss, epochs, o["batch_size"])

    def fit(make, lr, data, epochs):
        return run_of(make, epochs)(params, state, *data, key, lr)

    return build, fit


def main(variant, path, options):
    o = json.loads(options)
    start = time.perf_counter()
    import jax

    imports = {"jax": time.perf_counter() - start, "fnnet": 0.0}
    jax.config.update("jax_enable_compilation_cache", False)  # every program compiled here
    if variant == "fnnet":
        start = time.perf_counter()
        import fnnet

        imports["fnnet"] = time.perf_counter() - start
    import numpy as np

    with np.load(path) as data:
        arrays = dict(data)
    if variant == "fnnet":
        build, fit = fnnet_calls(jax, fnnet, arrays, o)
    else:
        build, fit = plain_calls(jax, arrays, o)
    fold0, fold1 = ((arrays["x"][arrays[k]], arrays["y"][arrays[k]]) for k in ("train0", "train1"))
    lr, epochs, rate = o["lr"], o["epochs"], o["rate"]
    model = build(rate)
    first = timed(jax, lambda: fit(model, lr, fold0, epochs))
    second = {
        "lr": timed(jax, lambda: fit(model, o["lr2"], fold0, epochs)),
        "fold": timed(jax, lambda: fit(model, lr, fold1, epochs)),
    }
    if rate is not None:
        other = build(o["rate2"])
        second["dropout"] = timed(jax, lambda: fit(other, lr, fold0, epochs))
    second["epochs"] = timed(jax, lambda: fit(model, lr, fold0, o["epochs2"]))
    print(json.dumps({"imports": imports, "first": first, "second": second}))


if __name__ == "__main__":
    main(*sys.argv[1:])
