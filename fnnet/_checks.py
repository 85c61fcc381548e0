"""Checks of the arguments every `init` takes: one PRNG key and an input shape."""

import functools
import math
import numbers
import types

import jax
import jax.numpy as jnp
import numpy as np


def is_int(value) -> bool:
    """Whether `value` is an integer scalar, not a bool: Python's, NumPy's (`np.int64(3)`)
    or a concrete 0-d array (`jnp.int32(3)`; a tracer's value is not known yet)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Integral) or _scalar_array(value, "iu")


def is_real(value) -> bool:
    """Whether `value` is a real scalar, not a bool: Python's, NumPy's (`np.float32(0.5)`)
    or a concrete 0-d array of integers or floats (`jnp.float32(0.5)`)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Real) or _scalar_array(value, "iuf")


INT32_MAX = 2**31 - 1  # the largest step, epoch or iteration count the device counts in


def is_finite(value) -> bool:
    """Whether the real number `value` is finite as a float (an int too large for one is not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def shown(value):
    """A number as an error shows it: itself, or for an int too large for a float, in words."""
    too_large = isinstance(value, int) and not isinstance(value, bool) and not is_finite(value)
    return "an int too large for a float" if too_large else value


def as_number(value):
    """A concrete 0-d JAX or NumPy array or a NumPy scalar of numbers (which `is_int` and
    `is_real` accept) as its Python number, hashable, so equal settings share their
    compiled programs; anything else (a bool, a tracer, a schedule) as it came."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and not isinstance(value, jax.core.Tracer):
        if jnp.shape(value) == () and (is_real(value) or is_int(value)):
            return value.item()
    return value


def _scalar_array(value, kinds: str) -> bool:
    """Whether `value` is a concrete 0-d array whose dtype is of `kinds` (NumPy's letters;
    bfloat16 and the other ml_dtypes floats count as "f")."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or jnp.shape(value) != () or isinstance(value, jax.core.Tracer):
        return False
    kind = "f" if "f" in kinds and jnp.issubdtype(dtype, jnp.floating) else np.dtype(dtype).kind
    return kind in kinds


def describe(value) -> str:
    """How an error names a value that came: an array by its dtype and shape, a function
    by its name, a short value (a number, a string, a small tuple) by its repr and type,
    anything longer by its type."""
    if isinstance(value, jax.core.Tracer):
        return f"a traced array of dtype {value.dtype} and shape {tuple(value.shape)} (no value inside jit or vmap)"
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
        return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return f"the function {value.__qualname__}"
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    if isinstance(value, types.MethodType):
        return f"the method {value.__qualname__} of {describe(value.__self__)}"
    if shown(value) is not value:
        return shown(value)
    text = repr(value)
    return f"{text} ({type(value).__name__})" if len(text) <= 60 else type(value).__name__


_MANY = "one run per key is a sweep (fnnet.init_many, fnnet.sweep, jax.vmap)"


def _raw_shape() -> tuple:
    """The shape of a raw key of the default PRNG (threefry: (2,))."""
    return _raw_shape_of(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]


@functools.cache
def _raw_shape_of(impl: str) -> tuple:
    return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape  # traced, not run


def check_key(owner: str, key, name: str = "key"):
    """Return `key` if it is one PRNG key: `jax.random.key(0)`, or a raw `PRNGKey(0)`
    (uint32, the default PRNG's shape); raise TypeError for anything else, ValueError for
    several keys. Tracers pass when their shape and dtype fit (inside `vmap`)."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == np.uint32 and jnp.ndim(key) >= 1
    shape, raw_shape = jnp.shape(key), _raw_shape()
    if typed and shape == () or raw and shape == raw_shape:
        return key
    if raw and shape[-1:] != raw_shape:
        raise ValueError(
            f"{owner}: {name} is a raw key of shape {shape}, the default PRNG's are {raw_shape}; "
            f"pass a key such as jax.random.key(0)"
        )
    if typed or raw:
        count, kind = (math.prod(shape), "keys") if typed else (math.prod(shape[:-1]), "raw keys")
        raise ValueError(
            f"{owner}: {name} must be one PRNG key, got an array of {count} {kind} (shape "
            f"{shape}); pass one of them; {_MANY}"
        )
    raise TypeError(f"{owner}: {name} must be a PRNG key such as jax.random.key(0), got {describe(key)}")


def check_keys(owner: str, keys, name: str = "keys") -> int:
    """Raise unless `keys` is a 1-D array of PRNG keys (or raw keys stacked `(M, 2)`), as
    `jax.random.split(key, M)` makes; returns M."""
    dtype = getattr(keys, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == np.uint32 and jnp.ndim(keys) == 2 and jnp.shape(keys)[1:] == _raw_shape()
    if not (typed and jnp.ndim(keys) == 1 or raw):
        raise TypeError(
            f"{owner}: {name} must be an array of PRNG keys, one per member, such as "
            f"jax.random.split(jax.random.key(0), 8), got {describe(keys)}"
        )
    return jnp.shape(keys)[0]


def check_shape(owner: str, input_shape, name: str = "input_shape") -> tuple:
    """`input_shape` as a tuple of ints; raise unless it is a sequence of sizes >= 0 or -1 (a
    size not known yet, such as the batch's, as in stax)."""
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, (tuple, list))
        or not all(is_int(d) for d in input_shape)
    ):
        raise TypeError(
            f"{owner}: {name} must be a tuple of ints, such as x.shape or "
            f"(batch, features), got {describe(input_shape)}"
        )
    if any(d < -1 for d in input_shape):
        raise ValueError(
            f"{owner}: {name} must hold sizes >= 0 (or -1 for a size not known yet), got {tuple(input_shape)}"
        )
    return tuple(int(d) for d in input_shape)


def check_init(owner: str, key, input_shape) -> tuple:
    """Check `init(key, input_shape)`'s arguments; returns the shape as a tuple."""
    check_key(f"{owner}.init", key)
    return check_shape(f"{owner}.init", input_shape)


def as_array(owner, name, a):
    """`a` as an array: arrays as they are, array-likes (lists, pandas frames) of numbers
    through NumPy; anything else a TypeError naming the conversion to use."""
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    try:
        array = np.asarray(a)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise TypeError(
            f"{owner}: {name} must be an array of numbers (or a list or frame np.asarray turns "
            f"into one), got {describe(a)}"
        )
    return array


def check_not_donated(owner: str, name: str, tree) -> None:
    """Raise ValueError if `tree` (named `name`) holds arrays a `train_step` donated and
    deleted, saying what to pass instead."""
    if donated(tree):
        raise ValueError(
            f"{owner}: {name} hold arrays that were donated to a train_step and deleted: use the "
            f"ones the step returned, or keep a copy to reuse, jax.tree.map(jnp.copy, {name})"
        )


def donated(tree) -> bool:
    """Whether `tree` holds an array a jitted step was donated and deleted (tracers, whose
    buffers are not known yet, never are)."""
    return any(
        leaf.is_deleted()
        for leaf in jax.tree.leaves(tree)
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
    )
