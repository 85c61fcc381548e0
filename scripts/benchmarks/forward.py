"""How often a training step runs each layer's forward, and what running it once would save.

`fnnet.value_and_grad` runs the model's `apply`; the serial's `vjp` runs the
forward again to collect each layer's input; an elementwise activation's `vjp`
computes `f(x)` once more for its derivative. This script measures that on the
report's W1 network (1000 disk points, 2-25-25-25-25-1, ReLU or Tanh hidden,
Sigmoid + LossBCE):

1. how many times an activation's `f` runs, counted by an activation built with
   `fnnet.elementwise` whose `f` counts its calls: per eager call, and when a
   jitted call is traced (a compiled call runs no Python);
2. how many tanh and logistic ops the compiled (optimized) HLO holds, against
   the number of Tanh and Sigmoid layers: XLA merges the recomputed forwards
   under `jit`;
3. the time, in interleaved rounds, of fnnet against a "one forward"
   prototype, whose forward returns what the backward needs (each Linear's
   input, each activation's input and output) so every layer's forward runs
   once: eager `value_and_grad`, jitted `value_and_grad`, and a jitted
   `lax.scan` of 1000 full-batch SGD steps, the same loop with either's grads
   (and `fnnet.train`'s own loop beside it).

The prototype is built here from fnnet's pieces (the Linear layers' own
feature-major `apply` and `vjp`, the activations' formulas), in the layout
fnnet picks for a 2-D batch. Times are process CPU time (all threads), per
call; a ratio is the median over rounds of prototype / fnnet in one round.

    python scripts/benchmarks/forward.py
    python scripts/benchmarks/forward.py --hidden tanh --rounds 9
"""

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import fnnet
from fnnet.grad import check_input
from fnnet._layout import _twin as feature_major

# The prototype's activations: fnnet's formulas, f(x) and f'(x) from (x, y = f(x)).
ACTIVATIONS = {
    fnnet.ReLU(): (lambda x: jnp.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype)),
    fnnet.Tanh(): (jnp.tanh, lambda x, y: 1 - y * y),
    fnnet.Sigmoid(): (lax.logistic, lambda x, y: y * (1 - y)),
}
HIDDEN = {"relu": fnnet.ReLU, "tanh": fnnet.Tanh}


W1_SIZES = (2, 25, 25, 25, 25, 1)


def w1_layers(hidden, sizes=W1_SIZES):
    """The report's W1 network as a list of layers: Linear layers of `sizes`, `hidden` between
    them, Sigmoid last."""
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [fnnet.Linear(n_in, n_out), hidden]
    return layers[:-1] + [fnnet.Sigmoid()]


def counting_tanh():
    """A Tanh built with `fnnet.elementwise` whose f counts its calls; `(layer, calls)`,
    `calls[0]` the count so far. Its (f, f') is added to the prototype's ACTIVATIONS."""
    calls = [0]

    def f(x):
        calls[0] += 1
        return jnp.tanh(x)

    def df(x, y):
        return 1 - y * y

    layer = fnnet.elementwise("CountingTanh", f, df)
    ACTIVATIONS[layer] = (f, df)
    return layer, calls


def one_forward(layers, loss):
    """The prototype: `f(params, x, target) -> (value, grads)` like `fnnet.value_and_grad`, whose
    forward keeps each layer's residuals for the backward. Also returns `grads_fm(params, xt,
    target)`, the same on a feature-major `xt = x.T` (for a loop that transposes once)."""
    model = fnnet.serial(*layers)

    def forward(params, x):
        residuals = []
        for layer, p in zip(layers, params):
            if layer in ACTIVATIONS:
                y = ACTIVATIONS[layer][0](x)
                residuals.append((x, y))
            else:
                y = feature_major(layer).apply(p, x, train=True)
                residuals.append(x)
            x = y
        return x, residuals

    def backward(params, residuals, dy):
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            if layers[i] in ACTIVATIONS:
                x, y = residuals[i]
                grads[i], dy = (), dy * ACTIVATIONS[layers[i]][1](x, y)
            else:
                grads[i], dy = feature_major(layers[i]).vjp(params[i], residuals[i], dy, train=True)
        return tuple(grads)

    def grads_fm(params, xt, target):
        out, residuals = forward(params, xt)
        y = out.T
        return loss.value(y, target), backward(params, residuals, loss.grad(y, target).T)

    def value_and_grad(params, x, target):
        check_input(model, params, x)  # fnnet's input check, so only the forwards differ
        return grads_fm(params, x.T, target)

    return value_and_grad, grads_fm


