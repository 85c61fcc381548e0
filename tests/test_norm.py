"""BatchNorm and LayerNorm: hand VJPs against jax.vjp in both modes,
running statistics, and the optimizers leaving them alone.

Params are random, far from their init (scale 1, shift 0, running mean 0 and var 1), and
inputs have their own means and spreads per feature, so a formula that drops a term
cannot hide behind a one or a zero.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_vjp
from helpers import assert_trees_close, device
from layer_oracle import DTYPES, assert_twin_matches, assert_vjp_matches_jax, hand_vjp, random_point

import fnnet
from fnnet import BatchNorm, LayerNorm, State
from fnnet._layout import _twin as feature_major_twin

MODES = pytest.mark.parametrize("train", [True, False], ids=["train", "infer"])
# A non-default momentum and eps, so a formula that hard-codes either fails.
BN = BatchNorm(momentum=0.8, eps=1e-3)
LN = LayerNorm(eps=1e-3)
KEY = jax.random.key(0)
seeds = st.integers(0, 2**32 - 1)


def random_params(rng, c, running=True):
    """scale of either sign and away from 1, shift, running mean and var away from 0 and 1
    (host arrays)."""
    params = {"scale": rng.uniform(0.5, 2, c) * rng.choice([-1, 1], c), "shift": rng.normal(size=c)}
    if running:
        params["running"] = State(mean=rng.normal(size=c), var=rng.uniform(0.3, 3, c))
    return params


def random_input(rng, shape):
    """Each feature with its own mean and spread (a host array)."""
    c = shape[-1]
    return rng.normal(size=shape) * rng.uniform(0.5, 2, c) + rng.normal(size=c)


def norm_point(seed, shape, dtype, running=True):
    """`random_point` with the params and inputs above: `(params, x, dy)`."""
    params = lambda rng: random_params(rng, shape[-1], running)  # noqa: E731
    return random_point(seed, shape, dtype, params=params, x=random_input)


# --- VJPs against jax.vjp -------------------------------------------------------------


# 2-D, 4-D (BatchNorm normalizes over all of (2, 3, 4)) and a batch of one example, each
# in float64 and float32. Each configuration compiles a program.
SHAPES = pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 5), (1, 4)], ids=["2d", "4d", "batch1"])


@DTYPES
@SHAPES
@MODES
def test_batchnorm_vjp_matches_jax(dtype, shape, train):
    if train and math.prod(shape[:-1]) == 1:  # one value per feature: no batch statistics
        with pytest.raises(
            ValueError,
            match=r"BatchNorm\(momentum=0\.8, eps=0\.001\): training "
            r"normalizes by the batch and needs more than one",
        ):
            assert_vjp_matches_jax(BN, *norm_point(1, shape, dtype), train=train, key=KEY)
        return
    assert_vjp_matches_jax(BN, *norm_point(1, shape, dtype), train=train, key=KEY)


@settings(max_examples=2, deadline=None)  # each new shape compiles
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), seed=seeds, train=st.booleans())
def test_batchnorm_vjp_matches_jax_random_shapes(shape, seed, train):
    assume(not train or math.prod(shape[:-1]) > 1)  # a batch of one is refused in training
    assert_vjp_matches_jax(BN, *norm_point(seed, shape, np.float64), train=train, key=KEY)


@DTYPES
@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 5)], ids=["2d", "4d"])
def test_layernorm_vjp_matches_jax(dtype, shape):
    # LayerNorm is the same in both modes (its apply and vjp ignore train and key), and
    # each example is normalized on its own (a batch of one is no special case).
    assert_vjp_matches_jax(LN, *norm_point(2, shape, dtype, running=False))


@settings(max_examples=2, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), seed=seeds)
def test_layernorm_vjp_matches_jax_random_shapes(shape, seed):
    assert_vjp_matches_jax(LN, *norm_point(seed, shape, np.float64, running=False))


# --- finite differences (no autodiff at all) ------------------------------------------


@pytest.mark.parametrize("train, shape", [(True, (2, 3, 3)), (False, (4, 3))], ids=["train", "infer"])
def test_batchnorm_vjp_finite_differences(train, shape):
    params, x, _ = norm_point(3, shape, np.float64)
    mode = dict(train=train, key=KEY)
    check_vjp(
        jax.jit(lambda p, x: BN.apply(p, x, **mode)), hand_vjp(BN, **mode), (params, x), atol=1e-6, rtol=1e-6
    )


def test_layernorm_vjp_finite_differences():
    params, x, _ = norm_point(4, (4, 5), np.float64, running=False)
    check_vjp(jax.jit(LN.apply), hand_vjp(LN), (params, x), atol=1e-6, rtol=1e-6)


# --- feature-major twins --------------------------------------------------------------


# --- BatchNorm: params, inference, training -------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_batchnorm_params_structure(dtype):
    out_shape, params = BatchNorm(dtype=dtype).init(KEY, (8, 5))
    assert out_shape == (8, 5)
    assert set(params) == {"scale", "shift", "running"}
    assert isinstance(params["running"], State) and set(params["running"]) == {"mean", "var"}
    for name, leaf, value in [
        ("scale", params["scale"], 1.0),
        ("shift", params["shift"], 0.0),
        ("mean", params["running"]["mean"], 0.0),
        ("var", params["running"]["var"], 1.0),
    ]:
        assert leaf.shape == (5,) and leaf.dtype == dtype, name
        np.testing.assert_array_equal(leaf, np.full(5, value), err_msg=name)
    assert fnnet.state.trainable_mask(params) == {
        "scale": True,
        "shift": True,
        "running": State(mean=False, var=False),
    }


def test_batchnorm_inference_uses_the_running_statistics():
    params, _, _ = norm_point(8, (1, 3), np.float64)
    x = device(np.random.default_rng(9).normal(size=(1, 3)))  # one example: no batch statistics
    p = jax.tree.map(np.asarray, params)
    expected = (
        p["scale"] * (np.asarray(x) - p["running"]["mean"]) / np.sqrt(p["running"]["var"] + 1e-3) + p["shift"]
    )
    y = BN.apply(params, x)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(BN.apply(params, x), y)  # deterministic
    # Each example on its own: the rest of the batch does not matter in inference.
    batch = device(np.concatenate([np.asarray(x), 10 + np.ones((4, 3))]))
    np.testing.assert_allclose(BN.apply(params, batch)[:1], y, rtol=1e-12)


@pytest.mark.parametrize("shape", [(50, 3), (4, 5, 6, 3)], ids=["2d", "4d"])
def test_batchnorm_training_normalizes_by_the_batch(shape):
    rng = np.random.default_rng(10)
    params = jax.tree.map(device, random_params(rng, 3))  # running stats far from the batch's
    x = device(random_input(rng, shape))
    axes = tuple(range(len(shape) - 1))
    # With scale 1 and shift 0: mean 0 and variance var / (var + eps) per feature.
    plain = {**params, "scale": device(np.ones(3)), "shift": device(np.zeros(3))}
    y = np.asarray(BN.apply(plain, x, train=True))
    var = np.var(np.asarray(x), axis=axes)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-3), rtol=1e-12)
    assert np.all(np.abs(y.var(axis=axes) - 1) < 0.01)
    # Scaled and shifted: mean shift, standard deviation |scale| (up to eps).
    y = np.asarray(BN.apply(params, x, train=True))
    np.testing.assert_allclose(y.mean(axis=axes), params["shift"], rtol=1e-10)
    np.testing.assert_allclose(
        y.std(axis=axes), np.abs(params["scale"]) * np.sqrt(var / (var + 1e-3)), rtol=1e-10
    )


@pytest.mark.parametrize(
    "dtype, shape", [(np.float64, (2, 3, 4, 3)), (np.float32, (6, 3))], ids=["f64-4d", "f32-2d"]
)
def test_batchnorm_update_state_moves_the_running_statistics(shape, dtype):
    params, x, _ = norm_point(11, shape, dtype)
    new = BN.update_state(params, x)
    xs = np.asarray(x, np.float64)
    axes = tuple(range(len(shape) - 1))
    running = jax.tree.map(lambda a: np.asarray(a, np.float64), params["running"])
    expected = {
        "mean": 0.8 * running["mean"] + 0.2 * xs.mean(axis=axes),
        "var": 0.8 * running["var"] + 0.2 * xs.var(axis=axes),
    }  # biased (ddof=0)
    assert isinstance(new["running"], State) and set(new) == set(params)
    for stat in ("mean", "var"):
        assert new["running"][stat].dtype == dtype
        np.testing.assert_allclose(
            new["running"][stat], expected[stat], rtol=1e-12 if dtype == np.float64 else 1e-6
        )
    # scale and shift are the very same arrays
    assert new["scale"] is params["scale"] and new["shift"] is params["shift"]


def test_batchnorm_update_state_uses_the_biased_variance():
    params, _, _ = norm_point(12, (2, 1), np.float64)
    x = device([[0.0], [2.0]])  # biased variance 1, unbiased 2
    new = BatchNorm(momentum=0.0).update_state(params, x)
    np.testing.assert_allclose(new["running"]["mean"], [1.0], rtol=1e-15)
    np.testing.assert_allclose(new["running"]["var"], [1.0], rtol=1e-15)


@pytest.mark.parametrize(
    "opt", [fnnet.SGD(0.1, momentum=0.9, weight_decay=0.1), fnnet.Adam(0.01)], ids=["SGD", "Adam"]
)
def test_optimizers_never_change_the_running_statistics(opt):
    params, _, _ = norm_point(13, (4, 3), np.float32)
    model_params = (params, {"w": device(np.ones((3, 2)), np.float32)})
    # Nonzero grads for every leaf, the running statistics included, on purpose.
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.7), model_params)
    state = opt.init(model_params)
    step = jax.jit(opt.step)
    new = model_params
    for _ in range(3):
        new, state = step(new, grads, state)
    np.testing.assert_array_equal(new[0]["running"]["mean"], params["running"]["mean"])
    np.testing.assert_array_equal(new[0]["running"]["var"], params["running"]["var"])
    assert isinstance(new[0]["running"], State)
    for name in ("scale", "shift"):
        assert np.all(np.asarray(new[0][name]) != np.asarray(params[name])), name
    assert np.all(np.asarray(new[1]["w"]) != 1)
    for slot in state.slots.values():  # no momentum or moments kept for them either
        np.testing.assert_array_equal(slot[0]["running"]["mean"], 0)
        np.testing.assert_array_equal(slot[0]["running"]["var"], 0)


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: BatchNorm(momentum=1.0), ValueError, r"BatchNorm: momentum must be in \[0, 1\), got 1.0"),
        (lambda: BatchNorm(momentum=-0.1), ValueError, r"BatchNorm: momentum must be in \[0, 1\)"),
        (lambda: BatchNorm(momentum=True), TypeError, r"BatchNorm: momentum must be a float, got True"),
        (lambda: BatchNorm(eps=0.0), ValueError, r"BatchNorm: eps must be > 0, got 0.0"),
        (lambda: BatchNorm(eps=math.nan), ValueError, r"BatchNorm: eps must be > 0, got nan"),
        (lambda: LayerNorm(eps=-1.0), ValueError, r"LayerNorm: eps must be > 0, got -1.0"),
        (lambda: LayerNorm(eps="1e-5"), TypeError, r"LayerNorm: eps must be a float, got '1e-5'"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_batchnorm_wrong_input_and_params():
    params, x, _ = norm_point(14, (4, 3), np.float64)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected input with at least 2 axes"):
        BN.apply(params, x[0])
    with pytest.raises(
        ValueError,
        match=r"BatchNorm\(.*\): params\[.*\] must have shape "
        r"\(5,\) for input of shape \(4, 5\), got \(3,\)",
    ):
        BN.apply(params, device(np.ones((4, 5))))
    plain = {
        "scale": params["scale"],
        "shift": params["shift"],
        "running": dict(params["running"]),
    }  # a dict, not a State
    with pytest.raises(ValueError, match=r"'running' a State with 'mean' and 'var'"):
        BN.apply(plain, x)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected input_shape with at least 2"):
        BN.init(KEY, (3,))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_statistics_are_taken_in_float32(dtype):
    """In float16 the variance of [0, 300, -300] overflows: the row used to normalize to
    zeros. Statistics run in float32; the output keeps the input's dtype."""
    row = np.array([0.0, 300.0, -300.0])
    ln = LayerNorm(dtype=dtype)
    params = ln.init(jax.random.key(0), (1, 3))[1]
    y = ln.apply(params, jnp.asarray(row[None, :], dtype))
    want = LayerNorm().apply(
        LayerNorm().init(jax.random.key(0), (1, 3))[1], jnp.asarray(row[None, :], jnp.float32)
    )
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(want), rtol=1e-2, atol=1e-2)
    bn = BatchNorm(dtype=dtype)
    params = bn.init(jax.random.key(0), (3, 1))[1]
    x = jnp.asarray(row[:, None], dtype)
    y = bn.apply(params, x, train=True)
    assert y.dtype == dtype
    np.testing.assert_allclose(
        np.asarray(y, np.float32).ravel(), np.asarray(want).ravel(), rtol=1e-2, atol=1e-2
    )
    running = bn.update_state(params, x)["running"]
    assert float(running["var"][0]) == pytest.approx(0.9 + 0.1 * 60000, rel=1e-2)
    _, dx = bn.vjp(params, x, jnp.asarray([[1.0], [0.0], [-1.0]], dtype), train=True)
    assert dx.dtype == dtype and np.all(np.isfinite(np.asarray(dx, np.float32)))


