"""Numerics: float32 layers, losses and a whole serial against a float64 oracle, inputs to +-1e4.

Hypothesis draws float32 inputs over [-1e4, 1e4] (it favours 0, the bounds and tiny
values) into arrays of fixed shapes, so every comparison is one jitted function
compiled once. Subnormal inputs are left out: XLA on CPU reads them as 0
(denormals-are-zero), the platform's behaviour, not fnnet's; 1e-40 * 1e4 gives 0, not 1e-36. The hand float32 results must be finite and match the oracle,
JAX's autodiff (`jax.vjp` / `jax.grad`) in float64, evaluated at the very same float32
inputs: the only differences left are float32 roundings inside the computation.

Tolerances are error bounds, element by element, relative to the magnitudes the
computation goes through (not to its result, which may cancel), in units of
U = 2**-24, float32's unit roundoff:
- a sum or dot product of k terms is within about k U of the sum of the absolute terms;
- XLA's float32 tanh, exp, log, logistic are within a few ulps: 8 U relative;
- TINY covers results at float32's underflow: XLA on CPU flushes subnormal results
  (< 1.2e-38) to 0, so a sum of k of them may be off by k * 1.2e-38 (k <= 80 here).
Where a derivative is computed from a float32 output (1 - y**2 for Tanh), its error is
absolute, ~20 U, not relative: when y rounds to 1 the float32 derivative is 0 while the
float64 one is about 1e-8; float32 can do no better, and neither does JAX's own derivative.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fnnet
from fnnet._layout import _twin as feature_major_twin
from fnnet import (
    ELU,
    Identity,
    LeakyReLU,
    Linear,
    LossBCE,
    LossBCEWithLogits,
    LossCrossEntropy,
    LossMSE,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
)

U = 2.0**-24
TINY = 1e-36
EXAMPLES = settings(max_examples=40, deadline=None)
FEW_EXAMPLES = settings(max_examples=15, deadline=None)  # per activation: 9 of them
F64 = jnp.float64


def floats32(shape, low=-1e4, high=1e4):
    """float32 arrays, every element drawn on its own (no background fill)."""
    elements = st.floats(low, high, width=32, allow_subnormal=False)
    return arrays(np.float32, shape, elements=elements, fill=st.nothing())


def assert_within(name, got, want, bound):
    """|got - want| <= bound elementwise, got finite; the first offender in the message."""
    got, want, bound = (np.asarray(a, np.float64) for a in (got, want, bound))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.all(np.isfinite(got)), f"{name}: non-finite float32 result {got}"
    error = np.abs(got - want)
    bad = ~(error <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        raise AssertionError(
            f"{name}{list(i)}: float32 {got[i]!r}, float64 oracle {want[i]!r}, "
            f"error {error[i]:.3g} > bound {bound[i]:.3g} "
            f"({int(bad.sum())} of {bad.size} elements out)"
        )


def highest_precision(f):
    """Trace `f` with float32 matmuls in full float32 (no TF32 or bf16 passes on accelerators)."""

    @functools.wraps(f)
    def traced(*args):
        with jax.default_matmul_precision("highest"):
            return f(*args)

    return traced


def oracle_vjp(apply, params, x, dy):
    """(y, (dparams, dx)) by JAX's autodiff of `apply`, a reference written with jax.nn
    (not fnnet's code), in float64 at the same (float32) values."""
    params, x, dy = jax.tree.map(lambda a: a.astype(F64), (params, x, dy))
    y, pullback = jax.vjp(apply, params, x)
    return y, pullback(dy)


# --- activations ------------------------------------------------------------------------------

# name -> (fnnet layer, float64 reference)
ACTIVATIONS = {
    "ReLU": (ReLU(), jax.nn.relu),
    "Tanh": (Tanh(), jnp.tanh),
    "Sigmoid": (Sigmoid(), jax.nn.sigmoid),
    "LeakyReLU": (LeakyReLU(), jax.nn.leaky_relu),  # both default to slope 0.01
    "LeakyReLU(0.3)": (LeakyReLU(0.3), lambda x: jax.nn.leaky_relu(x, 0.3)),
    "ELU": (ELU(), jax.nn.elu),
    "ELU(0.5)": (ELU(0.5), lambda x: jax.nn.elu(x, 0.5)),
    "Softplus": (Softplus(), jax.nn.softplus),
    "Identity": (Identity(), lambda x: x),
}
SHAPE = (8, 8)


@functools.lru_cache(maxsize=None)
def compare_activation(name):
    layer, reference = ACTIVATIONS[name]

    @jax.jit
    @highest_precision
    def both(x, dy):
        hand = layer.apply((), x), layer.vjp((), x, dy)[1]
        # At the kink x = 0 fnnet takes the derivative from the left (ReLU'(0) = 0,
        # LeakyReLU'(0) = slope); jax.nn's conventions differ, so the oracle takes it at -1e-300.
        x_left = jnp.where(x == 0, -1e-300, x.astype(F64))
        y, (_, dx) = oracle_vjp(lambda p, x: reference(x), (), x_left, dy)
        return hand, (y, dx)

    return both


@pytest.mark.parametrize("name", ACTIVATIONS)
@FEW_EXAMPLES
@given(x=floats32(SHAPE), dy=floats32(SHAPE))
def test_activation_matches_float64_oracle(name, x, dy):
    (y, dx), (y64, dx64) = compare_activation(name)(x, dy)
    assert y.dtype == dx.dtype == jnp.float32
    # y = f(x): one transcendental or a product by a float32-rounded slope / alpha.
    assert_within(f"{name} y", y, y64, 8 * U * np.abs(y64) + TINY)
    # dx = dy * f'(x), f' from the float32 output with absolute error up to ~20 U.
    dy = np.abs(dy.astype(np.float64))
    assert_within(f"{name} dx", dx, dx64, 8 * U * np.abs(dx64) + 20 * U * dy + TINY)


# --- Linear, in both layouts --------------------------------------------------------------------

B, N_IN, N_OUT = 16, 5, 3
LINEAR = Linear(N_IN, N_OUT)


@jax.jit
@highest_precision
def compare_linear(params, x, dy):
    twin = feature_major_twin(LINEAR)
    y_fm = twin.apply(params, x.T).T
    dparams_fm, dx_fm = twin.vjp(params, x.T, dy.T)
    hand = (LINEAR.apply(params, x), LINEAR.vjp(params, x, dy)), (y_fm, (dparams_fm, dx_fm.T))
    return hand, oracle_vjp(lambda p, x: x @ p["w"] + p["b"][None, :], params, x, dy)


@EXAMPLES
@given(w=floats32((N_IN, N_OUT)), b=floats32((N_OUT,)), x=floats32((B, N_IN)), dy=floats32((B, N_OUT)))
def test_linear_matches_float64_oracle(w, b, x, dy):
    params = {"w": w, "b": b}
    hands, (y64, (dparams64, dx64)) = compare_linear(params, x, dy)
    w, b, x, dy = (np.abs(a.astype(np.float64)) for a in (w, b, x, dy))
    # Dot products: within (k + 1) U of the dot product of the absolute values, k terms.
    y_bound = (N_IN + 2) * U * (x @ w + b) + TINY
    dw_bound = (B + 1) * U * (x.T @ dy) + TINY
    db_bound = (B + 1) * U * dy.sum(axis=0) + TINY
    dx_bound = (N_OUT + 1) * U * (dy @ w.T) + TINY
    for layout, (y, (dparams, dx)) in zip(["batch-major", "feature-major"], hands):
        assert_within(f"{layout} y", y, y64, y_bound)
        assert_within(f"{layout} dw", dparams["w"], dparams64["w"], dw_bound)
        assert_within(f"{layout} db", dparams["b"], dparams64["b"], db_bound)
        assert_within(f"{layout} dx", dx, dx64, dx_bound)


# --- losses -------------------------------------------------------------------------------------
# Each: (value, grad) by hand in float32 and the float64 oracle: jax.grad of a reference
# value written with jax.nn, in float64.

N_LOSS = 16  # elements of MSE / BCE: (8, 2); a power of 2, so dividing by it is exact


@functools.lru_cache(maxsize=None)
def compare_loss(loss, oracle_value):
    @jax.jit
    def both(y, t):
        y64, t64 = y.astype(F64), (t.astype(F64) if jnp.issubdtype(t.dtype, jnp.floating) else t)
        return (loss.value(y, t), loss.grad(y, t)), jax.value_and_grad(oracle_value)(y64, t64)

    return both


def mse_reference(y, t):
    return jnp.mean((y - t) ** 2)


@EXAMPLES
@given(y=floats32((8, 2)), t=floats32((8, 2)))
def test_mse_matches_float64_oracle(y, t):
    (value, grad), (value64, grad64) = compare_loss(LossMSE(), mse_reference)(y, t)
    # (y - t) is one rounding, its square two; then a sum of 16 non-negative terms.
    assert_within("value", value, value64, (N_LOSS + 4) * U * value64 + TINY)
    assert_within("grad", grad, grad64, 4 * U * np.abs(grad64) + TINY)


def bce_with_logits_reference(z, t):
    return jnp.mean(jax.nn.softplus(z) - t * z)


@EXAMPLES
@given(z=floats32((8, 2)), t=floats32((8, 2), 0, 1))
def test_bce_with_logits_matches_float64_oracle(z, t):
    compare = compare_loss(LossBCEWithLogits(), bce_with_logits_reference)
    (value, grad), (value64, grad64) = compare(z, t)
    z64, t64 = np.abs(z.astype(np.float64)), t.astype(np.float64)
    # Per element max(z, 0) - t z + log1p(exp(-|z|)): the difference cancels, so each
    # element's error is relative to |z| + |t z| + 1, not to the result; then a mean.
    terms = 4 * U * (z64 + t64 * z64 + 1)
    assert_within("value", value, value64, terms.mean() + (N_LOSS + 2) * U * value64 + TINY)
    # (sigmoid(z) - t) / n: sigmoid within 8 U, the difference relative to its terms.
    sigmoid64 = np.exp(-np.logaddexp(0, -z.astype(np.float64)))
    assert_within("grad", grad, grad64, 8 * U * (sigmoid64 + t64) / N_LOSS + TINY)


EPS = 1e-7
# In float32 the clamp interval [eps, 1 - eps] is itself rounded to float32
# ([1e-7, 1 - 1.19e-7]); the float64 oracle uses that same interval.
LOW, HIGH = float(np.float32(EPS)), float(np.float32(1 - EPS))


@jax.custom_vjp
def _straight_through_clip(p):
    return jnp.clip(p, LOW, HIGH)


_straight_through_clip.defvjp(lambda p: (_straight_through_clip(p), None), lambda _, g: (g,))


def bce_straight_through(p, t):
    """The float64 oracle of LossBCE as documented: the value at the clamped point p_c;
    the gradient d/dp of the unclamped formula, taken at p_c (the clamp passes it through)."""
    p_c = _straight_through_clip(p)
    return -jnp.mean(t * jnp.log(p_c) + (1 - t) * jnp.log1p(-p_c))


probabilities = floats32((8, 2), 0, 1)


@EXAMPLES
@given(p=probabilities, t=probabilities)
def test_bce_matches_float64_oracle_including_exact_0_and_1(p, t):
    p = p.copy()
    p[0] = [0.0, 1.0]  # exact 0 and 1, with any target
    (value, grad), (value64, grad64) = compare_loss(LossBCE(EPS), bce_straight_through)(p, t)
    p_c = np.clip(p.astype(np.float64), LOW, HIGH)
    t64 = t.astype(np.float64)
    # Each log within 8 U, products and sums within a few U of their terms' magnitudes.
    terms = 10 * U * (t64 * np.abs(np.log(p_c)) + np.abs(np.log1p(-p_c)))
    assert_within("value", value, value64, terms.mean() + (N_LOSS + 2) * U * value64 + TINY)
    # (p_c - t) / (p_c (1 - p_c)) / n: a few roundings, each relative to the result.
    assert_within("grad", grad, grad64, 8 * U * np.abs(grad64) + TINY)


CLASSES = 3


def cross_entropy_reference(y, t):
    t = jax.nn.one_hot(t, CLASSES, dtype=y.dtype) if jnp.issubdtype(t.dtype, jnp.integer) else t
    return -jnp.sum(t * jax.nn.log_softmax(y)) / y.shape[0]


def ce_bounds(y, t):
    """Error bounds of LossCrossEntropy on logits y (B, C) and target rows t (B, C).

    log_softmax = (y - max) - log(sum(exp(y - max))): the shift rounds within U of
    its result, exp turns that into a relative error, the sum of C terms >= 1 adds a
    few U: within 16 U (|log_softmax| + C) in all. The softmax exp(log_softmax)
    carries that as a relative error.
    """
    y = y.astype(np.float64)
    shifted = y - y.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    ls_error = 16 * U * (np.abs(log_softmax) + CLASSES)
    n = y.shape[0]
    value_bound = ((np.abs(t) * ls_error).sum() + (t.size + 2) * U * np.abs(t * log_softmax).sum()) / n + TINY
    softmax = np.exp(log_softmax) * t.sum(axis=-1, keepdims=True)
    grad_bound = (softmax * (ls_error + 10 * U) + 4 * U * np.abs(t)) / n + TINY
    return value_bound, grad_bound


@EXAMPLES
@given(y=floats32((8, CLASSES)), labels=arrays(np.int32, (8,), elements=st.integers(0, CLASSES - 1)))
def test_cross_entropy_labels_match_float64_oracle(y, labels):
    compare = compare_loss(LossCrossEntropy(), cross_entropy_reference)
    (value, grad), (value64, grad64) = compare(y, labels)
    value_bound, grad_bound = ce_bounds(y, np.eye(CLASSES)[labels])
    assert_within("value", value, value64, value_bound)
    assert_within("grad", grad, grad64, grad_bound)


@EXAMPLES
@given(y=floats32((8, CLASSES)), t=floats32((8, CLASSES), 0, 1))
def test_cross_entropy_probabilities_match_float64_oracle(y, t):
    compare = compare_loss(LossCrossEntropy(), cross_entropy_reference)
    (value, grad), (value64, grad64) = compare(y, t)
    value_bound, grad_bound = ce_bounds(y, t.astype(np.float64))
    assert_within("value", value, value64, value_bound)
    assert_within("grad", grad, grad64, grad_bound)


# --- a whole serial -----------------------------------------------------------------------------
# Smooth activations only: at a kink (ReLU, LeakyReLU, ELU at 0) a float32 rounding of a
# pre-activation may cross the kink and flip the derivative, which is no accuracy defect;
# those layers are compared above at the very same float32 inputs.

WIDTHS = (4, 8, 8, CLASSES)
ACTS = (Tanh(), Softplus(), Sigmoid())
MODEL_LAYERS = [
    layer for n_in, n_out, act in zip(WIDTHS, WIDTHS[1:], ACTS) for layer in (Linear(n_in, n_out), act)
]
MODEL = fnnet.serial(*MODEL_LAYERS)
REFERENCES = (jnp.tanh, jax.nn.softplus, jax.nn.sigmoid)


B_SERIAL = 16


def serial_reference(params, x):
    for linear, f in zip(params[::2], REFERENCES):
        x = f(x @ linear["w"] + linear["b"][None, :])
    return x


def serial_bounds(params, x, dy):
    """First-order running error bounds of the float32 serial, in float64, layer by layer
    (the magnitudes from fnnet's own apply and vjp in float64, checked above).

    Forward, a Linear adds (n_in + 2) U (|a| |w| + |b|) to the error its input carries
    through |w|; an activation (1-Lipschitz) passes the error on and adds 8 U |y|.
    Backward, an activation's f' (|f'| <= 1, |f''| <= 1) is off by the forward error
    of its input plus ~20 U; a Linear's products add (k + 1) U of their absolute terms.
    Returns the bounds on (dparams, dx) and on y.
    """
    inputs, errors = [], []
    a, error = x, jnp.zeros_like(x)
    for layer, p in zip(MODEL_LAYERS, params):
        inputs.append(a)
        errors.append(error)
        if p:  # Linear
            w, b = jnp.abs(p["w"]), jnp.abs(p["b"])
            error = error @ w + (w.shape[0] + 2) * U * (jnp.abs(a) @ w + b[None, :]) + TINY
        a = layer.apply(p, a)
        if not p:
            error = error + 8 * U * jnp.abs(a) + TINY
    y_bound = error
    g, g_error = dy, jnp.zeros_like(dy)
    dparams_bounds = [None] * len(params)
    for i in reversed(range(len(params))):
        layer, p, a, a_error = MODEL_LAYERS[i], params[i], inputs[i], errors[i]
        dparams, dx = layer.vjp(p, a, g)
        if p:
            w = jnp.abs(p["w"])
            n = a.shape[0]
            dparams_bounds[i] = {
                "w": a_error.T @ jnp.abs(g)
                + jnp.abs(a).T @ g_error
                + (n + 1) * U * jnp.abs(a).T @ jnp.abs(g)
                + TINY,
                "b": g_error.sum(axis=0) + (n + 1) * U * jnp.abs(g).sum(axis=0) + TINY,
            }
            g_error = g_error @ w.T + (w.shape[1] + 1) * U * jnp.abs(g) @ w.T + TINY
        else:
            dparams_bounds[i] = ()
            df = jnp.abs(layer.vjp((), a, jnp.ones_like(a))[1])
            g_error = g_error * df + jnp.abs(g) * (a_error + 20 * U) + U * jnp.abs(dx) + TINY
        g = dx
    return y_bound, (tuple(dparams_bounds), g_error)


@jax.jit
@highest_precision
def compare_serial(params, x, dy):
    twin = feature_major_twin(MODEL)
    dparams_fm, dx_fm = twin.vjp(params, x.T, dy.T)
    hand = (
        (MODEL.apply(params, x), MODEL.vjp(params, x, dy)),
        (twin.apply(params, x.T).T, (dparams_fm, dx_fm.T)),
    )
    params64, x64, dy64 = jax.tree.map(lambda a: a.astype(F64), (params, x, dy))
    return hand, oracle_vjp(serial_reference, params, x, dy), serial_bounds(params64, x64, dy64)


def serial_params():
    shapes = [(n_in, n_out) for n_in, n_out in zip(WIDTHS, WIDTHS[1:])]
    return st.tuples(
        *(
            st.fixed_dictionaries({"w": floats32(shape, -2, 2), "b": floats32(shape[1:], -2, 2)})
            for shape in shapes
        )
    )


@EXAMPLES
@given(linears=serial_params(), x=floats32((B_SERIAL, WIDTHS[0])), dy=floats32((B_SERIAL, WIDTHS[-1])))
def test_serial_matches_float64_oracle(linears, x, dy):
    # Weights within +-2, as training gives; the data and cotangents span +-1e4. The bounds
    # are first order (products of two errors dropped), hence the factor 2.
    params = tuple(p for linear in linears for p in (linear, ()))
    hands, (y64, grads64), (y_bound, grad_bounds) = compare_serial(params, x, dy)
    for layout, (y, grads) in zip(["batch-major", "feature-major"], hands):
        assert_within(f"{layout} y", y, y64, 2 * y_bound)
        for (path, got), want, bound in zip(
            jax.tree_util.tree_flatten_with_path(grads)[0],
            jax.tree.leaves(grads64),
            jax.tree.leaves(grad_bounds),
        ):
            assert_within(f"{layout} {jax.tree_util.keystr(path)}", got, want, 2 * bound)
