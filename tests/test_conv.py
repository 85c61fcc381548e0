"""Convolution-family layers: every hand-derived VJP against JAX's autodiff (the oracle).

float64 is held to rtol 1e-10, float32 to rtol 1e-5; the absolute tolerance is scaled
by each leaf's largest entry, since the weight gradients are sums of up to a few
hundred products. Each layer configuration compiles one program (most of this file's
run time), so shapes stay small; output shapes are checked by tracing only, over many
more configurations.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_vjp

from fnnet import Linear, ReLU, serial
from fnnet import AvgPool2D, Conv2D, ConvTranspose2D, Flatten, MaxPool2D, Upsample2D
from fnnet import conv as conv_module
from helpers import HALF_DTYPES, XLA_DEFAULT, assert_half_matches_float32, assert_trees_close, device
from layer_oracle import DTYPES, assert_vjp_matches_jax, hand_vjp, oracle_and_hand

F64, F32 = jnp.float64, jnp.float32


def random_like(rng, structs, dtype):
    return jax.tree.map(lambda s: device(rng.normal(size=s.shape), dtype), structs)


def shapes_of(layer, input_shape):
    """`init`'s output shape and its params' shapes, by tracing only."""
    found = {}

    def init(key):
        found["out_shape"], params = layer.init(key, input_shape)
        return params

    return found, jax.eval_shape(init, jax.random.key(0))


def random_case(layer, input_shape, dtype, seed=0):
    """Random normal params, x and dy of the layer's shapes, and init's output shape."""
    rng = np.random.default_rng(seed)
    found, param_structs = shapes_of(layer, input_shape)
    params = random_like(rng, param_structs, dtype)
    x = device(rng.normal(size=input_shape), dtype)
    dy = device(rng.normal(size=found["out_shape"]), dtype)
    return params, x, dy, found["out_shape"]


def assert_random_vjp_matches_jax(layer, input_shape, dtype, seed=0):
    """The oracle at a random point of the layer's shapes, and init's output shape the real one."""
    params, x, dy, out_shape = random_case(layer, input_shape, dtype, seed)
    expected, _ = assert_vjp_matches_jax(layer, params, x, dy, scaled=True)
    assert expected[0].shape == out_shape


ALL_NAMES = ["Conv2D", "ConvTranspose2D", "Upsample2D", "MaxPool2D", "AvgPool2D", "Flatten"]


# --- VJPs against jax.vjp -------------------------------------------------------------

# (c_in, c_out, kernel_size, stride, padding, (h, w)), each in float64 and float32
CONV_CASES = [
    (3, 4, 3, 1, "SAME", (7, 5)),
    (2, 3, 3, 2, "SAME", (9, 9)),
    (2, 3, 5, 3, "SAME", (7, 5)),
    (3, 2, 2, 3, "SAME", (5, 7)),  # kernel < stride: pixels no window reads
    (2, 2, 5, 1, "SAME", (9, 9)),
    (1, 3, 2, 2, "VALID", (7, 5)),  # the forward drops the last row
    (2, 1, 3, 3, "VALID", (9, 8)),
    (3, 2, 1, 1, "VALID", (4, 6)),
    (2, 3, 3, 2, 1, (7, 5)),
    (1, 2, 3, 3, 3, (5, 5)),  # more zeros than kernel - 1: border outputs are b only
    (2, 3, (1, 3), (2, 1), 2, (7, 5)),  # non-square kernel and stride
    (9, 2, 3, 2, "SAME", (5, 5)),
    (2, 17, (3, 2), 1, "VALID", (5, 4)),
]
CONV_T_CASES = [
    (2, 3, 3, 2, "SAME", (4, 3)),
    (3, 2, 4, 2, "SAME", (3, 3)),
    (2, 3, 2, 3, "SAME", (3, 4)),  # kernel < stride: zero rows at the end
    (2, 3, 1, 1, "SAME", (5, 5)),
    (2, 3, 3, 2, "VALID", (4, 3)),
    (1, 2, 5, 1, "VALID", (3, 2)),
    (2, 2, (2, 3), (3, 1), "VALID", (3, 4)),
    (17, 2, 3, 2, "SAME", (3, 3)),
]
POOL_CASES = [  # (window, stride, (h, w))
    (2, None, (7, 8)),
    (3, 1, (7, 5)),  # overlapping windows
    (3, 2, (9, 9)),
    (2, 3, (8, 7)),  # stride > window: pixels no window reads
    ((2, 3), (1, 2), (5, 7)),
    (2, 2, (6, 4)),  # windows that tile the image
    ((3, 2), None, (7, 5)),  # tiles that leave a row and a column out
]


def case_id(case):
    return "-".join(str(getattr(a, "__name__", a)).replace(" ", "") for a in case)


@DTYPES
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_vjp_matches_jax(case, dtype):
    *args, hw = case
    assert_random_vjp_matches_jax(Conv2D(*args, dtype=dtype), (2,) + hw + (args[0],), dtype)


@DTYPES
@pytest.mark.parametrize("case", CONV_T_CASES, ids=case_id)
def test_conv_transpose2d_vjp_matches_jax(case, dtype):
    *args, hw = case
    assert_random_vjp_matches_jax(ConvTranspose2D(*args, dtype=dtype), (2,) + hw + (args[0],), dtype)


# Every case above runs as a product of patches (small patches); those with large patches
# run as lax's convolutions. These run the cases that way, by lowering the size limit, the
# dtypes taking turns.
LAX_CASES = [(Conv2D, case + ((F64, F32)[i % 2],)) for i, case in enumerate(CONV_CASES[::3])] + [
    (ConvTranspose2D, case + ((F32, F64)[i % 2],)) for i, case in enumerate(CONV_T_CASES[::2])
]


@pytest.fixture
def convolutions(monkeypatch):
    """Every convolution traced in the test runs as lax's convolution."""
    monkeypatch.setattr(conv_module, "_PRODUCT_VALUES", 0)


