"""fnnet.check_vjp: passes on every built-in layer and on a user's, and fails, naming the
leaf, on a VJP that is wrong in one place."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import (
    ELU,
    AvgPool2D,
    Conv2D,
    ConvTranspose2D,
    Flatten,
    MaxPool2D,
    Sequential,
    Upsample2D,
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
    "layer, train",
    [(serial(Linear(3, 3), BatchNorm(), Dropout(0.2), ReLU()), True), (Cube, None)],
    ids=["serial-train", "user-Cube"],
)
def test_passes_on_correct_layers(layer, train):
    check_vjp(layer, SHAPE, key=KEY, train=train)


def wrong_in(layer, leaf, factor=2):
    """`layer` with its vjp times `factor` in one leaf: a key of dparams, or "dx"."""
    return made_wrong(layer, leaf if leaf == "dx" else (leaf,), lambda a, x, train: factor * a)


@pytest.mark.parametrize("leaf, named", [("w", r"dparams\['w'\]"), ("b", r"dparams\['b'\]"), ("dx", r"dx")])
def test_fails_naming_the_wrong_leaf(leaf, named):
    with pytest.raises(
        AssertionError,
        match=r"check_vjp: " + named + r" differs from finite "
        r"differences in \d+ of \d+ entries \(inference mode, x of standard deviation 1\); largest error",
    ):
        check_vjp(wrong_in(Linear(3, 3), leaf), SHAPE, key=KEY)


# Gradients far below 1, in float32 params and float64: the check runs in float64 whatever they are.
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
def test_a_one_percent_error_is_caught(x64):
    with jax.enable_x64(x64), pytest.raises(AssertionError, match=r"check_vjp: dparams\['w'\] differs"):
        check_vjp(wrong_in(Linear(3, 3), "w", 1.01), SHAPE, key=jax.random.key(4))


def test_a_zero_gradient_passes_in_float32():
    # Linear's b before a training BatchNorm: the truth is 0, the differences rounding.
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
    check_vjp(frozen, SHAPE, key=KEY, train=False)
    with pytest.raises(AssertionError, match=r"dparams\['running'\]\['mean'\] differs .*\(training mode"):
        check_vjp(frozen, SHAPE, key=KEY, train=True)
    with pytest.raises(AssertionError, match=r"dparams\['running'\]\['mean'\] differs .*\(training mode"):
        check_vjp(frozen, SHAPE, key=KEY)  # both modes, by default


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
    with pytest.raises(TypeError, match=r"check_vjp: input_shape must be a tuple of ints, .*got 5 \(int\)"):
        check_vjp(Linear(3, 2), 5, key=KEY)
    with pytest.raises(
        TypeError, match=r"check_vjp: key must be a PRNG key such as jax\.random\.key\(0\), got 0"
    ):
        check_vjp(Linear(3, 2), (5, 3), key=0)


# Every built-in layer, at a shape small enough to difference entry by entry, and the leaf
# of its params a wrong vjp is put into (besides dx).
BUILT_INS = {
    "Linear": (Linear(3, 4), SHAPE, ("w",)),
    "ReLU": (ReLU(), SHAPE, None),
    "Tanh": (Tanh(), SHAPE, None),
    "Sigmoid": (Sigmoid(), SHAPE, None),
    "LeakyReLU": (LeakyReLU(0.3), SHAPE, None),
    "ELU": (ELU(0.5), SHAPE, None),
    "Softplus": (Softplus(), SHAPE, None),
    "Identity": (Identity(), SHAPE, None),
    "Softmax": (Softmax(), SHAPE, None),
    "LogSoftmax": (LogSoftmax(), SHAPE, None),
    "BatchNorm": (BatchNorm(), SHAPE, ("scale",)),
    "LayerNorm": (LayerNorm(), SHAPE, ("scale",)),
    "Dropout": (Dropout(0.4), SHAPE, None),
    "Conv2D": (Conv2D(2, 3, 3), (2, 5, 5, 2), ("w",)),
    "ConvTranspose2D": (ConvTranspose2D(2, 3, 3), (2, 4, 4, 2), ("w",)),
    "Upsample2D": (Upsample2D(2), (2, 3, 3, 2), None),
    "MaxPool2D": (MaxPool2D(2), (2, 4, 4, 2), None),
    "AvgPool2D": (AvgPool2D(2), (2, 4, 4, 2), None),
    "Flatten": (Flatten(), (2, 3, 3, 2), None),
    # The model check_vjp's float32 differences rejected for 10 of 10 keys.
    "Sequential": (
        Sequential(Linear(13, 16), ReLU(), Linear(16, 16), ReLU(), Linear(16, 3)),
        (8, 13),
        (0, "w"),
    ),
    "Residual": (Residual(Sequential(Linear(3, 3), Tanh())), SHAPE, (0, "w")),
}


def test_every_built_in_layer_is_checked():
    kinds = {name for name in fnnet.__all__ if isinstance(getattr(fnnet, name), type)}
    layers = {name for name in kinds if issubclass(getattr(fnnet, name), Layer)}
    assert layers - {"Layer", "FunctionLayer", "Elementwise", "serial"} == set(
        BUILT_INS
    )  # serial: Sequential


def test_no_false_failures_on_relu_images():
    # ReLU on (2, 5, 5, 4) failed for 4 of 5 keys in float32's differences.
    with jax.enable_x64(False):
        for seed in range(20):
            check_vjp(ReLU(), (2, 5, 5, 4), key=jax.random.key(seed))


FAR = 5.0  # "far from 0": never in a standard normal draw of this size, often at the scale 10


def _transposed(a):
    return a.T.reshape(a.shape) if a.ndim > 1 else a[::-1]


def _one_entry(a):
    return a.reshape(-1).at[0].add(0.01 * jnp.max(jnp.abs(a))).reshape(a.shape)


# How a wrong vjp goes wrong: `(leaf, x, train) -> wrong leaf`.
WRONG = {
    "times 1.01": lambda a, x, train: 1.01 * a,
    "times 2": lambda a, x, train: 2 * a,
    "one entry 1% off": lambda a, x, train: _one_entry(a),
    "transposed": lambda a, x, train: _transposed(a),
    "1% off only in training": lambda a, x, train: 1.01 * a if train else a,
    "1% off only for batch > 1": lambda a, x, train: 1.01 * a if x.shape[0] > 1 else a,
    "1% off only far from 0": lambda a, x, train: (
        a * jnp.where(jnp.abs(x) > FAR, 1.01, 1.0)
        if a.shape == x.shape
        else a * jnp.where(jnp.max(jnp.abs(x)) > FAR, 1.01, 1.0)
    ),
}


def made_wrong(layer, leaf, how):
    """`layer` with `how` (a name in WRONG, or a `(leaf, x, train) -> wrong leaf`) done to
    one leaf of its vjp: "dx" or a path into dparams."""
    change = WRONG[how] if isinstance(how, str) else how

    def vjp(params, x, dy, *, train=False, key=None):
        dparams, dx = layer.vjp(params, x, dy, train=train, key=key)
        if leaf == "dx":
            return dparams, change(dx, x, train)
        inner = functools.reduce(lambda tree, k: tree[k], leaf[:-1], dparams)
        wrong = {**inner, leaf[-1]: change(inner[leaf[-1]], x, train)}
        if leaf[:-1]:  # a list or tuple of layers' dparams, one level down
            return type(dparams)(wrong if i == leaf[0] else d for i, d in enumerate(dparams)), dx
        return wrong, dx

    return Layer(layer.init, layer.apply, vjp)


def caught(layer, shape):
    """Whether check_vjp finds `layer`'s vjp wrong (and says so, not something else)."""
    try:
        check_vjp(layer, shape, key=jax.random.key(7))
    except AssertionError as error:
        return re.match(r"check_vjp: (dx|dparams\S*) differs from finite differences", str(error)) is not None
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_INS)
def test_no_false_failures_and_every_wrong_vjp_caught(name):
    """12 keys in float32 and in float64 params, both modes and every scale: no failure;
    then each way a vjp goes wrong, in dx and in a leaf of dparams: each caught. One test
    per layer: its differences compile once."""
    layer, shape, param = BUILT_INS[name]
    for x64 in (False, True):
        with jax.enable_x64(x64):
            for seed in range(12):
                check_vjp(layer, shape, key=jax.random.key(seed))
    leaves = ["dx"] + ([param] if param else [])
    missed = [
        (leaf, how) for leaf in leaves for how in WRONG if not caught(made_wrong(layer, leaf, how), shape)
    ]
    assert missed == []


