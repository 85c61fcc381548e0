"""The oracle comparisons shared by the tests of the newer layers (norm, dropout, softmax,
residual): a layer's hand `vjp` against `jax.vjp` of its own `apply`, in either mode, and
a feature-major twin against its batch-major layer.

Compiling costs far more than running here, so each comparison is one jitted program per
(layer, mode), cached; `key` is an argument of that program, not a constant in it.
"""

import functools

import jax

from fnnet._layout import _twin as feature_major_twin
from helpers import assert_trees_close


@functools.lru_cache(maxsize=None)
def oracle_and_hand(layer, train):
    """Jitted `(params, x, dy, key) -> ((y, vjp) by jax.vjp, (y, vjp) by layer.vjp)`."""

    def both(params, x, dy, key):
        mode = dict(train=train, key=key)
        y, pullback = jax.vjp(lambda p, x: layer.apply(p, x, **mode), params, x)
        return (y, pullback(dy)), (layer.apply(params, x, **mode), layer.vjp(params, x, dy, **mode))

    return jax.jit(both)


def assert_vjp_matches_jax(layer, params, x, dy, *, train=False, key=None):
    """The hand `layer.vjp` (and `apply`) against `jax.vjp` of `layer.apply`."""
    expected, actual = oracle_and_hand(layer, train)(params, x, dy, key)
    assert_trees_close(actual, expected, x.dtype)


@functools.lru_cache(maxsize=None)
def twin_and_layer(layer, train):
    """Jitted `(params, x, dy, key) -> (twin's (y.T, (dparams, dx.T)), the batch-major
    layer's (y, (dparams, dx)))`, the twin run on `x.T` and `dy.T`: the same function in
    the other layout, so both answers must agree."""
    twin = feature_major_twin(layer)

    def both(params, x, dy, key):
        mode = dict(train=train, key=key)
        dparams, dx_fm = twin.vjp(params, x.T, dy.T, **mode)
        return (
            (twin.apply(params, x.T, **mode).T, (dparams, dx_fm.T)),
            (layer.apply(params, x, **mode), layer.vjp(params, x, dy, **mode)),
        )

    return jax.jit(both)


def assert_twin_matches(layer, params, x, dy, *, train=False, key=None):
    """`twin.apply(p, x.T).T == layer.apply(p, x)`, and the twin's vjp is the transposed
    batch-major vjp (whose own agreement with jax.vjp is tested separately).

    Returns both `(y, (dparams, dx))`, the twin's transposed back, for further checks."""
    twin, batch_major = twin_and_layer(layer, train)(params, x, dy, key)
    assert_trees_close(twin, batch_major, x.dtype)
    return twin, batch_major


def hand_vjp(layer, **mode):
    """`jax.vjp`'s signature answered by the layer's own vjp (jitted), for
    `jax.test_util.check_vjp`."""
    apply = jax.jit(lambda params, x: layer.apply(params, x, **mode))
    vjp = jax.jit(lambda params, x, dy: layer.vjp(params, x, dy, **mode))
    return lambda params, x: (apply(params, x), lambda dy: vjp(params, x, dy))