def fnnet_grads_fm(layers, loss):
    """fnnet's own `(params, xt, target) -> (value, grads)` on a feature-major `xt = x.T`: what
    `fnnet.value_and_grad` runs (the serial's twin's `apply`, then its `vjp`), without the
    transpose, for a loop that transposes once."""
    twin = feature_major(fnnet.serial(*layers))

    def grads_fm(params, xt, target):
        y = twin.apply(params, xt, train=True).T
        grads, _ = twin.vjp(params, xt, loss.grad(y, target).T, train=True)
        return loss.value(y, target), grads

    return grads_fm


def sgd_run(grads_fm, opt, epochs):
    """A training run `run(params, opt_state, x, y) -> (params, opt_state, losses)`: `epochs`
    full-batch steps of `opt` with the grads of `grads_fm` in a `lax.scan`, x transposed once."""

    def run(params, opt_state, x, y):
        xt = x.T

        def step(carry, _):
            params, opt_state = carry
            value, grads = grads_fm(params, xt, y)
            return opt.step(params, grads, opt_state), value

        (params, opt_state), losses = lax.scan(step, (params, opt_state), length=epochs)
        return params, opt_state, losses

    return run


def numpy_inputs(layers, n, seed=0):
    """`(params, x, y)` for `serial(*layers)` on n points, drawn with NumPy (no JAX program to
    compile): params in [-0.5, 0.5], x in [0, 1]^2, 0/1 targets y."""
    rng = np.random.default_rng(seed)
    model = fnnet.serial(*layers)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), (n, 2))[1])
    params = jax.tree.map(lambda s: rng.uniform(-0.5, 0.5, s.shape).astype(s.dtype), shapes)
    x = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    return params, x, (rng.uniform(0, 1, (n, 1)) > 0.5).astype(np.float32)


def f_calls(sizes=W1_SIZES, n=1000):
    """Calls of an activation's f, per counting layer, in W1 (or Linear layers of `sizes`, on `n`
    points) with counting Tanh hidden layers:
    {(version, when): calls}, after a warm-up call (the first call of a shape also traces `apply`
    once, in the input check's `jax.eval_shape`); 'jit, traced' is the one trace of a jitted call.
    fnnet runs f in `apply`, in the serial's `vjp` (its forward) and in the elementwise `vjp`."""
    layer, calls = counting_tanh()
    layers = w1_layers(layer, sizes)
    hidden_layers = len(sizes) - 2
    params, x, y = numpy_inputs(layers, n)
    versions = {
        "fnnet": fnnet.value_and_grad(fnnet.serial(*layers), fnnet.LossBCE()),
        "one forward": one_forward(layers, fnnet.LossBCE())[0],
    }
    counts = {}
    for version, vg in versions.items():
        jax.block_until_ready(vg(params, x, y))
        for when, run in (("eager", vg), ("jit, traced", jax.jit(vg).trace)):
            calls[0] = 0
            run(params, x, y)
            counts[version, when] = calls[0] / hidden_layers
    return counts