@dataclasses.dataclass(frozen=True)
class Shifted(Layer):
    """A user's layer that runs `inner` on x + offset: outputs and gradients far from 0."""

    inner: Layer
    offset: float

    def init(self, key, input_shape):
        return self.inner.init(key, input_shape)

    def apply(self, params, x, *, train=False, key=None):
        return self.inner.apply(params, x + self.offset, train=train, key=key)

    def vjp(self, params, x, dy, *, train=False, key=None):
        return self.inner.vjp(params, x + self.offset, dy, train=train, key=key)


# (inner layer, x's shape, offset): large batches, inputs far from 0, and both.
SIZES = [
    (Linear(2, 4), (1024, 2), 0.0),
    (BatchNorm(), (1024, 1), 0.0),
    (LayerNorm(), (256, 2), 1000.0),
    (Softplus(), (256, 2), 1000.0),
] + [(inner, (5, 2), 1000.0) for inner in (Linear(2, 4), BatchNorm(), LayerNorm(), Softplus())]


@pytest.mark.slow
@pytest.mark.parametrize("inner, shape, offset", SIZES, ids=[f"{i!r}-{s[0]}-{o:g}" for i, s, o in SIZES])
def test_a_one_percent_error_is_caught_at_any_batch_size_and_offset(inner, shape, offset):
    layer, options = Shifted(inner, offset), dict(key=KEY, train=False, input_scales=(1.0,))
    check_vjp(layer, shape, **options)
    with pytest.raises(AssertionError, match=r"check_vjp: dx differs"):
        check_vjp(made_wrong(layer, "dx", "times 1.01"), shape, **options)


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        (
            dict(rtol="1e-3"),
            TypeError,
            r"check_vjp: rtol must be a number >= 0, such as 1e-4, got '1e-3' \(str\)",
        ),
        (dict(atol=-1e-7), ValueError, r"check_vjp: atol must be a finite number >= 0, got -1e-07"),
        (dict(rtol=float("nan")), ValueError, r"check_vjp: rtol must be a finite number >= 0, got nan"),
        (dict(atol=True), TypeError, r"check_vjp: atol must be a number >= 0"),
        (dict(input_scales=10.0), TypeError, r"check_vjp: input_scales must be a non-empty tuple of numbers"),
        (dict(input_scales=()), TypeError, r"check_vjp: input_scales must be a non-empty tuple of numbers"),
        (
            dict(input_scales=(1.0, 0.0)),
            ValueError,
            r"check_vjp: input_scales must be finite and > 0, got \(1.0, 0.0\)",
        ),
        (dict(train="yes"), TypeError, r"check_vjp: train must be True, False or None \(both\), got 'yes'"),
        (
            dict(input_shape=(-1, 3)),
            ValueError,
            r"check_vjp: input_shape must hold sizes >= 1 .*, got \(-1, 3\)",
        ),
        (
            dict(input_shape=(0, 3)),
            ValueError,
            r"check_vjp: input_shape must hold sizes >= 1 .*, got \(0, 3\)",
        ),
    ],
)
def test_bad_tolerances_and_options_are_named(arguments, error, match):
    arguments = {"input_shape": SHAPE, **arguments}
    with pytest.raises(error, match=match):
        check_vjp(Linear(3, 2), key=KEY, **arguments)


