"""Dropout: random units set to zero in training, the identity in inference."""

import dataclasses

import jax.numpy as jnp

from fnnet import _draws
from fnnet._checks import check_key, describe, is_real
from fnnet._precision import like, wide
from fnnet._values import number_field, setattr_frozen, show, traced
from fnnet.layers import Parameterless, check_cotangent, check_floating, check_no_params, check_train

__all__ = ["Dropout"]


@dataclasses.dataclass(frozen=True, repr=False)
class Dropout(Parameterless):
    """Inverted dropout: in training, each unit is dropped with probability `rate`.

    `rate` is the probability of DROPPING a unit (as in PyTorch and Keras); the
    old `jax.example_libraries.stax.Dropout(rate)` took the probability of
    keeping it. In training (`train=True`, with a `key`) each element of x is
    zeroed with probability `rate` and the kept ones are scaled by
    `1 / (1 - rate)`, so the expected output is x; in inference
    (`model.apply(params, x)`) the layer is the identity. `vjp` redraws the
    same mask from the same key: dx = dy * mask / (1 - rate).

    Args:
      rate: a float in [0, 1).

    Example:
      >>> model = Sequential(Linear(2, 25), ReLU(), Dropout(0.1), Linear(25, 1))
    """

    rate: float = number_field()

    def __post_init__(self):
        if not is_real(self.rate):
            raise TypeError(f"Dropout: rate must be a float in [0, 1), got {describe(self.rate)}")
        if not 0 <= self.rate < 1:
            raise ValueError(
                f"Dropout: rate (the probability of dropping a unit) must be in [0, 1), got {self.rate}"
            )
        setattr_frozen(self, rate=float(self.rate))

    @property
    def name(self) -> str:
        return f"Dropout(rate={show(self.rate)})"

    def scaled_mask(self, params, x, train, key):
        """mask / (1 - rate) in at least float32 (1 / (1 - 0.99999) is past float16's
        largest, the kept units' 1e-3 / (1 - 0.99999) is not), or None when nothing is
        dropped."""
        check_no_params(self.name, params)
        check_floating(self.name, x)
        if not check_train(self.name, train) or (not traced(self.rate) and self.rate == 0):
            return None
        if key is None and traced(self.rate):
            # A rate passed to jit as data (fit, train_step): 0 needs no key, as a Python 0
            # does; a rate > 0 without a key was refused before tracing, and is NaN here.
            return jnp.where(self.rate == 0, 1, jnp.nan).astype(wide(x).dtype)
        if key is None:
            raise ValueError(
                f"{self.name}: training mode draws a mask and needs a key; pass key=jax.random.key(...)"
            )
        keep = _draws.bernoulli(check_key(self.name, key), 1 - self.rate, x.shape)
        return keep.astype(wide(x).dtype) / like(1 - self.rate, wide(x))

    def apply(self, params, x, *, train=False, key=None):
        mask = self.scaled_mask(params, x, train, key)
        return x if mask is None else (wide(x) * mask).astype(x.dtype)

    def vjp(self, params, x, dy, *, train=False, key=None):
        mask = self.scaled_mask(params, x, train, key)
        check_cotangent(self.name, dy, jnp.shape(x))
        return (), dy if mask is None else (wide(dy) * mask).astype(dy.dtype)  # dx = dy mask / (1 - rate)
