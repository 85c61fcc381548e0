"""`check_vjp`: a layer's hand-derived VJP against JAX's autodiff, for layers you write.

This module is the one place fnnet calls JAX's autodiff, and only as the
oracle a VJP is checked against: nothing in training imports it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layers import Layer

__all__ = ["check_vjp"]


def check_vjp(layer: Layer, key, input_shape, *, train: bool = False, rtol=None, atol=None) -> None:
    """Check `layer.vjp` against `jax.vjp` of `layer.apply` at random points.

    Draws params with `layer.init(key, input_shape)` (their floating leaves
    cast to float64 when `jax_enable_x64` is on, else to float32), an input x
    and a cotangent dy from the normal distribution in that dtype, and compares
    `layer.vjp(params, x, dy)` with JAX's VJP of `layer.apply` at the same
    point, for every leaf of dparams and for dx. With `train=True` both run
    in training mode with the same key, so stochastic layers draw the same
    masks.

    Args:
      layer: the Layer to check.
      key: a `jax.random` key.
      input_shape: the shape of x, e.g. `(8, 3)`.
      train: check training mode instead of inference.
      rtol, atol: tolerances; default 1e-7 and 1e-9 in float64, 1e-4 and 1e-5 otherwise.

    Raises:
      AssertionError: naming the first leaf that disagrees (`dparams[0]['w']`,
        `dx`) and its largest error.

    Example:
      >>> Cube = elementwise("Cube", lambda x: x ** 3, lambda x, y: 3 * x * x)
      >>> check_vjp(Cube, jax.random.key(0), (4, 3))
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_vjp: layer must be a Layer, got {type(layer).__name__}")
    init_key, x_key, dy_key, train_key = jax.random.split(key, 4)
    _, params = layer.init(init_key, tuple(input_shape))
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                          params)
    x = jax.random.normal(x_key, tuple(input_shape), dtype)
    mode = dict(train=train, key=train_key if train else None)

    y, pullback = jax.vjp(lambda p, x: layer.apply(p, x, **mode), params, x)
    dy = jax.random.normal(dy_key, y.shape, y.dtype)
    expected = pullback(dy)
    actual = layer.vjp(params, x, dy, **mode)
    if rtol is None:
        rtol = 1e-7 if dtype == jnp.float64 else 1e-4
    if atol is None:
        atol = 1e-9 if dtype == jnp.float64 else 1e-5

    expected_leaves = _named_leaves(expected)
    actual_leaves = _named_leaves(actual)
    if [name for name, _ in actual_leaves] != [name for name, _ in expected_leaves]:
        raise AssertionError(f"check_vjp: vjp returned {jax.tree.structure(actual)}, expected "
                             f"(dparams, dx) with the structure {jax.tree.structure(expected)}")
    for (name, a), (_, e) in zip(actual_leaves, expected_leaves):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if a.shape != e.shape:
            raise AssertionError(f"check_vjp: {name} has shape {a.shape}, expected {e.shape}")
        error = np.abs(a - e)
        bad = ~(error <= atol + rtol * np.abs(e))
        if bad.any():
            raise AssertionError(
                f"check_vjp: {name} differs from JAX's autodiff in {int(bad.sum())} of {a.size} "
                f"entries; largest error {float(error.max()):.3g} (rtol={rtol}, atol={atol})")


def _named_leaves(dparams_and_dx):
    dparams, dx = dparams_and_dx
    leaves = jax.tree_util.tree_flatten_with_path(dparams)[0]
    return [("dparams" + jax.tree_util.keystr(path), leaf) for path, leaf in leaves] + [("dx", dx)]
