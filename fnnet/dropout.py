"""Dropout: random units set to zero in training, the identity in inference."""

import jax
import jax.numpy as jnp

from fnnet._checks import check_key, describe, is_real
from fnnet._intern import interned
from fnnet.layers import Layer, _check_floating, _check_train, check_cotangent, no_params_init

__all__ = ["Dropout"]


def Dropout(rate: float) -> Layer:
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
      >>> model = serial(Linear(2, 25), ReLU(), Dropout(0.1), Linear(25, 1))
    """
    if not is_real(rate):
        raise TypeError(f"Dropout: rate must be a float in [0, 1), got {describe(rate)}")
    if not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate (the probability of dropping a unit) must be in [0, 1), got {rate}")
    return _dropout(float(rate))


@interned
def _dropout(rate: float) -> Layer:
    name = f"Dropout(rate={rate})"

    def layer_on(feature_major: bool) -> Layer:
        def scaled_mask(params, x, train, key):
            """mask / (1 - rate), or None when nothing is dropped."""
            if not (isinstance(params, tuple) and len(params) == 0):
                raise ValueError(f"{name} has no parameters: params must be (), got {params!r}")
            _check_floating(name, x)
            if not _check_train(name, train) or rate == 0:
                return None
            if key is None:
                raise ValueError(
                    f"{name}: training mode draws a mask and needs a key; pass key=jax.random.key(...)"
                )
            key = check_key(name, key)
            # Drawn in the batch-major shape, so both layouts drop the same units.
            shape = x.shape[::-1] if feature_major else x.shape
            keep = jax.random.bernoulli(key, 1 - rate, shape)
            return (keep.T if feature_major else keep).astype(x.dtype) / (1 - rate)

        def apply(params, x, *, train=False, key=None):
            mask = scaled_mask(params, x, train, key)
            return x if mask is None else x * mask

        def vjp(params, x, dy, *, train=False, key=None):
            mask = scaled_mask(params, x, train, key)
            # "Dropout", not name: name would join vjp's closure, and so every run's digest
            check_cotangent("Dropout", dy, jnp.shape(x))
            return (), dy if mask is None else dy * mask  # dx = dy * mask / (1 - rate)

        return Layer(no_params_init(name), apply, vjp)

    return layer_on(False)._replace(feature_major=layer_on(True))
