"""Normalization: `BatchNorm` (over the batch, with running statistics) and `LayerNorm`
(over each example's features), each with a learnable scale and shift.

Both share one backward pass (docs/vjp.md derives it): with xhat = (x - mean) / s,
s = sqrt(var + eps), and g = dy * scale, the mean and the (biased) variance
taken over `axes`,

    dx = (g - mean(g) - xhat * mean(g * xhat)) / s,

dscale = sum(dy * xhat) and dshift = sum(dy) over the axes that are not the features.
"""

import dataclasses
import math
from typing import Any

import jax
from jax import lax
import numpy as np
import jax.numpy as jnp

from fnnet._checks import check_init, describe, is_finite, is_real, shown
from fnnet._precision import at_least_float32, check_near_one, like, wide
from fnnet._values import number_field, setattr_frozen, show
from fnnet.layers import Layer, check_cotangent, check_dtype, check_floating, check_train, weights_field
from fnnet.state import State

__all__ = ["BatchNorm", "LayerNorm"]


def _check_number(owner, name, value, ok, expected):
    if not is_real(value):
        raise TypeError(f"{owner}: {name} must be a float, got {describe(value)}")
    if not (is_finite(value) and ok(value)):
        raise ValueError(f"{owner}: {name} must be {expected}, got {shown(value)}")
    return float(value)


_SMALLEST_EPS = float(np.finfo(np.float32).tiny)  # below it, eps is 0 in float32 arithmetic


def _check_momentum(owner, value):
    """momentum in [0, 1), its 1 - momentum kept in float32, where the running statistics
    move (0.99999999 is 1 there: they would never move)."""
    momentum = _check_number(owner, "momentum", value, lambda v: 0 <= v < 1, "in [0, 1)")
    check_near_one(owner, "momentum", momentum, np.float32)
    return momentum


def _check_eps(owner, value):
    """eps > 0, and a normal float32 number: a smaller one is 0 where the layer runs in
    float32, and a constant feature would normalize to 0 / 0."""
    eps = _check_number(owner, "eps", value, lambda v: v > 0, "> 0")
    if eps < _SMALLEST_EPS:
        raise ValueError(
            f"{owner}: eps must be at least {_SMALLEST_EPS:.4g}, float32's smallest normal number "
            f"(less is 0 in float32, where a constant feature would give 0 / 0), got {value}"
        )
    return eps


def _mean(v, axes, weights=None, count=None):
    """The mean of v over `axes` (kept), or, with `weights` (`_sample_weights`), the mean
    over the samples that count, `count` values per feature. The weighted sum over the
    batch is a product with the mask (a matrix-vector product runs faster than a
    multiply-and-reduce), at full precision (TF32 would round the statistics)."""
    if weights is None:
        return jnp.mean(v, axis=axes, keepdims=True)
    mask, batch_axis = weights
    summed = jnp.tensordot(v, mask, axes=([batch_axis], [0]), precision=lax.Precision.HIGHEST)
    others = tuple(a - (a > batch_axis) for a in axes if a != batch_axis)
    return jnp.expand_dims(jnp.sum(summed, axis=others, keepdims=True), batch_axis) * (1 / count)


def _normalize(x, axes, eps, weights=None, count=None):
    """(xhat, mean, var, s) of x over `axes`, with the biased variance, in at least float32:
    in float16 the variance of [0, 300, -300] overflows (and the row normalizes to zeros).
    With `weights` (the sample mask against x) and their `count`: over the samples that count."""
    x = wide(x)
    mean = _mean(x, axes, weights, count)
    var = _mean(jnp.square(x - mean), axes, weights, count)
    s = jnp.sqrt(var + like(eps, var))
    return (x - mean) * (1 / s), mean, var, s


