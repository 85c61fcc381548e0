"""Residual: the hand VJP against jax.vjp (the skip's identity added), its twin, the
shape check, and modes, keys and state passed through to the inner layer."""

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, device
from layer_oracle import DTYPES, assert_twin_matches, assert_vjp_matches_jax, random_point

from fnnet import BatchNorm, Dropout, Layer, Linear, Residual, State, Tanh, serial
from fnnet._layout import _twin as feature_major_twin

KEY = jax.random.key(0)
C = 4
BLOCK = Residual(serial(Linear(C, C), Tanh()))


def block_point(seed, shape, dtype):
    """`random_point` of BLOCK: its Linear's params, x and dy."""
    params = lambda rng: ({"w": rng.normal(size=(C, C)), "b": rng.normal(size=C)}, ())  # noqa: E731
    return random_point(seed, shape, dtype, params=params)


@DTYPES
@pytest.mark.parametrize("shape", [(6, C), (2, 3, 5, C)], ids=["2d", "4d"])
def test_vjp_matches_jax(dtype, shape):
    assert_vjp_matches_jax(BLOCK, *block_point(1, shape, dtype))


@DTYPES
@pytest.mark.parametrize("train", [True, False], ids=["train", "infer"])
def test_vjp_matches_jax_with_dropout_and_batchnorm_inside(dtype, train):
    # Modes and keys pass through: the oracle sees the same masks and statistics.
    block = Residual(serial(Linear(C, C), BatchNorm(), Dropout(0.5)))
    (linear, _), x, dy = block_point(2, (6, C), dtype)
    rng = np.random.default_rng(3)
    norm = {
        "scale": device(rng.uniform(0.5, 2, C), dtype),
        "shift": device(rng.normal(size=C), dtype),
        "running": State(mean=device(rng.normal(size=C), dtype), var=device(rng.uniform(0.5, 2, C), dtype)),
    }
    assert_vjp_matches_jax(block, (linear, norm, ()), x, dy, train=train, key=KEY)


@DTYPES
def test_twin_matches_batch_major(dtype):
    assert feature_major_twin(BLOCK) is not None
    assert_twin_matches(BLOCK, *block_point(4, (7, C), dtype))


def test_vjp_adds_the_identity():
    params, x, dy = block_point(5, (6, C), np.float64)
    inner = serial(Linear(C, C), Tanh())
    dparams, dx = BLOCK.vjp(params, x, dy)
    inner_dparams, inner_dx = inner.vjp(params, x, dy)
    np.testing.assert_array_equal(dx, dy + inner_dx)
    assert_trees_close(dparams, inner_dparams, np.float64)
    np.testing.assert_array_equal(BLOCK.apply(params, x), x + inner.apply(params, x))
    # Around a layer that outputs zeros (w = 0, b = 0, tanh(0) = 0): y = x and dx = dy.
    zeros = jax.tree.map(lambda a: a * 0, params)
    np.testing.assert_array_equal(BLOCK.apply(zeros, x), x)
    np.testing.assert_array_equal(BLOCK.vjp(zeros, x, dy)[1], dy)


def test_update_state_is_the_inner_layers():
    block = Residual(BatchNorm())
    _, params = block.init(KEY, (5, 3))
    x = device(np.random.default_rng(6).normal(size=(5, 3)), np.float32)
    assert_trees_close(block.update_state(params, x), BatchNorm().update_state(params, x), np.float32)
    assert BLOCK.update_state is None


def test_shape_changing_layer_is_refused():
    # Traced only (jax.eval_shape): the checks run on shapes, nothing needs compiling.
    match = r"Residual: the layer must keep its input's shape, got \(5, 3\) -> \(5, 4\)"
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda key: Residual(Linear(3, 4)).init(key, (5, 3)), KEY)
    # A layer whose init keeps the shape but whose apply does not: refused at apply.
    lin = Linear(3, 4)
    liar = Layer(lambda key, shape: (tuple(shape), lin.init(key, shape)[1]), lin.apply, lin.vjp)
    params = {"w": jax.ShapeDtypeStruct((3, 4), np.float32), "b": jax.ShapeDtypeStruct((4,), np.float32)}
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(Residual(liar).apply, params, jax.ShapeDtypeStruct((5, 3), np.float32))


def test_residual_of_a_non_layer():
    with pytest.raises(TypeError, match=r"Residual: layer must be a Layer, got the class Tanh"):
        Residual(Tanh)
