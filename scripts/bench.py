"""Benchmarks: fnnet against plain jax.grad (and PyTorch eager, when installed).

    python scripts/bench.py            # full run, a few minutes on a 2-core CPU
    python scripts/bench.py --quick    # a smoke run: small sizes, few epochs
    python scripts/bench.py --profile  # XLA's per-operation times of fnnet's W1 epoch

Prints markdown tables (ready for BENCHMARKS.md; `--markdown FILE` also writes
them). Every time is measured after a warm-up call (so without compilation),
as the best of `--repeats` runs; every ratio compares runs of this same process.
"""

import argparse
import functools
import importlib.util
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

if __name__ == "__main__" and "jax" not in sys.modules:
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")
    if "--profile" in sys.argv:  # XLA's per-operation events in the profiler's trace
        os.environ["XLA_FLAGS"] += " --xla_cpu_enable_xprof_traceme=true"

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

import fnnet

W1_SIZES = (2, 25, 25, 25, 25, 1)


# ---- what a user would write instead: plain jax.grad, the same SGD inline -----------

def baseline_init(key, sizes):
    params = []
    for layer_key, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes)):
        kw, kb = jax.random.split(layer_key)
        a = 1 / np.sqrt(n_in)
        params.append((jax.random.uniform(kw, (n_in, n_out), minval=-a, maxval=a),
                       jax.random.uniform(kb, (n_out,), minval=-a, maxval=a)))
    return params


def baseline_forward(params, x, feature_major):
    """ReLU between layers, Sigmoid at the end; x (n, d), or (d, n) if feature_major."""
    for i, (w, b) in enumerate(params):
        x = w.T @ x + b[:, None] if feature_major else x @ w + b[None, :]
        x = jax.nn.relu(x) if i < len(params) - 1 else jax.nn.sigmoid(x)
    return x


def baseline_bce(p, t):
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return -jnp.mean(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))


def make_baseline(epochs, feature_major):
    """A jitted lax.scan of `epochs` full-batch SGD steps with jax.grad."""
    def loss(params, x, t):
        return baseline_bce(baseline_forward(params, x, feature_major), t)

    @jax.jit
    def run(params, x, t, lr, decay):
        if feature_major:
            x, t = x.T, t.T

        def epoch(params, i):
            value, grads = jax.value_and_grad(loss)(params, x, t)
            lr_i = lr * decay ** i
            return jax.tree.map(lambda p, g: p - (lr_i * g).astype(p.dtype), params, grads), value

        return lax.scan(epoch, params, jnp.arange(epochs))

    return run


def baseline_accuracy(params, x, y):
    return float(jnp.mean((baseline_forward(params, x, False) > 0.5) == (y > 0.5)))


# ---- PyTorch eager with a hand-written backward (the report's approach) -----------

def torch_run(params, x, y, epochs, lr, decay):
    import torch
    ws = [torch.tensor(np.asarray(w)) for w, _ in params]
    bs = [torch.tensor(np.asarray(b)) for _, b in params]
    x, y = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
    n = y.numel()
    with torch.no_grad():
        for epoch in range(epochs):
            inputs, h = [], x
            for i, (w, b) in enumerate(zip(ws, bs)):
                inputs.append(h)
                z = h @ w + b
                h = torch.relu(z) if i < len(ws) - 1 else torch.sigmoid(z)
            p = h.clamp(1e-7, 1 - 1e-7)
            dz = (p - y) / n  # BCE after Sigmoid
            step = lr * decay ** epoch
            for i in reversed(range(len(ws))):
                dw, db = inputs[i].T @ dz, dz.sum(0)
                if i:
                    dz = (dz @ ws[i].T) * (inputs[i] > 0)
                ws[i] -= step * dw
                bs[i] -= step * db
    accuracy = float(((h > 0.5) == (y > 0.5)).float().mean())
    return accuracy


