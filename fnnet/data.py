"""The disk task's data: points in the unit square, labelled by a disk of area 1/2."""

import math as _math

import jax as _jax
import jax.numpy as _jnp
import numpy as _np

from fnnet import _draws
from fnnet._checks import check_key as _check_key
from fnnet._checks import is_int as _is_int

__all__ = ["disk", "DISK_CENTRE", "DISK_RADIUS"]

DISK_CENTRE = (0.5, 0.5)
DISK_RADIUS = 1 / _math.sqrt(2 * _math.pi)  # area 1/2: balanced classes


def disk(key, n: int) -> tuple:
    """n points uniform in [0, 1]^2, labelled 1 inside the disk of area 1/2.

    Args:
      key: a `jax.random` key.
      n: number of points.

    Returns:
      `x` float32 `(n, 2)` and `y` float32 `(n, 1)`: 1 where
      `|x - (0.5, 0.5)| < 1/sqrt(2 pi)`, else 0.

    Example:
      >>> x, y = disk(jax.random.key(0), 1000)
    """
    key = _check_key("disk", key)
    if not _is_int(n) or n < 1:
        raise ValueError(f"disk: n must be an int >= 1, got {n!r}")
    points = _draws.unit(key, (int(n), 2), _np.float32)
    if points is None:  # drawn by JAX: a traced key, another PRNG's, many points
        x = _jax.random.uniform(key, (int(n), 2), _jnp.float32)
        return x, _inside(_jnp, x)
    # drawn on the host, and labelled there: nothing to compile
    return _draws.placed(points, key), _draws.placed(_inside(_np, points), key)


def _inside(xp, x):
    """1.0 for the points `x` inside the disk, else 0.0, `(n, 1)` float32, computed by `xp`
    (NumPy or jax.numpy) in JAX's default float precision (float64 with x64 on): the same
    labels on the host and traced."""
    dtype = _np.dtype(_jnp.result_type(float))
    squared = xp.sum((x.astype(dtype) - xp.asarray([DISK_CENTRE], dtype)) ** 2, axis=1, keepdims=True)
    return (squared < dtype.type(DISK_RADIUS**2)).astype(_np.float32)
