"""Activations: parameter-free layers, elementwise (`elementwise` builds them from f and
f') or along the feature axis (`Softmax`, `LogSoftmax`). See `fnnet.layers` for the contract."""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from fnnet._intern import interned
from fnnet.layers import Layer, _check_float, _check_floating, check_cotangent, no_params_init

__all__ = [
    "elementwise",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "LeakyReLU",
    "ELU",
    "Softplus",
    "Identity",
    "Softmax",
    "LogSoftmax",
]


def _check_no_params(name: str, params) -> None:
    if not (isinstance(params, tuple) and len(params) == 0):
        raise ValueError(f"{name} has no parameters: params must be (), got {params!r}")


@interned
def elementwise(name: str, f: Callable, df: Callable) -> Layer:
    """A parameter-free layer applying `f` to every element.

    Args:
      name: the layer's name, for error messages.
      f: `x -> y`, elementwise.
      df: `(x, y) -> f'(x)`, elementwise; it may use the output `y = f(x)`.

    Elementwise layers work in any layout, so the layer is its own
    feature-major twin. Built from the same `name`, `f` and `df` (module-level
    functions, not fresh lambdas), it is the same layer.

    Example:
      >>> Square = elementwise("Square", lambda x: x * x, lambda x, y: 2 * x)
    """

    def apply(params, x, *, train=False, key=None):
        _check_no_params(name, params)
        _check_floating(name, x)
        with jax.named_scope(name):
            return f(x)

    def vjp(params, x, dy, *, train=False, key=None):
        _check_no_params(name, params)
        _check_floating(name, x)
        check_cotangent(name, dy, jnp.shape(x))
        with jax.named_scope(name):
            return (), dy * df(x, f(x))  # dx = dy * f'(x)

    layer = Layer(no_params_init(name), apply, vjp)
    return layer._replace(feature_major=layer)


def _sigmoid(x):
    return lax.logistic(x)  # stable for any |x|


@interned
def ReLU() -> Layer:
    """max(x, 0); derivative 0 at x = 0."""
    return elementwise("ReLU", lambda x: jnp.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype))


@interned
def Tanh() -> Layer:
    """tanh(x)."""
    return elementwise("Tanh", jnp.tanh, lambda x, y: 1 - y * y)  # dx = dy * (1 - y**2)


@interned
def Sigmoid() -> Layer:
    """1 / (1 + exp(-x)), finite for any finite x."""
    return elementwise("Sigmoid", _sigmoid, lambda x, y: y * (1 - y))  # dx = dy * y (1 - y)


@interned
def LeakyReLU(slope: float = 0.01) -> Layer:
    """x for x > 0, else slope * x."""
    slope = _check_float("LeakyReLU: slope", slope)
    return elementwise(
        f"LeakyReLU(slope={slope})",
        lambda x: jnp.where(x > 0, x, slope * x),
        lambda x, y: jnp.where(x > 0, 1.0, slope).astype(x.dtype),
    )


@interned
def ELU(alpha: float = 1.0) -> Layer:
    """x for x > 0, else alpha * (exp(x) - 1)."""
    alpha = _check_float("ELU: alpha", alpha)
    # exp only of min(x, 0), so large x never overflows the unused branch.
    return elementwise(
        f"ELU(alpha={alpha})",
        lambda x: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0))),
        lambda x, y: jnp.where(x > 0, 1.0, y + alpha).astype(x.dtype),
    )  # y + alpha = alpha e^x


@interned
def Softplus() -> Layer:
    """log(1 + exp(x)), finite for any finite x."""
    return elementwise("Softplus", lambda x: jnp.logaddexp(x, 0), lambda x, y: _sigmoid(x))


@interned
def Identity() -> Layer:
    """y = x."""
    return elementwise("Identity", lambda x: x, lambda x, y: jnp.ones_like(x))


def _along_features(name: str, forward: Callable, backward: Callable) -> Layer:
    """A parameter-free layer acting along the feature axis: the last, or the first in
    its feature-major twin. `forward(x, axis) -> y`; `backward(y, dy, axis) -> dx`."""

    def layer_on(axis):
        def check(params, x):
            _check_no_params(name, params)
            _check_floating(name, x)
            if jnp.ndim(x) < 1:
                raise ValueError(f"{name}: input needs a feature axis, got shape {jnp.shape(x)}")

        def apply(params, x, *, train=False, key=None):
            check(params, x)
            with jax.named_scope(name):
                return forward(x, axis)

        def vjp(params, x, dy, *, train=False, key=None):
            check(params, x)
            check_cotangent(name, dy, jnp.shape(x))
            with jax.named_scope(name):
                return (), backward(forward(x, axis), dy, axis)

        return Layer(no_params_init(name), apply, vjp)

    return layer_on(-1)._replace(feature_major=layer_on(0))


def _log_softmax(x, axis):
    shifted = x - jnp.max(x, axis=axis, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


@interned
def Softmax() -> Layer:
    """exp(x) / sum(exp(x)) over the last axis, stable for any finite x."""
    return _along_features(
        "Softmax",
        lambda x, axis: jnp.exp(_log_softmax(x, axis)),
        # dx = y * (dy - sum(dy * y))
        lambda y, dy, axis: y * (dy - jnp.sum(dy * y, axis=axis, keepdims=True)),
    )


@interned
def LogSoftmax() -> Layer:
    """x - log(sum(exp(x))) over the last axis, stable for any finite x."""
    return _along_features(
        "LogSoftmax",
        _log_softmax,
        # dx = dy - softmax(x) * sum(dy)
        lambda y, dy, axis: dy - jnp.exp(y) * jnp.sum(dy, axis=axis, keepdims=True),
    )
