"""The disk task's data: points in the unit square, labelled by a disk of area 1/2."""

import math

import jax
import jax.numpy as jnp

from fnnet._checks import check_key, is_int

__all__ = ["disk", "DISK_CENTRE", "DISK_RADIUS"]

DISK_CENTRE = (0.5, 0.5)
DISK_RADIUS = 1 / math.sqrt(2 * math.pi)  # area 1/2: balanced classes


def disk(n: int, key) -> tuple:
    """n points uniform in [0, 1]^2, labelled 1 inside the disk of area 1/2.

    Args:
      n: number of points.
      key: a `jax.random` key.

    Returns:
      `x` float32 `(n, 2)` and `y` float32 `(n, 1)`: 1 where
      `|x - (0.5, 0.5)| < 1/sqrt(2 pi)`, else 0.

    Example:
      >>> x, y = disk(1000, jax.random.key(0))
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"disk: n must be an int >= 1, got {n!r}")
    n, key = int(n), check_key("disk", key)
    x = jax.random.uniform(key, (n, 2), jnp.float32)
    inside = jnp.sum((x - jnp.asarray([DISK_CENTRE])) ** 2, axis=1, keepdims=True) < DISK_RADIUS**2
    return x, inside.astype(jnp.float32)
