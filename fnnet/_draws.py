"""fnnet's random draws: the bits of `jax.random`'s threefry draws, computed without
its programs (NumPy on the host for `init`, Threefry's rounds unrolled in training).

Threefry-2x32 is a fixed function of a key and a counter; `_threefry` is its twenty
rounds again, one function for NumPy and JAX arrays (NumPy's or `lax`'s operations),
giving the bits of `jax.random.split`, `fold_in` and `bits` (tests compare them on
random keys and shapes, traced and vmapped).
- `init` (`split`, the default initializer's `uniform`) and `fnnet.data.disk`'s points
  (`unit`): in a fresh process every draw of a new shape compiles a small program (a
  split, each layer's weights, its biases), ~0.7 s for a two-layer MLP's first `init`,
  more than its training on a small data set. For a concrete key NumPy draws the same
  bits on the host, compiling nothing.
- Training (`fold_in`, `bits`, `bernoulli`: the shuffle's keys, each step's key,
  Dropout's masks), for a traced key: JAX's CPU lowering runs the rounds as a loop of
  five small programs; unrolled, they fuse into one (the shuffle's 2,000 keys 4x faster,
  the digits MLP's epoch ~5%; quicker to compile, slower to trace). Called eagerly,
  `jax.random`'s own functions (compiled once) draw them.
JAX's own functions draw instead for keys of another PRNG or raw (uint32) keys, when
`jax_threefry_partitionable` is off (another layout of the counters), and for dtypes
other than float32 and float64: the same numbers wherever they are drawn.

`uniform` scales the bits of `jax.random.uniform` with one rounding, `(u - 1/2) * 2
bound`, where `u * (high - low) + low` is fused by XLA into one multiply-add on a CPU
that has one and cannot be in NumPy: a draw does not depend on where it ran.
"""

import math
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key schedule constant
_HOST_DRAWS = 2**18  # more numbers draw faster in JAX, its program compiled once


_NUMPY = (np.add, np.bitwise_xor, np.bitwise_or, np.left_shift, np.right_shift)
_LAX = (lax.add, lax.bitwise_xor, lax.bitwise_or, lax.shift_left, lax.shift_right_logical)


def _threefry(words, low):
    """Threefry-2x32 of the key `words` (2 uint32) over the counters `(0, low)`: NumPy's
    functions for NumPy arrays, `lax`'s for JAX's (a quarter of jnp's time to trace)."""
    add, xor, or_, left, right = _NUMPY if isinstance(low, np.ndarray) else _LAX
    ks = (words[0], words[1], xor(xor(words[0], words[1]), _PARITY))
    x = [add(xor(low, low), ks[0]), add(low, ks[1])]  # (low ^ low: zeros like low)
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x[0] = add(x[0], x[1])
            x[1] = xor(x[0], or_(left(x[1], np.uint32(r)), right(x[1], np.uint32(32 - r))))
        x[0] = add(x[0], ks[(i + 1) % 3])
        x[1] = add(add(x[1], ks[(i + 2) % 3]), np.uint32(i + 1))
    return x


def _random_bits(words, shape: tuple, width: int):
    """`jax.random.bits(key, shape)` of `width` (32 or 64) bits for the key `words`, in
    NumPy or, for JAX words, unrolled in JAX."""
    xp = np if isinstance(words, np.ndarray) else jnp
    high, low = _threefry(words, xp.arange(math.prod(shape), dtype=np.uint32))
    if width == 32:
        return (high ^ low).reshape(shape)
    return ((high.astype(np.uint64) << np.uint64(32)) | low).reshape(shape)


def _unit(bits, dtype: np.dtype):
    """`jax.random.uniform`'s numbers in [0, 1) from random `bits` of dtype's width:
    random mantissa bits under the exponent of 1.0, minus 1 (exact)."""
    one = np.array(1.0, dtype).view(bits.dtype)
    mantissa = (bits >> bits.dtype.type(8 * dtype.itemsize - np.finfo(dtype).nmant)) | one
    return mantissa.view(dtype) - dtype.type(1)


def _threefry_key(key) -> bool:
    """Whether `key` is one typed threefry key, its counters laid out as
    `jax_threefry_partitionable` lays them: one `_threefry` draws for (it may be traced)."""
    return (
        isinstance(key, jax.Array)
        and key.shape == ()
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        and str(jax.random.key_impl(key)) == "threefry2x32"
        and jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
    )


def _words(key) -> Optional[np.ndarray]:
    """The two uint32 words of one concrete threefry key on the host, or None (a traced
    key, a concrete one inside a trace, one held by several processes or in a memory
    other than the devices', another PRNG's, a transfer to the host refused)."""
    if (
        isinstance(key, jax.core.Tracer)
        or not _threefry_key(key)
        or not key.is_fully_addressable
        or key.sharding.memory_kind not in (None, "device")
    ):
        return None
    try:
        return np.asarray(jax.random.key_data(key), np.uint32)
    except (jax.errors.TracerArrayConversionError, RuntimeError):  # inside a trace; a transfer guard
        return None


