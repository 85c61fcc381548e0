"""fnnet.check_vjp: passes on every built-in layer and on a user's, and fails, naming the
leaf, on a VJP that is wrong in one place."""

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import (
    ELU,
    BatchNorm,
    Dropout,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Residual,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    check_vjp,
    elementwise,
    serial,
)

KEY = jax.random.key(0)
# One input shape throughout: check_vjp runs eagerly, and each op compiles once per shape.
SHAPE = (5, 3)
Cube = elementwise("Cube", lambda x: x**3, lambda x, y: 3 * x * x)  # a user's layer


@pytest.mark.parametrize(
    "layer, shape, train",
    [
        (Linear(3, 3), SHAPE, False),
        (ReLU(), SHAPE, False),
        (Tanh(), SHAPE, False),
        (Sigmoid(), SHAPE, False),
        (LeakyReLU(0.3), SHAPE, False),
        (ELU(0.5), SHAPE, False),
        (Softplus(), SHAPE, False),
        (Identity(), SHAPE, False),
        (BatchNorm(), SHAPE, True),
        (BatchNorm(), SHAPE, False),
        (LayerNorm(), SHAPE, False),
        (Dropout(0.4), SHAPE, True),
        (Softmax(), SHAPE, False),
        (LogSoftmax(), SHAPE, False),
        (Residual(serial(Linear(3, 3), Tanh())), SHAPE, False),
        (serial(Linear(3, 3), BatchNorm(), Dropout(0.2), ReLU()), SHAPE, True),
        (Cube, SHAPE, False),
    ],
    ids=[
        "Linear",
        "ReLU",
        "Tanh",
        "Sigmoid",
        "LeakyReLU",
        "ELU",
        "Softplus",
        "Identity",
        "BatchNorm-train",
        "BatchNorm-infer",
        "LayerNorm",
        "Dropout-train",
        "Softmax",
        "LogSoftmax",
        "Residual",
        "serial-train",
        "user-Cube",
    ],
)
def test_passes_on_correct_layers(layer, shape, train):
    check_vjp(layer, shape, key=KEY, train=train)


def wrong_in(layer, leaf, factor=2):
    """`layer` with its vjp times `factor` in one leaf: a key of dparams, or "dx"."""

    def vjp(params, x, dy, *, train=False, key=None):
        dparams, dx = layer.vjp(params, x, dy, train=train, key=key)
        if leaf == "dx":
            return dparams, factor * dx
        return {**dparams, leaf: factor * dparams[leaf]}, dx

    return Layer(layer.init, layer.apply, vjp)


@pytest.mark.parametrize("leaf, named", [("w", r"dparams\['w'\]"), ("b", r"dparams\['b'\]"), ("dx", r"dx")])
def test_fails_naming_the_wrong_leaf(leaf, named):
    with pytest.raises(
        AssertionError,
        match=r"check_vjp: " + named + r" differs from finite "
        r"differences in \d+ of \d+ entries; largest error",
    ):
        check_vjp(wrong_in(Linear(3, 3), leaf), SHAPE, key=KEY)


# Gradients far below 1 in each dtype: 1e-4 is below float32's atol, 1e-7 below float64's.
SMALL = [pytest.param(False, 1e-4, id="float32"), pytest.param(True, 1e-7, id="float64")]


@pytest.mark.parametrize("x64, c", SMALL)
def test_a_wrong_vjp_of_small_gradients_is_caught(x64, c):
    zero_vjp = elementwise("Zero", lambda x: c * x, lambda x, y: jnp.zeros_like(x))  # the truth is c
    with (
        jax.enable_x64(x64),
        pytest.raises(AssertionError, match=r"check_vjp: dx differs .*: got -?0, expected"),
    ):
        check_vjp(zero_vjp, (8, 3), key=jax.random.key(1))


