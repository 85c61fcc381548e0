"""The JAX baselines: what a user would write instead of fnnet, with plain `jax.grad`.

Each is one jitted program: the optimizer written inline, the epochs in one
`lax.scan`. Params are plain tuples, taken from the fnnet model's initial
params, so both start from the same point.
"""

import jax
import jax.numpy as jnp
from jax import lax

# ---- W1 and the scaling table: an MLP, full-batch SGD ---------------------------------


def mlp_forward(params, x, feature_major=False, output=jax.nn.sigmoid):
    """ReLU between the layers `params = [(w, b), ...]`, `output` at the end; x `(n, d)`,
    or `(d, n)` if feature_major."""
    for i, (w, b) in enumerate(params):
        x = w.T @ x + b[:, None] if feature_major else x @ w + b[None, :]
        x = jax.nn.relu(x) if i < len(params) - 1 else output(x)
    return x


def bce(p, t):
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return -jnp.mean(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))


def sgd_full_batch(epochs, feature_major):
    """`run(params, x, t, lr, decay) -> (params, losses)`: `epochs` full-batch SGD steps of the
    Sigmoid MLP under BCE, lr_i = lr * decay**i."""

    def loss(params, x, t):
        return bce(mlp_forward(params, x, feature_major), t)

    @jax.jit
    def run(params, x, t, lr, decay):
        if feature_major:
            x, t = x.T, t.T

        def epoch(params, i):
            value, grads = jax.value_and_grad(loss)(params, x, t)
            lr_i = lr * decay**i
            return jax.tree.map(lambda p, g: p - (lr_i * g).astype(p.dtype), params, grads), value

        return lax.scan(epoch, params, jnp.arange(epochs))

    return run


def binary_accuracy(params, x, y):
    return float(jnp.mean((mlp_forward(params, x) > 0.5) == (y > 0.5)))


# ---- W4 and W5: minibatch Adam on softmax cross-entropy ---------------------------------


def logits_mlp(params, x):
    """The MLP of W4: ReLU between the layers, logits out."""
    return mlp_forward(params, x, output=lambda z: z)


def logits_cnn(params, x):
    """The CNN of W5 on NHWC images: two (3x3 SAME convolution, ReLU, 2x2 max pool) blocks,
    flattened row-major, then a linear layer to the logits."""
    *convolutions, (w, b) = params
    for k, c in convolutions:
        x = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + c[None, None, None, :])
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x.reshape(x.shape[0], -1) @ w + b[None, :]


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def adam(params, grads, mu, nu, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step, t = steps taken before it; returns (params, mu, nu)."""
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    params = jax.tree.map(
        lambda p, m, v: p - (lr * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(p.dtype), params, mu, nu
    )
    return params, mu, nu


def adam_minibatch(logits, epochs, batch_size):
    """`run(params, x, labels, key, lr) -> (params, losses)`: `epochs` epochs of Adam under
    softmax cross-entropy. Each epoch shuffles with `fold_in(key, epoch)`, scans over the
    full batches, then takes one step on the smaller last batch when `batch_size` does not
    divide n: every sample once per epoch, as fnnet's minibatches."""

    def loss(params, x, labels):
        return cross_entropy(logits(params, x), labels)

    @jax.jit
    def run(params, x, labels, key, lr):
        n = x.shape[0]
        n_full, rest = divmod(n, batch_size)

        def step(carry, indices):
            params, mu, nu, t = carry
            value, grads = jax.value_and_grad(loss)(params, x[indices], labels[indices])
            params, mu, nu = adam(params, grads, mu, nu, t, lr)
            return (params, mu, nu, t + 1), value

        def epoch(carry, e):
            order = jax.random.permutation(jax.random.fold_in(key, e), n)
            carry, values = lax.scan(step, carry, order[: n_full * batch_size].reshape(n_full, batch_size))
            total = jnp.sum(values) * batch_size
            if rest:
                carry, value = step(carry, order[n_full * batch_size :])
                total = total + value * rest
            return carry, total / n

        zeros = jax.tree.map(jnp.zeros_like, params)
        start = (params, zeros, zeros, jnp.zeros((), jnp.int32))
        (params, *_), losses = lax.scan(epoch, start, jnp.arange(epochs))
        return params, losses

    return run


def class_accuracy(logits, params, x, labels):
    return float(jnp.mean(jnp.argmax(logits(params, x), axis=-1) == labels))


# ---- the BatchNorm row: Linear BN ReLU, Linear BN ReLU, Linear Sigmoid; full-batch SGD ----


def bn_mlp_forward(params, running, x, train, feature_major=False, momentum=0.9, eps=1e-5):
    """`(p, running)`: training normalizes by the batch's mean and biased variance and
    returns the moved running statistics, running = momentum running + (1 - momentum) batch;
    inference normalizes by `running`. params: {"linear": [(w, b)] * 3, "bn": [(scale, shift)] * 2};
    running: [(mean, var)] * 2; x `(n, d)`, or `(d, n)` if feature_major."""
    batch_axis = 1 if feature_major else 0

    def along(v):  # a per-feature vector against x
        return v[:, None] if feature_major else v[None, :]

    def linear(w, b, x):
        return w.T @ x + along(b) if feature_major else x @ w + along(b)

    moved = []
    for (w, b), (scale, shift), (mean, var) in zip(params["linear"], params["bn"], running):
        x = linear(w, b, x)
        if train:
            batch_mean, batch_var = jnp.mean(x, axis=batch_axis), jnp.var(x, axis=batch_axis)
            moved.append(
                (momentum * mean + (1 - momentum) * batch_mean, momentum * var + (1 - momentum) * batch_var)
            )
            mean, var = batch_mean, batch_var
        x = jax.nn.relu(along(scale) * (x - along(mean)) / jnp.sqrt(along(var) + eps) + along(shift))
    return jax.nn.sigmoid(linear(*params["linear"][-1], x)), moved if train else running


def bn_sgd_full_batch(epochs, feature_major):
    """`run(params, running, x, t, lr) -> ((params, running), losses)`: `epochs` full-batch
    SGD steps under BCE, the running statistics as jax.grad's aux."""

    def loss(params, running, x, t):
        p, running = bn_mlp_forward(params, running, x, True, feature_major)
        return bce(p, t), running

    @jax.jit
    def run(params, running, x, t, lr):
        if feature_major:
            x, t = x.T, t.T

        def epoch(carry, _):
            params, running = carry
            (value, running), grads = jax.value_and_grad(loss, has_aux=True)(params, running, x, t)
            params = jax.tree.map(lambda p, g: p - (lr * g).astype(p.dtype), params, grads)
            return (params, running), value

        return lax.scan(epoch, (params, running), length=epochs)

    return run


def bn_accuracy(params, running, x, y):
    p, _ = bn_mlp_forward(params, running, x, False)
    return float(jnp.mean((p > 0.5) == (y > 0.5)))


# ---- the fixed-cost table: the plainest minibatch program --------------------------------


def bce_logits(z, t):
    """Binary cross-entropy on logits, the stable form."""
    return jnp.mean(jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z))))


