"""The main job's programs against plain JAX's: what `scripts/disk.py` compiles, beside
the programs a JAX user writes for the same work.

Each model of disk.py trains its seeds in one program (`disk.prepare`): the seeds one
after another (`lax.map`), each a stretch of full-batch epochs of decayed SGD, then its
loss and accuracy on the train and the test set. The plain program does the same with
`jax.grad`: the same `lax.map` over the seeds, a `lax.scan` of the epochs, SGD inline,
the two evaluations. Both on one device, from the same params and data; the variants
take turns, each round building its programs anew (new functions: nothing comes from
JAX's in-memory caches), the persistent compilation cache off.

    cd scripts && python -m benchmarks.disk_compile 3
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import disk
import fnnet

from .jaxgrad import bce, mlp_forward

OUTPUTS = {"sigmoid_bce": jax.nn.sigmoid, "tanh_mse": jnp.tanh, "handout": lambda z: z}


def mse(out, t):
    return jnp.mean((out - t) ** 2)


def plain_program(name, epochs):
    """`run(params, steps, x, y)`: the seeds' runs of model `name`, one after another;
    params `[(w, b), ...]` stacked over seeds, x `(seeds, 2, n, 2)` (train, test)."""
    _, _, targets, predict, lr, decay = disk.MODELS[name]
    output, value = OUTPUTS[name], bce if name == "sigmoid_bce" else mse

    def measure(params, x, labels):
        out = mlp_forward(params, x, output=output)
        return value(out, targets(labels)), jnp.mean(predict(out) == (labels[..., 0] > 0.5))

    def member(params, step, x, y):
        def epoch(carry, _):
            params, step = carry
            grads = jax.grad(lambda p: value(mlp_forward(p, x[0], output=output), targets(y[0])))(params)
            lr_i = lr * decay**step
            return (jax.tree.map(lambda p, g: p - (lr_i * g).astype(p.dtype), params, grads), step + 1), None

        (params, step), _ = lax.scan(epoch, (params, step), None, length=epochs)
        return params, step, measure(params, x[0], y[0]), measure(params, x[1], y[1])

    return jax.jit(lambda params, steps, x, y: lax.map(lambda m: member(*m), (params, steps, x, y)))


def timed_compile(jitted, inputs):
    """(trace and lower s, compile s, one call's run s) of a fresh program."""
    began = time.perf_counter()
    lowered = jitted.lower(*inputs)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))  # the first call, then one timed
    run_began = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))
    return lowered_at - began, compiled_at - lowered_at, time.perf_counter() - run_began


def bench_disk_compile(rounds=3, seeds=5, epochs=200):
    """Prints (and returns) the markdown table: per model, fnnet's and the plain program's
    trace and lower, compile and run seconds (medians), and fnnet's compile over the plain one's."""
    sets = [np.asarray(a) for a in disk.data(seeds)]
    keys = jax.random.split(jax.random.key(1234), seeds)
    device = jax.devices()[0]
    x = np.stack([sets[0], sets[2]], 1)
    y = np.stack([sets[1], sets[3]], 1)
    cells = {}
    for name in disk.DEFAULT_MODELS:
        params, opt_states = disk.starts(name, keys, x.shape[-1])
        fnnet_inputs = jax.device_put((params, opt_states, x, y, keys), device)
        linear = [(p["w"], p["b"]) for p in params if isinstance(p, dict) and "w" in p]
        plain_inputs = jax.device_put((linear, np.zeros(seeds, np.int32), x, y), device)
        for _ in range(rounds):
            run = fnnet.vmapped(disk.member_run(name, epochs), True, 1)
            cells.setdefault((name, "fnnet"), []).append(timed_compile(run, fnnet_inputs))
            cells.setdefault((name, "plain"), []).append(
                timed_compile(plain_program(name, epochs), plain_inputs)
            )
    lines = [
        f"`cd scripts && python -m benchmarks.disk_compile {rounds}`: each of disk.py's programs "
        f"({seeds} seeds, {epochs} epochs a call) and the plain jax.grad program of the same work, "
        f"{rounds} rounds taking turns, medians; compilation cache off.",
        "",
        "| model | variant | trace + lower s | compile s | run s (one call) | compile / plain |",
        "|---|---|---|---|---|---|",
    ]
    for name in disk.DEFAULT_MODELS:
        ours, plain = cells[(name, "fnnet")], cells[(name, "plain")]
        ratio = statistics.median(a[1] / b[1] for a, b in zip(ours, plain))
        for variant, rows in (("fnnet", ours), ("plain jax.grad", plain)):
            lower, compile_s, run_s = (statistics.median(column) for column in zip(*rows))
            cell = f"{ratio:.2f}" if variant == "fnnet" else ""
            lines.append(f"| {name} | {variant} | {lower:.3f} | {compile_s:.3f} | {run_s:.4f} | {cell} |")
    text = "\n".join(lines) + "\n"
    print(text)
    return text


if __name__ == "__main__":
    bench_disk_compile(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