def placed(value, key):
    """`value` where JAX would have put a draw from `key`: with the key when it is
    committed to devices, on the default device otherwise."""
    return jax.device_put(value, key.sharding if key.committed else None)


def split(key, num: int) -> List:
    """`list(jax.random.split(key, num))`, on the host for a concrete key."""
    words = _words(key)
    if words is None:
        return list(jax.random.split(key, num))
    new = _threefry(words, np.arange(num, dtype=np.uint32))
    return [
        jax.random.wrap_key_data(placed(np.array([a, b]), key), impl="threefry2x32") for a, b in zip(*new)
    ]


def _unrolled(key) -> bool:
    """Whether to draw with `key` by the unrolled rounds: a traced threefry key (an eager
    call draws faster with `jax.random`'s own compiled functions)."""
    return isinstance(key, jax.core.Tracer) and _threefry_key(key)


def fold_in(key, data):
    """`jax.random.fold_in(key, data)` for a scalar `data` (as uint32)."""
    if not _unrolled(key) or jnp.shape(data) != ():
        return jax.random.fold_in(key, data)
    high, low = _threefry(jax.random.key_data(key), jnp.asarray(data, jnp.uint32))
    return jax.random.wrap_key_data(jnp.stack([high, low]), impl="threefry2x32")


def bits(key, shape: tuple):
    """`jax.random.bits(key, shape, jnp.uint32)`."""
    if not _unrolled(key):
        return jax.random.bits(key, shape, jnp.uint32)
    return _random_bits(jax.random.key_data(key), shape, 32)


def bernoulli(key, p, shape: tuple):
    """`jax.random.bernoulli(key, p, shape)` for a scalar p: `uniform(key, shape) < p` in
    p's dtype."""
    dtype = jnp.asarray(p).dtype
    if not _unrolled(key) or dtype not in (np.float32, np.float64) or jnp.shape(p) != () or shape is None:
        return jax.random.bernoulli(key, p, shape)
    return _unit(_random_bits(jax.random.key_data(key), shape, 8 * dtype.itemsize), dtype) < p


# A bound at least this makes every nonzero number (at least 2**-nmant * 2 bound) normal.
_SMALLEST = {
    np.dtype(t): float(np.finfo(t).tiny) * 2.0 ** np.finfo(t).nmant for t in (np.float32, np.float64)
}


def _kept(dtype: np.dtype) -> bool:
    """Whether the host draws in `dtype`: float32, or float64 where JAX keeps it (x64 on)."""
    return dtype in (np.float32, np.float64) and jax.dtypes.canonicalize_dtype(dtype) == dtype


def _host_bits(key, shape: tuple, width: int) -> Optional[np.ndarray]:
    """`jax.random.bits(key, shape)` of `width` bits drawn by NumPy, or None where JAX
    draws them: a key `_words` cannot read, more than 2**18 numbers (JAX's program,
    compiled once, draws those faster)."""
    words = _words(key)
    if words is None or math.prod(shape) > _HOST_DRAWS:
        return None
    return _random_bits(words, shape, width)


def unit(key, shape: tuple, dtype) -> Optional[np.ndarray]:
    """The numbers of `jax.random.uniform(key, shape, dtype)`, U[0, 1), drawn on the host
    as a NumPy array; None where JAX must draw them (`_host_bits`, `_kept`)."""
    dtype = np.dtype(dtype)
    bits = _host_bits(key, shape, 8 * dtype.itemsize) if _kept(dtype) else None
    return None if bits is None else np.asarray(_unit(bits, dtype))


def uniform(key, shape: tuple, dtype, bound: float):
    """U[-bound, bound) of `shape` in `dtype`: the bits of `jax.random.uniform`, scaled as
    `(u - 1/2) * 2 bound` (exact but for the product's one rounding), on the host for a
    concrete key and up to 2**18 numbers. Bounds whose numbers could be subnormal (XLA
    flushes them to zero, NumPy does not) or overflow draw with `jax.random.uniform`."""
    dtype = np.dtype(dtype)
    if not _threefry_key(key) or not _kept(dtype) or not _SMALLEST[dtype] <= bound <= np.finfo(dtype).max / 2:
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    width = 8 * dtype.itemsize
    host_bits = _host_bits(key, shape, width)
    # else JAX's bits: a traced key (init under jit or vmap), many numbers
    bits = jax.random.bits(key, shape, f"uint{width}") if host_bits is None else host_bits
    drawn = (_unit(bits, dtype) - dtype.type(0.5)) * (dtype.type(bound) * 2)
    return drawn if host_bits is None else placed(drawn, key)