def torch_best(path, epochs, lr, decay, repeats):
    """In a fresh process: the best time of `torch_run` on the arrays saved at `path`,
    over PyTorch's default thread count and one thread (the faster for these small
    products), each warmed up for 20 epochs, then timed `repeats` times."""
    import torch
    d = np.load(path)
    params = [(d[f"w{i}"], d[f"b{i}"]) for i in range((len(d.files) - 2) // 2)]
    best = (float("inf"), 0.0, 0)
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        torch_run(params, d["x"], d["y"], 20, lr, 1.0)
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            accuracy = torch_run(params, d["x"], d["y"], epochs, lr, decay)
            best = min(best, (time.perf_counter() - start, accuracy, threads))
    print(json.dumps(best))


def torch_in_subprocess(params, x, y, epochs, lr, decay, repeats):
    """`torch_best` in a fresh process; returns (seconds, accuracy, threads).

    In this process, JAX's thread pools slowed PyTorch's eager loop 40-fold.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "w1.npz")
        arrays = {f"w{i}": np.asarray(w) for i, (w, _) in enumerate(params)}
        arrays.update({f"b{i}": np.asarray(b) for i, (_, b) in enumerate(params)})
        np.savez(path, x=np.asarray(x), y=np.asarray(y), **arrays)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench; "
                "bench.torch_best(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), "
                "float(sys.argv[5]), int(sys.argv[6]))")
        done = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)),
                               path, str(epochs), str(lr), str(decay), str(repeats)],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- helpers -------------------------------------------------------------------------

def best_time(fn, repeats):
    """Best wall time of `fn()` over `repeats` calls after one warm-up.

    Returns (seconds, warm-up seconds, last result). With `repeats=0` (the
    smoke test) the warm-up's time, compilation included, is all there is.
    """
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = [first] if repeats == 0 else []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times), first, result


def mlp(sizes, output):
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers += [fnnet.Linear(n_in, n_out), fnnet.ReLU() if i < len(sizes) - 2 else output]
    return fnnet.serial(*layers)


def flops_per_epoch(sizes, n):
    """Forward 2*n*sum(n_in*n_out); backward twice that (dw and dx)."""
    return 6 * n * sum(a * b for a, b in itertools.pairwise(sizes))


def sgemm_rate(size=1024, repeats=20):
    """The machine's float32 matmul rate in GFLOP/s, through XLA (jnp.dot) and NumPy
    (NumPy: nan above 2048, where the CPU would take long)."""
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(lambda a: a @ a)
    seconds = best_time(lambda: dot(a), repeats)[0]
    flops = 2 * size ** 3
    if size > 2048:
        return flops / seconds / 1e9, float("nan")
    b = np.ones((size, size), np.float32)
    start = time.perf_counter()
    for _ in range(repeats):
        b @ b
    numpy_seconds = (time.perf_counter() - start) / repeats
    return flops / seconds / 1e9, flops / numpy_seconds / 1e9


def table(title, header, rows):
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


# ---- the benchmarks --------------------------------------------------------------------

def bench_w1(epochs, repeats, lr=0.5, decay=0.9999, torch=True):
    """The disk task's workload: 1000 points, 2-25-25-25-25-1, Sigmoid + BCE, full batch."""
    x, y = fnnet.data.disk(1000, jax.random.key(1))
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    flops = flops_per_epoch(W1_SIZES, 1000) * epochs
    rows, results = [], {}

    def fnnet_fit(progress=False, mesh=None):
        return fnnet.fit(model, fnnet.LossBCE(), fnnet.SGD(lr=lr, decay=decay), params, x, y,
                         epochs=epochs, progress=progress, mesh=mesh)

    def accuracy(params):
        return float(jnp.mean((model.apply(params, x) > 0.5) == (y > 0.5)))

    seconds, first, result = best_time(fnnet_fit, repeats)
    results["fnnet fit"] = (seconds, first, accuracy(result.params))
    seconds, first, result = best_time(lambda: fnnet_fit(progress=True), repeats)
    results["fnnet fit, progress bar on"] = (seconds, first, accuracy(result.params))
    devices = jax.devices()
    if len(devices) > 1 and 1000 % len(devices) == 0:  # one model's batch split over the cores
        mesh = Mesh(np.array(devices), ("batch",))
        seconds, first, result = best_time(lambda: fnnet_fit(mesh=mesh), repeats)
        results[f"fnnet fit, data-parallel over {len(devices)} devices"] = (
            seconds, first, accuracy(result.params))
    base_params = [(p["w"], p["b"]) for p in params[::2]]
    for name, fm in (("jax.grad batch-major", False), ("jax.grad feature-major", True)):
        run = make_baseline(epochs, fm)
        seconds, first, result = best_time(functools.partial(run, base_params, x, y, lr, decay), repeats)
        results[name] = (seconds, first, baseline_accuracy(result[0], x, y))
    if torch and importlib.util.find_spec("torch") is not None:
        seconds, torch_accuracy, threads = torch_in_subprocess(base_params, x, y, epochs, lr, decay,
                                                               repeats)
        results[f"PyTorch eager, hand backward, {threads} thread(s)"] = (seconds, 0.0, torch_accuracy)
    else:
        print("(PyTorch not installed or --no-torch: its row is skipped)")
    ours = results["fnnet fit"][0]
    for name, (seconds, first, reached) in results.items():
        rows.append([name, f"{seconds:.3f}", f"{1e6 * seconds / epochs:.0f}",
                     f"{flops / seconds / 1e9:.1f}", f"{seconds / ours:.2f}", f"{100 * reached:.1f}"])
    return table(f"W1: {epochs} full-batch SGD epochs, 1000 points, 2-25-25-25-25-1",
                 ["variant", "time s", "us/epoch", "GFLOP/s", "time / fnnet", "train acc %"], rows), results


def bench_scaling(quick, repeats, rate, size):
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
        x = jax.random.uniform(jax.random.key(2), (n, 2))
        y = (jnp.sum((x - 0.5) ** 2, axis=1, keepdims=True) < 1 / (2 * np.pi)).astype(jnp.float32)
        model = mlp(sizes, fnnet.Sigmoid())
        _, params = model.init(jax.random.key(0), x.shape)
        opt = fnnet.SGD(lr=0.1)
        run = fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs)
        state = opt.init(params)
        ours = best_time(functools.partial(run, params, state, x, y), repeats)[0]
        base = make_baseline(epochs, True)
        base_params = [(p["w"], p["b"]) for p in params[::2]]
        theirs = best_time(functools.partial(base, base_params, x, y, 0.1, 1.0), repeats)[0]
        gflops = flops * epochs / ours / 1e9
        rows.append([axis, n, "-".join(map(str, sizes)), epochs, f"{1e3 * ours / epochs:.3f}",
                     f"{gflops:.1f}", f"{gflops / rate:.2f}", f"{ours / theirs:.2f}"])
    return table(f"Scaling (sgemm rate {rate:.0f} GFLOP/s, XLA, {size}x{size})",
                 ["grows", "batch", "sizes", "epochs", "ms/epoch", "GFLOP/s",
                  "fraction of sgemm", "time / jax.grad (feature-major)"], rows)


def bench_sweep(epochs, members, repeats):
    """M models of W1 trained together with jax.vmap, spread over the local devices."""
    x, y = fnnet.data.disk(1000, jax.random.key(1))
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    opt = fnnet.SGD(lr=0.5, decay=0.9999)
    run = fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs)
    rows = []
    for m in members:
        keys = jax.random.split(jax.random.key(0), m)
        params = fnnet.sweep.init_many(model, keys, x.shape)
        states = jax.vmap(opt.init)(params)
        seconds = best_time(functools.partial(fnnet.sweep.sweep, run, params, states, x, y, keys), repeats)[0]
        rows.append([m, f"{seconds:.3f}", f"{seconds / m:.3f}", f"{seconds / m * 10_000 / epochs:.2f}"])
    return table(f"Sweeps: M models of W1, {epochs} epochs, {len(jax.devices())} device(s)",
                 ["M", "time s", "s per model", "s per model per 10,000 epochs"], rows)