def _normalize_vjp(g, xhat, s, axes, weights=None, count=None):
    # dx = (g - mean(g) - xhat * mean(g * xhat)) / s, and 0 for the samples that do not count
    dx = (g - _mean(g, axes, weights, count) - xhat * _mean(g * xhat, axes, weights, count)) * (1 / s)
    if weights is None:
        return dx
    mask, batch_axis = weights
    return jnp.expand_dims(mask, tuple(a for a in range(dx.ndim) if a != batch_axis)) * dx


def _sample_weights(mask, x, axis):
    """`((mask, batch_axis), count)`: the sample mask `(batch,)` as 0s and 1s in x's
    computing dtype and the batch's axis in x (0, or 1 in the feature-major twin, `axis`
    0), and how many values per feature count; (None, None) without a mask."""
    if mask is None:
        return None, None
    batch_axis = 1 if axis == 0 else 0
    if jnp.shape(mask) != (x.shape[batch_axis],):
        raise ValueError(
            f"BatchNorm: mask must have shape ({x.shape[batch_axis]},), one entry per sample, "
            f"got {jnp.shape(mask)}"
        )
    weights = (jnp.asarray(mask) > 0).astype(wide(x).dtype)
    per_sample = math.prod(x.shape) // (x.shape[batch_axis] * x.shape[axis])
    return (weights, batch_axis), jnp.maximum(jnp.sum(weights), 1) * per_sample


def _per_feature(v, x, axis=-1):
    """A per-feature vector `(c,)` shaped to broadcast against x, its features on `axis`."""
    shape = [1] * x.ndim
    shape[axis] = -1
    return v.reshape(shape)


def _batch_axes(x, axis=-1):
    """Every axis but the features' (`axis`)."""
    return tuple(a for a in range(x.ndim) if a != axis % x.ndim)


def _scale_shift_init(owner, key, input_shape, min_rank, dtype, running):
    input_shape = check_init(owner, key, input_shape)
    if len(input_shape) < min_rank:
        raise ValueError(
            f"{owner}: expected input_shape with at least {min_rank} axes (..., features), got {input_shape}"
        )
    c = input_shape[-1]
    params = {"scale": _filled(1, c, dtype), "shift": _filled(0, c, dtype)}
    if running:  # in at least float32: a half-precision statistic stalls (its steps round away)
        wider = at_least_float32(dtype)
        params["running"] = State(mean=_filled(0, c, wider), var=_filled(1, c, wider))
    return input_shape, params


def _filled(value, c, dtype):
    """`jnp.full((c,), value, dtype)`, made on the host (no program to compile in a fresh
    process) for a dtype JAX keeps as it is."""
    if jax.dtypes.canonicalize_dtype(dtype) != np.dtype(dtype):
        return jnp.full((c,), value, dtype)  # float64 without x64: JAX's warning and float32
    return jax.device_put(np.full((c,), value, dtype))


def _check(owner, params, x, min_rank, running, axis=-1):
    check_floating(owner, x)
    keys = {"scale", "shift"} | ({"running"} if running else set())
    if (
        not isinstance(params, dict)
        or set(params) != keys
        or (
            running
            and not (isinstance(params["running"], State) and set(params["running"]) == {"mean", "var"})
        )
    ):
        raise ValueError(
            f"{owner}: params must be a dict with keys {sorted(keys)}"
            + (" ('running' a State with 'mean' and 'var')" if running else "")
            + f", got {jax.tree.structure(params)}"
        )
    if jnp.ndim(x) < min_rank:
        raise ValueError(
            f"{owner}: expected input with at least {min_rank} axes (..., features), got shape {jnp.shape(x)}"
        )
    c = jnp.shape(x)[axis]
    for name, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.shape(leaf) != (c,):
            raise ValueError(
                f"{owner}: params{jax.tree_util.keystr(name)} must have shape ({c},) "
                f"for input of shape {jnp.shape(x)}, got {jnp.shape(leaf)}"
            )


