"""`check_vjp`: a layer's hand-derived VJP against finite differences, for layers you write.

The expected gradient comes from the layer's own `apply`, entry by entry, by central
differences (as `torch.autograd.gradcheck` does), always in float64: no autodiff anywhere
in fnnet. Each entry's allowance is its own: the differences' rounding and uncertainty
(two steps compared: truncation, rounding inside the layer, a kink the steps cross) are
measured at that entry, not guessed from the whole output's size.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnnet._checks import check_key, check_shape, describe, is_real
from fnnet.combinators import _checked_apply, _checked_init
from fnnet.layers import Layer, contract_hint

__all__ = ["check_vjp"]

STEP = 1e-5  # the central differences' step, in float64 (near eps ** (1 / 3), their best)
ROUNDING = 64  # an evaluation's rounding, in units of eps * |output| (generous: reductions add more)
KINK = 1e-4  # an uncertainty above this fraction of the leaf's largest entry: a kink in the steps
DRAWS = 8  # points drawn before giving up on one away from kinks


def check_vjp(
    layer: Layer, input_shape, *, key, train=None, input_scales=(1.0, 10.0, 1000.0), rtol=1e-4, atol=1e-7
) -> None:
    """Check `layer.vjp` against finite differences at random points, in float64.

    Draws params with `layer.init(key, input_shape)`, an input x from the normal
    distribution and a cotangent dy, and compares `layer.vjp(params, x, dy)` with the
    gradient of `sum(dy * layer.apply(params, x))` by central differences, entry by
    entry, for every floating leaf of dparams and for dx. Everything runs in float64
    (inside `jax.enable_x64`, params cast up) whatever the layer's dtype and the global
    `jax_enable_x64`, so the answer does not depend on float32's coarse differences; a
    layer must compute in its inputs' dtype (no cast down inside) to be checked.

    A point where the steps cross a kink of a piecewise-linear layer (ReLU, MaxPool2D:
    differences of two step sizes disagree) is redrawn, up to 8 times; at the last, an
    entry next to a kink is allowed twice that disagreement, the error the kink causes.

    Args:
      layer: the Layer to check.
      input_shape: the shape of x, a tuple of ints, e.g. `(8, 3)`: keep it small, each
        entry of x and of the params costs seven forward passes (steps of +-1e-5, +-2e-5,
        +-1 and 0, run together in a `vmap`, in pieces of bounded memory).
      key: a `jax.random` key: the params, x and dy are drawn from it.
      train: True checks training mode (apply and vjp given the same key, so stochastic
        layers draw the same masks), False inference; None (default) checks both.
      input_scales: x is drawn with each of these standard deviations in turn, one check
        each: the wider ones catch a VJP wrong only far from 0; pass `(1.0,)` for a
        layer defined only near 0.
      rtol, atol: an entry passes when its error is at most `rtol` times the entry, plus
        `atol` times the leaf's largest entry, plus that entry's own rounding and twice
        its uncertainty (both tiny away from kinks): a 1% error is caught in any entry
        above 1e-5 of its leaf's largest, at any batch size and input offset.

    Raises:
      AssertionError: naming the first leaf that disagrees (`dparams[0]['w']` or `dx`),
        the mode and scale, its largest error, and that entry's value, its expected
        value and the error allowed there.
      ValueError: when the layer's output is not finite at the point drawn (an
        overflow far from 0: pass smaller input_scales).
      TypeError: when init or apply return something other than the contract's.

    Example:
      >>> Cube = elementwise("Cube", lambda x: x ** 3, lambda x, y: 3 * x * x)
      >>> check_vjp(Cube, (4, 3), key=jax.random.key(0))
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_vjp: layer must be a Layer, got {describe(layer)}")
    shape = check_shape("check_vjp", input_shape)
    if any(n < 1 for n in shape):
        raise ValueError(f"check_vjp: input_shape must hold sizes >= 1 (an entry to check), got {shape}")
    key = check_key("check_vjp", key)
    if train is not None and not isinstance(train, bool):
        raise TypeError(f"check_vjp: train must be True, False or None (both), got {describe(train)}")
    scales = _check_scales(input_scales)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)

    modes = (False, True) if train is None else (train,)
    with jax.enable_x64(True), contract_hint():
        _check_contract(layer, shape, key, modes)
        for i, scale in enumerate(scales):
            _check_at(layer, shape, jax.random.fold_in(key, i), modes, scale, rtol, atol)