def bn_dropout_logits(params, running, x, key, rate, train, momentum=0.9, eps=1e-5):
    """Linear BatchNorm ReLU Dropout(rate) Linear, logits out: `(z, running)`.
    params: {"linear": [(w, b)] * 2, "bn": (scale, shift)}; running: (mean, var)."""
    (w1, b1), (w2, b2) = params["linear"]
    scale, shift = params["bn"]
    mean, var = running
    h = x @ w1 + b1
    if train:
        batch_mean, batch_var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
        running = (momentum * mean + (1 - momentum) * batch_mean, momentum * var + (1 - momentum) * batch_var)
        mean, var = batch_mean, batch_var
    h = jax.nn.relu(scale * (h - mean) / jnp.sqrt(var + eps) + shift)
    if train and rate:
        h = h * jax.random.bernoulli(key, 1 - rate, h.shape) / (1 - rate)
    return h @ w2 + b2, running


def adam_flat_scan(loss, epochs, batch_size):
    """`run(params, state, x, y, key, lr) -> (params, state, losses)`: `epochs` epochs of Adam
    as the plainest JAX program has them: every epoch's permutation drawn up front (one
    vmapped `permutation`), the remainder dropped, one flat `lax.scan` over all steps.
    `loss(params, state, x, y, key) -> (value, state)`; state None for a stateless model."""

    @jax.jit
    def run(params, state, x, y, key, lr):
        n = x.shape[0]
        steps = n // batch_size
        shuffle_key, draw_key = jax.random.split(key)
        orders = jax.vmap(lambda k: jax.random.permutation(k, n)[: steps * batch_size])(
            jax.random.split(shuffle_key, epochs)
        )

        def step(carry, indices):
            params, state, mu, nu, t = carry
            (value, state), grads = jax.value_and_grad(loss, has_aux=True)(
                params, state, x[indices], y[indices], jax.random.fold_in(draw_key, t)
            )
            params, mu, nu = adam(params, grads, mu, nu, t, lr)
            return (params, state, mu, nu, t + 1), value

        zeros = jax.tree.map(jnp.zeros_like, params)
        start = (params, state, zeros, zeros, jnp.zeros((), jnp.int32))
        (params, state, *_), values = lax.scan(step, start, orders.reshape(-1, batch_size))
        return params, state, values.reshape(epochs, steps).mean(axis=1)

    return run
