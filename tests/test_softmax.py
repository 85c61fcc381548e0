"""Softmax and LogSoftmax: hand VJPs against jax.vjp, feature-major twins (along axis 0),
rows summing to one, and extreme inputs in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_vjp
from helpers import HALF_DTYPES, assert_half_matches_float32, device
from layer_oracle import DTYPES, assert_vjp_matches_jax, hand_vjp, random_point

from fnnet import LogSoftmax, Softmax

LAYERS = pytest.mark.parametrize("layer", [Softmax(), LogSoftmax()], ids=["Softmax", "LogSoftmax"])


@LAYERS
@DTYPES
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 5)], ids=["2d", "4d"])
def test_vjp_matches_jax(layer, dtype, shape):
    # Both layers ignore train and key: one mode to test.
    assert_vjp_matches_jax(layer, *random_point(1, shape, dtype, spread=3.0))


@settings(max_examples=2, deadline=None)  # each new shape compiles
@given(
    layer=st.sampled_from([Softmax(), LogSoftmax()]),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    seed=st.integers(0, 2**32 - 1),
)
def test_vjp_matches_jax_random_shapes(layer, shape, seed):
    assert_vjp_matches_jax(layer, *random_point(seed, shape, np.float64, spread=3.0))


@LAYERS
def test_vjp_finite_differences(layer):
    _, x, _ = random_point(2, (3, 4), np.float64)
    check_vjp(jax.jit(layer.apply), hand_vjp(layer), ((), x), atol=1e-7, rtol=1e-7)


def test_rows_sum_to_one():
    _, x, _ = random_point(4, (2, 3, 6), np.float32, spread=10.0)
    y = np.asarray(Softmax().apply((), x), np.float64)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-6)
    logs = np.asarray(LogSoftmax().apply((), x), np.float64)
    np.testing.assert_allclose(np.exp(logs).sum(axis=-1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(logs), y, rtol=1e-5, atol=1e-30)


# Rows of 1e4 and -1e4 in float32: exp(1e4) overflows, so only a shifted formula is finite.
EXTREME = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 0.0], [1e4, 1e4 - 1, 1e4 - 2]])


def log_softmax64(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_extreme_inputs_float32():
    x = device(EXTREME, np.float32)
    dy = device(np.linspace(-1, 1, EXTREME.size).reshape(EXTREME.shape), np.float32)
    logs, dlogs = log_softmax64(EXTREME), np.asarray(dy, np.float64)
    probs = np.exp(logs)
    for layer, expected, dx_expected in [
        (Softmax(), probs, probs * (dlogs - (dlogs * probs).sum(axis=-1, keepdims=True))),
        (LogSoftmax(), logs, dlogs - probs * dlogs.sum(axis=-1, keepdims=True)),
    ]:
        y = layer.apply((), x)
        _, dx = layer.vjp((), x, dy)
        assert y.dtype == dx.dtype == np.float32
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(dx, dx_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Softmax().apply((), x)[0], [1, 0, 0])
    np.testing.assert_allclose(LogSoftmax().apply((), x)[0], [0, -2e4, -1e4])


def test_needs_a_feature_axis():
    with pytest.raises(ValueError, match=r"Softmax: input needs a feature axis, got shape \(\)"):
        Softmax().apply((), device(1.0))


# --- float16 and bfloat16: computed in float32, returned in the input's dtype ---------------


@LAYERS
@HALF_DTYPES
def test_half_precision_matches_float32(layer, dtype):
    """Within a rounding of the float32 results on the same values cast up."""
    _, x, dy = random_point(5, (6, 7), np.float64, spread=3.0)
    assert_half_matches_float32(layer, x, dy, dtype)


@LAYERS
@HALF_DTYPES
def test_half_precision_hazards(layer, dtype):
    """Row 0: a cotangent that is nearly constant along the row, dy = 64 + k ulp: in half
    precision sum(dy * y) (or sum(dy)) rounds by as much as dx itself. Row 1: log-softmax
    -5.328, which bfloat16 rounds to -5.3125, so exp of it is off by 1.8%. Row 2: logits
    +-3e4, whose differences reach 6e4 (finite in float16)."""
    ulp = 64 * float(jnp.finfo(dtype).eps)
    x = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -4.625, -4.625], [3e4, -3e4, 0.0, 1.0]])
    dy = np.array([64 + ulp * np.arange(4), [1.0, -1.0, 0.5, 2.0], [1.0, -1.0, 0.5, 2.0]])
    assert_half_matches_float32(layer, x, dy, dtype)
