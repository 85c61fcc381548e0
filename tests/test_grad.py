"""Gradients through whole models: fnnet.value_and_grad and fnnet.as_jax against jax.

Also checks that the library itself never calls JAX's autodiff.
"""

import ast
import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet._layout import _twin as feature_major_twin
from fnnet import Layer, Linear, LossBCE, LossCrossEntropy, LossMSE, ReLU, Sigmoid, Tanh, as_jax, serial
from helpers import assert_trees_close, device, jitted_value_and_grad
from layer_oracle import DTYPES

TIGHT = dict(rtol=1e-10, atol=1e-14)
# float32: the hand gradients run on the feature-major twin, jax's on the batch-major
# apply, so sums of up to 64 products add up in another order: a few float32 roundings
# per entry, relative to the leaf's largest entry where one entry cancels to near zero.
FLOAT32 = dict(rtol=1e-5, atol=1e-6)


def mlp(widths, hidden, output=None, dtype=jnp.float64):
    """Linear layers in `dtype` of the given widths, `hidden` between them, `output` last."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        layers.append(Linear(n_in, n_out, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(hidden)
    return serial(*layers, *([output] if output is not None else []))


REPORT = (2, 25, 25, 25, 25, 1)  # the report's network
HANDOUT = (2, 25, 25, 25, 2)  # the handout's network


def binary_targets(rng, batch_shape):
    return (rng.uniform(size=batch_shape + (1,)) < 0.5).astype(np.float64)


def tanh_targets(rng, batch_shape):
    return rng.uniform(-1, 1, size=batch_shape + (1,))


def labels(rng, batch_shape):
    return rng.integers(0, 2, size=batch_shape).astype(np.int32)


def one_hot(rng, batch_shape):
    return np.eye(2)[labels(rng, batch_shape)]


CASES = {  # the model's (widths, hidden, output), the loss, the targets
    "report-sigmoid-bce": ((REPORT, ReLU(), Sigmoid()), LossBCE(), binary_targets),
    "report-tanh-mse": ((REPORT, ReLU(), Tanh()), LossMSE(), tanh_targets),
    "handout-ce-labels": ((HANDOUT, ReLU()), LossCrossEntropy(), labels),
    "handout-mse-one-hot": ((HANDOUT, ReLU()), LossMSE(), one_hot),
}


def init_params(model, n_in, seed):
    """Params like `model.init`'s (U[-1/sqrt(n_in), 1/sqrt(n_in)]), drawn with numpy:
    `init` is tested elsewhere, and compiling its random draws here costs time."""
    found = jax.eval_shape(lambda key: model.init(key, (n_in,))[1], jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(s):
        bound = 1 / np.sqrt(s.shape[0]) if len(s.shape) == 2 else 0.5
        return device(rng.uniform(-bound, bound, size=s.shape), s.dtype)

    return jax.tree.map(draw, found)


def problem(case, batch_shape=(64,), seed=0, dtype=np.float64):
    """`(model, loss, params, x, targets)`, every float array in `dtype` (labels int32)."""
    layers, loss, targets = CASES[case]
    model = mlp(*layers, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = device(rng.uniform(-1, 1, size=batch_shape + (2,)), dtype)
    t = targets(rng, batch_shape)
    return model, loss, init_params(model, 2, seed), x, device(t, t.dtype if t.dtype == np.int32 else dtype)


@functools.lru_cache(maxsize=None)
def oracle(model, loss):
    """jax.value_and_grad of the loss of the plain forward pass, jitted."""
    return jax.jit(jax.value_and_grad(lambda params, x, t: loss.value(model.apply(params, x), t)))


def assert_value_and_grads_close(actual, expected, dtype=np.float64):
    (value, grads), (value_expected, grads_expected) = actual, expected
    tolerance = TIGHT if dtype == np.float64 else FLOAT32
    np.testing.assert_allclose(value, value_expected, rtol=tolerance["rtol"])
    assert jax.tree.structure(grads) == jax.tree.structure(grads_expected)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_expected)):
        assert g.shape == e.shape and g.dtype == e.dtype == dtype
        atol = tolerance["atol"] * max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(g, e, rtol=tolerance["rtol"], atol=atol)


@DTYPES
@pytest.mark.parametrize("case", CASES)
def test_value_and_grad_matches_jax(case, dtype):
    model, loss, params, x, t = problem(case, dtype=dtype)
    # A 2-D x runs on the feature-major twin.
    assert feature_major_twin(model) is not None
    expected = oracle(model, loss)(params, x, t)
    assert_value_and_grads_close(jitted_value_and_grad(model, loss)(params, x, t), expected, dtype)
    assert expected[0].dtype == dtype  # float32 stays float32
    # The gradient is not trivially small: the comparison means something.
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(expected[1])) > 1e-3


def test_value_and_grad_matches_jax_without_jit():
    model, loss, params, x, t = problem("handout-ce-labels", batch_shape=(16,))
    expected = oracle(model, loss)(params, x, t)
    assert_value_and_grads_close(fnnet.value_and_grad(model, loss)(params, x, t), expected)


def test_value_and_grad_with_leading_batch_dims():
    # A 3-D x takes the batch-major path.
    model, loss, params, x, t = problem("handout-ce-labels", batch_shape=(3, 8), seed=1)
    expected = oracle(model, loss)(params, x, t)
    assert_value_and_grads_close(jitted_value_and_grad(model, loss)(params, x, t), expected)
    # ... and is the same loss as the same examples flattened to 2-D.
    flat = jitted_value_and_grad(model, loss)(params, x.reshape(24, 2), t.reshape(24))
    assert_value_and_grads_close(flat, expected)


# --- as_jax -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def grad_through_as_jax(model, loss):
    """d loss / d (params, x), JAX's autodiff driving the model's hand vjp."""
    f = as_jax(model)
    return jax.grad(lambda params, x, t: loss.value(f(params, x), t), argnums=(0, 1))


@DTYPES
@pytest.mark.parametrize("case", ["report-sigmoid-bce", "handout-ce-labels"])
def test_as_jax_grad_equals_value_and_grad(case, dtype):
    model, loss, params, x, t = problem(case, seed=2, dtype=dtype)

    @jax.jit
    def both(params, x, t):
        value_and_dx = jax.value_and_grad(lambda x: loss.value(model.apply(params, x), t))
        return grad_through_as_jax(model, loss)(params, x, t), value_and_dx(x)

    (dparams, dx), (value, dx_expected) = both(params, x, t)
    assert_value_and_grads_close((value, dparams), jitted_value_and_grad(model, loss)(params, x, t), dtype)
    # d loss / dx, which value_and_grad does not return, against the oracle.
    assert dx.dtype == dx_expected.dtype == dtype
    np.testing.assert_allclose(dx, dx_expected, **(TIGHT if dtype == np.float64 else FLOAT32))
    assert as_jax(model) == as_jax(model)


def test_as_jax_under_vmap_over_stacked_params():
    model, loss, _, x, t = problem("handout-ce-labels", seed=4)
    param_sets = [init_params(model, 2, seed) for seed in (10, 11, 12)]
    stacked = jax.tree.map(lambda *a: device(np.stack(a)), *param_sets)

    def grad_params(p):
        return grad_through_as_jax(model, loss)(p, x, t)[0]

    batched = jax.jit(jax.vmap(grad_params))(stacked)
    for i, params in enumerate(param_sets):
        expected = oracle(model, loss)(params, x, t)
        assert_value_and_grads_close(
            (0.0, jax.tree.map(lambda a: np.asarray(a)[i], batched)), (0.0, expected[1])
        )
    # The three parameter sets give three different gradients (vmap did not just broadcast).
    assert not np.allclose(batched[0]["w"][0], batched[0]["w"][1])


def test_hand_vjp_is_what_jax_calls():
    # A model whose vjp is deliberately wrong by a factor 2 and counts its calls
    # (at trace time, under jit).
    model, loss, params, x, t = problem("report-sigmoid-bce", seed=5)
    calls = []

    def doubled_vjp(params, x, dy, *, train=False, key=None):
        calls.append(x.shape)
        return model.vjp(params, x, 2 * dy, train=train, key=key)

    doubled = Layer(model.init, model.apply, doubled_vjp)
    assert feature_major_twin(doubled) is None  # not the twin of anything: vjp must be used
    value, expected = oracle(model, loss)(params, x, t)
    twice = jax.tree.map(lambda g: 2 * g, expected)

    dparams, _ = jax.jit(grad_through_as_jax(doubled, loss))(params, x, t)
    assert calls == [(64, 2)]
    assert_value_and_grads_close((value, dparams), (value, twice))

    assert_value_and_grads_close(jax.jit(fnnet.value_and_grad(doubled, loss))(params, x, t), (value, twice))
    assert calls == [(64, 2), (64, 2)]


def test_as_jax_is_reverse_mode_only():
    model, _, params, x, _ = problem("report-tanh-mse", batch_shape=(4,))
    with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff \(jvp\) to a custom_vjp"):
        jax.jvp(lambda x: as_jax(model)(params, x), (x,), (x,))


# --- no autodiff inside the library -------------------------------------------------------

AUTODIFF = ("grad", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "value_and_grad", "hessian")
GREP = re.compile(r"jax\.(" + "|".join(AUTODIFF) + r")\b")


def autodiff_uses(source):
    """Uses of JAX autodiff in Python code, ignoring docstrings and comments
    (the docs do mention jax.grad, as what users may call on `as_jax`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in AUTODIFF:
            if isinstance(node.value, ast.Name) and node.value.id == "jax":
                found.append(f"line {node.lineno}: jax.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jax"):
            found += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name in AUTODIFF
            ]
    return found


