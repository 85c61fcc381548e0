"""The oracle, written once: a layer's hand `vjp` (and `apply`) against `jax.vjp` of its
own `apply`, in either mode; a feature-major twin against its batch-major layer; the
hand vjp in `jax.vjp`'s signature for `jax.test_util.check_vjp`; and the random points
they are compared at, in float64 or float32 (`DTYPES`).

Compiling costs far more than running here, so each comparison is one jitted program per
(layer, mode), cached; `key` is an argument of that program, not a constant in it.
"""

import functools

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, device

from fnnet._layout import _twin as feature_major_twin

# Every oracle comparison runs in both: float64 held to rtol 1e-10, float32 (what users
# get) to rtol 1e-5 (helpers.TOLERANCES): the oracle runs the same operations in the
# same order, so only a few roundings may differ.
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])


def random_point(seed, shape, dtype, *, params=None, x=None, spread=1.0):
    """A fresh `(params, x, dy)`, x and dy of `shape`, every array in `dtype`.

    `params(rng)` draws the params' host arrays (default: `()`, a layer without params);
    `x(rng, shape)` draws x (default: normal with sd `spread`); dy is standard normal.
    """
    rng = np.random.default_rng(seed)
    drawn = jax.tree.map(lambda a: device(a, dtype), params(rng)) if params else ()
    inputs = x(rng, shape) if x else spread * rng.normal(size=shape)
    return drawn, device(inputs, dtype), device(rng.normal(size=shape), dtype)


@functools.cache
def oracle_and_hand(layer, train=False):
    """Jitted `(params, x, dy, key=None) -> ((y, vjp) by jax.vjp, (y, vjp) by layer.vjp)`."""

    def both(params, x, dy, key=None):
        mode = dict(train=train, key=key)
        y, pullback = jax.vjp(lambda p, x: layer.apply(p, x, **mode), params, x)
        return (y, pullback(dy)), (layer.apply(params, x, **mode), layer.vjp(params, x, dy, **mode))

    return jax.jit(both)


def assert_vjp_matches_jax(layer, params, x, dy, *, train=False, key=None, scaled=False):
    """The hand `layer.vjp` (and `apply`) against `jax.vjp` of `layer.apply`, within
    `TOLERANCES[x.dtype]` (`scaled`: atol relative to each leaf's largest entry). Where
    params, x and dy share one dtype, every output has it too: float32 stays float32.

    Returns both `(y, (dparams, dx))`, jax's first, for further checks."""
    expected, actual = oracle_and_hand(layer, train)(params, x, dy, key)
    assert_trees_close(actual, expected, x.dtype, scaled=scaled)
    if {a.dtype for a in jax.tree.leaves((params, dy))} <= {x.dtype}:
        dtypes = {a.dtype for a in jax.tree.leaves(actual)}
        assert dtypes <= {x.dtype}, (x.dtype, dtypes)
    return expected, actual


@functools.cache
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
    """`jax.vjp`'s signature answered by the layer's own vjp (jitted: one program, not one
    per operation), for `jax.test_util.check_vjp`."""
    apply = jax.jit(lambda params, x: layer.apply(params, x, **mode))
    vjp = jax.jit(lambda params, x, dy: layer.vjp(params, x, dy, **mode))
    return lambda params, x: (apply(params, x), lambda dy: vjp(params, x, dy))
