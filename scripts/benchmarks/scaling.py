"""W1's model at other sizes: sweeps of many models, scaling against the machine's matmul rate,
and compile time and memory."""

import time

from . import jaxgrad as jg
import jax
import jax.numpy as jnp
import numpy as np
from .timing import interleaved, ratio, table
from .workloads import W1_SIZES, flops_per_epoch, mlp, weights

import fnnet


def sgemm_rate(size=1024, rounds=20):
    """The machine's float32 matmul rate in GFLOP/s, through XLA (jnp.dot) and NumPy
    (NumPy: nan above 2048, where the CPU would take long)."""
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(lambda a: a @ a)
    flops = 2 * size**3
    xla = flops / interleaved({"xla": lambda: dot(a)}, rounds)["xla"].best / 1e9
    if size > 2048:
        return xla, float("nan")
    b = np.ones((size, size), np.float32)
    start = time.perf_counter()
    for _ in range(rounds):
        b @ b
    return xla, flops / ((time.perf_counter() - start) / rounds) / 1e9


def bench_sweep(epochs, members, rounds):
    """M models of W1 trained together with jax.vmap, spread over the local devices."""
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    opt = fnnet.SGD(lr=0.5, decay=0.9999)
    run = fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs)
    variants = {}
    for m in members:
        keys = jax.random.split(jax.random.key(0), m)
        params = fnnet.init_many(keys, model, x.shape)
        states = jax.vmap(opt.init)(params)
        variants[m] = lambda params=params, states=states, keys=keys: fnnet.sweep(
            run, params, states, x, y, keys=keys
        )
    timings = interleaved(variants, rounds)
    rows = [
        [m, f"{t.best:.3f}", f"{t.best / m:.3f}", f"{t.best / m * 10_000 / epochs:.2f}"]
        for m, t in timings.items()
    ]
    return table(
        f"Sweeps: M models of W1, {epochs} epochs, {len(jax.devices())} device(s)",
        ["M", "time s", "s per model", "s per model per 10,000 epochs"],
        rows,
    )


def bench_scaling(quick, rounds, rate, size):
    """Time per epoch as batch, width and depth grow, fnnet against feature-major jax.grad.

    Each size runs for about `work` FLOPs (2 to 2000 epochs): 2e10 on a CPU,
    5e12 on an accelerator, which also gets a width of 4096."""
    cpu = jax.devices()[0].platform == "cpu"
    work = 2e8 if quick else 2e10 if cpu else 5e12
    batches = (1_000,) if quick else (1_000, 10_000, 100_000, 1_000_000)
    configs = [("batch", n, W1_SIZES) for n in batches]
    widths = (64,) if quick else (128, 512, 1024) if cpu else (128, 512, 1024, 4096)
    configs += [("width", 10_000, (2,) + (w,) * 4 + (1,)) for w in widths]
    depths = (2,) if quick else (2, 4, 8)
    configs += [("depth", 10_000, (2,) + (256,) * (d - 1) + (1,)) for d in depths]
    rows = []
    for axis, n, sizes in configs:
        flops = flops_per_epoch(sizes, n)
        epochs = int(np.clip(work / flops, 2, 2000))
        timings = _time_against_jaxgrad(n, sizes, epochs, rounds)
        gflops = flops * epochs / timings["fnnet"].best / 1e9
        rows.append(
            [
                axis,
                n,
                "-".join(map(str, sizes)),
                epochs,
                f"{1e3 * timings['fnnet'].best / epochs:.3f}",
                f"{gflops:.1f}",
                f"{gflops / rate:.2f}",
                f"{ratio(timings, 'fnnet', 'jax.grad'):.2f}",
            ]
        )
    return table(
        f"Scaling (sgemm rate {rate:.0f} GFLOP/s, XLA, {size}x{size})",
        [
            "grows",
            "batch",
            "sizes",
            "epochs",
            "ms/epoch",
            "GFLOP/s",
            "fraction of sgemm",
            "time / jax.grad (feature-major)",
        ],
        rows,
    )


def _time_against_jaxgrad(n, sizes, epochs, rounds):
    """fnnet's `train` and feature-major jax.grad on n points of the disk, an MLP of `sizes`."""
    x = jax.random.uniform(jax.random.key(2), (n, 2), jnp.float32)
    y = (jnp.sum((x - 0.5) ** 2, axis=1, keepdims=True) < 1 / (2 * np.pi)).astype(jnp.float32)
    model = mlp(sizes, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    opt = fnnet.SGD(lr=0.1)
    run, state = fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs), opt.init(params)
    base = jg.sgd_full_batch(epochs, True)
    return interleaved(
        {
            "fnnet": lambda: run(params, state, x, y),
            "jax.grad": lambda: base(weights(params), x, y, 0.1, 1.0),
        },
        rounds,
    )


def bench_compile_memory(epochs):
    """Compile time and XLA's memory figures for one W1 run: fnnet against jax.grad.

    fnnet twice: with the default SGD, whose state keeps a velocity buffer so that
    momentum can be set per run, and with `SGD(momentum=None)`, which keeps none,
    like the baseline."""
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    variants = []
    for name, momentum in (("fnnet, SGD (momentum 0, sweepable)", 0.0), ("fnnet, SGD(momentum=None)", None)):
        opt = fnnet.SGD(lr=0.5, decay=0.9999, momentum=momentum)
        run = jax.jit(fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs))
        variants.append((name, run.lower(params, opt.init(params), x, y, key=jax.random.key(0))))
    variants.append(
        ("jax.grad batch-major", jg.sgd_full_batch(epochs, False).lower(weights(params), x, y, 0.5, 0.9999))
    )
    rows = []
    for name, lowered in variants:
        start = time.perf_counter()
        compiled = lowered.compile()
        seconds = time.perf_counter() - start
        memory = compiled.memory_analysis()
        peak = (
            (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes)
            if memory is not None
            else float("nan")
        )
        rows.append(
            [
                name,
                f"{seconds:.2f}",
                f"{peak / 1024:.0f}",
                f"{memory.temp_size_in_bytes / 1024:.0f}" if memory else "n/a",
            ]
        )
    return table(
        "Compile time and memory (XLA memory analysis, one W1 run)",
        ["variant", "compile s", "arguments + outputs + temporaries KiB", "temporaries KiB"],
        rows,
    )