def runs_a_convolution(f, *args):
    return "convolution(" in jax.jit(f).lower(*args).as_text()


@pytest.mark.parametrize("kind, case", LAX_CASES, ids=lambda c: getattr(c, "__name__", None) or case_id(c))
def test_vjps_on_lax_convolutions_match_jax(convolutions, kind, case):
    *args, hw, dtype = case
    layer = kind(*args, dtype=dtype)
    params, x, dy, _ = random_case(layer, (2,) + hw + (args[0],), dtype)
    both = oracle_and_hand.__wrapped__(layer)  # traced afresh, under the lowered limit
    expected, actual = both(params, x, dy)
    assert_trees_close(actual, expected, dtype, scaled=True)
    assert {a.dtype for a in jax.tree.leaves(actual)} == {np.dtype(dtype)}
    assert runs_a_convolution(lambda p, x: layer.apply(p, x), params, x)


def test_small_patches_run_as_a_product_and_large_ones_as_a_convolution(monkeypatch):
    layer = Conv2D(3, 4, 3, 2)  # on (2, 6, 5, 3): out 3 x 3, patches 2 * 9 * 9 * 3 = 486 values
    params, x, dy, _ = random_case(layer, (2, 6, 5, 3), F32)
    train_step = lambda p, x, dy: layer.vjp(p, x, dy)[0]  # noqa: E731  (dw alone: no dx)
    monkeypatch.setattr(conv_module, "_PRODUCT_VALUES", 486)
    assert not runs_a_convolution(lambda p, x: layer.apply(p, x), params, x)
    assert not runs_a_convolution(lambda p, x, dy: train_step(p, x, dy), params, x, dy)
    monkeypatch.setattr(conv_module, "_PRODUCT_VALUES", 485)
    assert runs_a_convolution(lambda p, x: layer.apply(p, x), params, x)


def test_the_kernel_gradient_reuses_the_forwards_patches():
    """In a training step (forward, then the VJP), XLA builds the patch matrix once."""
    layer = Conv2D(3, 4, 3)
    params, x, dy, _ = random_case(layer, (2, 6, 5, 3), F32)

    def step(p, x, dy):
        return layer.apply(p, x), layer.vjp(p, x, dy)[0]

    hlo = jax.jit(step).lower(params, x, dy).compile(compiler_options=XLA_DEFAULT).as_text()
    stacks = [line for line in hlo.splitlines() if " concatenate(" in line]
    assert len(stacks) == 1 and "f32[2,6,5,9,3]" in stacks[0], stacks  # (n, oh, ow, kh kw, c_in)


@DTYPES
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_pool_vjp_matches_jax(pool, case, dtype):
    window, stride, hw = case
    assert_random_vjp_matches_jax(pool(window, stride), (2,) + hw + (3,), dtype)