@DTYPES
@MODES
def test_batchnorm_twin_matches_batch_major(dtype, train):
    """The private feature-major twin (a full-batch 2-D run's layout) is the same function."""
    assert_twin_matches(BN, *norm_point(5, (7, 3), dtype), train=train, key=KEY)


def test_batchnorm_twin_moves_the_running_statistics_alike_and_speaks_the_users_shapes():
    params, x, _ = norm_point(7, (9, 4), np.float64)
    twin = feature_major_twin(BN)
    assert_trees_close(twin.update_state(params, x.T), BN.update_state(params, x), np.float64)
    with pytest.raises(ValueError, match=r"got input of shape \(1, 4\) \(a batch of one"):
        twin.apply(params, x[:1].T, train=True)


@pytest.mark.parametrize("dtype, momentum", [(jnp.float16, 0.999), (jnp.bfloat16, 0.99), (jnp.bfloat16, 0.9)])
def test_half_precision_running_statistics_reach_the_batch_statistics(dtype, momentum):
    """The running statistics are kept in float32 whatever the params' dtype: in float16 or
    bfloat16 a step of (1 - momentum) of the gap rounds away (they stalled at 3.0 for a mean
    of 3.14), and bfloat16's momentum 0.9 is 0.898."""
    x = (3.0 + 2.0 * jax.random.normal(KEY, (256, 4))).astype(dtype)
    bn = BatchNorm(momentum=momentum, dtype=dtype)
    params = bn.init(KEY, x.shape)[1]
    assert params["scale"].dtype == dtype and params["running"]["mean"].dtype == jnp.float32
    update = jax.jit(lambda p: bn.update_state(p, x))
    for _ in range(int(20 / (1 - momentum))):  # the gap shrinks by momentum**steps: e**-20
        params = update(params)
    wide = np.asarray(x, np.float32)
    np.testing.assert_allclose(params["running"]["mean"], wide.mean(0), rtol=1e-4)
    np.testing.assert_allclose(params["running"]["var"], wide.var(0), rtol=1e-4)


@pytest.mark.parametrize("layer", [BatchNorm, LayerNorm])
@pytest.mark.parametrize("eps", [1e-50, 1e-39])
def test_an_eps_that_is_zero_in_float32_is_refused(layer, eps):
    """An eps below float32's smallest normal number is 0 there: a constant feature would
    normalize to 0 / 0 = NaN."""
    with pytest.raises(ValueError, match=rf"{layer.__name__}: eps must be at least 1.175e-38, float32's"):
        layer(eps=eps)
    layer(eps=1.2e-38)  # the smallest normal float32 is fine


def test_a_momentum_whose_rate_float32_cannot_keep_is_refused():
    """The running statistics move by 1 - momentum, in float32: 0.99999999 is 1 there (they
    would never move in fit, where the momentum is data)."""
    with pytest.raises(
        ValueError, match=r"BatchNorm: momentum=0\.99999999 is 1\.0 in float32, where it acts not at all"
    ):
        BatchNorm(momentum=0.99999999)
    BatchNorm(momentum=0.999999)  # 1 - momentum kept to 10%
