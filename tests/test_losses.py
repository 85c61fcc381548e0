"""Losses: hand gradients against jax.grad of the value, values against numpy references."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import LossBCE, LossBCEWithLogits, LossCrossEntropy, LossMSE
from fnnet.losses import check_targets
from helpers import HALF_DTYPES, assert_half_close, count_compilations, device
from layer_oracle import DTYPES

# atol: the oracle's formulas differ from the hand ones (e.g. -t/p + (1-t)/(1-p) against
# (p-t)/(p(1-p))), so an element near 0 keeps only an absolute error of a few ulps of O(1).
TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}


def np_log_softmax(y):
    shifted = y - y.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# Per case: the loss, a sampler `(rng, shape) -> (y, target)` in float64 numpy, and a
# float64 numpy reference of the value.
def sample_mse(rng, shape):
    return rng.normal(size=shape), rng.normal(size=shape)


def sample_bce(rng, shape):  # probabilities well inside the clamp
    return rng.uniform(0.02, 0.98, size=shape), rng.uniform(0, 1, size=shape)


def sample_logits(rng, shape):
    return 4 * rng.normal(size=shape), rng.uniform(0, 1, size=shape)


def sample_labels(rng, shape):  # integer labels (...,) for logits (..., classes)
    return 3 * rng.normal(size=shape), rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)


def sample_one_hot(rng, shape):
    y, labels = sample_labels(rng, shape)
    return y, np.eye(shape[-1])[labels]


def sample_weights(rng, shape):  # nonnegative rows that need not sum to 1
    return 3 * rng.normal(size=shape), rng.uniform(0, 1, size=shape)


def as_probabilities(y, t):
    return np.eye(y.shape[-1])[t] if np.issubdtype(t.dtype, np.integer) else t


def ce_reference(y, t):
    t = as_probabilities(y, t)
    return -np.sum(t * np_log_softmax(y)) / (y.size // y.shape[-1])


CASES = {
    "MSE": (LossMSE(), sample_mse, lambda y, t: np.mean((y - t) ** 2)),
    "BCE": (LossBCE(), sample_bce, lambda p, t: -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))),
    "BCEWithLogits": (LossBCEWithLogits(), sample_logits, lambda z, t: np.mean(np.logaddexp(0, z) - t * z)),
    "CE-labels": (LossCrossEntropy(), sample_labels, ce_reference),
    "CE-one-hot": (LossCrossEntropy(), sample_one_hot, ce_reference),
    "CE-weights": (LossCrossEntropy(), sample_weights, ce_reference),
}


@functools.lru_cache(maxsize=None)
def value_grad_and_oracle(loss):
    """Jitted `(y, t) -> (loss.value, loss.grad, jax.grad(loss.value))`."""
    return jax.jit(lambda y, t: (loss.value(y, t), loss.grad(y, t), jax.grad(loss.value)(y, t)))


def cast(a, dtype):
    return device(a, dtype) if np.issubdtype(a.dtype, np.floating) else device(a)


@pytest.mark.parametrize("case", CASES)
@DTYPES
@settings(max_examples=3, deadline=None)  # each example compiles: keep it small
@given(
    shape=st.lists(st.integers(1, 4), max_size=2).map(tuple),
    n=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_grad_matches_jax_grad(case, dtype, shape, n, seed):
    loss, sample, reference = CASES[case]
    n = max(n, 2) if case.startswith("CE") else n  # cross-entropy needs 2 classes
    y64, t64 = sample(np.random.default_rng(seed), shape + (n,))
    y, t = cast(y64, dtype), cast(t64, dtype)
    value, grad, oracle = value_grad_and_oracle(loss)(y, t)
    assert value.shape == () and value.dtype == dtype
    assert grad.shape == y.shape and grad.dtype == dtype and oracle.dtype == dtype
    np.testing.assert_allclose(grad, oracle, **TOLERANCES[dtype])
    # The value itself against the float64 reference, on the inputs as rounded to dtype.
    ref = reference(np.asarray(y, np.float64), np.asarray(t).astype(t64.dtype))
    np.testing.assert_allclose(value, ref, **TOLERANCES[dtype])


# --- LossBCE's clamp ----------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="eps")
def bce_straight_through(p, t, eps):
    """Reference: the clamp in the forward pass, the identity in the backward pass."""
    p_c = p + jax.lax.stop_gradient(jnp.clip(p, eps, 1 - eps) - p)
    return -jnp.mean(t * jnp.log(p_c) + (1 - t) * jnp.log1p(-p_c))


@DTYPES
def test_bce_at_exactly_zero_and_one(dtype):
    p = device([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1e-12], dtype)
    t = device([0.0, 0.0, 1.0, 1.0, 0.3, 0.7, 1.0, 1.0], dtype)
    ref = functools.partial(bce_straight_through, eps=1e-7)
    # jax.grad of the value itself goes through the clip: zero gradient where clipped.
    value, grad, autodiff = value_grad_and_oracle(LossBCE())(p, t)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, ref(p, t), **TOLERANCES[dtype])
    np.testing.assert_allclose(grad, jax.grad(ref)(p, t), **TOLERANCES[dtype])
    # Confidently wrong predictions are pushed back, where a plain clip gives 0.
    assert grad[1] > 0 and grad[2] < 0
    assert autodiff[1] == 0 and autodiff[2] == 0


@pytest.mark.parametrize("eps", [1e-8, 1e-12, 1e-60])
def test_bce_tiny_eps_stays_finite_in_float32(eps):
    # 1 - 1e-8 rounds to 1 in float32; the clamp must still stay inside (0, 1).
    p = device([0.0, 1.0], jnp.float32)
    t = device([1.0, 0.0], jnp.float32)
    loss = LossBCE(eps)
    value, grad, _ = value_grad_and_oracle(loss)(p, t)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)
    assert value > 15 and grad[0] < 0 < grad[1]
    # In float64 the lower clamp is the eps given (or the smallest normal float64).
    value64, _, _ = value_grad_and_oracle(loss)(device(np.zeros(1)), device(np.ones(1)))
    np.testing.assert_allclose(value64, -np.log(max(eps, np.finfo(np.float64).tiny)), rtol=1e-12)


@pytest.mark.parametrize("eps", [0, 0.5, -1e-3, 1.0])
def test_bce_bad_eps(eps):
    with pytest.raises(ValueError, match=rf"LossBCE: eps must be in \(0, 0\.5\), got {eps}"):
        LossBCE(eps)


def test_bce_eps_must_be_a_float():
    with pytest.raises(TypeError, match=r"LossBCE: eps must be a float, got '1e-7'"):
        LossBCE(eps="1e-7")


# --- LossBCEWithLogits ------------------------------------------------------------------


def test_bce_with_logits_extreme_logits_float32():
    z64 = np.array([-1e4, 1e4, -1e4, 1e4, -1e4, 1e4, -50.0, 50.0, 0.0])
    t64 = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.25, 0.5, 0.25, 0.5])
    z, t = device(z64, jnp.float32), device(t64, jnp.float32)
    value, grad, _ = value_grad_and_oracle(LossBCEWithLogits())(z, t)
    assert value.dtype == grad.dtype == jnp.float32
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    sigmoid = 0.5 * (1 + np.tanh(z64 / 2))
    np.testing.assert_allclose(value, np.mean(np.logaddexp(0, z64) - t64 * z64), rtol=1e-6)
    np.testing.assert_allclose(grad, (sigmoid - t64) / z64.size, rtol=1e-6, atol=1e-12)


def test_bce_with_logits_equals_bce_of_sigmoid():
    rng = np.random.default_rng(0)
    z = device(rng.uniform(-5, 5, size=(6, 3)))
    t = device(rng.uniform(0, 1, size=(6, 3)))

    @jax.jit
    def both(z, t):
        p = fnnet.Sigmoid().apply((), z)
        # Chain rule through fnnet's Sigmoid: d/dz BCE(sigmoid(z)) = (sigmoid(z) - t) / n.
        _, dz = fnnet.Sigmoid().vjp((), z, LossBCE().grad(p, t))
        return (
            (LossBCEWithLogits().value(z, t), LossBCEWithLogits().grad(z, t)),
            (LossBCE().value(p, t), dz),
        )

    (value, grad), (value_bce, grad_bce) = both(z, t)
    np.testing.assert_allclose(value, value_bce, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_bce, rtol=1e-9, atol=1e-15)


# --- shape errors -------------------------------------------------------------------------


SHAPE_PAIRS = [((4, 1), (4,)), ((3,), (3, 1)), ((2, 3), (3, 2))]


@pytest.mark.parametrize(
    "name, y_shape, t_shape",
    [
        (name, y_shape, t_shape)
        for name in ("LossMSE", "LossBCE", "LossBCEWithLogits")
        for y_shape, t_shape in SHAPE_PAIRS
    ]
    + [("LossCrossEntropy", (4, 3), (4, 2))],
)  # one-hot
def test_shape_mismatch(name, y_shape, t_shape):
    loss = getattr(fnnet, name)()
    y, t = device(np.full(y_shape, 0.5)), device(np.full(t_shape, 0.5))
    match = re.escape(f"{name}: prediction and target must have the same shape, got {y_shape} and {t_shape}")
    with pytest.raises(ValueError, match=match):
        loss.value(y, t)
    with pytest.raises(ValueError, match=match):
        loss.grad(y, t)


@pytest.mark.parametrize("labels_shape", [(4, 1), (3,), (), (4, 3)])
def test_cross_entropy_wrong_label_shape(labels_shape):
    loss = LossCrossEntropy()
    y, labels = device(np.zeros((4, 3))), device(np.zeros(labels_shape, np.int32))
    match = re.escape(
        f"LossCrossEntropy: integer labels must have shape (4,) for logits (4, 3), got {labels_shape}"
    )
    with pytest.raises(ValueError, match=match):
        loss.value(y, labels)
    with pytest.raises(ValueError, match=match):
        loss.grad(y, labels)


def test_cross_entropy_needs_a_class_axis():
    with pytest.raises(ValueError, match=r"LossCrossEntropy: logits need a class axis, got shape \(\)"):
        LossCrossEntropy().value(jnp.float32(1.0), jnp.int32(0))


# --- check_targets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LossBCE", "LossBCEWithLogits"])
@pytest.mark.parametrize(
    "target, values",
    [
        ([0.0, 1.5, 0.5], r"\[0\.0, 1\.5\]"),
        ([-0.1, 1.0], r"\[-0\.1, 1\.0\]"),
        ([0.5, np.nan], r"\[nan, nan\]"),
    ],
)
def test_check_targets_probabilities_outside_unit_interval(name, target, values):
    with pytest.raises(ValueError, match=name + r": targets must be in \[0, 1\], got values in " + values):
        check_targets(getattr(fnnet, name)(), np.asarray(target), 1)


@pytest.mark.parametrize(
    "labels, values", [([0, 1, 3], r"\[0, 3\]"), ([-1, 0, 2], r"\[-1, 2\]"), ([[5]], r"\[5, 5\]")]
)
def test_check_targets_labels_outside_classes(labels, values):
    match = r"LossCrossEntropy: labels must be in \[0, 3\) for 3 classes, got values in " + values
    with pytest.raises(ValueError, match=match):
        check_targets(LossCrossEntropy(), np.asarray(labels), 3)
    with pytest.raises(ValueError, match=match):  # also from a jax array
        check_targets(LossCrossEntropy(), device(labels, jnp.int32), 3)


def test_check_targets_accepts_valid_targets():
    # These return quietly (None); each differs from an invalid case above by one value.
    assert check_targets(LossBCE(), np.array([0.0, 1.0, 0.5]), 1) is None
    assert check_targets(LossBCEWithLogits(), device([[0.0], [1.0]]), 1) is None
    assert check_targets(LossCrossEntropy(), np.array([0, 1, 2]), 3) is None
    assert check_targets(LossCrossEntropy(), np.eye(3), 3) is None  # one-hot rows: not labels
    assert check_targets(LossBCE(), np.zeros((0, 1)), 1) is None  # empty
    assert check_targets(LossMSE(), np.array([-5.0, 7.0]), 2) is None  # any real target


# --- issue #12: cross-entropy on one output, float labels, overflow at huge logits -------


def test_cross_entropy_refuses_a_single_class():
    # One output: softmax is 1 whatever the logit, the loss 0 and its gradient 0, so a
    # model would never move. Refused, naming the fix.
    y, t = device(np.full((4, 1), 0.3, np.float32)), device(np.ones((4, 1), np.float32))
    match = (
        r"LossCrossEntropy: needs at least 2 classes \(logits \(\.\.\., classes\)\), got logits "
        r"of shape \(4, 1\); for one output use LossBCEWithLogits"
    )
    for f in (LossCrossEntropy().value, LossCrossEntropy().grad):
        with pytest.raises(ValueError, match=match):
            f(y, t)
    with pytest.raises(
        ValueError,
        match=r"LossCrossEntropy: needs at least 2 classes, got a "
        r"model with 1 output\(s\); for one output use "
        r"LossBCEWithLogits",
    ):
        check_targets(LossCrossEntropy(), np.ones((4, 1), np.float32), 1)


def test_cross_entropy_float_labels_are_named_as_such():
    y, labels = device(np.zeros((4, 3), np.float32)), device(np.array([0.0, 1.0, 2.0, 1.0]))
    match = (
        r"LossCrossEntropy: prediction and target must have the same shape, got \(4, 3\) and "
        r"\(4,\): class labels must be integers, got float64 labels \(convert them, e\.g\. "
        r"labels\.astype\(jnp\.int32\)\), or give one-hot rows of the model's width, shape "
        r"\(4, 3\)"
    )
    for f in (LossCrossEntropy().value, LossCrossEntropy().grad):
        with pytest.raises(ValueError, match=match):
            f(y, labels)
    with pytest.raises(
        ValueError,
        match=r"LossCrossEntropy: class labels must be integers, got "
        r"float32 targets of shape \(4,\); or give one-hot rows "
        r"of the model's width 3",
    ):
        check_targets(LossCrossEntropy(), np.array([0, 1, 2, 1], np.float32), 3)


EXTREMES = [(jnp.float32, 3e38), (jnp.float64, 1e308)]


@pytest.mark.parametrize("dtype, big", EXTREMES, ids=["f32-3e38", "f64-1e308"])
def test_bce_with_logits_finite_at_the_largest_logits(dtype, big):
    # Each element's loss is at most |z|, so their mean is finite; a sum of two such
    # values before dividing is not.
    z64 = np.array([big, big, -big, -big, big, -big, big, -big])
    t64 = np.array([0.0, 0.3, 1.0, 0.7, 1.0, 0.0, 0.5, 0.5])
    z, t = device(z64, dtype), device(t64, dtype)
    value, grad, oracle = value_grad_and_oracle(LossBCEWithLogits())(z, t)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    each = (1 - t64) * np.maximum(z64, 0) + t64 * np.maximum(-z64, 0)  # log1p(exp(-|z|)) = 0
    np.testing.assert_allclose(value, np.sum(each / z64.size), rtol=1e-6)
    np.testing.assert_allclose(grad, ((z64 > 0) - t64) / z64.size, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(oracle, grad, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("dtype, big", EXTREMES, ids=["f32-3e38", "f64-1e308"])
def test_cross_entropy_finite_at_the_largest_logits(dtype, big):
    # The other class's log-probability is -inf (-2 big overflows); its weight 0 adds 0.
    y = device([[big, -big], [-big, big]], dtype)
    for t in (device([0, 1], jnp.int32), device([[1.0, 0.0], [0.0, 1.0]], dtype)):
        value, grad, oracle = value_grad_and_oracle(LossCrossEntropy())(y, t)
        assert float(value) == 0.0
        np.testing.assert_array_equal(grad, np.zeros((2, 2)))
        np.testing.assert_array_equal(oracle, grad)
    y = device([[big / 4, -big / 4]] * 3, dtype)  # a loss of big / 2 per example: finite mean
    value, _, _ = value_grad_and_oracle(LossCrossEntropy())(y, device([1, 1, 1], jnp.int32))
    np.testing.assert_allclose(value, big / 2, rtol=1e-6)


# --- float16 and bfloat16: more elements than float16's largest number ----------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_half_precision_means_over_more_elements_than_float16_counts(case, dtype):
    """70,000 elements: in float16 the count is inf, so a division by it in float16 gives
    a loss and a gradient of exactly 0 (and fit trains nothing). Against the float32
    value and jax.grad of it, on the same half-precision inputs."""
    loss, sample, _ = CASES[case]
    y64, t64 = sample(np.random.default_rng(len(case)), (35_000, 2))
    y, t = cast(y64, dtype), cast(t64, dtype)
    value, grad = loss.value(y, t), loss.grad(y, t)
    assert value.dtype == dtype and grad.dtype == dtype
    y32, t32 = y.astype(jnp.float32), t.astype(jnp.float32) if t.dtype == dtype else t
    np.testing.assert_allclose(np.float32(value), loss.value(y32, t32), rtol=1e-2)
    oracle = jax.grad(loss.value)(y32, t32)
    # Elementwise, each gradient keeps the half dtype's few bits of its O(1) numerator.
    atol = 8 * float(jnp.finfo(dtype).eps) * float(jnp.max(jnp.abs(oracle)))
    np.testing.assert_allclose(np.asarray(grad, np.float32), oracle, rtol=2e-2, atol=atol)
    assert float(jnp.max(jnp.abs(grad.astype(jnp.float32)))) > 0


@functools.lru_cache(maxsize=None)
def value_and_grad_of(loss):
    """Jitted `(y, t) -> (loss.value, loss.grad)`, one program per dtype."""
    return jax.jit(lambda y, t: (loss.value(y, t), loss.grad(y, t)))


def assert_half_matches_float32(loss, y64, t64, dtype):
    """Value and gradient on half-precision y (and t) within a rounding of the float32
    ones on the same values cast up."""
    y, t = cast(y64, dtype), cast(t64, dtype)
    value, grad = value_and_grad_of(loss)(y, t)
    value32, grad32 = value_and_grad_of(loss)(
        y.astype(jnp.float32), t.astype(jnp.float32) if t.dtype == dtype else t
    )
    assert_half_close(value, value32, dtype)
    assert_half_close(grad, grad32, dtype)


@pytest.mark.parametrize("case", CASES)
@HALF_DTYPES
def test_half_precision_matches_float32(case, dtype):
    loss, sample, _ = CASES[case]
    assert_half_matches_float32(loss, *sample(np.random.default_rng(len(case)), (8, 5)), dtype)


def half_hazard(case):
    """(loss, y, t): elements whose half-precision intermediates overflow or round away."""
    if case == "MSE-square":  # 300**2 overflows float16; the mean, 5625, does not
        y = np.zeros((8, 2))
        y[0, 0] = 300.0
        return LossMSE(), y, np.zeros((8, 2))
    if case == "CE-large-logits":  # a log-probability of -8e4 overflows float16; the mean, 2e4, does not
        y = np.zeros((4, 2))
        y[0] = [-4e4, 4e4]
        return LossCrossEntropy(), y, np.zeros(4, np.int32)
    # log-softmax -5.328 (bfloat16 -5.3125): exp of it 1.8% off, and the gradient with it
    return LossCrossEntropy(), np.array([[0.0, 0.0, -4.625, -4.625]] * 2), np.array([0, 1], np.int32)


@pytest.mark.parametrize("case", ["MSE-square", "CE-large-logits", "CE-log-softmax-rounding"])
@HALF_DTYPES
def test_half_precision_hazards(case, dtype):
    assert_half_matches_float32(*half_hazard(case), dtype)


# --- targets outside a loss's domain: NaN, never a quiet number -----------------------------


@pytest.mark.parametrize(
    "loss, y, target",
    [
        (LossCrossEntropy(), jnp.zeros((3, 4)), jnp.array([0, 4, 1])),
        (LossCrossEntropy(), jnp.zeros((3, 4)), jnp.array([0, -1, 1])),
        (LossCrossEntropy(), jnp.zeros((2, 3)), jnp.array([[1.0, 0, 0], [-0.5, 0.5, 1]])),
        (LossBCE(), jnp.full((3, 1), 0.3), jnp.array([[0.0], [1.0], [-1.0]])),
        (LossBCE(), jnp.full((3, 1), 0.3), jnp.array([[0.0], [1.5], [1.0]])),
        (LossBCEWithLogits(), jnp.zeros((3, 1)), jnp.array([[0.0], [2.0], [1.0]])),
    ],
    ids=[
        "label-too-big",
        "label-negative",
        "negative-weight",
        "bce-negative",
        "bce-above-one",
        "logits-above-one",
    ],
)
def test_a_target_outside_the_domain_gives_nan_under_jit_too(loss, y, target):
    value, grad = jax.jit(lambda y, t: (loss.value(y, t), loss.grad(y, t)))(y, target)
    assert np.isnan(value) and np.isnan(grad).any()
    assert np.isnan(loss.value(y, target))  # eagerly as well


def test_value_and_grad_and_train_step_give_nan_for_labels_out_of_range():
    x = jax.random.normal(jax.random.key(0), (6, 4))
    model = fnnet.serial(fnnet.Linear(4, 3))
    params = model.init(jax.random.key(1), x.shape)[1]
    bad, good = jnp.array([0, 1, 2, 7, -1, 2]), jnp.array([0, 1, 2, 2, 1, 2])
    value, grads = fnnet.value_and_grad(model, LossCrossEntropy())(params, x, bad)
    assert np.isnan(value) and np.isnan(grads[0]["w"]).all()
    assert np.isfinite(fnnet.value_and_grad(model, LossCrossEntropy())(params, x, good)[0])
    opt = fnnet.SGD(0.1)
    step = fnnet.train_step(model, LossCrossEntropy(), opt)
    _, _, value = step(jax.tree.map(jnp.copy, params), opt.init(params), x, bad)
    assert np.isnan(value)


def test_bool_one_hot_rows_keep_the_logits_dtype():
    y = jax.random.normal(jax.random.key(0), (4, 3), jnp.float32)
    rows = jax.nn.one_hot(jnp.array([0, 2, 1, 2]), 3, dtype=jnp.bool_)
    grad, value = LossCrossEntropy().grad(y, rows), LossCrossEntropy().value(y, rows)
    assert grad.dtype == value.dtype == jnp.float32
    np.testing.assert_allclose(grad, LossCrossEntropy().grad(y, rows.astype(jnp.float32)), rtol=1e-6)


# Losses are values -------------------------------------------------------------------------


def _value(y, t):
    return jnp.mean(y - t)


def _grad(y, t):
    return jnp.ones_like(y) / y.size


@pytest.mark.parametrize(
    "make",
    [LossMSE, LossBCE, lambda: LossBCE(eps=1e-6), LossBCEWithLogits, LossCrossEntropy],
    ids=["mse", "bce", "bce_eps", "logits", "ce"],
)
def test_equal_settings_make_equal_losses(make):
    a, b = make(), make()
    assert a is not b and a == b and hash(a) == hash(b)
    assert isinstance(a, fnnet.Loss)


def test_other_settings_or_kinds_make_other_losses():
    assert LossBCE() != LossBCE(eps=1e-6)
    kinds = [LossMSE(), LossBCE(), LossBCEWithLogits(), LossCrossEntropy()]
    assert len(set(kinds)) == len(kinds)


@pytest.mark.parametrize(
    "loss, text",
    [
        (LossMSE(), "LossMSE()"),
        (LossBCE(), "LossBCE()"),
        (LossBCE(eps=1e-6), "LossBCE(eps=1e-06)"),
        (LossBCE(1e-5), "LossBCE(eps=1e-05)"),
        (LossBCEWithLogits(), "LossBCEWithLogits()"),
        (LossCrossEntropy(), "LossCrossEntropy()"),
        (fnnet.Loss(_value, _grad), "Loss(value=_value, grad=_grad)"),
    ],
)
def test_a_loss_prints_as_the_code_that_builds_it(loss, text):
    assert repr(loss) == text


def test_a_loss_of_your_own_functions():
    """`Loss(value, grad, check_targets=None)`: equal when built from the same functions."""
    loss = fnnet.Loss(_value, _grad)
    assert isinstance(loss, fnnet.Loss) and isinstance(loss, fnnet.FunctionLoss)
    assert loss == fnnet.Loss(value=_value, grad=_grad) and hash(loss) == hash(fnnet.Loss(_value, _grad))
    assert loss != fnnet.Loss(_value, _grad, check_targets=lambda t, n: None)
    assert loss.value is _value and loss.grad is _grad and loss.check_targets is None
    assert float(loss.value(jnp.ones(4), jnp.zeros(4))) == 1.0
    with pytest.raises(TypeError, match=r"Loss: grad must be a function, got 3 \(int\)"):
        fnnet.Loss(_value, 3)


def test_check_targets_is_none_or_a_function():
    """Callers test `loss.check_targets is None` and call it with (target, n_outputs)."""
    assert LossMSE().check_targets is None
    with pytest.raises(ValueError, match=r"LossBCE: targets must be in \[0, 1\]"):
        LossBCE().check_targets(np.array([2.0]), 1)
    with pytest.raises(ValueError, match=r"LossCrossEntropy: labels must be in \[0, 3\)"):
        LossCrossEntropy().check_targets(np.array([3]), 3)


def test_equal_losses_share_a_program():
    y, t = jnp.linspace(0.1, 0.9, 6), jnp.linspace(0.0, 1.0, 6)
    value = jax.jit(lambda loss, y, t: loss.value(y, t), static_argnums=0)
    value(LossBCE(eps=1e-4), y, t)
    with count_compilations() as compiled:
        value(LossBCE(eps=1e-4), y, t)
    assert compiled == []
    with count_compilations() as compiled:
        value(LossBCE(eps=1e-3), y, t)
    assert len(compiled) == 1, compiled


def test_integer_predictions_compute_in_floating_point():
    """A mean of integers must not be truncated: (1 + 4) / 2 is 2.5, not 2."""
    assert float(fnnet.LossMSE().value([1, 2], [0, 0])) == 2.5
    np.testing.assert_allclose(fnnet.LossMSE().grad(jnp.array([1, 2, 3]), jnp.zeros(3)), [2 / 3, 4 / 3, 2])
    logits = jnp.array([[1, 2]])
    assert float(fnnet.LossCrossEntropy().value(logits, jnp.array([0]))) == pytest.approx(
        float(fnnet.LossCrossEntropy().value(logits.astype(jnp.float32), jnp.array([0]))), rel=1e-6
    )


def test_bce_refuses_predictions_that_are_not_probabilities():
    """A model without its Sigmoid gives logits: an error naming LossBCEWithLogits where the
    values are known, NaN under jit (as for targets outside [0, 1]); 0 and 1 stay finite."""
    p, t = jnp.array([0.5, 1.5]), jnp.array([0.0, 1.0])
    with pytest.raises(
        ValueError,
        match=r"LossBCE: predictions must be probabilities in \[0, 1\], got values "
        r"in \[0\.5, 1\.5\]; for logits .* use LossBCEWithLogits",
    ):
        fnnet.LossBCE().value(p, t)
    assert np.isnan(jax.jit(fnnet.LossBCE().value)(p, t))
    assert np.isnan(jax.jit(fnnet.LossBCE().grad)(jnp.array([-0.1, 0.5]), t)[0])
    assert np.isfinite(fnnet.LossBCE().value(jnp.array([0.0, 1.0]), t))


def test_a_target_without_the_output_axis_is_told_to_add_it():
    model = fnnet.Sequential(fnnet.Linear(3, 1))
    params = model.init(jax.random.key(0), (4, 3))[1]
    with pytest.raises(
        ValueError, match=r"got \(4, 1\) and \(4,\); for a one-output model pass the target as y\[:, None\]"
    ):
        fnnet.value_and_grad(model, fnnet.LossMSE())(params, jnp.ones((4, 3)), jnp.ones(4))