@DTYPES
@pytest.mark.parametrize(
    "layer, input_shape",
    [
        (Upsample2D(2), (2, 3, 4, 2)),
        (Upsample2D((3, 1)), (1, 5, 3, 3)),
        (Flatten(), (2, 3, 4, 5)),
        (Flatten(), (3, 7)),
    ],
    ids=["Upsample2D(2)", "Upsample2D(3,1)", "Flatten-4d", "Flatten-2d"],
)
def test_reshaping_vjp_matches_jax(layer, input_shape, dtype):
    assert_random_vjp_matches_jax(layer, input_shape, dtype)


def test_conv2d_vjp_mixed_dtypes_match_jax():
    # float32 params with float64 input: the product runs in float64 and each cotangent
    # takes its primal's dtype, as jax.vjp's do.
    layer = Conv2D(2, 3, 3, 2)
    params, x, dy, _ = random_case(layer, (2, 5, 5, 2), F64)
    params = jax.tree.map(lambda p: p.astype(F32), params)
    expected, actual = oracle_and_hand(layer)(params, x, dy)
    assert jax.tree.map(lambda a: a.dtype, actual) == jax.tree.map(lambda a: a.dtype, expected)
    assert_trees_close(actual, expected, F32, scaled=True)


@pytest.mark.parametrize(
    "layer, input_shape",
    [
        (Conv2D(2, 3, 3, 2), (2, 7, 5, 2)),
        (Conv2D(2, 2, (2, 3), 3, "VALID"), (1, 8, 7, 2)),
        (ConvTranspose2D(2, 3, 3, 2), (2, 3, 4, 2)),
        (MaxPool2D(3, 2), (2, 7, 7, 2)),
        (AvgPool2D(3, 2), (2, 7, 7, 2)),
    ],
    ids=["Conv2D", "Conv2D-VALID", "ConvTranspose2D", "MaxPool2D", "AvgPool2D"],
)
def test_vjp_finite_differences(layer, input_shape):
    params, x, _, _ = random_case(layer, input_shape, F64, seed=1)
    check_vjp(jax.jit(layer.apply), hand_vjp(layer), (params, x), atol=1e-7, rtol=1e-7)


def test_finite_difference_check_catches_a_wrong_vjp():
    # The check above can fail: a Conv2D whose dx forgets to flip the kernel.
    layer = Conv2D(1, 1, 3)
    params, x, _, _ = random_case(layer, (1, 5, 5, 1), F64, seed=2)

    def wrong(params, x, dy):
        dparams, _ = layer.vjp(params, x, dy)
        return dparams, lax.conv_general_dilated(
            dy, params["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    wrong = jax.jit(wrong)
    with pytest.raises(AssertionError):
        check_vjp(
            jax.jit(layer.apply),
            lambda p, x: (layer.apply(p, x), lambda dy: wrong(p, x, dy)),
            (params, x),
            atol=1e-7,
            rtol=1e-7,
        )


def test_max_pool_ties_go_to_the_first_max():
    # Documented choice: all of a window's gradient goes to its first maximum, row by row.
    x = device(
        np.array(
            [[1.0, 2.0, 2.0, 0.0], [2.0, 0.0, 2.0, 2.0], [5.0, 5.0, 3.0, 3.0], [5.0, 5.0, 3.0, 3.0]]
        ).reshape(1, 4, 4, 1)
    )
    _, dx = jax.jit(MaxPool2D(2).vjp)((), x, device(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 1, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])


def first_max_dx(x, dy, window, stride):
    """MaxPool2D's dx by loops: each window's dy goes to its first maximum, row by row."""
    (kh, kw), (sh, sw) = window, stride
    dx = np.zeros_like(x)
    for n, i, j, c in np.ndindex(dy.shape):
        block = x[n, i * sh : i * sh + kh, j * sw : j * sw + kw, c]
        a, b = np.unravel_index(np.argmax(block), block.shape)
        dx[n, i * sh + a, j * sw + b, c] += dy[n, i, j, c]
    return dx


@pytest.mark.parametrize(
    "case",
    [  # (window, stride, (h, w), dtype)
        ((2, 2), (2, 2), (7, 8), F32),
        ((2, 3), (2, 3), (5, 7), F64),
        ((3, 3), (1, 1), (6, 5), F64),
        ((3, 2), (2, 1), (7, 6), F32),
        ((2, 2), (3, 3), (8, 7), F32),
    ],
    ids=case_id,
)
def test_max_pool_ties_go_to_the_first_max_in_every_geometry(case):
    # Pixels drawn from {0, 1, 2}: most windows hold several maxima. Integer dy: the sums
    # of overlapping windows are exact in any order.
    window, stride, hw, dtype = case
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=(2,) + hw + (3,)).astype(dtype)
    layer = MaxPool2D(window, stride)
    dy = rng.integers(1, 100, size=layer.init(jax.random.key(0), x.shape)[0]).astype(dtype)
    _, dx = jax.jit(layer.vjp)((), device(x), device(dy))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, first_max_dx(x, dy, window, stride))