def _check_scales(input_scales) -> tuple:
    if not (isinstance(input_scales, (tuple, list)) and input_scales and all(map(is_real, input_scales))):
        raise TypeError(
            f"check_vjp: input_scales must be a non-empty tuple of numbers, such as (1.0, 1000.0), "
            f"got {describe(input_scales)}"
        )
    if not all(math.isfinite(s) and s > 0 for s in input_scales):
        raise ValueError(f"check_vjp: input_scales must be finite and > 0, got {tuple(input_scales)}")
    return tuple(float(s) for s in input_scales)


def _check_tolerance(name: str, value) -> float:
    if not is_real(value):
        raise TypeError(f"check_vjp: {name} must be a number >= 0, such as 1e-4, got {describe(value)}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"check_vjp: {name} must be a finite number >= 0, got {value}")
    return float(value)


def _check_contract(layer, shape, key, modes) -> None:
    """init returns (output_shape, params) and apply one array (traced, not run), else a
    clear error, not one from inside the differences."""
    _, params = _checked_init(layer, key, shape)
    params = jax.tree.map(_float64, params)
    for train in modes:
        mode = dict(train=train, key=key if train else None)
        y = jax.eval_shape(functools.partial(_checked_apply, layer, **mode), params, _input(shape))
        if y.dtype != jnp.float64:
            raise TypeError(
                f"check_vjp: {layer.name}: apply returned {y.dtype} for float64 params and x; "
                f"the check differences in float64, so the layer must compute in its input's "
                f"dtype (no cast to another inside)"
            )


def _check_at(layer, shape, key, modes, scale, rtol, atol) -> None:
    """Draw points until one is away from kinks in every mode (or DRAWS are drawn), then
    compare there, inference first."""
    differences = _jitted(_differences_at, layer.apply)
    for draw in range(DRAWS):
        init_key, point_key = jax.random.split(jax.random.fold_in(key, draw))
        _, params = _checked_init(layer, init_key, shape)
        params = jax.tree.map(_float64, params)
        points = differences(params, point_key, scale, jnp.zeros((), jnp.int64), shape=shape, modes=modes)
        checks = []
        for train, (x, dy, train_key, (expected, rounding, uncertainty, finite)) in zip(modes, points):
            where = f"{'training' if train else 'inference'} mode, x of standard deviation {scale:g}"
            if not finite:
                raise ValueError(
                    f"check_vjp: the layer's output is not finite at the point drawn ({where}); "
                    f"pass input_scales with smaller scales, such as (1.0,)"
                )
            actual = layer.vjp(
                params, x, dy, train=train, key=train_key if train else None
            )  # once: not jitted
            _check_structure(expected, actual)
            checks.append((expected, actual, rounding, uncertainty, where))
        if not any(
            _kinked(expected, rounding, uncertainty) for expected, _, rounding, uncertainty, _ in checks
        ):
            break
    floating = jax.tree.map(
        lambda leaf: bool(jnp.issubdtype(leaf.dtype, jnp.floating)), (params, _input(shape))
    )
    for expected, actual, rounding, uncertainty, where in checks:
        _compare(expected, actual, rounding, uncertainty, floating, rtol, atol, where)


def _input(shape):
    return jax.ShapeDtypeStruct(shape, jnp.float64)


def _float64(leaf):
    return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def _jitted(function, callable_):
    """`function` with its first argument `callable_` (a layer's apply) bound, jitted with
    its keywords static; cached when `callable_` is a value (hashable) or a value's
    method, so the differences of one apply compile once whatever its vjp."""
    # A bound method compares its self by identity: key it by its function and self instead.
    key = (callable_.__func__, callable_.__self__) if inspect.ismethod(callable_) else callable_
    try:
        return _cached_jit(function, key)
    except TypeError:  # not hashable
        return _jit(function, callable_)


@functools.lru_cache(maxsize=128)
def _cached_jit(function, key):
    return _jit(function, key[0].__get__(key[1]) if isinstance(key, tuple) else key)


def _jit(function, callable_):
    return jax.jit(functools.partial(function, callable_), static_argnames=("shape", "modes"))


def _differences_at(apply, params, key, scale, zero, *, shape, modes):
    """For each mode (train False or True) in `modes`: the point drawn from `key` (x, dy
    and the training key) and the differences there, `(expected, rounding, uncertainty)`,
    each a `(dparams, dx)`, and whether the output is finite. One program for every mode."""
    x_key, dy_key, train_key = jax.random.split(key, 3)
    x = scale * jax.random.normal(x_key, shape, jnp.float64)
    return tuple(_differences(apply, params, x, dy_key, train_key, zero, train) for train in modes)


def _differences(apply, params, x, dy_key, train_key, zero, train):
    """Central differences of `vdot(dy, apply(params, x))`, entry by entry of every floating
    leaf of (params, x) (one flat vector, one `vmap`), with each entry's rounding allowance
    and uncertainty.

    Both sum over the outputs the entry moves (those a step of 1 moves too: a change below
    float64's resolution is still a change). The rounding: `ROUNDING * eps` of each output,
    plus the vjp's own, of its terms' size (`max|dy| * max|y|`). The uncertainty,
    dy-weighted: how far each output's differences of step STEP and 2 * STEP disagree
    (three times the smaller step's truncation, about its rounding, measured whatever the
    layer computes inside), plus its second difference over 2 * STEP (the error a kink
    within the step causes, even one both steps straddle), plus, where only the steps of 1
    move it (either way), their larger secant (a slope the small steps cannot resolve)."""
    apply = functools.partial(apply, train=train, key=train_key if train else None)
    center = _stored(apply(params, x), zero)
    dy = jax.random.normal(dy_key, jnp.shape(center), jnp.float64)
    leaves, tree = jax.tree.flatten((params, x))
    floating = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    flat, unravel = ravel_pytree([leaves[i] for i in floating])
    eps = float(jnp.finfo(jnp.float64).eps)

    def at(delta):
        moved = list(leaves)
        for i, leaf in zip(floating, unravel(flat + delta)):
            moved[i] = leaf
        return apply(*jax.tree.unflatten(tree, moved))

    def entry(index):
        unit = jax.nn.one_hot(index, flat.size, dtype=flat.dtype)
        steps = jnp.stack([s * unit for s in (STEP, -STEP, 2 * STEP, -2 * STEP, 1.0, -1.0, 0.0)])
        plus, minus, plus2, minus2, far_plus, far_minus, center = _stored(jax.vmap(at)(steps), zero)
        moved = (plus != minus) | (plus2 != minus2) | (far_plus != plus) | (far_minus != minus)
        slope, slope2 = (plus - minus) / (2 * STEP), (plus2 - minus2) / (4 * STEP)
        bend = jnp.abs(plus - 2 * center + minus) / (2 * STEP)  # a kink both steps straddle
        # Moved by the steps of 1 either way, not by the small ones: a slope below the
        # output's resolution (saturated terms summing to near 0), bounded by the secants.
        rise, fall = jnp.abs(far_plus - center), jnp.abs(center - far_minus)
        unresolved = (plus == minus) & (plus2 == minus2) & (rise > 0) & (fall > 0)
        blind = jnp.where(unresolved, jnp.maximum(rise, fall), 0.0)
        weight = jnp.abs(dy) * moved
        rounding = ROUNDING * eps * jnp.sum(weight * (jnp.abs(plus) + jnp.abs(minus))) / (2 * STEP)
        return jnp.vdot(dy, slope), rounding, jnp.sum(weight * (jnp.abs(slope - slope2) + bend + blind))

    # A bounded number of floats in memory at once: each step holds its moved entries and outputs.
    batch = max(1, 2**21 // (7 * (flat.size + center.size)))
    indices = jnp.arange(flat.size)
    expected, rounding, uncertainty = (
        jax.vmap(entry)(indices) if flat.size <= batch else jax.lax.map(entry, indices, batch_size=batch)
    )
    rounding = rounding + ROUNDING * eps * jnp.max(jnp.abs(dy)) * jnp.max(jnp.abs(center))

    def as_tree(flat_part):  # integer leaves have no differences: zeros
        parts = [jnp.zeros(leaf.shape, jnp.float64) for leaf in leaves]
        for i, part in zip(floating, unravel(flat_part)):
            parts[i] = part
        return jax.tree.unflatten(tree, parts)

    results = tuple(as_tree(part) for part in (expected, rounding, uncertainty))
    return x, dy, train_key, (*results, jnp.all(jnp.isfinite(center)))


def _stored(y, zero):
    """`y` as float64 values in memory: its bits through an integer XOR with a zero that
    is an argument of the program. Otherwise XLA may contract a product inside `y` into
    the subtraction of two outputs with a fused multiply-add, and difference unrounded
    values: outputs a step does not move would differ by their rounding."""
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(y, jnp.int64) ^ zero, jnp.float64)


def _named_leaves(dparams_and_dx):
    dparams, dx = dparams_and_dx
    leaves = jax.tree_util.tree_flatten_with_path(dparams)[0]
    return [("dparams" + jax.tree_util.keystr(path), leaf) for path, leaf in leaves] + [("dx", dx)]


def _check_structure(expected, actual) -> None:
    if not (isinstance(actual, tuple) and len(actual) == 2):
        raise AssertionError(
            f"check_vjp: vjp must return a pair (dparams, dx), got {type(actual).__name__}"
            + (f" of length {len(actual)}" if isinstance(actual, tuple) else "")
        )
    if jax.tree.structure(actual) != jax.tree.structure(expected):  # type: ignore[operator]
        raise AssertionError(
            f"check_vjp: vjp returned {jax.tree.structure(actual)}, "
            f"expected (dparams, dx) with the structure {jax.tree.structure(expected)}"
        )
    for (name, a), (_, e) in zip(_named_leaves(actual), _named_leaves(expected)):
        if jnp.shape(a) != jnp.shape(e):
            raise AssertionError(f"check_vjp: {name} has shape {jnp.shape(a)}, expected {jnp.shape(e)}")


def _kinked(expected, rounding, uncertainty) -> bool:
    """Whether any entry's uncertainty exceeds its rounding plus KINK times its leaf's
    largest entry: the steps cross a kink there."""
    return any(
        bool(np.any(np.asarray(k) > np.asarray(r) + KINK * np.max(np.abs(np.asarray(e)), initial=0.0)))
        for e, r, k in zip(jax.tree.leaves(expected), jax.tree.leaves(rounding), jax.tree.leaves(uncertainty))
    )


def _compare(expected, actual, rounding, uncertainty, floating, rtol, atol, where) -> None:
    """Each leaf of `actual` whose param (or x) is floating against `expected`, entry by entry;
    `floating`, a tree like (params, x) of bools (an integer param has no gradient)."""
    named = zip(
        _named_leaves(actual),
        _named_leaves(expected),
        _named_leaves(rounding),
        _named_leaves(uncertainty),
        _named_leaves(floating),
    )
    for (name, a), (_, e), (_, r), (_, k), (_, checked) in named:
        if not checked:
            continue
        if jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
            raise AssertionError(
                f"check_vjp: {name} is complex ({jnp.result_type(a)}), for a real {name[1:]}"
            )
        e, a = np.asarray(e, np.float64), np.asarray(a, np.float64)  # an int or bool leaf as its values
        error = np.abs(a - e)
        scale = float(np.max(np.abs(e), initial=0.0))
        allowed = rtol * np.abs(e) + atol * scale + np.asarray(r) + 2 * np.asarray(k)
        bad = ~(error <= allowed)
        if bad.any():
            worst = np.unravel_index(
                np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -np.inf)), e.shape
            )
            at = f"{name}[{', '.join(str(int(i)) for i in worst)}]" if e.ndim else name
            raise AssertionError(
                f"check_vjp: {name} differs from finite differences in {int(bad.sum())} of {a.size} "
                f"entries ({where}); largest error {float(error[worst]):.3g}, at {at}: got "
                f"{float(a[worst]):.6g}, expected {float(e[worst]):.6g}, allowed {float(allowed[worst]):.3g} "
                f"(rtol={rtol} of the entry, atol={atol} of the leaf's largest entry {scale:.3g}, plus the "
                f"entry's rounding and twice its uncertainty)"
            )
