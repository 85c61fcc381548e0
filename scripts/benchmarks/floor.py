"""W4's floor: how fast can any step of the digits MLP be on this machine?

W4's target asks fnnet for 0.7x the time of plain `jax.grad`. This table times,
in the same interleaved rounds as the baseline and fnnet, programs that do less
than a training step must:

- "products": per step, the batch's slices, the step's eight matrix products
  (three forward, five backward: no input gradient), ReLU masks, no softmax
  (the output gradient is `z - onehot`) and a plain SGD update; each epoch
  shuffled by `jax.random.permutation` like the baseline;
- the same with the cheapest shuffle there is on XLA's CPU backend (one sort of
  a single uint32 array: random high bits, the index in the low bits);
- "Adam alone": only Adam's update of the MLP's 26,634 parameters, as many
  steps as an epoch has, from a fixed gradient.

A step can be no faster than its products plus its optimizer update; when the
first row alone is near 0.7x of the baseline, no layout of the rest reaches it.
"""

import jax
import jax.numpy as jnp
import numpy as np
from .jaxgrad import adam
from .timing import interleaved, ratio, table
from .workloads import ADAM_LR, BATCH_SIZE, digits_workload, weights
from jax import lax


def one_sort_permutation(key, n):
    """A permutation of n from one sort of one uint32 array (random high bits, the
    index in the low ones): the cheapest shuffle here, not uniform (ties keep order)."""
    bits = max(1, int(np.ceil(np.log2(n))))
    low = jnp.uint32((1 << bits) - 1)
    keys = (jax.random.bits(key, (n,), jnp.uint32) & ~low) | jnp.arange(n, dtype=jnp.uint32)
    return (lax.sort(keys) & low).astype(jnp.int32)


def products_grads(params, x, labels):
    """The MLP's gradients with nothing but its products, biases and ReLU masks: the
    output gradient is `(z - onehot) / n` (no softmax). Returns (a scalar, grads)."""
    (w0, b0), (w1, b1), (w2, b2) = params
    h1 = jnp.maximum(x @ w0 + b0[None, :], 0)
    h2 = jnp.maximum(h1 @ w1 + b1[None, :], 0)
    z = h2 @ w2 + b2[None, :]
    dz = (z - jax.nn.one_hot(labels, z.shape[1], dtype=z.dtype)) / x.shape[0]
    dh2 = jnp.where(h2 > 0, dz @ w2.T, 0)
    dh1 = jnp.where(h1 > 0, dh2 @ w1.T, 0)
    grads = [(x.T @ dh1, dh1.sum(0)), (h1.T @ dh2, dh2.sum(0)), (h2.T @ dz, dz.sum(0))]
    return z[0, 0], grads


def products_run(epochs, shuffle):
    """`run(params, x, labels, key)`: W4's epochs (every sample once, batches of 32 and
    one of the rest) of `products_grads` and plain SGD."""

    @jax.jit
    def run(params, x, labels, key):
        n = x.shape[0]
        n_full = n // BATCH_SIZE

        def step(params, xs, ys, start, size):
            value, grads = products_grads(
                params, lax.dynamic_slice_in_dim(xs, start, size), lax.dynamic_slice_in_dim(ys, start, size)
            )
            return jax.tree.map(lambda p, g: p - ADAM_LR * g, params, grads), value

        def epoch(params, e):
            order = shuffle(jax.random.fold_in(key, e), n)
            xs, ys = x[order], labels[order]
            params, values = lax.scan(
                lambda p, start: step(p, xs, ys, start, BATCH_SIZE), params, jnp.arange(n_full) * BATCH_SIZE
            )
            params, value = step(params, xs, ys, n_full * BATCH_SIZE, n - n_full * BATCH_SIZE)
            return params, jnp.sum(values) + value

        return lax.scan(epoch, params, jnp.arange(epochs))

    return run


def adam_alone_run(steps):
    """`run(params, grads)`: `steps` Adam updates of `params` by `grads`."""

    @jax.jit
    def run(params, grads):
        zeros = jax.tree.map(jnp.zeros_like, params)

        def step(carry, t):
            params, mu, nu = carry
            return adam(params, grads, mu, nu, t, ADAM_LR), None

        return lax.scan(step, (params, zeros, zeros), jnp.arange(steps))[0][0]

    return run


def bench_floor(epochs, rounds):
    w4 = digits_workload("W4", epochs)
    x, y, pairs = w4.x, w4.y, weights(w4.params)
    steps = -(-len(y) // BATCH_SIZE)
    shuffled, one_sort = (
        products_run(epochs, jax.random.permutation),
        products_run(epochs, one_sort_permutation),
    )
    adam_alone = adam_alone_run(steps * epochs)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), pairs)
    variants = {
        "jax.grad, Adam inline, one scan (W4's baseline)": w4.baseline_run,
        "fnnet fit": w4.fnnet_run,
        "products, slices, SGD; permutation shuffle": lambda: shuffled(pairs, x, y, jax.random.key(0)),
        "products, slices, SGD; one-sort shuffle": lambda: one_sort(pairs, x, y, jax.random.key(0)),
        "Adam alone, the same number of steps": lambda: adam_alone(pairs, grads),
    }
    timings = interleaved(variants, rounds)
    reference = next(iter(variants))
    rows = [
        [
            name,
            f"{1e3 * t.best / epochs:.2f}",
            f"{1e3 * t.median / epochs:.2f}",
            f"{ratio(timings, name, reference):.2f}",
        ]
        for name, t in timings.items()
    ]
    floor = ratio(timings, "products, slices, SGD; one-sort shuffle", reference) + ratio(
        timings, "Adam alone, the same number of steps", reference
    )
    return table(
        f"W4's floor: digits MLP 64-128-128-10, batch 32, {epochs} epochs, {steps} steps an epoch",
        ["variant", "ms/epoch", "median ms/epoch", "time / baseline"],
        rows,
        f"Products and the cheapest shuffle, plus Adam alone: {floor:.2f}x the baseline "
        f"(W4's target for a whole step: 0.70x).",
    )
