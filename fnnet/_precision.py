"""Half precision: where a layer, loss or optimizer sums, normalizes or keeps moments,
float16 and bfloat16 (and float8) inputs are computed on in float32, and the result is
returned in the input's dtype (an optimizer's slots stay float32).

float16 overflows past 65504 (300**2 is inf) and keeps 11 significant bits, bfloat16 8:
a sum, a variance or a cancellation in them can lose every digit of the result
(bfloat16's 256 + 1 is 256). float32 and float64 arrays pass through unchanged: the same
program as before.
"""

import jax.numpy as jnp
import numpy as np


def at_least_float32(dtype):
    """The dtype arithmetic on floats of `dtype` runs in: float32 for narrower floats (which
    promote to nothing implicitly), else `dtype` itself (float32, float64)."""
    return jnp.dtype(dtype) if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def like(number, array):
    """A layer's number (a rate, a slope, an eps) in `array`'s dtype, as a Python float
    would meet it: a number stacked per member of a sweep is a float32 or float64 array,
    which would otherwise promote a bfloat16 input (or a float32 running statistic under
    x64) to its own dtype."""
    return jnp.asarray(number, jnp.result_type(array))


def wide(x):
    """`x` in at least float32 when it is a narrower float; any other array as it is (integer
    labels and bool masks included)."""
    if not jnp.issubdtype(x.dtype, jnp.floating) or at_least_float32(x.dtype) == x.dtype:
        return x
    return x.astype(jnp.float32)


def check_near_one(owner: str, name: str, value: float, dtype) -> None:
    """Raise ValueError unless `value` (a decay or momentum in (0, 1]) keeps its meaning in
    `dtype`: its effect is 1 - value (the rate a decay decays at), which float32 keeps to
    10% up to about 1 - 1e-6; 1 - 1e-10 is 1 there (no decay at all), 1 - 3e-8 twice as fast."""
    if value == 1:
        return
    cast = float(np.asarray(value, dtype))
    given, kept = 1 - value, 1 - cast
    if abs(kept - given) <= 0.1 * given:
        return
    acts = "not at all" if kept == 0 else f"{kept / given:.3g}x as fast as the one given"
    raise ValueError(
        f"{owner}: {name}={value!r} is {cast!r} in {np.dtype(dtype).name}, where it acts "
        f"{acts} (1 - {name} is its rate); give a {name} further from 1 (float64, under "
        f"jax_enable_x64, keeps more digits)"
    )
