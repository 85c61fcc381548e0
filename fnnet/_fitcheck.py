"""What `fit` checks before any work: each check names the argument, what was expected
and what came."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._hosts import count_nonfinite
from fnnet.layers import Layer
from fnnet.losses import Loss, check_targets
from fnnet.optim import Optimizer, OptState
from fnnet.state import trainable_mask
from fnnet.train import _check_samples


def _what(value) -> str:
    """How an error names a value that came: its type, and its name for a function."""
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return f"the function {value.__qualname__}"
    return type(value).__name__


def check_kinds(model, loss, opt) -> None:
    for name, value, kind, example in (
        ("model", model, Layer, "fnnet.serial(...)"),
        ("loss", loss, Loss, "fnnet.LossMSE()"),
        ("opt", opt, Optimizer, "fnnet.SGD(lr=0.1)"),
    ):
        if not isinstance(value, kind):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            raise TypeError(
                f"fit: {name} must be {article} {kind.__name__} (e.g. {example}), got {_what(value)}"
            )


def check_key(key):
    """The key to train with: `key`, `jax.random.key(0)` for None, a typed key for a raw one."""
    if key is None:
        return jax.random.key(0)
    raw_shape = jax.random.key_data(jax.random.key(0)).shape
    if isinstance(key, (jax.Array, np.ndarray)):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        if typed and key.shape == ():
            return key
        if not typed and key.dtype == np.uint32 and key.shape == raw_shape:
            return jax.random.wrap_key_data(key)  # an old-style raw key: the same key
        if typed or (key.dtype == np.uint32 and key.shape[-len(raw_shape) :] == raw_shape):
            count = key.size if typed else key.size // int(np.prod(raw_shape))
            raise ValueError(
                f"fit: key must be one key, got an array of {count} keys "
                f"(shape {key.shape}); pass one of them, e.g. keys[0]"
            )
    raise TypeError(
        f"fit: key must be a JAX PRNG key such as jax.random.key(0), got {_what(key)} {key!s:.40}"
    )


def check_data(name_x, name_y, x, y) -> None:
    """Types, lengths and finiteness, on the host."""
    for name, a in ((name_x, x), (name_y, y)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"fit: {name} must be an array, got {type(a).__name__}")
    _check_samples(x, y, "fit", (name_x, name_y))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"fit: {name_x} must be floating point, got dtype {x.dtype}; "
            f"convert it, e.g. {name_x}.astype(jnp.float32)"
        )
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(
            f"fit: {name_y} must be real, got dtype {y.dtype}: the losses are defined on real targets"
        )
    for name, a in ((name_x, x), (name_y, y)):
        bad = count_nonfinite(a)  # this process's part of a global array
        if bad:
            raise ValueError(f"fit: {name} holds {bad} NaN or infinite value(s)")


def check_shapes(model, loss, params, name_x, name_y, x, y) -> int:
    """Trace (not run) the model and loss on all of `x`, `y`: params must fit the model, x the
    params, y the model's output. Returns the model's number of outputs."""
    try:
        out = jax.eval_shape(model.apply, params, x)
    except (TypeError, ValueError) as error:
        if name_x == "x":
            raise
        raise type(error)(f"fit: the model on {name_x}: {error}") from error
    try:
        jax.eval_shape(loss.value, out, y)
    except ValueError as error:
        raise ValueError(f"fit: {name_y} does not fit the model's output on {name_x}: {error}") from error
    return out.shape[-1]


def check_targets_of(loss, name_y, y, n_outputs) -> None:
    try:
        check_targets(loss, y, n_outputs)
    except ValueError as error:
        raise ValueError(f"fit: {name_y}: {error}") from error


def _non_finite(name, tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            bad = int(np.sum(~np.isfinite(np.asarray(leaf))))
            if bad:
                raise ValueError(
                    f"fit: {name}{jax.tree_util.keystr(path)} holds {bad} NaN or "
                    f"infinite value(s); training must start from finite values"
                )


def check_param_dtypes(params) -> None:
    """Every leaf an array, the trainable ones floating point."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), trainable in zip(paths, jax.tree.leaves(trainable_mask(params))):
        name = "params" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype"):
            raise TypeError(f"fit: {name} must be an array, got {_what(leaf)}")
        if trainable and not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"fit: {name} has dtype {leaf.dtype}; trainable params must be "
                f"floating point (the gradient of an integer or a bool is zero or "
                f"undefined): convert them, e.g. jax.tree.map(lambda p: "
                f"p.astype(jnp.float32), params)"
            )


def check_params(model, params, x) -> None:
    """params: the tree and shapes `model.init` gives, all finite."""
    shape = (1,) + tuple(x.shape[1:])
    expected = jax.eval_shape(lambda key: model.init(key, shape)[1], jax.random.key(0))
    got, want = jax.tree.structure(params), jax.tree.structure(expected)
    if got != want:  # type: ignore[operator]
        raise TypeError(f"fit: params must have the structure model.init gives, {want}; got {got}")
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), spec in zip(paths, jax.tree.leaves(expected)):
        if jnp.shape(leaf) != spec.shape:
            raise ValueError(
                f"fit: params{jax.tree_util.keystr(path)} has shape "
                f"{jnp.shape(leaf)}, model.init gives {spec.shape}"
            )
    _non_finite("params", params)


def check_opt_state(opt_state) -> None:
    _non_finite("opt_state", opt_state)


def underflow_step(opt, opt_state, steps: int):
    """The first of the next `steps` steps whose learning rate is exactly 0.0, with that
    lr's dtype, or None. The lr of step t is `lr * decay**t`, times `schedule(t)` for
    a scheduled lr (see fnnet.optim), computed here the way the optimizer computes it,
    in its hyperparameters' dtype."""
    if not (isinstance(opt_state, OptState) and {"lr", "decay"} <= set(opt_state.hyperparams)):
        return None
    h = opt_state.hyperparams
    if opt.schedule is None and np.all(np.asarray(h["decay"]) == 1):
        return None  # a constant lr, checked > 0 when set
    start = int(opt_state.count)
    if opt.schedule is None and float(h["lr"] * h["decay"] ** jnp.int32(start + steps - 1)) != 0:
        return None  # lr * decay**t only falls with t: not 0 at the last step, never 0
    size = 1 << max(10, (steps - 1).bit_length())  # padded: few shapes, few compilations
    t = jnp.arange(start, start + size, dtype=jnp.int32)
    with jax.ensure_compile_time_eval():
        lrs = h["lr"] * h["decay"] ** t
        if opt.schedule is not None:
            lrs = lrs * opt.schedule(t)
    zero = np.flatnonzero(np.asarray(lrs)[:steps] == 0)
    return (start + int(zero[0]), lrs.dtype) if zero.size else None