def bench_compile_memory(epochs):
    """Compile time and XLA's memory figures for one W1 run: fnnet against jax.grad.

    fnnet twice: with the default SGD, whose state keeps a velocity buffer so that
    momentum can be set per run, and with `SGD(momentum=None)`, which keeps none,
    like the baseline."""
    x, y = fnnet.data.disk(1000, jax.random.key(1))
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    variants = []
    for name, momentum in (("fnnet, SGD (momentum 0, sweepable)", 0.0),
                           ("fnnet, SGD(momentum=None)", None)):
        opt = fnnet.SGD(lr=0.5, decay=0.9999, momentum=momentum)
        run = jax.jit(fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs))
        variants.append((name, run.lower(params, opt.init(params), x, y, jax.random.key(0))))
    variants.append(("jax.grad batch-major", make_baseline(epochs, False).lower(
        [(p["w"], p["b"]) for p in params[::2]], x, y, 0.5, 0.9999)))
    rows = []
    for name, lowered in variants:
        start = time.perf_counter()
        compiled = lowered.compile()
        seconds = time.perf_counter() - start
        memory = compiled.memory_analysis()
        peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                + memory.output_size_in_bytes) if memory is not None else float("nan")
        rows.append([name, f"{seconds:.2f}", f"{peak / 1024:.0f}",
                     f"{memory.temp_size_in_bytes / 1024:.0f}" if memory else "n/a"])
    return table("Compile time and memory (XLA memory analysis, one W1 run)",
                 ["variant", "compile s", "arguments + outputs + temporaries KiB", "temporaries KiB"], rows)