def code_only(source):
    """`source` with docstrings, other string literals and comments blanked out."""
    lines = source.splitlines(keepends=True)
    blank = [list(line) for line in lines]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for row in range(node.lineno - 1, node.end_lineno):
                start = node.col_offset if row == node.lineno - 1 else 0
                end = node.end_col_offset if row == node.end_lineno - 1 else len(blank[row])
                blank[row][start:end] = " " * (end - start)
    return "".join("".join(row).split("#")[0] + "\n" for row in blank)


def test_no_autodiff_in_fnnet():
    files = sorted(pathlib.Path(fnnet.__file__).parent.glob("*.py"))
    assert len(files) >= 8 and any(f.name == "grad.py" for f in files)
    for path in files:
        source = path.read_text()
        assert autodiff_uses(source) == [], path  # check_vjp too: finite differences
        assert GREP.findall(code_only(source)) == [], path
        if path.name != "__init__.py":  # the package exports check_vjp; no module uses it
            assert "fnnet.testing" not in code_only(source) and "testing" not in [
                alias.name
                for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom)
                for alias in node.names
            ], path


def test_autodiff_scan_would_catch_a_use():
    planted = (
        '"""Docs may say jax.grad."""\n'
        "import jax\n"
        "from jax import vjp as _vjp  # a comment saying jax.jvp\n"
        "g = jax.value_and_grad(f)\n"
        "s = 'jax.jacrev in a string'\n"
    )
    assert autodiff_uses(planted) == ["line 3: from jax import vjp", "line 4: jax.value_and_grad"]
    assert GREP.findall(code_only(planted)) == ["value_and_grad"]
    assert GREP.findall(planted) == ["grad", "jvp", "value_and_grad", "jacrev"]


