"""Learning-rate schedules: functions `t -> lr` of the step count t = 0, 1, 2, ...

Each works on a scalar or an array of steps, inside or outside `jit`. Each is a
value: a frozen dataclass of its settings, so equal settings make equal,
equally hashed schedules (`cosine(0.1, 1000) == cosine(0.1, 1000)`), optimizers
built on them are equal and share compiled programs, and a schedule prints as
the code that builds it: `cosine(lr=0.1, total_steps=1000)`. Any function
`t -> lr` is a schedule too.
"""

import dataclasses as _dataclasses
import math as _math

import jax.numpy as _jnp

from fnnet._checks import as_number as _as_number
from fnnet._precision import check_near_one as _check_near_one
from fnnet._checks import describe as _describe
from fnnet._checks import is_int as _is_int
from fnnet._checks import is_real as _is_real
from fnnet._values import setattr_frozen as _setattr_frozen
from fnnet._values import show as _show

# Only the schedules are public: the module imports under private names, so `dir()` and
# tab completion list the schedules alone.
__all__ = ["constant", "exponential", "inverse_time", "step", "cosine"]


def _positive(name, value):
    if not _is_real(value) or not (_math.isfinite(value) and value > 0):
        raise ValueError(f"schedules: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _float_steps(t):
    return _jnp.asarray(t, _jnp.result_type(float))


class _Schedule:
    """The base of the schedules: prints as its constructor call, every setting by keyword
    (the ones at their defaults left out)."""

    def __repr__(self) -> str:
        args = [
            f"{field.name}={_show(getattr(self, field.name))}"
            for field in _dataclasses.fields(self)  # type: ignore[arg-type]
            if field.default is _dataclasses.MISSING or getattr(self, field.name) != field.default
        ]
        return f"schedules.{type(self).__name__}({', '.join(args)})"


@_dataclasses.dataclass(frozen=True, repr=False)
class constant(_Schedule):
    """lr_t = lr."""

    lr: float

    def __post_init__(self):
        _setattr_frozen(self, lr=_positive("lr", self.lr))

    def __call__(self, t):
        return _jnp.full(_jnp.shape(t), self.lr)


@_dataclasses.dataclass(frozen=True, repr=False)
class exponential(_Schedule):
    """lr_t = lr * decay**t, decay in (0, 1]."""

    lr: float
    decay: float

    def __post_init__(self):
        lr, decay = _positive("lr", self.lr), _positive("decay", self.decay)
        if decay > 1:
            raise ValueError(f"schedules.exponential: decay must be in (0, 1], got {decay}")
        _check_near_one("schedules.exponential", "decay", decay, _jnp.result_type(float))
        _setattr_frozen(self, lr=lr, decay=decay)

    def __call__(self, t):
        return self.lr * self.decay ** _float_steps(t)


@_dataclasses.dataclass(frozen=True, repr=False)
class inverse_time(_Schedule):
    """lr_t = lr / (1 + k t), k > 0."""

    lr: float
    k: float

    def __post_init__(self):
        _setattr_frozen(self, lr=_positive("lr", self.lr), k=_positive("k", self.k))

    def __call__(self, t):
        return self.lr / (1 + self.k * _float_steps(t))


@_dataclasses.dataclass(frozen=True, repr=False)
class step(_Schedule):
    """lr_t = lr * factor**floor(t / every): multiply by `factor` every `every` steps."""

    lr: float
    factor: float
    every: int

    def __post_init__(self):
        lr, factor = _positive("lr", self.lr), _positive("factor", self.factor)
        if not _is_int(self.every) or self.every < 1:
            raise ValueError(f"schedules.step: every must be an int >= 1, got {self.every!r}")
        if factor <= 1:
            _check_near_one("schedules.step", "factor", factor, _jnp.result_type(float))
        _setattr_frozen(self, lr=lr, factor=factor, every=int(self.every))

    def __call__(self, t):
        return self.lr * self.factor ** (_jnp.asarray(t) // self.every).astype(_jnp.result_type(float))


@_dataclasses.dataclass(frozen=True, repr=False)
class cosine(_Schedule):
    """Cosine from lr at t = 0 to final_lr at t = total_steps, then constant.

    lr_t = final_lr + (lr - final_lr) * (1 + cos(pi * min(t, T) / T)) / 2, computed as
    cos(pi / 2 * min(t, T) / T)**2 (the same number; 1 + cos cancels to 0 in float32 over
    the last steps of a long schedule, where the lr is small but not 0).

    Example:
      >>> cosine(0.1, 1000)
      schedules.cosine(lr=0.1, total_steps=1000)
    """

    lr: float
    total_steps: int
    final_lr: float = 0.0

    def __post_init__(self):
        lr, total_steps, final_lr = _positive("lr", self.lr), self.total_steps, self.final_lr
        if not _is_int(total_steps) or total_steps < 1:
            raise ValueError(f"schedules.cosine: total_steps must be an int >= 1, got {total_steps!r}")
        if not _is_real(final_lr):
            raise TypeError(f"schedules.cosine: final_lr must be a number, got {_describe(final_lr)}")
        if not 0 <= final_lr <= lr:
            raise ValueError(f"schedules.cosine: final_lr must be in [0, lr={lr}], got {final_lr}")
        _setattr_frozen(self, lr=lr, total_steps=int(total_steps), final_lr=_as_number(final_lr))

    def __call__(self, t):
        fraction = _jnp.minimum(_float_steps(t), self.total_steps) / self.total_steps
        weight = _jnp.where(fraction < 1, _jnp.cos(_jnp.pi / 2 * fraction) ** 2, 0)  # exactly 0 from T
        return self.final_lr + (self.lr - self.final_lr) * weight