@pytest.mark.parametrize("x64, c", SMALL)
def test_small_gradients_pass_when_right(x64, c):
    scaled = elementwise("Scaled", lambda x: c * x, lambda x, y: c * jnp.ones_like(x))
    with jax.enable_x64(x64):
        check_vjp(scaled, (8, 3), key=jax.random.key(2))
        check_vjp(Residual(serial(Linear(3, 3), scaled)), SHAPE, key=jax.random.key(3))


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_a_ten_percent_error_is_caught(x64):
    with jax.enable_x64(x64), pytest.raises(AssertionError, match=r"check_vjp: dparams\['w'\] differs"):
        check_vjp(wrong_in(Linear(3, 3), "w", 1.1), SHAPE, key=jax.random.key(4))


def test_a_zero_gradient_passes_in_float32():
    # Linear's b before a training BatchNorm: the truth is 0, the differences float32 rounding.
    with jax.enable_x64(False):
        check_vjp(serial(Linear(3, 3), BatchNorm()), SHAPE, key=jax.random.key(5), train=True)


def test_fails_naming_the_leaf_inside_a_serial():
    model = serial(Tanh(), wrong_in(Linear(3, 3), "b"))
    with pytest.raises(AssertionError, match=r"dparams\[1\]\['b'\] differs"):
        check_vjp(model, SHAPE, key=KEY)


def test_train_checks_the_training_vjp():
    # BatchNorm's vjp in inference mode whatever it is asked: right in inference only.
    bn = BatchNorm()
    frozen = Layer(bn.init, bn.apply, lambda params, x, dy, *, train=False, key=None: bn.vjp(params, x, dy))
    check_vjp(frozen, SHAPE, key=KEY)
    with pytest.raises(AssertionError, match=r"dparams\['running'\]\['mean'\] differs"):
        check_vjp(frozen, SHAPE, key=KEY, train=True)


def test_train_gives_apply_and_vjp_the_same_key():
    # A Dropout whose vjp draws its mask from another key.
    drop = Dropout(0.5)
    other_key = Layer(
        drop.init,
        drop.apply,
        lambda params, x, dy, *, train=False, key=None: drop.vjp(
            params, x, dy, train=train, key=jax.random.fold_in(key, 1)
        ),
    )
    with pytest.raises(AssertionError, match=r"check_vjp: dx differs"):
        check_vjp(other_key, SHAPE, key=KEY, train=True)


def test_fails_on_a_wrong_structure():
    lin = Linear(3, 3)
    dropped_b = Layer(
        lin.init,
        lin.apply,
        lambda params, x, dy, *, train=False, key=None: (
            {"w": lin.vjp(params, x, dy)[0]["w"]},
            lin.vjp(params, x, dy)[1],
        ),
    )
    with pytest.raises(AssertionError, match=r"check_vjp: vjp returned .* expected \(dparams, dx\)"):
        check_vjp(dropped_b, SHAPE, key=KEY)


def test_fails_on_a_wrong_shape():
    lin = Linear(3, 3)
    summed = Layer(
        lin.init,
        lin.apply,
        lambda params, x, dy, *, train=False, key=None: (
            lin.vjp(params, x, dy)[0],
            jnp.sum(lin.vjp(params, x, dy)[1], axis=0),
        ),
    )
    with pytest.raises(AssertionError, match=r"check_vjp: dx has shape \(3,\), expected \(5, 3\)"):
        check_vjp(summed, SHAPE, key=KEY)


def test_a_non_layer_is_a_type_error():
    with pytest.raises(TypeError, match=r"check_vjp: layer must be a Layer, got the class Tanh"):
        check_vjp(Tanh, SHAPE, key=KEY)
    with pytest.raises(TypeError, match=r"check_vjp: layer must be a Layer, got tuple"):
        check_vjp((Tanh().init, Tanh().apply, Tanh().vjp), SHAPE, key=KEY)


def test_is_exported():
    assert fnnet.check_vjp is check_vjp and "check_vjp" in fnnet.__all__


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match=r"check_vjp: input_shape must be a tuple of ints, got 5"):
        check_vjp(Linear(3, 2), 5, key=KEY)
    with pytest.raises(
        TypeError, match=r"check_vjp: key must be a PRNG key such as jax\.random\.key\(0\), got 0"
    ):
        check_vjp(Linear(3, 2), (5, 3), key=0)
