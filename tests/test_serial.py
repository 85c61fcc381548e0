"""serial: composed VJPs against jax.vjp, shape threading at init, errors, sharing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet._layout import _twin as feature_major_twin
from fnnet import ELU, Identity, LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Softplus, Tanh, serial
from helpers import assert_trees_close, device
from layer_oracle import DTYPES, assert_vjp_matches_jax, oracle_and_hand

ACTIVATIONS = [ReLU(), Tanh(), Sigmoid(), ELU(0.5), LeakyReLU(0.3), Softplus(), Identity()]


def init_without_compiling(model, input_shape):
    """`model.init`'s output shape and its params' shapes and dtypes, by tracing only."""
    found = {}

    def init(key):
        found["out_shape"], params = model.init(key, input_shape)
        return params

    param_structs = jax.eval_shape(init, jax.random.key(0))
    return found["out_shape"], param_structs


def random_params(rng, param_structs):
    """Random normal params with the given shapes and dtypes, scaled like an init."""

    def draw(s):
        scale = 1 / np.sqrt(s.shape[0]) if len(s.shape) == 2 else 0.5
        return device(scale * rng.normal(size=s.shape), s.dtype)

    return jax.tree.map(draw, param_structs)


@st.composite
def models(draw, dtype):
    """A random serial of Linear layers in `dtype`, each maybe followed by an activation."""
    widths = draw(st.lists(st.integers(1, 8), min_size=2, max_size=5))
    layers = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers.append(Linear(n_in, n_out, dtype=dtype))
        activation = draw(st.sampled_from([None] + ACTIVATIONS))
        if activation is not None:
            layers.append(activation)
    return serial(*layers), widths


@DTYPES
@settings(max_examples=8, deadline=None)  # per dtype; each example compiles a new model
@given(
    data=st.data(),
    batch_shape=st.lists(st.integers(1, 4), max_size=2).map(tuple) | st.just((0,)),
    seed=st.integers(0, 2**32 - 1),
)
def test_serial_vjp_matches_jax(dtype, data, batch_shape, seed):
    model, widths = data.draw(models(dtype), label="model")
    rng = np.random.default_rng(seed)
    input_shape = batch_shape + (widths[0],)
    out_shape, param_structs = init_without_compiling(model, input_shape)
    assert out_shape == batch_shape + (widths[-1],)
    params = random_params(rng, param_structs)
    x = device(rng.normal(size=input_shape), dtype)
    dy = device(rng.normal(size=out_shape), dtype)
    _, actual = assert_vjp_matches_jax(model, params, x, dy)
    assert actual[0].shape == out_shape  # init predicted apply's output shape


@pytest.mark.parametrize("input_shape", [(2,), (7, 2), (-1, 2), (3, 4, 2), (-1, 5, 2)])
def test_init_shape_matches_apply(input_shape):
    model = serial(Linear(2, 6), Tanh(), Linear(6, 3), ReLU(), Linear(3, 4))
    out_shape, param_structs = init_without_compiling(model, input_shape)
    concrete = tuple(7 if n == -1 else n for n in input_shape)
    y = jax.eval_shape(model.apply, param_structs, jax.ShapeDtypeStruct(concrete, jnp.float32))
    assert out_shape == input_shape[:-1] + (4,)
    assert y.shape == tuple(7 if n == -1 else n for n in out_shape)
    # ... and the structure: one entry per layer, () for activations.
    assert jax.tree.structure(param_structs) == jax.tree.structure(
        ({"w": 0, "b": 0}, (), {"w": 0, "b": 0}, (), {"w": 0, "b": 0})
    )
    assert param_structs[2]["w"].shape == (6, 3) and param_structs[4]["b"].shape == (4,)


@pytest.fixture(scope="module")
def model_and_params():
    model = serial(Linear(2, 3), ReLU(), Linear(3, 1))
    _, params = model.init(jax.random.key(0), (2,))
    return model, params


def test_init_really_runs(model_and_params):
    model, params = model_and_params
    assert model.init(jax.random.key(0), (-1, 2))[0] == (-1, 1)
    assert params[0]["w"].shape == (2, 3) and params[1] == () and params[2]["b"].shape == (1,)
    assert params[0]["w"].dtype == jnp.float32
    y = model.apply(params, device(np.ones((5, 2), np.float32)))
    assert y.shape == (5, 1) and y.dtype == jnp.float32


def test_nested_serial():
    l1, l2 = Linear(3, 5, dtype=jnp.float64), Linear(5, 2, dtype=jnp.float64)
    nested = serial(serial(l1, ReLU()), l2, serial(Tanh()))
    flat = serial(l1, ReLU(), l2, Tanh())
    rng = np.random.default_rng(0)
    out_shape, structs = init_without_compiling(nested, (4, 3))
    assert out_shape == (4, 2)
    assert jax.tree.structure(structs) == jax.tree.structure(
        (({"w": 0, "b": 0}, ()), {"w": 0, "b": 0}, ((),))
    )
    params = random_params(rng, structs)
    flat_params = (params[0][0], (), params[1], ())
    x, dy = device(rng.normal(size=(4, 3))), device(rng.normal(size=(4, 2)))
    expected, actual = oracle_and_hand(nested)(params, x, dy)
    assert_trees_close(actual, expected, np.float64)
    # The same function as the flat serial, gradients regrouped.
    y, (dparams, dx) = actual
    _, (flat_y, (flat_dparams, flat_dx)) = oracle_and_hand(flat)(flat_params, x, dy)
    assert_trees_close((y, dx), (flat_y, flat_dx), np.float64)
    assert_trees_close((dparams[0][0], dparams[1]), (flat_dparams[0], flat_dparams[2]), np.float64)


def test_feature_major_twin_of_serial():
    model = serial(Linear(3, 5, dtype=jnp.float64), Sigmoid(), serial(Linear(5, 2, dtype=jnp.float64)))
    twin = feature_major_twin(model)
    assert twin is not None and twin != model
    rng = np.random.default_rng(1)
    params = random_params(rng, init_without_compiling(model, (3,))[1])
    x_fm, dy_fm = device(rng.normal(size=(3, 6))), device(rng.normal(size=(2, 6)))

    @jax.jit
    def both(params, x_fm, dy_fm):  # the batch-major model, transposed, is the oracle
        y, pullback = jax.vjp(lambda p, x: model.apply(p, x.T).T, params, x_fm)
        return (y, pullback(dy_fm)), (twin.apply(params, x_fm), twin.vjp(params, x_fm, dy_fm))

    expected, actual = both(params, x_fm, dy_fm)
    assert_trees_close(actual, expected, np.float64)


def test_keys_split_per_layer():
    model = serial(Linear(3, 3), Linear(3, 3), serial(Linear(3, 3)))
    _, params = model.init(jax.random.key(0), (3,))
    ws = [np.asarray(params[0]["w"]), np.asarray(params[1]["w"]), np.asarray(params[2][0]["w"])]
    for i in range(3):
        for j in range(i):
            assert not np.allclose(ws[i], ws[j]), (i, j)
    # Deterministic in the key, and a different key gives different params.
    _, again = model.init(jax.random.key(0), (3,))
    _, other = model.init(jax.random.key(1), (3,))
    np.testing.assert_array_equal(again[0]["w"], ws[0])
    assert not np.allclose(other[0]["w"], ws[0])


def test_sequential_is_serial():
    assert Sequential is serial
    assert fnnet.Sequential is fnnet.serial is serial


# --- errors -----------------------------------------------------------------------------


def test_size_mismatch_fails_at_init_naming_the_layer():
    model = serial(Linear(2, 25), Linear(30, 1))
    with pytest.raises(
        ValueError,
        match=r"serial layer 1: Linear\(n_in=30, n_out=1\): expected "
        r"input_shape \(\.\.\., 30\), got \(10, 25\)",
    ):
        model.init(jax.random.key(0), (10, 2))


def test_nested_mismatch_names_both_positions():
    model = serial(ReLU(), serial(Linear(2, 4), Linear(5, 1)))
    with pytest.raises(ValueError, match=r"serial layer 1: serial layer 1: Linear\(n_in=5, n_out=1\)"):
        model.init(jax.random.key(0), (2,))


def test_wrong_input_names_the_layer(model_and_params):
    model, params = model_and_params
    x = device(np.ones((4, 5), np.float32))
    match = r"serial layer 0: Linear\(n_in=2, n_out=3\): expected input with 2 features"
    with pytest.raises(ValueError, match=match):
        model.apply(params, x)
    with pytest.raises(ValueError, match=match):
        model.vjp(params, x, device(np.ones((4, 1), np.float32)))


@pytest.mark.parametrize(
    "make_bad, got",
    [
        (lambda p: p[:2], r"tuple of length 2"),
        (lambda p: p + ((),), r"tuple of length 4"),
        (lambda p: {"layers": p}, r"PyTreeDef"),
        (lambda p: p[0], r"PyTreeDef"),
        (lambda p: None, r"PyTreeDef"),
    ],
    ids=["short", "long", "dict", "one-layer-params", "None"],
)
def test_wrong_params(model_and_params, make_bad, got):
    model, params = model_and_params
    bad = make_bad(params)
    x = device(np.ones((4, 2), np.float32))
    match = r"serial of 3 layers: params must be a tuple of 3 entries \(one per layer\), got " + got
    with pytest.raises(ValueError, match=match):
        model.apply(bad, x)
    with pytest.raises(ValueError, match=match):
        model.vjp(bad, x, device(np.ones((4, 1), np.float32)))


def test_wrong_params_inside_names_the_layer(model_and_params):
    model, params = model_and_params
    bad = (params[0], {"w": 1.0}, params[2])
    with pytest.raises(ValueError, match=r"serial layer 1: ReLU has no parameters"):
        model.apply(bad, device(np.ones((4, 2), np.float32)))


def test_serial_needs_a_layer():
    with pytest.raises(ValueError, match=r"serial needs at least one layer, got none"):
        serial()


def test_serial_of_an_uncalled_constructor():
    with pytest.raises(
        TypeError,
        match=r"serial: argument 1 must be a Layer, got the class ReLU "
        r"\(did you forget to call the constructor, e\.g\. ReLU\(\)\?\)",
    ):
        serial(Linear(2, 3), ReLU)


def test_serial_of_a_non_layer():
    with pytest.raises(TypeError, match=r"serial: argument 0 must be a Layer, got 3 \(int\)$"):
        serial(3)
    with pytest.raises(TypeError, match=r"argument 0 must be a Layer, got tuple$"):
        serial((Linear(2, 3).init, Linear(2, 3).apply))  # a plain tuple is not a Layer


# Every built-in layer (and serial, Residual): `init(key, input_shape)` checks both before any
# work, naming the layer, what it expected and what came.
INIT_LAYERS = {
    "Linear": (Linear(2, 3), r"Linear\(n_in=2, n_out=3\)\.init"),
    **{
        type_name: (layer, rf"{type_name}(\(.*\))?\.init")
        for type_name, layer in [
            ("ReLU", ReLU()),
            ("Tanh", Tanh()),
            ("Sigmoid", Sigmoid()),
            ("ELU", ELU(0.5)),
            ("LeakyReLU", LeakyReLU(0.3)),
            ("Softplus", Softplus()),
            ("Identity", Identity()),
            ("Softmax", fnnet.Softmax()),
            ("LogSoftmax", fnnet.LogSoftmax()),
        ]
    },
    "Dropout": (fnnet.Dropout(0.1), r"Dropout\(rate=0\.1\)\.init"),
    "BatchNorm": (fnnet.BatchNorm(), r"BatchNorm\(.*\)\.init"),
    "LayerNorm": (fnnet.LayerNorm(), r"LayerNorm\(.*\)\.init"),
    "serial": (serial(Linear(2, 3), ReLU()), r"serial\.init"),
    "Residual": (fnnet.Residual(ReLU()), r"Residual\.init"),
}


@pytest.mark.parametrize("name", INIT_LAYERS)
@pytest.mark.parametrize(
    "key, error, got",
    [
        (0, TypeError, r"must be a PRNG key such as jax\.random\.key\(0\), got 0 \(int\)"),
        (1.5, TypeError, r"must be a PRNG key such as jax\.random\.key\(0\), got 1\.5 \(float\)"),
        (np.zeros(2, np.float32), TypeError, r"must be a PRNG key .*got an array of dtype float32"),
        (
            jax.random.split(jax.random.key(0), 3),
            ValueError,
            r"must be one PRNG key, got an array of 3 keys \(shape \(3,\)\); .*init_many",
        ),
        (
            jax.random.split(jax.random.PRNGKey(0), 3),
            ValueError,
            r"must be one PRNG key, got an array of 3 raw keys",
        ),
    ],
    ids=["int", "float", "float-array", "split-keys", "split-raw-keys"],
)
def test_init_refuses_what_is_not_one_key(name, key, error, got):
    layer, owner = INIT_LAYERS[name]
    with pytest.raises(error, match=owner + r": key " + got):
        layer.init(key, (4, 2))


@pytest.mark.parametrize("name", INIT_LAYERS)
@pytest.mark.parametrize(
    "input_shape, error, got",
    [
        (2, TypeError, r"must be a tuple of ints, such as x\.shape or \(batch, features\), got 2 \(int\)"),
        ("4, 2", TypeError, r"must be a tuple of ints.*got '4, 2' \(str\)"),
        ((4.0, 2), TypeError, r"must be a tuple of ints.*got \(4\.0, 2\) \(tuple\)"),
        ((-3, 2), ValueError, r"must hold sizes >= 0 \(or -1 for a size not known yet\), got \(-3, 2\)"),
    ],
    ids=["int", "str", "float-size", "negative"],
)
def test_init_refuses_what_is_not_a_shape(name, input_shape, error, got):
    layer, owner = INIT_LAYERS[name]
    with pytest.raises(error, match=owner + r": input_shape " + got):
        layer.init(jax.random.key(0), input_shape)


def test_init_takes_raw_keys_and_unknown_sizes():
    model = serial(Linear(2, 3), ReLU())
    out_shape, params = init_without_compiling(model, (-1, 2))
    assert out_shape == (-1, 3)
    raw = jax.eval_shape(lambda key: model.init(key, [5, 2])[1], jax.random.PRNGKey(0))
    assert jax.tree.map(lambda a: a.shape, raw) == jax.tree.map(lambda a: a.shape, params)


# --- shared constructors ----------------------------------------------------------------


def test_same_arguments_give_equal_layers():
    def same(a, b):
        return a == b and hash(a) == hash(b)

    assert same(Linear(2, 3), Linear(2, 3))
    assert same(Linear(2, 3, dtype=jnp.float64), Linear(2, 3, dtype=jnp.float64))
    assert same(ReLU(), ReLU()) and same(Tanh(), Tanh()) and same(LeakyReLU(0.3), LeakyReLU(0.3))
    assert same(serial(Linear(2, 3), ReLU()), serial(Linear(2, 3), ReLU()))
    assert fnnet.LossBCE() == fnnet.LossBCE() and fnnet.LossMSE() == fnnet.LossMSE()
    # ... and different arguments give different layers.
    assert Linear(2, 3) != Linear(3, 2)
    assert LeakyReLU(0.3) != LeakyReLU(0.2)
    assert serial(Linear(2, 3), ReLU()) != serial(Linear(2, 3), Tanh())
    # The params' dtype is init's business: the layers compute the same function.
    assert Linear(2, 3) == Linear(2, 3, dtype=jnp.float64)
    assert (
        Linear(2, 3).init(jax.random.key(0), (2,))[1]["w"].dtype
        != Linear(2, 3, dtype=jnp.float64).init(jax.random.key(0), (2,))[1]["w"].dtype
    )


def test_unhashable_initializers_still_give_equal_layers():
    # jax.nn.initializers make a new closure per call: not comparable by value, and
    # only init uses them, so the layers (and the programs compiled for them) are equal.
    def build():
        return serial(Linear(2, 3, w_init=jax.nn.initializers.glorot_normal()), ReLU())

    a, b = build(), build()
    assert a == b and hash(a) == hash(b)
    assert a.layers[0].w_init is not b.layers[0].w_init  # each keeps its own initializer
    _, params = a.init(jax.random.key(0), (5, 2))
    assert params[0]["w"].shape == (2, 3)


def test_rebuilt_model_hits_the_jit_cache():
    traces = []
    counting = fnnet.elementwise(
        "Counting", lambda x: traces.append(x.shape) or x, lambda x, y: jnp.ones_like(x)
    )

    def build():
        return serial(Linear(2, 3), counting, ReLU())

    # The model a static argument: jit caches its program by the model's value.
    apply = jax.jit(lambda model, params, x: model.apply(params, x), static_argnums=0)
    x = device(np.ones((4, 2), np.float32))
    params = build().init(jax.random.key(0), (2,))[1]
    apply(build(), params, x)
    apply(build(), params, x)  # a rebuilt model: an equal value, no new trace
    assert traces == [(4, 3)]
    apply(build(), params, device(np.ones((5, 2), np.float32)))  # a new shape does trace
    assert traces == [(4, 3), (5, 3)]
