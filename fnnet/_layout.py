"""The one place a run picks how its data lies in memory.

XLA's CPU backend multiplies (25x25)(25xN) about twice as fast as (Nx25)(25x25),
so a full-batch run on a 2-D batch of a model made only of `Linear` layers and
elementwise activations (nested in `Sequential` or `Residual`) runs on
`(features, batch)`: x is transposed once, before the training loop, and the
model's feature-major twin runs the steps. Minibatches, images and every other
layer run as the user laid them out. The public layout is always `(batch,
features)`, and the results are the same either way.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from fnnet.activations import Elementwise
from fnnet.combinators import Residual, Sequential
from fnnet.layers import Layer, Linear, check_cotangent


@dataclasses.dataclass(frozen=True, repr=False)
class _LinearFeatureMajor(Layer):
    """`Linear` on `(n_in, batch)` inputs: `y = w^T x + b`, `(n_out, batch)`."""

    linear: Linear

    def apply(self, params, x, *, train=False, key=None):
        w, b = self.linear.check(params, x, axis=0)
        with jax.named_scope(self.linear.name):
            # w.T is copied (the barrier keeps XLA from folding the transpose into the
            # product): XLA's CPU backend multiplies a plain (n_out, n_in) @ (n_in, batch)
            # faster, and the copy is small.
            return lax.optimization_barrier(w.T) @ x + b[:, None]

    def vjp(self, params, x, dy, *, train=False, key=None):
        w, b = self.linear.check(params, x, axis=0)
        check_cotangent(self.linear.name, dy, (self.linear.n_out,) + jnp.shape(x)[1:])
        with jax.named_scope(self.linear.name):
            # dw = x dy^T, db = sum over batch of dy, dx = w dy
            return (
                {"w": (x @ dy.T).astype(w.dtype), "b": jnp.sum(dy, axis=1).astype(b.dtype)},
                (w @ dy).astype(x.dtype),
            )


def _twin(layer: Layer) -> Optional[Layer]:
    """The built-in layer's twin; None for any other layer, a subclass of a built-in one
    included (it may compute something else)."""
    kind = type(layer)
    if kind is Linear and isinstance(layer, Linear):
        return _LinearFeatureMajor(layer)
    if isinstance(layer, Elementwise) and (kind.apply, kind.vjp) == (Elementwise.apply, Elementwise.vjp):
        return layer  # f and f' elementwise: any layout
    if kind is Residual and isinstance(layer, Residual):
        inner = _twin(layer.layer)
        return None if inner is None else Residual(inner)
    if kind is Sequential and isinstance(layer, Sequential):
        twins = [_twin(part) for part in layer.layers]
        return Sequential(*twins) if all(isinstance(t, Layer) for t in twins) else None  # type: ignore[arg-type]
    return None


def feature_major(model: Layer, x, minibatches: bool = False) -> Optional[Layer]:
    """The model's twin on `(features, batch)`, to run on `x.T`, for a 2-D batch trained
    whole; None to run `model` on x as it is."""
    if minibatches or jnp.ndim(x) != 2:
        return None
    return _twin(model)
