"""Layers: every hand-derived VJP against JAX's autodiff (the oracle).

Inputs are fresh random arrays of random shapes; float64 is held to rtol 1e-10,
float32 to rtol 1e-5. `jax.test_util.check_vjp` adds a finite-difference check
that does not rely on JAX's autodiff either.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_vjp

import fnnet
from fnnet._layout import _twin as feature_major_twin
from fnnet import ELU, Identity, Layer, LeakyReLU, Linear, ReLU, Sigmoid, Softplus, Tanh, elementwise
from helpers import assert_trees_close, device
from layer_oracle import DTYPES, assert_vjp_matches_jax, hand_vjp, oracle_and_hand

# Custom layers built with `elementwise`: one derivative from x, one from y = f(x).
Cube = elementwise("Cube", lambda x: x**3, lambda x, y: 3 * x * x)  # dx = dy * 3 x**2
Exp = elementwise("Exp", jnp.exp, lambda x, y: y)  # dx = dy * e^x, read from the output

# Non-default slope and alpha, so a derivative that ignores them fails.
ACTIVATIONS = {
    "ReLU": ReLU(),
    "Tanh": Tanh(),
    "Sigmoid": Sigmoid(),
    "LeakyReLU(0.3)": LeakyReLU(0.3),
    "ELU(0.5)": ELU(0.5),
    "Softplus": Softplus(),
    "Identity": Identity(),
    "Cube": Cube,
    "Exp": Exp,
}
WITH_DEFAULTS = {**ACTIVATIONS, "LeakyReLU()": LeakyReLU(), "ELU()": ELU()}

# Each example compiles a fresh XLA program (~0.1 s), so the counts stay small.
EXAMPLES = settings(max_examples=8, deadline=None)
FEW_EXAMPLES = settings(max_examples=3, deadline=None)

batch_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
sizes = st.integers(1, 8)
seeds = st.integers(0, 2**32 - 1)


def away_from_kinks(x):
    """x moved at least 0.05 away from 0, where ReLU-like layers have a kink."""
    return np.where(x >= 0, x + 0.05, x - 0.05)


def random_input(rng, shape, dtype):
    return device(away_from_kinks(rng.normal(size=shape)), dtype)


@functools.lru_cache(maxsize=None)
def oracle_and_twin(layer):
    """Like `oracle_and_hand`, for the feature-major twin on `x_fm` (features, batch).

    The oracle is jax.vjp of the batch-major `layer.apply` on `x_fm.T`,
    transposed back: the twin must be the same function in the other layout.
    """
    twin = feature_major_twin(layer)

    def both(params, x_fm, dy_fm):
        y, pullback = jax.vjp(lambda p, x: layer.apply(p, x.T).T, params, x_fm)
        return (y, pullback(dy_fm)), (twin.apply(params, x_fm), twin.vjp(params, x_fm, dy_fm))

    return jax.jit(both)


def random_linear_params(rng, n_in, n_out, dtype):
    return {"w": device(rng.normal(size=(n_in, n_out)), dtype), "b": device(rng.normal(size=(n_out,)), dtype)}


# --- VJPs against jax.vjp -------------------------------------------------------------


@DTYPES
@EXAMPLES
@given(batch_shape=batch_shapes, n_in=sizes, n_out=sizes, seed=seeds)
def test_linear_vjp_matches_jax(dtype, batch_shape, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(n_in, n_out, dtype=dtype)
    params = random_linear_params(rng, n_in, n_out, dtype)
    x = random_input(rng, batch_shape + (n_in,), dtype)
    dy = device(rng.normal(size=batch_shape + (n_out,)), dtype)
    assert_vjp_matches_jax(layer, params, x, dy)


@pytest.mark.parametrize("name", ACTIVATIONS)
@DTYPES
@settings(max_examples=2, deadline=None)  # per activation and dtype; 36 in all
@given(batch_shape=batch_shapes, n=sizes, seed=seeds)
def test_activation_vjp_matches_jax(name, dtype, batch_shape, n, seed):
    rng = np.random.default_rng(seed)
    layer = ACTIVATIONS[name]
    x = random_input(rng, batch_shape + (n,), dtype)
    dy = device(rng.normal(size=x.shape), dtype)
    assert_vjp_matches_jax(layer, (), x, dy)


def test_linear_vjp_mixed_dtypes_match_jax():
    # float32 params with float64 inputs and the reverse: cotangents take their
    # primal's dtype, as jax.vjp's do.
    rng = np.random.default_rng(0)
    for param_dtype, x_dtype in [(jnp.float32, jnp.float64), (jnp.float64, jnp.float32)]:
        params = random_linear_params(rng, 3, 2, param_dtype)
        x = device(rng.normal(size=(5, 3)), x_dtype)
        dy = device(rng.normal(size=(5, 2)), jnp.float64)  # y is float64 either way
        expected, actual = oracle_and_hand(Linear(3, 2))(params, x, dy)
        assert jax.tree.map(lambda a: a.dtype, actual) == jax.tree.map(lambda a: a.dtype, expected)
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


# --- finite differences ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)])
def test_linear_vjp_finite_differences(shape):
    rng = np.random.default_rng(4)
    layer = Linear(shape[-1], 4, dtype=jnp.float64)
    params = random_linear_params(rng, shape[-1], 4, jnp.float64)
    x = random_input(rng, shape, jnp.float64)
    check_vjp(jax.jit(layer.apply), hand_vjp(layer), (params, x), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("name", WITH_DEFAULTS)
def test_activation_vjp_finite_differences(name):
    layer = WITH_DEFAULTS[name]
    x = random_input(np.random.default_rng(5), (4, 6), jnp.float64)
    check_vjp(layer.apply, hand_vjp(layer), ((), x), atol=1e-7, rtol=1e-7)


def test_finite_difference_check_catches_a_wrong_vjp():
    # The check above can fail: a Tanh whose derivative forgets the square.
    wrong = elementwise("WrongTanh", jnp.tanh, lambda x, y: 1 - y)
    x = random_input(np.random.default_rng(6), (4, 6), jnp.float64)
    with pytest.raises(AssertionError):
        check_vjp(wrong.apply, hand_vjp(wrong), ((), x), atol=1e-7, rtol=1e-7)


def test_relu_derivative_at_zero_is_zero():
    # Documented choice (jax.grad of jnp.maximum would give 1/2 there).
    x = device([-1.0, 0.0, 2.0])
    _, dx = ReLU().vjp((), x, device(np.ones(3)))
    np.testing.assert_array_equal(dx, [0.0, 0.0, 1.0])


# --- feature-major twins --------------------------------------------------------------


@DTYPES
@FEW_EXAMPLES
@given(batch=st.integers(0, 6), n_in=sizes, n_out=sizes, seed=seeds)
def test_linear_feature_major_vjp_matches_jax(dtype, batch, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(n_in, n_out, dtype=dtype)
    twin = feature_major_twin(layer)
    assert twin is not None and twin != layer
    params = random_linear_params(rng, n_in, n_out, dtype)
    x_fm = random_input(rng, (n_in, batch), dtype)  # (features, batch)
    dy_fm = device(rng.normal(size=(n_out, batch)), dtype)
    expected, actual = oracle_and_twin(layer)(params, x_fm, dy_fm)
    assert_trees_close(actual, expected, dtype)


def test_activation_feature_major_twin_is_itself():
    # Elementwise: any layout, so the twin is the very same layer (whose vjp is
    # tested above on inputs of every rank).
    for layer in WITH_DEFAULTS.values():
        assert feature_major_twin(layer) == layer
    rng = np.random.default_rng(7)
    x_fm = random_input(rng, (5, 9), jnp.float64)
    expected, actual = oracle_and_twin(Tanh())((), x_fm, device(rng.normal(size=(5, 9))))
    assert_trees_close(actual, expected, jnp.float64)


def test_custom_layer_has_no_feature_major_twin():
    lin = Linear(2, 3)
    custom = Layer(lin.init, lin.apply, lambda params, x, dy: lin.vjp(params, x, 2 * dy))
    assert feature_major_twin(custom) is None


# --- Linear init ----------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [(2,), (10, 2), (-1, 2), (3, 4, 2)])
def test_linear_init_shapes_dtype_and_bounds(input_shape):
    bound = 1 / math.sqrt(2)
    for dtype in (jnp.float32, jnp.float64):
        out_shape, params = Linear(2, 5, dtype=dtype).init(jax.random.key(0), input_shape)
        assert out_shape == input_shape[:-1] + (5,)
        assert params["w"].shape == (2, 5) and params["b"].shape == (5,)
        assert params["w"].dtype == params["b"].dtype == dtype
        for a in (params["w"], params["b"]):
            assert np.all(np.abs(np.asarray(a)) <= bound), a
    # The default dtype is float32, also with jax_enable_x64 on.
    _, params = Linear(2, 5).init(jax.random.key(0), input_shape)
    assert params["w"].dtype == params["b"].dtype == jnp.float32


def test_linear_init_distribution_is_uniform():
    """w, b ~ U[-a, a] with a = 1/sqrt(n_in) = 0.05 for Linear(400, 500).

    For n iid U[-a, a] draws, the sample mean has sd a/sqrt(3n) and the sample
    variance (true value a^2/3) has sd a^2 sqrt(4/45)/sqrt(n). Each check below
    allows 5 sd (false-alarm rate < 1e-6; and the key is fixed anyway), and a
    narrower distribution, a normal, or a 10% wrong scale would all fail.
    """
    n_in, n_out = 400, 500
    a = 1 / math.sqrt(n_in)
    _, params = Linear(n_in, n_out).init(jax.random.key(42), (n_in,))
    w = np.asarray(params["w"], np.float64).ravel()
    b = np.asarray(params["b"], np.float64)
    for sample in (w, b):
        n = sample.size
        assert abs(sample.mean()) < 5 * a / math.sqrt(3 * n)
        assert abs(sample.var() - a * a / 3) < 5 * a * a * math.sqrt(4 / 45) / math.sqrt(n)
    # Fills the whole interval: P(max |w| < 0.999 a) = 0.999**200000 ~ e^-200.
    assert 0.999 * a < np.abs(w).max() <= a and np.abs(b).max() <= a
    # Fourth moment of U[-a, a] is a^4/5 (a normal of the same variance: a^4/3).
    assert abs(np.mean(w**4) / a**4 - 1 / 5) < 0.01


def test_linear_init_overrides():
    calls = []

    def w_init(key, shape, dtype):
        calls.append(("w", key, shape, dtype))
        return jnp.full(shape, 0.5, dtype)

    def b_init(key, shape, dtype):
        calls.append(("b", key, shape, dtype))
        return jnp.arange(shape[0], dtype=dtype)

    out_shape, params = Linear(3, 4, w_init=w_init, b_init=b_init, dtype=jnp.float64).init(
        jax.random.key(0), (7, 3)
    )
    assert out_shape == (7, 4)
    np.testing.assert_array_equal(params["w"], np.full((3, 4), 0.5))
    np.testing.assert_array_equal(params["b"], np.arange(4.0))
    assert params["w"].dtype == jnp.float64 and params["b"].dtype == jnp.float64
    (_, w_key, w_shape, w_dtype), (_, b_key, b_shape, b_dtype) = calls
    assert (w_shape, b_shape) == ((3, 4), (4,)) and w_dtype == b_dtype == jnp.float64
    assert not np.array_equal(jax.random.key_data(w_key), jax.random.key_data(b_key))


def test_linear_init_override_with_jax_initializer():
    layer = Linear(2, 5, w_init=jax.nn.initializers.zeros, b_init=jax.nn.initializers.ones)
    _, params = layer.init(jax.random.key(0), (2,))
    np.testing.assert_array_equal(params["w"], np.zeros((2, 5)))
    np.testing.assert_array_equal(params["b"], np.ones(5))
    # Only the overridden initializer changes: w is the default draw.
    _, default = Linear(2, 5).init(jax.random.key(0), (2,))
    _, b_only = Linear(2, 5, b_init=jax.nn.initializers.ones).init(jax.random.key(0), (2,))
    np.testing.assert_array_equal(b_only["w"], default["w"])
    np.testing.assert_array_equal(b_only["b"], np.ones(5))


# --- extreme inputs -------------------------------------------------------------------

EXTREMES = np.array([-1e4, -100.0, -30.0, -5.0, -0.5, 0.0, 0.5, 5.0, 30.0, 100.0, 1e4])


def sigmoid64(x):  # float64 reference, stable for any x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def dsigmoid64(x):
    e = np.exp(-np.abs(x))
    return e / (1 + e) ** 2


def softplus64(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@pytest.mark.parametrize(
    "layer, f, df",
    [
        (Sigmoid(), sigmoid64, dsigmoid64),
        (Softplus(), softplus64, sigmoid64),
    ],
    ids=["Sigmoid", "Softplus"],
)
def test_sigmoid_and_softplus_extreme_inputs_float32(layer, f, df):
    x = device(EXTREMES, jnp.float32)
    dy = device(np.linspace(0.5, 1.5, EXTREMES.size), jnp.float32)
    y = layer.apply((), x)
    _, dx = layer.vjp((), x, dy)
    assert y.dtype == dx.dtype == jnp.float32
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    # Values to float32 precision. The derivative y (1 - y) loses relative
    # precision where y rounds to 1, so it is held to float32's absolute
    # resolution near 1 (6e-8) there.
    np.testing.assert_allclose(y, f(EXTREMES), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(dx, np.asarray(dy, np.float64) * df(EXTREMES), rtol=1e-5, atol=2e-7)


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0, 3), ValueError, r"Linear: n_in must be >= 1, got 0"),
        ((2, 0), ValueError, r"Linear: n_out must be >= 1, got 0"),
        ((-1, 3), ValueError, r"Linear: n_in must be >= 1, got -1"),
        ((2.5, 3), TypeError, r"Linear: n_in must be an int, got 2.5 \(float\)"),
        ((True, 3), TypeError, r"Linear: n_in must be an int, got True \(bool\)"),
        ((2, "3"), TypeError, r"Linear: n_out must be an int, got '3' \(str\)"),
    ],
)
def test_linear_bad_sizes(args, error, match):
    with pytest.raises(error, match=match):
        Linear(*args)


@pytest.fixture(scope="module")
def linear_2_3():
    layer = Linear(2, 3)
    _, params = layer.init(jax.random.key(0), (5, 2))
    return layer, params


def test_linear_wrong_number_of_features(linear_2_3):
    layer, params = linear_2_3
    x = device(np.ones((5, 4), np.float32))
    match = r"Linear\(n_in=2, n_out=3\): expected input with 2 features on axis -1, got shape \(5, 4\)"
    with pytest.raises(ValueError, match=match):
        layer.apply(params, x)
    with pytest.raises(ValueError, match=match):
        layer.vjp(params, x, device(np.ones((5, 3), np.float32)))
    with pytest.raises(
        ValueError,
        match=r"Linear\(n_in=2, n_out=3\): expected input_shape "
        r"\(\.\.\., 2\), got \(5, 4\)",
    ):
        layer.init(jax.random.key(0), (5, 4))
    twin = feature_major_twin(layer)
    with pytest.raises(
        ValueError,
        match=r"Linear\(n_in=2, n_out=3\): expected input with 2 "
        r"features on axis 0, got shape \(4, 5\)",
    ):
        twin.apply(params, x.T)


def test_linear_rank0_input(linear_2_3):
    layer, params = linear_2_3
    with pytest.raises(ValueError, match=r"Linear\(n_in=2, n_out=3\): expected input .*got shape \(\)"):
        layer.apply(params, jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"Linear\(n_in=2, n_out=3\): expected input_shape .*got \(\)"):
        layer.init(jax.random.key(0), ())


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (lambda p: (p["w"], p["b"]), r"params must be a dict with keys 'w' and 'b'"),
        (lambda p: {"w": p["w"]}, r"params must be a dict with keys 'w' and 'b'"),
        (lambda p: {"W": p["w"], "b": p["b"]}, r"params must be a dict with keys 'w' and 'b'"),
        (lambda p: (), r"params must be a dict with keys 'w' and 'b'"),
        (
            lambda p: {"w": p["w"].T, "b": p["b"]},
            r"params must have w \(2, 3\) and b \(3,\), got w \(3, 2\) and b \(3,\)",
        ),
        (
            lambda p: {"w": p["w"], "b": p["b"][:, None]},
            r"params must have w \(2, 3\) and b \(3,\), got w \(2, 3\) and b \(3, 1\)",
        ),
    ],
    ids=["tuple", "missing-b", "wrong-key", "empty", "w-transposed", "b-2d"],
)
def test_linear_wrong_params(linear_2_3, make_bad, match):
    layer, params = linear_2_3
    bad = make_bad(params)
    x = device(np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(n_in=2, n_out=3\): " + match):
        layer.apply(bad, x)
    with pytest.raises(ValueError, match=r"Linear\(n_in=2, n_out=3\): " + match):
        layer.vjp(bad, x, device(np.ones((5, 3), np.float32)))


@pytest.mark.parametrize("name", ["ReLU", "Sigmoid", "LeakyReLU(0.3)", "Cube"])
@pytest.mark.parametrize("bad", [None, [], {"w": 1.0}, (np.ones(2),)], ids=["None", "list", "dict", "tuple"])
def test_activation_rejects_params(name, bad):
    layer = ACTIVATIONS[name]
    layer_name = {"LeakyReLU(0.3)": r"LeakyReLU\(slope=0.3\)"}.get(name, name)
    match = layer_name + r" has no parameters: params must be \(\), got"
    x = device(np.ones((2, 3)))
    with pytest.raises(ValueError, match=match):
        layer.apply(bad, x)
    with pytest.raises(ValueError, match=match):
        layer.vjp(bad, x, x)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: LeakyReLU("a"), TypeError, r"LeakyReLU: slope must be a float, got 'a' \(str\)"),
        (lambda: LeakyReLU(True), TypeError, r"LeakyReLU: slope must be a float, got True \(bool\)"),
        (lambda: LeakyReLU(float("nan")), ValueError, r"LeakyReLU: slope must be finite, got nan"),
        (lambda: ELU([1.0]), TypeError, r"ELU: alpha must be a float, got \[1.0\] \(list\)"),
        (lambda: ELU(float("inf")), ValueError, r"ELU: alpha must be finite, got inf"),
    ],
)
def test_activation_bad_hyperparameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_activation_init_passes_shape_through():
    for layer in WITH_DEFAULTS.values():
        assert layer.init(jax.random.key(0), [-1, 3, 4]) == ((-1, 3, 4), ())


def test_public_names_are_exported():
    for module, names in (
        (fnnet.layers, ["Layer", "Linear"]),
        (
            fnnet.activations,
            [
                "ReLU",
                "Tanh",
                "Sigmoid",
                "LeakyReLU",
                "ELU",
                "Softplus",
                "Identity",
                "elementwise",
                "Softmax",
                "LogSoftmax",
            ],
        ),
    ):
        for name in names:
            assert name in fnnet.__all__ and getattr(fnnet, name) is getattr(module, name)


def test_no_public_name_hides_a_module():
    """One convention: functions and classes are `fnnet.<name>`, modules are named for their
    subject; `fnnet.X` is never a function for one module and a module for another."""
    import pkgutil
    import types

    modules = {info.name for info in pkgutil.iter_modules(fnnet.__path__)}
    public = [name for name in fnnet.__all__ if not isinstance(getattr(fnnet, name), types.ModuleType)]
    assert not modules & set(public), modules & set(public)
    for name in modules - {"schedules", "data"}:
        assert name not in fnnet.__all__, f"fnnet.{name} is a module in __all__"
    for name in ("fit", "train", "serial", "sweep", "init_many", "train_step", "Residual"):
        assert callable(getattr(fnnet, name)) and name in fnnet.__all__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(w_init="glorot"),
            r"Linear: w_init must be None or a \(key, shape, dtype\) -> array initializer",
        ),
        (dict(b_init=0.0), r"Linear: b_init must be None or a \(key, shape, dtype\)"),
        (dict(dtype=jnp.int32), r"Linear: dtype must be a floating dtype, got int32"),
    ],
    ids=["w_init", "b_init", "dtype"],
)
def test_linear_refuses_bad_initializers_and_dtypes_when_built(kwargs, match):
    with pytest.raises(TypeError, match=match):
        fnnet.Linear(2, 3, **kwargs)