def hlo_ops(fn, *args, ops=("tanh", "logistic", "exponential")):
    """{op: how many instructions of it the compiled, optimized HLO of `jax.jit(fn)(*args)` holds,
    and "instructions": how many in all}."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    counts = {op: len(re.findall(rf"= \S+ {op}\(", text)) for op in ops}
    return {**counts, "instructions": len(re.findall(r"= \S+ [a-z-]+\(", text))}


def per_call(fn, calls):
    """Process CPU time of one call of `fn()`, averaged over `calls` calls."""
    start = time.process_time()
    for _ in range(calls):
        result = fn()
    jax.block_until_ready(result)
    return (time.process_time() - start) / calls


def interleaved(variants, rounds, calls):
    """{name: [seconds per call, one per round]}, the variants taking turns, after a warm-up each."""
    for fn in variants.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(per_call(fn, calls))
    return times


def bench(hidden, rounds, epochs):
    """Rows [what, fnnet ms, prototype ms, ratio] of one hidden activation's W1, and its HLO counts."""
    layers = w1_layers(HIDDEN[hidden]())
    model, loss, opt = fnnet.serial(*layers), fnnet.LossBCE(), fnnet.SGD(lr=0.5, decay=0.9999)
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    _, params = model.init(jax.random.key(0), x.shape)
    state = opt.init(params)
    current, prototype = fnnet.value_and_grad(model, loss), one_forward(layers, loss)[0]
    (v1, g1), (v2, g2) = current(params, x, y), prototype(params, x, y)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
    assert abs(float(v1 - v2)) < 1e-6 and diff < 1e-5, (v1, v2, diff)

    loop = {
        "fnnet": sgd_run(fnnet_grads_fm(layers, loss), opt, epochs),
        "one forward": sgd_run(one_forward(layers, loss)[1], opt, epochs),
        "fnnet.train": fnnet.train(model, loss, opt, epochs),
    }
    cases = {  # what -> ({version: jitted or eager function}, its arguments, calls per round)
        "eager value_and_grad": ({"fnnet": current, "one forward": prototype}, (params, x, y), 20),
        "jitted value_and_grad": (
            {"fnnet": jax.jit(current), "one forward": jax.jit(prototype)},
            (params, x, y),
            300,
        ),
        f"jitted {epochs}-step SGD loop": (
            {version: jax.jit(run) for version, run in loop.items()},
            (params, state, x, y),
            1,
        ),
    }
    rows, hlo = [], {}
    for what, (versions, args, calls) in cases.items():
        times = interleaved({v: lambda fn=fn: fn(*args) for v, fn in versions.items()}, rounds, calls)
        for reference in [v for v in versions if v != "one forward"]:
            ratio = statistics.median(p / r for p, r in zip(times["one forward"], times[reference]))
            label = what if reference == "fnnet" else f"  ... {reference}'s loop"
            rows.append(
                [label, statistics.median(times[reference]), statistics.median(times["one forward"]), ratio]
            )
        if what.startswith("jitted"):
            hlo[what.removeprefix("jitted ")] = {v: hlo_ops(fn, *args) for v, fn in versions.items()}
    return rows, hlo, sum(layer == fnnet.Tanh() for layer in layers)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--hidden", nargs="+", choices=list(HIDDEN), default=list(HIDDEN), help="W1's hidden activations"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (at least 1)")
    parser.add_argument("--epochs", type=int, default=1000, help="SGD steps in the jitted training loop")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be at least 1")

    counts = f_calls()
    print("calls of an activation's f per activation layer, per value_and_grad call (W1, counting Tanh):")
    for when in ("eager", "jit, traced"):
        print(f"  {when:<13} fnnet {counts['fnnet', when]:g}   one forward {counts['one forward', when]:g}")
    print("  (a compiled jitted call runs no Python: 0 in both)\n")

    for hidden in args.hidden:
        rows, hlo, n_tanh = bench(hidden, args.rounds, args.epochs)
        print(f"W1, {hidden} hidden, Sigmoid + LossBCE, 1000 points: {n_tanh} Tanh and 1 Sigmoid layer(s)")
        for what, versions in hlo.items():
            shown = "; ".join(
                f"{v} " + ", ".join(f"{op} {n}" for op, n in ops.items()) for v, ops in versions.items()
            )
            print(f"  compiled {what}: {shown}")
        print(f"  (CPU XLA writes logistic as exponential; median of {args.rounds} rounds, CPU time)")
        print(f"  {'':<28} {'fnnet ms':>10} {'one fwd ms':>10} {'one fwd / fnnet':>16}")
        for what, a, b, ratio in rows:
            print(f"  {what:<28} {1e3 * a:10.3f} {1e3 * b:10.3f} {ratio:16.3f}")
        print()


if __name__ == "__main__":
    main()
