"""`check_vjp`: a layer's hand-derived VJP against finite differences, for layers you write.

The expected gradient comes from the layer's own `apply`, entry by entry, by central
differences (as `torch.autograd.gradcheck` does): no autodiff anywhere in fnnet.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._checks import check_key, describe, is_int
from fnnet.layers import Layer, contract_hint

__all__ = ["check_vjp"]


def check_vjp(layer: Layer, input_shape, *, key, train: bool = False, rtol=None, atol=None) -> None:
    """Check `layer.vjp` against finite differences at a random point.

    Draws params with `layer.init(key, input_shape)`, an input x and a
    cotangent dy from the normal distribution (float64 when `jax_enable_x64`
    is on, else float32), and compares `layer.vjp(params, x, dy)` with the
    gradient of `sum(dy * layer.apply(params, x))` by central differences,
    entry by entry, for every floating leaf of dparams and for dx. With
    `train=True` both run in training mode with the same key, so stochastic
    layers draw the same masks.

    Args:
      layer: the Layer to check (its apply must be smooth within a step of
        random points, as every fnnet layer is away from measure-zero kinks;
        a float32 step of 1e-2 lands near a ReLU's or MaxPool2D's kink more
        often as the input grows).
      input_shape: the shape of x, a tuple of ints, e.g. `(8, 3)`: keep it
        small, each entry of x and of the params costs two forward passes
        (run together, in one `vmap`).
      key: a `jax.random` key: the params, x and dy are drawn from it.
      train: check training mode instead of inference.
      rtol, atol: an entry passes when its error is at most `rtol` times the
        entry, plus `atol` times the leaf's largest expected entry, plus the
        differences' rounding floor `10 * eps * sum(|dy * y|) / step` (each
        forward pass is off by about eps times the size of its terms), so a
        zero gradient passes and small ones are checked down to that floor.
        Default 1e-5 and 1e-6 in float64 (differences of step 1e-5), 1e-2 and
        1e-3 in float32 (step 1e-2: float32 differences are coarse).

    Raises:
      AssertionError: naming the first leaf that disagrees (`dparams[0]['w']`
        or `dx`), its largest error, and that entry's value, its
        expected value and the error allowed there.

    Example:
      >>> Cube = elementwise("Cube", lambda x: x ** 3, lambda x, y: 3 * x * x)
      >>> check_vjp(Cube, (4, 3), key=jax.random.key(0))
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_vjp: layer must be a Layer, got {describe(layer)}")
    if not (isinstance(input_shape, (tuple, list)) and all(is_int(n) and n >= 0 for n in input_shape)):
        raise TypeError(f"check_vjp: input_shape must be a tuple of ints, got {input_shape!r}")
    init_key, x_key, dy_key, train_key = jax.random.split(check_key("check_vjp", key), 4)
    with contract_hint():
        _, params = layer.init(init_key, tuple(input_shape))
    x64 = jax.config.read("jax_enable_x64")
    dtype = jnp.float64 if x64 else jnp.float32
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
    x = jax.random.normal(x_key, tuple(input_shape), dtype)
    mode = dict(train=train, key=train_key if train else None)
    step = 1e-5 if x64 else 1e-2
    rtol = (1e-5 if x64 else 1e-2) if rtol is None else rtol
    atol = (1e-6 if x64 else 1e-3) if atol is None else atol

    with contract_hint():
        y = layer.apply(params, x, **mode)
        dy = jax.random.normal(dy_key, y.shape, y.dtype)
        # Rounding: each vdot(dy, y) is off by about eps * sum|dy * y|, the difference by that / step.
        terms = np.abs(_as_float64(dy) * _as_float64(y))
        floor = 10 * float(jnp.finfo(dtype).eps) * float(terms.sum()) / step
        expected = _central_differences(lambda p, x: jnp.vdot(dy, layer.apply(p, x, **mode)), params, x, step)
        actual = layer.vjp(params, x, dy, **mode)
        _compare("", expected, actual, rtol, atol, floor, "differs from finite differences")


def _central_differences(f, params, x, step):
    """`(dparams, dx)`: the gradient of the scalar `f(params, x)` by central differences,
    entry by entry, each leaf's perturbations in one `vmap`; integer leaves get zeros."""
    leaves, tree = jax.tree.flatten((params, x))

    def leaf_gradient(i):
        leaf = leaves[i]
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.zeros(leaf.shape, leaf.dtype)

        def at(delta):
            moved = list(leaves)
            moved[i] = leaf + delta
            return f(*jax.tree.unflatten(tree, moved))

        basis = (step * jnp.eye(leaf.size, dtype=leaf.dtype)).reshape((leaf.size,) + leaf.shape)
        at_all = jax.vmap(at)
        return ((at_all(basis) - at_all(-basis)) / (2 * step)).reshape(leaf.shape)

    return jax.tree.unflatten(tree, [leaf_gradient(i) for i in range(len(leaves))])


def _compare(whose, expected, actual, rtol, atol, floor, differs):
    what = "vjp"
    if not (isinstance(actual, tuple) and len(actual) == 2):
        raise AssertionError(
            f"check_vjp: {whose}{what} must return a pair (dparams, dx), got "
            f"{type(actual).__name__}" + (f" of length {len(actual)}" if isinstance(actual, tuple) else "")
        )
    expected_leaves, actual_leaves = _named_leaves(expected), _named_leaves(actual)
    if [name for name, _ in actual_leaves] != [name for name, _ in expected_leaves]:
        raise AssertionError(
            f"check_vjp: {whose}{what} returned {jax.tree.structure(actual)}, "
            f"expected (dparams, dx) with the structure {jax.tree.structure(expected)}"
        )
    for (name, a), (_, e) in zip(actual_leaves, expected_leaves):
        if jnp.issubdtype(jnp.result_type(e), jnp.floating):  # integer leaves have no gradient
            _assert_close(whose + name, a, e, rtol, atol, floor, differs)


def _assert_close(name, actual, expected, rtol, atol, floor, differs):
    """Entry by entry, `|actual - expected| <= rtol * |expected| + atol * max|expected| + floor`."""
    a, e = _as_float64(actual), _as_float64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"check_vjp: {name} has shape {a.shape}, expected {e.shape}")
    error = np.abs(a - e)
    scale = float(np.max(np.abs(e), initial=0.0))
    allowed = rtol * np.abs(e) + atol * scale + floor
    bad = ~(error <= allowed)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, error, -np.inf)), e.shape)
        at = f"{name}[{', '.join(str(int(i)) for i in worst)}]" if e.ndim else name
        rounding = f", plus {floor:.3g} for the differences' rounding" if floor else ""
        raise AssertionError(
            f"check_vjp: {name} {differs} in {int(bad.sum())} of {a.size} entries; largest error "
            f"{float(error[worst]):.3g}, at {at}: got {float(a[worst]):.6g}, expected "
            f"{float(e[worst]):.6g}, allowed {float(allowed[worst]):.3g} (rtol={rtol} of the entry, "
            f"atol={atol} of the leaf's largest expected entry {scale:.3g}{rounding})"
        )


def _as_float64(array):
    return np.asarray(array, np.float64)


def _named_leaves(dparams_and_dx):
    dparams, dx = dparams_and_dx
    leaves = jax.tree_util.tree_flatten_with_path(dparams)[0]
    return [("dparams" + jax.tree_util.keystr(path), leaf) for path, leaf in leaves] + [("dx", dx)]
