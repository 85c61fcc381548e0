"""Dropout: the hand VJP against jax.vjp, the twin dropping the same units, rate
semantics and scaling, keys (one mask per key, also under vmap), and argument errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import device
from layer_oracle import DTYPES, assert_vjp_matches_jax, random_point

from fnnet import Dropout, Identity, serial

KEY = jax.random.key(0)
LAYER = Dropout(0.3)


# --- VJPs against jax.vjp -------------------------------------------------------------


@DTYPES
@pytest.mark.parametrize(
    "shape, train",
    [((6, 5), True), ((2, 3, 4, 5), True), ((6, 5), False)],
    ids=["2d-train", "4d-train", "2d-infer"],
)
def test_dropout_vjp_matches_jax(dtype, shape, train):
    assert_vjp_matches_jax(LAYER, *random_point(1, shape, dtype), train=train, key=KEY if train else None)


# --- rate semantics -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_rate_is_the_fraction_dropped_and_kept_units_are_scaled(rate):
    # 100,000 elements: the dropped fraction has sd sqrt(rate (1 - rate) / n) <= 0.0016,
    # so |frac - rate| < 0.01 is over 6 sd (a false alarm below 1e-9; the key is fixed).
    x = np.random.default_rng(3).uniform(1, 2, size=(1000, 100)).astype(np.float32)
    y = np.asarray(Dropout(rate).apply((), device(x), train=True, key=KEY))
    dropped = y == 0
    assert abs(dropped.mean() - rate) < 0.01
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)
    # Inverted dropout keeps the mean: E[y / x] = 1, here within 0.01 / (1 - rate).
    assert abs(np.mean(y / x) - 1) < 0.01 / (1 - rate)


def test_inference_is_the_identity():
    _, x, dy = random_point(4, (6, 5), np.float32)
    for key in (None, KEY):  # a key changes nothing in inference
        np.testing.assert_array_equal(LAYER.apply((), x, key=key), x)
        dparams, dx = LAYER.vjp((), x, dy, key=key)
        assert dparams == ()
        np.testing.assert_array_equal(dx, dy)


def test_rate_zero_is_the_identity_in_training_without_a_key():
    _, x, dy = random_point(5, (6, 5), np.float32)
    layer = Dropout(0.0)
    np.testing.assert_array_equal(layer.apply((), x, train=True), x)
    np.testing.assert_array_equal(layer.vjp((), x, dy, train=True)[1], dy)


def test_training_without_a_key_fails():
    _, x, dy = random_point(6, (4, 3), np.float32)
    match = r"Dropout\(rate=0.3\): training mode draws a mask and needs a key"
    with pytest.raises(ValueError, match=match):
        LAYER.apply((), x, train=True)
    with pytest.raises(ValueError, match=match):
        LAYER.vjp((), x, dy, train=True)
    with pytest.raises(ValueError, match=r"serial layer 1: " + match):
        serial(Identity(), LAYER).apply(((), ()), x, train=True)


@pytest.mark.parametrize(
    "rate, error, match",
    [
        (
            -0.1,
            ValueError,
            r"Dropout: rate \(the probability of dropping a unit\) must be in "
            r"\[0, 1\), got -0.1",
        ),
        (1.0, ValueError, r"must be in \[0, 1\), got 1.0"),
        (1.5, ValueError, r"must be in \[0, 1\), got 1.5"),
        (math.nan, ValueError, r"must be in \[0, 1\), got nan"),
        (True, TypeError, r"Dropout: rate must be a float in \[0, 1\), got True \(bool\)"),
        ("0.5", TypeError, r"Dropout: rate must be a float in \[0, 1\), got '0.5' \(str\)"),
        (None, TypeError, r"Dropout: rate must be a float in \[0, 1\), got None \(NoneType\)"),
    ],
    ids=["negative", "one", "above-one", "nan", "bool", "str", "none"],
)
def test_bad_rates(rate, error, match):
    with pytest.raises(error, match=match):
        Dropout(rate)


def test_params_must_be_empty():
    _, x, _ = random_point(7, (4, 3), np.float32)
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.3\) has no parameters: params must be"):
        LAYER.apply({"w": x}, x)


# --- keys -----------------------------------------------------------------------------


def test_keys_decide_the_mask():
    x = device(np.ones((20, 30)), np.float32)
    first = np.asarray(LAYER.apply((), x, train=True, key=KEY))
    np.testing.assert_array_equal(LAYER.apply((), x, train=True, key=KEY), first)  # same key
    other = np.asarray(LAYER.apply((), x, train=True, key=jax.random.key(1)))
    assert np.mean((first == 0) != (other == 0)) > 0.2  # ~2 * 0.3 * 0.7 = 0.42 differ


def test_vmap_over_keys_draws_one_mask_per_key():
    x = device(np.ones((20, 30)), np.float32)
    keys = jax.random.split(KEY, 6)

    def apply(key):
        return LAYER.apply((), x, train=True, key=key)

    masks = np.asarray(jax.jit(jax.vmap(apply))(keys)) == 0
    for i in range(6):
        np.testing.assert_array_equal(masks[i], np.asarray(apply(keys[i])) == 0)
        for j in range(i):
            assert np.mean(masks[i] != masks[j]) > 0.2, (i, j)


def test_a_rate_near_one_scales_half_precision_in_float32():
    """1 / (1 - 0.99999) = 1e5 is past float16's largest; the kept units' 1e-3 * 1e5 is not:
    the scale is applied in float32, the output (and the vjp's dx) finite."""
    x = jnp.full((200_000,), 1e-3, jnp.float16)
    layer = Dropout(0.99999)
    out = layer.apply((), x, train=True, key=jax.random.key(0))
    kept = np.asarray(out[out != 0], np.float32)
    assert np.isfinite(np.asarray(out, np.float32)).all() and kept.size > 0
    np.testing.assert_allclose(kept, 100.0, rtol=1e-2)
    _, dx = layer.vjp((), x, x, train=True, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(out))
