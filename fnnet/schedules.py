"""Learning-rate schedules: functions `t -> lr` of the step count t = 0, 1, 2, ...

Each works on a scalar or an array of steps, inside or outside `jit`.
"""

import math

import jax.numpy as jnp

from fnnet._checks import as_number, describe, is_int, is_real
from fnnet._types import Schedule

__all__ = ["constant", "exponential", "inverse_time", "step", "cosine"]


def _positive(name, value):
    if not is_real(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"schedules: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def constant(lr: float) -> Schedule:
    """lr_t = lr."""
    lr = _positive("lr", lr)
    return lambda t: jnp.full(jnp.shape(t), lr)


def exponential(lr: float, decay: float) -> Schedule:
    """lr_t = lr * decay**t, decay in (0, 1]."""
    lr, decay = _positive("lr", lr), _positive("decay", decay)
    if decay > 1:
        raise ValueError(f"schedules.exponential: decay must be in (0, 1], got {decay}")
    return lambda t: lr * decay ** jnp.asarray(t, jnp.result_type(float))


def inverse_time(lr: float, k: float) -> Schedule:
    """lr_t = lr / (1 + k t), k > 0."""
    lr, k = _positive("lr", lr), _positive("k", k)
    return lambda t: lr / (1 + k * jnp.asarray(t, jnp.result_type(float)))


def step(lr: float, factor: float, every: int) -> Schedule:
    """lr_t = lr * factor**floor(t / every): multiply by `factor` every `every` steps."""
    lr, factor = _positive("lr", lr), _positive("factor", factor)
    if not is_int(every) or every < 1:
        raise ValueError(f"schedules.step: every must be an int >= 1, got {every!r}")
    every = int(every)
    return lambda t: lr * factor ** (jnp.asarray(t) // every).astype(jnp.result_type(float))


def cosine(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Cosine from lr at t = 0 to final_lr at t = total_steps, then constant.

    lr_t = final_lr + (lr - final_lr) * (1 + cos(pi * min(t, T) / T)) / 2.
    """
    lr = _positive("lr", lr)
    if not is_int(total_steps) or total_steps < 1:
        raise ValueError(f"schedules.cosine: total_steps must be an int >= 1, got {total_steps!r}")
    total_steps = int(total_steps)
    if not is_real(final_lr):
        raise TypeError(f"schedules.cosine: final_lr must be a number, got {describe(final_lr)}")
    if not 0 <= final_lr <= lr:
        raise ValueError(f"schedules.cosine: final_lr must be in [0, lr={lr}], got {final_lr}")
    final_lr = as_number(final_lr)

    def schedule(t):
        fraction = jnp.minimum(jnp.asarray(t, jnp.result_type(float)), total_steps) / total_steps
        return final_lr + (lr - final_lr) * (1 + jnp.cos(jnp.pi * fraction)) / 2

    return schedule