@dataclasses.dataclass(frozen=True, repr=False)
class BatchNorm(Layer):
    """Batch normalization over every axis but the last (the features).

    Training (`train=True`): x is normalized by the batch's mean and biased
    variance, then scaled and shifted, `y = scale * (x - mean) / sqrt(var + eps) + shift`,
    and the VJP goes through the batch statistics. Each training step also
    moves the running statistics (`update_state`):
    `running = momentum * running + (1 - momentum) * batch` (the Flax and Keras
    convention; PyTorch's `momentum` is one minus this one). Inference
    (`model.apply(params, x)`): x is normalized by the running statistics,
    which start at mean 0 and variance 1.

    Params: `{"scale": (c,), "shift": (c,), "running": State(mean=(c,), var=(c,))}`,
    `running` in at least float32 (in float16 or bfloat16 a statistic's small steps
    would round away); optimizers never change it. Input `(batch, ..., c)`, output the same.

    Args:
      momentum: in [0, 1): how much of the running statistics each step keeps.
      eps: > 0, added to the variance.
      dtype: dtype of the params made by `init`.

    Example:
      >>> model = Sequential(Linear(2, 25), BatchNorm(), ReLU(), Linear(25, 1))
    """

    momentum: float = number_field(0.9)
    eps: float = number_field(1e-5)
    dtype: Any = weights_field(np.dtype("float32"))

    def __post_init__(self):
        owner = "BatchNorm"
        setattr_frozen(
            self,
            momentum=_check_momentum(owner, self.momentum),
            eps=_check_eps(owner, self.eps),
            dtype=check_dtype(f"{owner}: dtype", self.dtype),
        )

    @property
    def name(self) -> str:
        return f"BatchNorm(momentum={show(self.momentum)}, eps={show(self.eps)})"

    def init(self, key, input_shape):
        return _scale_shift_init(self.name, key, input_shape, 2, self.dtype, True)

    def statistics(self, params, x, train, axis, mask=None):
        """xhat, s, the batch's mean and var (None in inference), axes and the sample
        weights and count (`_sample_weights`); the features on `axis` (0 in the private
        feature-major twin, `fnnet._layout`)."""
        _check(self.name, params, x, 2, True, axis)
        axes = _batch_axes(x, axis)
        if check_train(self.name, train) and math.prod(x.shape[a] for a in axes) < 2:
            raise ValueError(
                f"{self.name}: training normalizes by the batch and needs more than "
                # the twin's (features, batch) spoken of as the user's (batch, features)
                f"one value per feature, got input of shape {x.shape[::-1] if axis == 0 else x.shape} "
                f"(a batch of one: use a larger batch, or a batch_size that leaves no "
                f"single-sample last batch)"
            )
        if train:
            weights, count = _sample_weights(mask, x, axis)
            xhat, mean, var, s = _normalize(x, axes, self.eps, weights, count)
            return xhat, s, mean, var, axes, weights, count
        running = params["running"]
        var = wide(_per_feature(running["var"], x, axis))
        s = jnp.sqrt(var + like(self.eps, var))
        return (wide(x) - _per_feature(running["mean"], x, axis)) / s, s, None, None, axes, None, None

    # the batch's statistics mix samples: training leaves padded samples out (`mask`)
    uses_mask = True

    def apply(self, params, x, *, train=False, key=None, mask=None):
        return self.forward(params, x, train, -1, mask)

    def vjp(self, params, x, dy, *, train=False, key=None, mask=None):
        return self.backward(params, x, dy, train, -1, mask)

    def update_state(self, params, x, *, key=None, mask=None):  # type: ignore[override]
        return self.moved(params, x, -1, mask)

    # The methods above with the features on `axis`: -1, or 0 in the private
    # feature-major twin (`fnnet._layout`).

    def forward(self, params, x, train, axis, mask=None):
        with jax.named_scope(self.name):
            xhat = self.statistics(params, x, train, axis, mask)[0]
            scale, shift = _per_feature(params["scale"], x, axis), _per_feature(params["shift"], x, axis)
            return (scale * xhat + shift).astype(x.dtype)

    def backward(self, params, x, dy, train, axis, mask=None):
        with jax.named_scope(self.name):
            xhat, s, _, _, axes, weights, count = self.statistics(params, x, train, axis, mask)
            check_cotangent(self.name, dy, jnp.shape(x))
            g = wide(dy) * _per_feature(params["scale"], x, axis)
            running = params["running"]
            if train:  # the running statistics are not used: zero cotangents
                dx = _normalize_vjp(g, xhat, s, axes, weights, count)
                drunning = State(mean=jnp.zeros_like(running["mean"]), var=jnp.zeros_like(running["var"]))
            else:  # y = scale (x - m) / s + shift, s = sqrt(v + eps)
                dx = g / s
                # dm = -sum(g) / s; dv = -sum(g * xhat) / (2 s^2)
                drunning = State(
                    mean=(-jnp.sum(g / s, axis=axes)).astype(running["mean"].dtype),
                    var=(-jnp.sum(g * xhat / (2 * s * s), axis=axes)).astype(running["var"].dtype),
                )
            dparams = {
                "scale": jnp.sum(dy * xhat, axis=axes).astype(params["scale"].dtype),
                "shift": jnp.sum(dy, axis=axes).astype(params["shift"].dtype),
                "running": drunning,
            }
            return dparams, dx.astype(x.dtype)

    def moved(self, params, x, axis, mask=None):
        _, _, mean, var = self.statistics(params, x, True, axis, mask)[:4]
        running = params["running"]
        moved = {
            stat: like(self.momentum, running[stat]) * running[stat]
            + like(1 - self.momentum, running[stat]) * batch.reshape(-1).astype(running[stat].dtype)
            for stat, batch in (("mean", mean), ("var", var))
        }
        return {**params, "running": State(moved)}