def _masked_sgd(lr, mask):
    """A minimal optax-like transformation: `update(grads, state, params) -> (updates,
    state)`, the masked leaves left out (optax.masked's contract), plain SGD elsewhere."""

    def update(grads, state, params=None):
        return jax.tree.map(lambda g, keep: -lr * g if keep else jnp.zeros_like(g), grads, mask), state

    return update


def test_another_optimizer_through_as_jax_leaves_the_state_to_update_state():
    """The recipe of as_jax's docstring: jax.grad through the hand VJP, an optimizer masked
    off the State leaves, then fnnet.update_state: the same params as fnnet's own step."""
    from fnnet._loop import step_key

    model = fnnet.Sequential(fnnet.Linear(2, 6), fnnet.BatchNorm(), fnnet.ReLU(), fnnet.Linear(6, 1))
    loss = fnnet.LossMSE()
    x = jax.random.normal(jax.random.key(3), (16, 2))
    y = jax.random.normal(jax.random.key(4), (16, 1))
    params = model.init(jax.random.key(0), x.shape)[1]
    f, key = fnnet.as_jax(model, train=True), jax.random.key(5)
    update = _masked_sgd(0.1, fnnet.trainable_mask(params))
    mine = params
    for t in range(3):
        k = step_key(key, t)
        grads = jax.grad(lambda p: loss.value(f(p, x, k), y))(mine)
        updates, _ = update(grads, None, mine)
        mine = jax.tree.map(lambda p, u: p + u, fnnet.update_state(model, mine, x, key=k), updates)
    opt = fnnet.SGD(0.1, momentum=None)
    theirs, state = jax.tree.map(jnp.copy, params), opt.init(params)
    step = fnnet.train_step(model, loss, opt)
    for _ in range(3):
        theirs, state, _ = step(theirs, state, x, y, key=key)
    assert_trees_close(mine, theirs, np.float32)
    assert not np.allclose(mine[1]["running"]["var"], 1.0)  # the statistics moved
    assert fnnet.update_state(fnnet.Linear(2, 1), "unchanged", x) == "unchanged"  # no state: as it came