@DTYPES
def test_serial_cnn_composes_and_matches_jax(dtype):
    # ReLU's zeros tie in MaxPool2D, but their pre-activations are negative, so which
    # tied pixel gets the gradient cannot change any gradient after ReLU's vjp.
    model = serial(Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Flatten(), Linear(4 * 3 * 3, 5))
    params, x, dy, out_shape = random_case(model, (2, 7, 6, 1), dtype, seed=3)  # init threads the shapes
    assert out_shape == (2, 5) and [jax.tree.map(jnp.shape, p) for p in params] == [
        {"w": (3, 3, 1, 4), "b": (4,)},
        (),
        (),
        (),
        {"w": (36, 5), "b": (5,)},
    ]
    assert_vjp_matches_jax(model, params, x, dy, scaled=True)


# --- forward semantics ----------------------------------------------------------------


@pytest.mark.parametrize(
    "padding, k, s, c_in, c_out",
    [
        ("SAME", 2, 1, 2, 3),
        ("SAME", 4, 3, 2, 3),
        ("VALID", 3, 2, 2, 3),
        ("SAME", 3, 1, 1, 16),
        ("VALID", 3, 2, 8, 16),
        ("SAME", 3, 2, 9, 4),
        ("SAME", 2, 1, 1, 17),
    ],
)
def test_conv2d_is_lax_convolution(padding, k, s, c_in, c_out):
    # Explicit pads in Conv2D; lax's own 'SAME' split (an odd zero at the end) must agree.
    layer = Conv2D(c_in, c_out, k, s, padding, dtype=F64)
    params, x, _, _ = random_case(layer, (2, 7, 5, c_in), F64)
    y = lax.conv_general_dilated(x, params["w"], (s, s), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer.apply(params, x), y + params["b"].reshape(1, 1, 1, c_out), rtol=1e-12)