@dataclasses.dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """Layer normalization: each example normalized over its last axis (the features).

    `y = scale * (x - mean) / sqrt(var + eps) + shift`, mean and biased variance
    over the last axis of each example; the same in training and inference.

    Params: `{"scale": (c,), "shift": (c,)}`. Input `(..., c)`, output the same.

    Args:
      eps: > 0, added to the variance.
      dtype: dtype of the params made by `init`.

    Example:
      >>> model = Sequential(Linear(2, 25), LayerNorm(), ReLU(), Linear(25, 1))
    """

    eps: float = number_field(1e-5)
    dtype: Any = weights_field(np.dtype("float32"))

    def __post_init__(self):
        setattr_frozen(
            self,
            eps=_check_eps("LayerNorm", self.eps),
            dtype=check_dtype("LayerNorm: dtype", self.dtype),
        )

    @property
    def name(self) -> str:
        return f"LayerNorm(eps={show(self.eps)})"

    def init(self, key, input_shape):
        return _scale_shift_init(self.name, key, input_shape, 1, self.dtype, False)

    def forward(self, params, x):
        _check(self.name, params, x, 1, False)
        return _normalize(x, (x.ndim - 1,), self.eps)

    def apply(self, params, x, *, train=False, key=None):
        with jax.named_scope(self.name):
            xhat = self.forward(params, x)[0]
            return (_per_feature(params["scale"], x) * xhat + _per_feature(params["shift"], x)).astype(
                x.dtype
            )

    def vjp(self, params, x, dy, *, train=False, key=None):
        with jax.named_scope(self.name):
            xhat, _, _, s = self.forward(params, x)
            check_cotangent(self.name, dy, jnp.shape(x))
            g = wide(dy) * _per_feature(params["scale"], x)
            dx = _normalize_vjp(g, xhat, s, (x.ndim - 1,))
            others = _batch_axes(x)
            return (
                {
                    "scale": jnp.sum(dy * xhat, axis=others).astype(params["scale"].dtype),
                    "shift": jnp.sum(dy, axis=others).astype(params["shift"].dtype),
                },
                dx.astype(x.dtype),
            )