def test_a_layer_that_overflows_says_which_scale():
    Exp = elementwise("Exp", jnp.exp, lambda x, y: y)  # right, but inf at x of 1000
    check_vjp(Exp, SHAPE, key=KEY, input_scales=(1.0, 10.0))
    with pytest.raises(
        ValueError, match=r"not finite at the point drawn \(inference mode, x of standard deviation 1000\)"
    ):
        check_vjp(Exp, SHAPE, key=KEY)


def test_kinks_in_every_draw_leave_the_rest_checked():
    # x of size 3e-5: ReLU's kink lies within the steps (1e-5, 2e-5) of half the entries.
    check_vjp(ReLU(), (8, 3), key=KEY, input_scales=(3e-5,))
    with pytest.raises(AssertionError, match=r"check_vjp: dx differs"):
        check_vjp(made_wrong(ReLU(), "dx", "times 1.01"), (8, 3), key=KEY, input_scales=(3e-5,))


def test_the_check_runs_in_float64_and_leaves_the_setting_alone():
    with jax.enable_x64(False):
        check_vjp(Linear(3, 2), SHAPE, key=KEY)
        assert not jax.config.read("jax_enable_x64")


def test_a_broken_contract_is_named():
    def init(key, input_shape):
        return {}  # params alone

    def apply(params, x, *, train=False, key=None):
        return x

    def pair(params, x, *, train=False, key=None):
        return x, x

    def vjp(params, x, dy, *, train=False, key=None):
        return {}, dy

    with pytest.raises(TypeError, match=r"init must return \(output_shape, params\), got \{\} \(dict\)"):
        check_vjp(Layer(init, apply, vjp), SHAPE, key=KEY)
    with pytest.raises(TypeError, match=r"apply must return an array, got .*\(tuple\)"):
        check_vjp(Layer(Identity().init, pair, vjp), SHAPE, key=KEY)