@pytest.mark.parametrize("padding, k, s", [("SAME", 3, 2), ("SAME", 2, 3), ("VALID", 4, 2), ("VALID", 2, 3)])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(padding, k, s):
    # <ConvT(x), z> == <x, Conv2D(z)> with b = 0 and Conv2D's w = this w, channels swapped;
    # for k >= s also lax.conv_transpose(transpose_kernel=True), whose VALID is longer for k < s.
    layer = ConvTranspose2D(2, 3, k, s, padding, dtype=F64)
    params, x, _, out_shape = random_case(layer, (2, 4, 3, 2), F64)
    params = {"w": params["w"], "b": jnp.zeros(3, F64)}
    z = device(np.random.default_rng(4).normal(size=out_shape))
    conv_w = jnp.transpose(params["w"], (0, 1, 3, 2))
    conv_z = Conv2D(3, 2, k, s, padding, dtype=F64).apply({"w": conv_w, "b": jnp.zeros(2, F64)}, z)
    y = layer.apply(params, x)
    np.testing.assert_allclose(jnp.vdot(y, z), jnp.vdot(x, conv_z), rtol=1e-12)
    if k >= s or padding == "SAME":
        expected = lax.conv_transpose(
            x, params["w"], (s, s), padding, dimension_numbers=("NHWC", "HWOI", "NHWC"), transpose_kernel=True
        )
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_upsample_and_pools_by_hand():
    x = device(np.arange(16.0).reshape(1, 4, 4, 1))
    np.testing.assert_array_equal(Upsample2D((1, 2)).apply((), x[:, :1, :2])[0, :, :, 0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(MaxPool2D(2).apply((), x)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(AvgPool2D(3, 1).apply((), x)[0, :, :, 0], [[5, 6], [9, 10]])
    _, dx = AvgPool2D(3, 1).vjp((), x, device(np.full((1, 2, 2, 1), 9.0)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


# --- float16 and bfloat16: pooling sums in float32 ----------------------------------------


POOLS = [MaxPool2D(2), MaxPool2D(3, 1), AvgPool2D(2), AvgPool2D(3, 1)]


@pytest.mark.parametrize("layer", POOLS, ids=["max", "max-overlapping", "avg", "avg-overlapping"])
@HALF_DTYPES
def test_pool_half_precision_matches_float32(layer, dtype):
    """Within a rounding of the float32 results on the same values cast up."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 7, 7, 3))
    assert_half_matches_float32(layer, x, rng.normal(size=layer.output_shape(x.shape)), dtype)


def pool_hazard(case, eps):
    """(layer, x, dy) whose half-precision sums lose the result."""
    if case == "avg-large":  # in float16 a window's sum, 1.6e5, overflows; its mean does not
        return AvgPool2D(2), np.full((1, 4, 4, 1), 4e4), np.ones((1, 2, 2, 1))
    if case == "avg-absorbed":  # 2 / eps then ones: in half precision 2 / eps + 1 is 2 / eps
        x = np.ones((1, 3, 3, 1))
        x[0, 0, 0, 0] = 2 / eps
        return AvgPool2D(3), x, np.ones((1, 1, 1, 1))
    # Pixel 31 (or the centre) is in every window: dx there is 1 + 31 eps / 2 (1 + 8 eps / 2),
    # which half precision rounds to 1 adding each eps / 2 on its own.
    if case == "avg-overlapping":
        dy = np.full((1, 1, 32, 1), 16 * eps)
        dy[0, 0, 31, 0] = 32.0
        return AvgPool2D((1, 32), 1), np.zeros((1, 1, 63, 1)), dy
    x, dy = np.zeros((1, 5, 5, 1)), np.full((1, 3, 3, 1), eps / 2)
    x[0, 2, 2, 0], dy[0, 2, 2, 0] = 1.0, 1.0
    return MaxPool2D(3, 1), x, dy


@pytest.mark.parametrize("case", ["avg-large", "avg-absorbed", "avg-overlapping", "max-overlapping"])
@HALF_DTYPES
def test_pool_half_precision_hazards(case, dtype):
    layer, x, dy = pool_hazard(case, float(jnp.finfo(dtype).eps))
    assert_half_matches_float32(layer, x, dy, dtype)


# --- init -----------------------------------------------------------------------------


def output_shape_cases():
    """Many configurations, each (layer, input_shape): checked by tracing only."""
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for hw in ((7, 5), (9, 9), (5, 6)):
                for padding in ("SAME", "VALID", 0, 2):
                    if padding != "VALID" or k <= min(hw):
                        yield Conv2D(2, 3, k, s, padding), (2,) + hw + (2,)
                for padding in ("SAME", "VALID"):
                    yield ConvTranspose2D(2, 3, k, s, padding), (2,) + hw + (2,)
                if k <= min(hw):
                    yield MaxPool2D(k, s), (2,) + hw + (3,)
                    yield AvgPool2D(k, s), (2,) + hw + (3,)
                yield Upsample2D((k, s)), (2,) + hw + (3,)
    yield Flatten(), (2, 3, 4, 5)


def test_init_output_shape_is_the_real_one():
    for layer, input_shape in output_shape_cases():
        found, param_structs = shapes_of(layer, input_shape)
        y = jax.eval_shape(layer.apply, param_structs, jax.ShapeDtypeStruct(input_shape, F32))
        assert found["out_shape"] == y.shape, (layer.apply, input_shape)


def test_init_keeps_an_unknown_batch_size():
    assert shapes_of(Conv2D(3, 4, 3, 2), (-1, 9, 9, 3))[0]["out_shape"] == (-1, 5, 5, 4)
    assert shapes_of(ConvTranspose2D(3, 4, 3, 2), (-1, 9, 9, 3))[0]["out_shape"] == (-1, 18, 18, 4)
    assert MaxPool2D(2).init(jax.random.key(0), (-1, 9, 9, 3))[0] == (-1, 4, 4, 3)


@pytest.mark.parametrize("make", [Conv2D, ConvTranspose2D])
def test_init_params_shapes_dtype_and_bounds(make):
    for dtype in (F32, F64):
        _, params = shapes_of(make(16, 32, (3, 2), dtype=dtype), (1, 8, 8, 16))
        assert params["w"].shape == (3, 2, 16, 32) and params["b"].shape == (32,)
        assert params["w"].dtype == params["b"].dtype == dtype
    _, params = shapes_of(make(2, 3, 3), (1, 4, 4, 2))
    assert params["w"].dtype == params["b"].dtype == F32  # the default, also with x64 on
    # U[-a, a], a = 1/sqrt(fan_in), fan_in = kh * kw * c_in: fills the interval
    # (P(max |w| < 0.99 a) = 0.99**3072 ~ e^-30), variance a^2/3 within 5 sd
    # (a^2 sqrt(4/45) / sqrt(n)), fourth moment a^4/5 (a normal's: a^4/3).
    bound = 1 / math.sqrt(3 * 2 * 16)
    _, params = make(16, 32, (3, 2)).init(jax.random.key(0), (1, 8, 8, 16))
    w, b = np.asarray(params["w"], np.float64).ravel(), np.asarray(params["b"], np.float64)
    assert np.all(np.abs(b) <= bound)
    assert 0.99 * bound < np.abs(w).max() <= bound
    assert abs(w.var() - bound**2 / 3) < 5 * bound**2 * math.sqrt(4 / 45) / math.sqrt(w.size)
    assert abs(np.mean(w**4) / bound**4 - 1 / 5) < 0.02


def test_init_overrides():
    layer = Conv2D(2, 3, 3, w_init=jax.nn.initializers.zeros, b_init=jax.nn.initializers.ones)
    _, params = layer.init(jax.random.key(0), (1, 4, 4, 2))
    np.testing.assert_array_equal(params["w"], np.zeros((3, 3, 2, 3)))
    np.testing.assert_array_equal(params["b"], np.ones(3))


def test_parameter_free_layers_have_no_params():
    for layer in (Upsample2D(2), MaxPool2D(2), AvgPool2D(2), Flatten()):
        assert layer.init(jax.random.key(0), (1, 4, 4, 2))[1] == ()


# --- the layer contract ---------------------------------------------------------------


def test_equal_configurations_share_one_layer():
    assert Conv2D(1, 4, 3) == Conv2D(1, 4, (3, 3), 1, "same")
    assert Conv2D(1, 4, 3, padding=1) == Conv2D(1, 4, [3, 3], stride=(1, 1), padding=1)
    assert Conv2D(1, 4, 3, dtype=jnp.float32) == Conv2D(1, 4, 3, dtype="float32")
    assert ConvTranspose2D(2, 3, 4, 2) == ConvTranspose2D(2, 3, (4, 4), (2, 2), "Same")
    assert MaxPool2D(2) == MaxPool2D((2, 2), 2) and AvgPool2D(3, 1) == AvgPool2D(3, (1, 1))
    assert Upsample2D(2) == Upsample2D((2, 2)) and Flatten() == Flatten()
    assert Conv2D(1, 4, 3) != Conv2D(1, 4, 3, padding="VALID")
    # Initializers change init only: the layers (and their compiled programs) are equal.
    fresh = [Conv2D(1, 4, 3, w_init=jax.nn.initializers.he_normal()) for _ in range(2)]
    assert fresh[0] == fresh[1] and hash(fresh[0]) == hash(fresh[1])
    assert fresh[0].init is not fresh[1].init


@pytest.mark.parametrize(
    "layer",
    [Conv2D(2, 3, 3, 2), ConvTranspose2D(2, 3, 3, 2), Upsample2D(2), MaxPool2D(2), AvgPool2D(2), Flatten()],
    ids=ALL_NAMES,
)
def test_train_and_key_are_accepted_and_ignored(layer):
    params, x, dy, _ = random_case(layer, (2, 4, 4, 2), F32)
    key = jax.random.key(1)
    for plain, keyed in [
        (lambda p, x: layer.apply(p, x), lambda p, x: layer.apply(p, x, train=True, key=key)),
        (lambda p, x: layer.vjp(p, x, dy), lambda p, x: layer.vjp(p, x, dy, train=True, key=key)),
    ]:
        assert str(jax.make_jaxpr(plain)(params, x)) == str(jax.make_jaxpr(keyed)(params, x))


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Conv2D(0, 3, 3), ValueError, r"Conv2D: c_in must be >= 1, got 0"),
        (lambda: Conv2D(2, 2.5, 3), TypeError, r"Conv2D: c_out must be an int, got 2.5 \(float\)"),
        (lambda: Conv2D(2, 3, 0), ValueError, r"Conv2D: kernel_size must be >= 1, got 0"),
        (lambda: Conv2D(2, 3, (3, 0)), ValueError, r"Conv2D: kernel_size\[1\] must be >= 1, got 0"),
        (
            lambda: Conv2D(2, 3, (3,)),
            TypeError,
            r"Conv2D: kernel_size must be an int or a pair of ints, got \(3,\)",
        ),
        (
            lambda: Conv2D(2, 3, "3"),
            TypeError,
            r"Conv2D: kernel_size must be an int or a pair of ints, got '3'",
        ),
        (lambda: Conv2D(2, 3, 3, stride=0), ValueError, r"Conv2D: stride must be >= 1, got 0"),
        (
            lambda: Conv2D(2, 3, 3, stride=True),
            TypeError,
            r"Conv2D: stride must be an int or a pair of ints, got True",
        ),
        (
            lambda: Conv2D(2, 3, 3, padding="FULL"),
            ValueError,
            r"Conv2D: padding must be 'SAME', 'VALID' or an int >= 0, got 'FULL'",
        ),
        (lambda: Conv2D(2, 3, 3, padding=-1), ValueError, r"Conv2D: padding must be >= 0, got -1"),
        (
            lambda: Conv2D(2, 3, 3, padding=1.5),
            TypeError,
            r"Conv2D: padding must be 'SAME', 'VALID' or an int >= 0, got 1.5 \(float\)",
        ),
        (
            lambda: Conv2D(2, 3, 3, dtype=jnp.int32),
            TypeError,
            r"Conv2D: dtype must be a floating dtype, got int32",
        ),
        (
            lambda: Conv2D(2, 3, 3, w_init="uniform"),
            TypeError,
            r"Conv2D: w_init must be None or a \(key, shape",
        ),
        (
            lambda: ConvTranspose2D(2, 3, 3, padding=1),
            TypeError,
            r"ConvTranspose2D: padding must be 'SAME', 'VALID', got 1 \(int\)",
        ),
        (
            lambda: ConvTranspose2D(2, 3, 3, stride=(2, -1)),
            ValueError,
            r"ConvTranspose2D: stride\[1\] must be >= 1",
        ),
        (lambda: MaxPool2D(0), ValueError, r"MaxPool2D: window must be >= 1, got 0"),
        (lambda: MaxPool2D((2, 2, 2)), TypeError, r"MaxPool2D: window must be an int or a pair of ints"),
        (lambda: AvgPool2D(2, stride=0), ValueError, r"AvgPool2D: stride must be >= 1, got 0"),
        (lambda: Upsample2D(0), ValueError, r"Upsample2D: factor must be >= 1, got 0"),
        (lambda: Upsample2D(1.5), TypeError, r"Upsample2D: factor must be an int or a pair of ints, got 1.5"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


CONV = r"Conv2D\(c_in=3, c_out=2, kernel_size=\(3, 3\), stride=\(2, 2\), padding='SAME'\)"


@pytest.mark.parametrize(
    "layer, name, shape, match",
    [
        (
            Conv2D(3, 2, 3, 2),
            CONV,
            (2, 8, 8, 4),
            r"expected input with 3 channels \(n, h, w, 3\), got shape \(2, 8, 8, 4\)",
        ),
        (Conv2D(3, 2, 3, 2), CONV, (8, 8, 3), r"expected 4-D input \(n, h, w, 3\), got shape \(8, 8, 3\)"),
        (
            Conv2D(3, 2, 5, padding="VALID"),
            r"Conv2D\(.*padding='VALID'\)",
            (1, 4, 6, 3),
            r"input of spatial size \(4, 6\) \(padded \(4, 6\)\) is smaller than the window \(5, 5\)",
        ),
        (
            ConvTranspose2D(3, 2, 3),
            r"ConvTranspose2D\(c_in=3, .*\)",
            (2, 4, 4, 2),
            r"expected input with 3 channels \(n, h, w, 3\), got shape \(2, 4, 4, 2\)",
        ),
        (
            ConvTranspose2D(3, 2, 3),
            r"ConvTranspose2D\(c_in=3, .*\)",
            (2, 0, 4, 3),
            r"expected an image of at least 1 x 1 pixels, got shape \(2, 0, 4, 3\)",
        ),
        (
            MaxPool2D(3, 2),
            r"MaxPool2D\(window=\(3, 3\), stride=\(2, 2\)\)",
            (2, 9, 2, 1),
            r"input of spatial size \(9, 2\) \(padded \(9, 2\)\) is smaller than the window \(3, 3\)",
        ),
        (
            AvgPool2D(2),
            r"AvgPool2D\(window=\(2, 2\), stride=\(2, 2\)\)",
            (4, 4),
            r"expected 4-D input \(n, h, w, c\), got shape \(4, 4\)",
        ),
        (Upsample2D(2), r"Upsample2D\(factor=\(2, 2\)\)", (2, 4, 4, 1, 1), r"expected 4-D input"),
        (Flatten(), "Flatten", (5,), r"expected input \(n, \.\.\.\) of at least 2 dims, got shape \(5,\)"),
    ],
    ids=[
        "channels",
        "rank",
        "too-small",
        "T-channels",
        "T-empty",
        "pool-small",
        "pool-rank",
        "upsample-rank",
        "flatten-rank",
    ],
)
def test_bad_input_shapes(layer, name, shape, match):
    match = name + ": " + match
    with pytest.raises(ValueError, match=match):
        layer.init(jax.random.key(0), shape)
    _, param_structs = shapes_of(layer, (2, 9, 9, 3))
    x = jax.ShapeDtypeStruct(shape, F32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(layer.apply, param_structs, x)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(layer.vjp, param_structs, x, x)


@pytest.mark.parametrize(
    "layer",
    [Conv2D(2, 3, 3), ConvTranspose2D(2, 3, 3), Upsample2D(2), MaxPool2D(2), AvgPool2D(2), Flatten()],
    ids=ALL_NAMES,
)
def test_integer_input_and_wrong_dy(layer):
    _, param_structs = shapes_of(layer, (1, 4, 4, 2))
    x = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.int32)
    with pytest.raises(TypeError, match=r"input must be floating point, got dtype int32"):
        jax.eval_shape(layer.apply, param_structs, x)
    x = jax.ShapeDtypeStruct((1, 4, 4, 2), F32)
    with pytest.raises(ValueError, match=r"expected dy of the output's shape \(.*\), got \(1, 3\)"):
        jax.eval_shape(layer.vjp, param_structs, x, jax.ShapeDtypeStruct((1, 3), F32))


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (lambda p: (p["w"], p["b"]), r"params must be a dict with keys 'w' and 'b'"),
        (lambda p: {"w": p["w"]}, r"params must be a dict with keys 'w' and 'b'"),
        (
            lambda p: {"w": jax.ShapeDtypeStruct((3, 3, 4, 2), F32), "b": p["b"]},
            r"params must have w \(3, 3, 2, 4\) and b \(4,\), got w \(3, 3, 4, 2\) and b \(4,\)",
        ),
    ],
    ids=["tuple", "missing-b", "w-channels-swapped"],
)
@pytest.mark.parametrize("make", [Conv2D, ConvTranspose2D])
def test_wrong_params(make, make_bad, match):
    layer = make(2, 4, 3)
    _, params = shapes_of(layer, (1, 5, 5, 2))
    x = jax.ShapeDtypeStruct((1, 5, 5, 2), F32)
    with pytest.raises(ValueError, match=make.__name__ + r"\(c_in=2, c_out=4, .*\): " + match):
        jax.eval_shape(layer.apply, make_bad(params), x)
    with pytest.raises(ValueError, match=make.__name__ + r"\(c_in=2, c_out=4, .*\): " + match):
        jax.eval_shape(layer.vjp, make_bad(params), x, x)


@pytest.mark.parametrize("layer", [Upsample2D(2), MaxPool2D(2), AvgPool2D(2), Flatten()], ids=ALL_NAMES[2:])
def test_parameter_free_layers_reject_params(layer):
    x = jax.ShapeDtypeStruct((1, 4, 4, 2), F32)
    with pytest.raises(ValueError, match=r" has no parameters: params must be \(\), got \{'w'"):
        jax.eval_shape(layer.apply, {"w": x}, x)


@pytest.mark.parametrize(
    "layer",
    [Upsample2D(2), MaxPool2D(2), AvgPool2D(2), Flatten()],
    ids=["Upsample2D", "MaxPool2D", "AvgPool2D", "Flatten"],
)
def test_parameter_free_image_layers_check_their_init_key(layer):
    with pytest.raises(
        TypeError, match=r"\.init: key must be a PRNG key such as jax\.random\.key\(0\), got 'nokey'"
    ):
        layer.init("nokey", (2, 4, 4, 1))
