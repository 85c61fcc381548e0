"""`bench.py --profile`: where fnnet's W1 epoch spends its time, from XLA's own per-operation times.

XLA's CPU backend records one profiler event per operation only with
`--xla_cpu_enable_xprof_traceme=true` in XLA_FLAGS, set before JAX starts
(bench.py does so for `--profile`).
"""

import os
import re
import tempfile

import jax
from .timing import table
from .workloads import W1_SIZES, mlp

import fnnet


def profile_w1(epochs=300, top=20):
    """Print and return the table of the `top` operations of fnnet's W1 program by time."""
    x, y = fnnet.data.disk(jax.random.key(1), 1000)
    model = mlp(W1_SIZES, fnnet.Sigmoid())
    _, params = model.init(jax.random.key(0), x.shape)
    opt = fnnet.SGD(lr=0.5, decay=0.9999)
    run = jax.jit(fnnet.train(model, fnnet.LossBCE(), opt, epochs=epochs))
    args, key = (params, opt.init(params), x, y), jax.random.key(0)
    compiled = run.lower(*args, key=key).compile()  # run, and read for the operations' shapes
    jax.block_until_ready(compiled(*args, key=key))
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        jax.block_until_ready(compiled(*args, key=key))
        jax.profiler.stop_trace()
        path = next(
            os.path.join(root, name)
            for root, _, names in os.walk(folder)
            for name in names
            if name.endswith(".xplane.pb")
        )
        trace = jax.profiler.ProfileData.from_file(path)
    totals = {}
    for plane in trace.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):  # XLA's threads: one event per operation run
                for event in line.events:
                    totals[event.name] = totals.get(event.name, 0) + event.duration_ns
    shapes = operation_shapes(compiled.as_text())
    rows = [
        [name, shapes.get(name, ""), f"{ns / 1e3 / epochs:.1f}"]
        for name, ns in sorted(totals.items(), key=lambda item: -item[1])[:top]
    ]
    return table(
        f"Where a W1 epoch goes (fnnet, XLA's profiler, {epochs} epochs; tracing adds "
        f"to the times; the loop and executor rows contain the others)",
        ["operation", "operands -> result", "us per epoch"],
        rows,
    )


def operation_shapes(hlo):
    """Operation name -> '(operand shapes) -> result shape', from compiled HLO text."""
    signatures = dict(re.findall(r"^%?([\w.-]+) \((.*)\) -> \S+ \{", hlo, re.MULTILINE))
    signatures = {
        name: "(" + ", ".join(re.findall(r": (\w+\[[\d,]*\])", params)) + ")"
        for name, params in signatures.items()
    }
    shapes = {}
    for name, result, rest in re.findall(
        r"^\s+(?:ROOT )?%([\w.-]+) = (\w+\[[\d,]*\])\S* (.*)$", hlo, re.MULTILINE
    ):
        called = re.search(r"calls=%([\w.-]+)", rest)
        dims = re.search(r"(lhs_contracting_dims=\{\d*\}, rhs_contracting_dims=\{\d*\})", rest)
        operands = signatures.get(called.group(1), "") if called else ""
        shapes[name] = f"{operands} -> {result}" + (f" ({dims.group(1)})" if dims else "")
    return shapes