def profile_w1(epochs=300, top=20):
    """Where fnnet's W1 epoch spends its time: XLA's own per-operation times."""
    x, y = fnnet.data.disk(1000, jax.random.key(1))
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    opt = fnnet.SGD(lr=0.5, decay=0.9999)
    run = jax.jit(fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs))
    args = (params, opt.init(params), x, y, jax.random.key(0))
    compiled = run.lower(*args).compile()  # run, and read for the operations' shapes
    call = lambda: compiled(*args)  # noqa: E731
    jax.block_until_ready(call())
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        jax.block_until_ready(call())
        jax.profiler.stop_trace()
        path = next(os.path.join(root, name) for root, _, names in os.walk(folder)
                    for name in names if name.endswith(".xplane.pb"))
        trace = jax.profiler.ProfileData.from_file(path)
    totals = {}
    for plane in trace.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):  # XLA's threads: one event per operation run
                for event in line.events:
                    totals[event.name] = totals.get(event.name, 0) + event.duration_ns
    shapes = operation_shapes(compiled.as_text())
    rows = [[name, shapes.get(name, ""), f"{ns / 1e3 / epochs:.1f}"] for name, ns in
            sorted(totals.items(), key=lambda item: -item[1])[:top]]
    return table(f"Where a W1 epoch goes (fnnet, XLA's profiler, {epochs} epochs; tracing adds "
                 f"to the times; the loop and executor rows contain the others)",
                 ["operation", "operands -> result", "us per epoch"], rows)


def operation_shapes(hlo):
    """Operation name -> '(operand shapes) -> result shape', from compiled HLO text."""
    signatures = dict(re.findall(r"^%?([\w.-]+) \((.*)\) -> \S+ \{", hlo, re.MULTILINE))
    signatures = {name: "(" + ", ".join(re.findall(r": (\w+\[[\d,]*\])", params)) + ")"
                  for name, params in signatures.items()}
    shapes = {}
    for name, result, rest in re.findall(r"^\s+(?:ROOT )?%([\w.-]+) = (\w+\[[\d,]*\])\S* (.*)$",
                                         hlo, re.MULTILINE):
        called = re.search(r"calls=%([\w.-]+)", rest)
        dims = re.search(r"(lhs_contracting_dims=\{\d*\}, rhs_contracting_dims=\{\d*\})", rest)
        operands = signatures.get(called.group(1), "") if called else ""
        shapes[name] = f"{operands} -> {result}" + (f" ({dims.group(1)})" if dims else "")
    return shapes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: small sizes, few epochs, times include compilation")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case, after a warm-up")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    parser.add_argument("--profile", action="store_true",
                        help="only print XLA's per-operation times of one W1 epoch")
    args = parser.parse_args(argv)
    if args.profile:
        return profile_w1()
    epochs = 3_000 if args.quick else 10_000
    repeats = 0 if args.quick else args.repeats
    device = jax.devices()[0]
    header = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{device.platform} ({getattr(device, 'device_kind', '')}), {len(jax.devices())} device(s); "
              f"jax {jax.__version__}; float32 products at precision "
              f"{jax.config.jax_default_matmul_precision or 'default'} (TF32 on recent NVIDIA GPUs); "
              f"{time.strftime('%Y-%m-%d')}; "
              f"command: python scripts/bench.py{' --quick' if args.quick else ''}"
              f"{' --no-torch' if args.no_torch else ''}\n")
    print(header)
    # the CPU's or the card's float32 product rate: an accelerator needs a large product
    size = 512 if args.quick else 1024 if device.platform == "cpu" else 8192
    rate, numpy_rate = sgemm_rate(size)
    print(f"sgemm: XLA {rate:.0f} GFLOP/s, NumPy {numpy_rate:.0f} GFLOP/s\n")
    w1_text, w1 = bench_w1(epochs, repeats, torch=not args.no_torch)
    texts = [header, w1_text,
             bench_sweep(100 if args.quick else 2_000, (1, 2) if args.quick else (1, 8, 64), repeats),
             bench_scaling(args.quick, repeats, rate, size),
             bench_compile_memory(epochs)]
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write("\n".join(texts))
    return w1


if __name__ == "__main__":
    main()