def test_a_sum_of_saturated_terms_near_zero_passes():
    # Tanh saturated at inputs of 1000: each pooled output sums +-1s to ~1e-13, whose slope
    # (~1e-13) lies below the output's resolution; the vjp computes it, the differences see 0.
    check_vjp(Sequential(Conv2D(2, 2, 3), Tanh(), AvgPool2D(2)), (2, 4, 4, 2), key=jax.random.key(2))


def test_a_layer_that_casts_inside_or_returns_another_structure_is_named():
    tanh = Tanh()

    def cast(params, x, *, train=False, key=None):
        return jnp.tanh(x.astype(jnp.float32))

    def none_for_empty(params, x, dy, *, train=False, key=None):
        return None, tanh.vjp(params, x, dy)[1]

    with pytest.raises(TypeError, match=r"apply returned float32 for float64 params and x; .* \(no cast"):
        check_vjp(Layer(tanh.init, cast, tanh.vjp), SHAPE, key=KEY)
    with pytest.raises(AssertionError, match=r"vjp returned PyTreeDef\(\(None, \*\)\), expected"):
        check_vjp(Layer(tanh.init, tanh.apply, none_for_empty), SHAPE, key=KEY)


def test_an_integer_or_bool_cotangent_is_compared_by_its_values():
    # A ReLU whose vjp forgot dy: `x > 0`, a bool array, is no gradient of a float x.
    def forgot_dy(params, x, dy, *, train=False, key=None):
        return (), x > 0

    with pytest.raises(AssertionError, match=r"check_vjp: dx differs from finite differences"):
        check_vjp(Layer(ReLU().init, ReLU().apply, forgot_dy), SHAPE, key=KEY)
