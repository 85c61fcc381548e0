"""`init`'s random draws, on the host when they can be: `split` and the default
initializer's `uniform`, computed with NumPy for a concrete key.

In a fresh process every draw of a new shape compiles a small program (a split, each
layer's weights, its biases): ~0.7 s for a two-layer MLP's first `init`, more than its
training on a small data set. Threefry-2x32 is a fixed function of a key and a counter;
`_threefry` is its twenty rounds again, in NumPy, giving the bits of `jax.random.split`
and `jax.random.bits` (tests compare them on random keys and shapes). JAX computes the
same draws instead when the key is traced (`init` under `jit` or `vmap`), raw (uint32)
or of another PRNG, or when `jax_threefry_partitionable` is off (another layout of the
counters).

`uniform` draws the bits of `jax.random.uniform` but scales them with one rounding
(a product) instead of `u * (high - low) + low`, which XLA fuses into one multiply-add
where the CPU has one and NumPy cannot: a draw does not depend on where it ran.
"""

import math
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key schedule constant
_HOST_DRAWS = 2**21  # more numbers draw faster in JAX, compilation included


def _threefry(words, low):
    """Threefry-2x32 of the key `words` (2 uint32) over the counters `(0, low)`."""
    ks = (words[0], words[1], words[0] ^ words[1] ^ _PARITY)
    x = [np.zeros_like(low) + ks[0], low + ks[1]]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x[0] = x[0] + x[1]
            x[1] = x[0] ^ ((x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r)))
        x[0] = x[0] + ks[(i + 1) % 3]
        x[1] = x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x


def _words(key) -> Optional[np.ndarray]:
    """The two uint32 words of one concrete threefry key, or None where JAX must draw."""
    if (
        isinstance(key, jax.core.Tracer)
        or not isinstance(key, jax.Array)
        or key.shape != ()
        or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or str(jax.random.key_impl(key)) != "threefry2x32"
        or not jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
        or not key.is_fully_addressable
    ):
        return None
    try:
        return np.asarray(jax.random.key_data(key), np.uint32)
    except jax.errors.TracerArrayConversionError:  # a concrete key inside a trace
        return None


def split(key, num: int) -> List:
    """`list(jax.random.split(key, num))`."""
    words = _words(key)
    if words is None:
        return list(jax.random.split(key, num))
    new = _threefry(words, np.arange(num, dtype=np.uint32))
    return [
        jax.random.wrap_key_data(_placed(np.array([a, b]), key), impl="threefry2x32") for a, b in zip(*new)
    ]


def uniform(key, shape: tuple, dtype, bound: float):
    """U[-bound, bound) of `shape` in `dtype`: the bits of `jax.random.uniform`, scaled as
    `(u - 1/2) * 2 bound` for u in [0, 1) (exact but for the product's one rounding;
    float32 and float64; other dtypes draw with `jax.random.uniform` itself)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64) or jax.dtypes.canonicalize_dtype(dtype) != dtype:
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    unsigned = np.dtype(f"uint{8 * dtype.itemsize}")
    one = np.array(1.0, dtype).view(unsigned)  # the bits of 1.0: exponent 0, mantissa 0
    shift = unsigned.type(8 * dtype.itemsize - np.finfo(dtype).nmant)
    width = dtype.type(bound) * 2
    words = _words(key)
    if words is None or math.prod(shape) > _HOST_DRAWS:
        bits = jax.random.bits(key, shape, unsigned)
        return (lax.bitcast_convert_type((bits >> shift) | one, dtype) - dtype.type(1.5)) * width
    high, low = _threefry(words, np.arange(math.prod(shape), dtype=np.uint32))
    bits = high ^ low if dtype == np.float32 else (high.astype(np.uint64) << np.uint64(32)) | low
    floats = ((bits >> shift) | one).view(dtype) - dtype.type(1.5)
    return _placed((floats * width).reshape(shape), key)


def _placed(value, key):
    """`value` where JAX would have put a draw from `key`: with the key when it is
    committed to devices, on the default device otherwise."""
    return jax.device_put(value, key.sharding if key.committed else None)
