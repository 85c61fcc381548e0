"""`check_vjp`: a layer's hand-derived VJP against JAX's autodiff, for layers you write.

This module is the one place fnnet calls JAX's autodiff, and only as the
oracle a VJP is checked against: nothing in training imports it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layers import Layer, contract_hint

__all__ = ["check_vjp"]


def check_vjp(layer: Layer, key, input_shape, *, train: bool = False, rtol=None, atol=None) -> None:
    """Check `layer.vjp` (and its feature-major twin's) against `jax.vjp` at random points.

    Draws params with `layer.init(key, input_shape)`, an input x and a
    cotangent dy from the normal distribution (float64 when `jax_enable_x64`
    is on, else float32), and compares `layer.vjp(params, x, dy)` with JAX's
    VJP of `layer.apply` at the same point, for every floating leaf of dparams
    and for dx. With `train=True` both run in training mode with the same
    key, so stochastic layers draw the same masks. For a 2-D input and a layer
    with a `feature_major` twin, the twin must compute the same function on
    `x.T` and its vjp must match JAX's too.

    Args:
      layer: the Layer to check.
      key: a `jax.random` key.
      input_shape: the shape of x, a tuple of ints, e.g. `(8, 3)`.
      train: check training mode instead of inference.
      rtol, atol: tolerances, `atol` scaled by each leaf's largest expected
        entry; default 1e-7 and 1e-9 in float64, 1e-4 and 1e-5 in float32.

    Raises:
      AssertionError: naming the first leaf that disagrees (`dparams[0]['w']`,
        `dx`, or the twin's) and its largest error.

    Example:
      >>> Cube = elementwise("Cube", lambda x: x ** 3, lambda x, y: 3 * x * x)
      >>> check_vjp(Cube, jax.random.key(0), (4, 3))
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_vjp: layer must be a Layer, got {type(layer).__name__}")
    if not (
        isinstance(input_shape, (tuple, list))
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in input_shape)
    ):
        raise TypeError(f"check_vjp: input_shape must be a tuple of ints, got {input_shape!r}")
    if not (
        isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,))
    ):
        raise TypeError(f"check_vjp: key must be a jax.random key, got {key!r}")
    init_key, x_key, dy_key, train_key = jax.random.split(key, 4)
    with contract_hint():
        _, params = layer.init(init_key, tuple(input_shape))
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
    x = jax.random.normal(x_key, tuple(input_shape), dtype)
    mode = dict(train=train, key=train_key if train else None)
    if rtol is None:
        rtol = 1e-7 if dtype == jnp.float64 else 1e-4
    if atol is None:
        atol = 1e-9 if dtype == jnp.float64 else 1e-5

    with contract_hint():
        y, pullback = jax.vjp(lambda p, x: layer.apply(p, x, **mode), params, x)
        dy = jax.random.normal(dy_key, y.shape, y.dtype)
        _compare("", pullback(dy), layer.vjp(params, x, dy, **mode), rtol, atol)
        twin = layer.feature_major
        if twin is not None and len(input_shape) == 2:
            y_twin, pullback = jax.vjp(lambda p, x: twin.apply(p, x, **mode), params, x.T)
            _assert_close(
                "the feature-major twin's output (transposed)",
                y_twin.T,
                y,
                rtol,
                atol,
                "differs from the layer's",
            )
            _compare(
                "the feature-major twin's ", pullback(dy.T), twin.vjp(params, x.T, dy.T, **mode), rtol, atol
            )


def _compare(whose, expected, actual, rtol, atol):
    what = "vjp"
    if not (isinstance(actual, tuple) and len(actual) == 2):
        raise AssertionError(
            f"check_vjp: {whose}{what} must return a pair (dparams, dx), got "
            f"{type(actual).__name__}" + (f" of length {len(actual)}" if isinstance(actual, tuple) else "")
        )
    expected_leaves, actual_leaves = _named_leaves(expected), _named_leaves(actual)
    if [name for name, _ in actual_leaves] != [name for name, _ in expected_leaves]:
        raise AssertionError(
            f"check_vjp: {whose}{what} returned {jax.tree.structure(actual)}, "
            f"expected (dparams, dx) with the structure {jax.tree.structure(expected)}"
        )
    for (name, a), (_, e) in zip(actual_leaves, expected_leaves):
        if jnp.issubdtype(jnp.result_type(e), jnp.floating):  # integer leaves: JAX's float0
            _assert_close(whose + name, a, e, rtol, atol, "differs from JAX's autodiff")


def _assert_close(name, actual, expected, rtol, atol, differs):
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"check_vjp: {name} has shape {a.shape}, expected {e.shape}")
    error = np.abs(a - e)
    scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
    bad = ~(error <= atol * scale + rtol * np.abs(e))
    if bad.any():
        raise AssertionError(
            f"check_vjp: {name} {differs} in {int(bad.sum())} of {a.size} entries; largest "
            f"error {float(error.max()):.3g} (rtol={rtol}, atol={atol} times the leaf's scale "
            f"{scale:.3g})"
        )


def _named_leaves(dparams_and_dx):
    dparams, dx = dparams_and_dx
    leaves = jax.tree_util.tree_flatten_with_path(dparams)[0]
    return [("dparams" + jax.tree_util.keystr(path), leaf) for path, leaf in leaves] + [("dx", dx)]
