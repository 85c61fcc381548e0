"""The one place a run picks how its data lies in memory.

XLA's CPU backend multiplies (25x25)(25xN) about twice as fast as (Nx25)(25x25),
so a full-batch run on a 2-D batch of a model with built-in `Linear` layers runs on
`(features, batch)`: x is transposed once, before the training loop, and the
model's feature-major twin runs the steps: `Linear`, `BatchNorm` and elementwise
activations in that layout, every other layer (Dropout, a layer of your own) on its
input transposed back, so its math, draws and errors are the batch-major ones.
Minibatches and images run as the user laid them out. The public layout is always `(batch,
features)`, and the results are the same either way.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from fnnet.activations import Elementwise
from fnnet.combinators import Residual, Sequential, _checked_apply, _checked_vjp
from fnnet.layers import Layer, Linear, check_cotangent, masked
from fnnet.norm import BatchNorm


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


@dataclasses.dataclass(frozen=True, repr=False)
class _Transposed(Layer):
    """Any other layer inside a twin: its own math on x transposed back to `(batch,
    features)` (so its draws, statistics and errors are those of the batch-major run),
    its output and dx transposed again."""

    layer: Layer

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def uses_mask(self) -> bool:  # type: ignore[override]
        return self.layer.uses_mask

    def apply(self, params, x, *, train=False, key=None, mask=None):
        return _checked_apply(self.layer, params, x.T, train=train, key=key, **masked(self.layer, mask)).T

    def vjp(self, params, x, dy, *, train=False, key=None, mask=None):
        mode = dict(train=train, key=key, **masked(self.layer, mask))
        dparams, dx = _checked_vjp(self.layer, params, x.T, dy.T, **mode)
        return dparams, dx.T

    @property
    def update_state(self):  # type: ignore[override]
        if self.layer.update_state is None:
            return None
        return lambda params, x, *, key=None, mask=None: self.layer.update_state(
            params, x.T, key=key, **masked(self.layer, mask)
        )


@dataclasses.dataclass(frozen=True, repr=False)
class _BatchNormFeatureMajor(Layer):
    """`BatchNorm` on `(features, batch)` inputs: its own methods, the features on axis 0."""

    norm: BatchNorm
    uses_mask = True

    @property
    def name(self) -> str:
        return self.norm.name

    def apply(self, params, x, *, train=False, key=None, mask=None):
        return self.norm.forward(params, x, train, 0, mask)

    def vjp(self, params, x, dy, *, train=False, key=None, mask=None):
        return self.norm.backward(params, x, dy, train, 0, mask)

    def update_state(self, params, x, *, key=None, mask=None):  # type: ignore[override]
        return self.norm.moved(params, x, 0, mask)


def _native(layer: Layer) -> Optional[Layer]:
    """The twin of a built-in `Linear`, `BatchNorm` or elementwise layer (exactly those
    classes: a subclass may compute something else)."""
    kind = type(layer)
    if kind is Linear and isinstance(layer, Linear):
        return _LinearFeatureMajor(layer)
    if kind is BatchNorm and isinstance(layer, BatchNorm):
        return _BatchNormFeatureMajor(layer)
    if isinstance(layer, Elementwise) and (kind.apply, kind.vjp) == (Elementwise.apply, Elementwise.vjp):
        return layer  # f and f' elementwise: any layout
    return None


def _twin(layer: Layer) -> Optional[Layer]:
    """The model's twin, or None when no layer in it has a native one (nothing to gain);
    layers without one run transposed inside it."""
    if _native(layer) is not None:
        return _native(layer)
    kind = type(layer)
    if kind is Residual and isinstance(layer, Residual):
        inner = _twin(layer.layer)
        return None if inner is None else Residual(inner)
    if kind is Sequential and isinstance(layer, Sequential):
        twins = [_twin(part) for part in layer.layers]
        if all(t is None for t in twins):
            return None
        return Sequential(*(t if t is not None else _Transposed(p) for t, p in zip(twins, layer.layers)))
    return None


def feature_major(model: Layer, x, minibatches: bool = False) -> Optional[Layer]:
    """The model's twin on `(features, batch)`, to run on `x.T`, for a 2-D batch trained
    whole; None to run `model` on x as it is."""
    if minibatches or jnp.ndim(x) != 2:
        return None
    return _twin(model)
