"""Activations: parameter-free layers, elementwise (`Elementwise`, and `elementwise` for
your own from f and f') or along the feature axis (`Softmax`, `LogSoftmax`). See
`fnnet.layers` for the contract."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from fnnet._precision import like, wide
from fnnet.layers import Parameterless, check_cotangent, check_float, check_floating, check_no_params
from fnnet._values import number_field, setattr_frozen, show

__all__ = [
    "Elementwise",
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


class Elementwise(Parameterless):
    """A parameter-free layer applying `f` to every element; a subclass defines
    `f(x) -> y` and `df(x, y) -> f'(x)` (which may use the output `y = f(x)`)."""

    def f(self, x):
        raise NotImplementedError

    def df(self, x, y):
        raise NotImplementedError

    def apply(self, params, x, *, train=False, key=None):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        with jax.named_scope(self.name):
            return self.f(x)

    def vjp(self, params, x, dy, *, train=False, key=None):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        check_cotangent(self.name, dy, jnp.shape(x))
        with jax.named_scope(self.name):
            return (), dy * self.df(x, self.f(x))  # dx = dy * f'(x)


@dataclasses.dataclass(frozen=True, repr=False)
class ElementwiseFunctions(Elementwise):
    """An elementwise layer of your own functions; see `elementwise`."""

    label: str
    function: Callable
    derivative: Callable

    @property
    def name(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"elementwise({self.label!r}, {show(self.function)}, {show(self.derivative)})"

    def f(self, x):
        return self.function(x)

    def df(self, x, y):
        return self.derivative(x, y)


def elementwise(name: str, f: Callable, df: Callable) -> Elementwise:
    """A parameter-free layer applying `f` to every element.

    Args:
      name: the layer's name, for error messages.
      f: `x -> y`, elementwise.
      df: `(x, y) -> f'(x)`, elementwise; it may use the output `y = f(x)`.

    Built from the same `name`, `f` and `df` (module-level functions, not fresh
    lambdas), it is the same layer.

    Example:
      >>> Square = elementwise("Square", lambda x: x * x, lambda x, y: 2 * x)
    """
    if not isinstance(name, str):
        raise TypeError(f"elementwise: name must be a str, got {name!r}")
    for what, fn in (("f", f), ("df", df)):
        if not callable(fn):
            raise TypeError(f"elementwise: {what} must be a function, got {fn!r}")
    return ElementwiseFunctions(name, f, df)


def _sigmoid(x):
    return lax.logistic(x)  # stable for any |x|


@dataclasses.dataclass(frozen=True, repr=False)
class ReLU(Elementwise):
    """max(x, 0); derivative 0 at x = 0."""

    def f(self, x):
        return jnp.maximum(x, 0)

    def df(self, x, y):
        return (x > 0).astype(x.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class Tanh(Elementwise):
    """tanh(x)."""

    def f(self, x):
        return jnp.tanh(x)

    def df(self, x, y):
        return 1 - y * y  # dx = dy * (1 - y**2)


@dataclasses.dataclass(frozen=True, repr=False)
class Sigmoid(Elementwise):
    """1 / (1 + exp(-x)), finite for any finite x."""

    def f(self, x):
        return _sigmoid(x)

    def df(self, x, y):
        return y * (1 - y)  # dx = dy * y (1 - y)


@dataclasses.dataclass(frozen=True, repr=False)
class LeakyReLU(Elementwise):
    """x for x > 0, else slope * x."""

    slope: float = number_field(0.01)

    def __post_init__(self):
        setattr_frozen(self, slope=check_float("LeakyReLU: slope", self.slope))

    def f(self, x):
        return jnp.where(x > 0, x, like(self.slope, x) * x)

    def df(self, x, y):
        return jnp.where(x > 0, 1, like(self.slope, x)).astype(x.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class ELU(Elementwise):
    """x for x > 0, else alpha * (exp(x) - 1)."""

    alpha: float = number_field(1.0)

    def __post_init__(self):
        setattr_frozen(self, alpha=check_float("ELU: alpha", self.alpha))

    def f(self, x):
        # exp only of min(x, 0), so large x never overflows the unused branch.
        return jnp.where(x > 0, x, like(self.alpha, x) * jnp.expm1(jnp.minimum(x, 0)))

    def df(self, x, y):
        return jnp.where(x > 0, 1, y + like(self.alpha, y)).astype(x.dtype)  # y + alpha = alpha e^x


@dataclasses.dataclass(frozen=True, repr=False)
class Softplus(Elementwise):
    """log(1 + exp(x)), finite for any finite x."""

    def f(self, x):
        return jnp.logaddexp(x, 0)

    def df(self, x, y):
        return _sigmoid(x)


@dataclasses.dataclass(frozen=True, repr=False)
class Identity(Elementwise):
    """y = x."""

    def f(self, x):
        return x

    def df(self, x, y):
        return jnp.ones_like(x)


class _AlongFeatures(Parameterless):
    """A parameter-free layer acting along the last axis: a subclass defines
    `forward(x) -> y` and `backward(y, dy) -> dx`. Both run in at least float32 and return
    the input's dtype: in half precision, rounding the log-softmax before its exp, or
    sum(dy * y) before dy - sum(dy * y), loses the result's leading digits."""

    def check(self, params, x):
        check_no_params(self.name, params)
        check_floating(self.name, x)
        if jnp.ndim(x) < 1:
            raise ValueError(f"{self.name}: input needs a feature axis, got shape {jnp.shape(x)}")

    def apply(self, params, x, *, train=False, key=None):
        self.check(params, x)
        with jax.named_scope(self.name):
            return self.forward(wide(x)).astype(x.dtype)

    def vjp(self, params, x, dy, *, train=False, key=None):
        self.check(params, x)
        check_cotangent(self.name, dy, jnp.shape(x))
        with jax.named_scope(self.name):
            return (), self.backward(self.forward(wide(x)), wide(dy)).astype(jnp.result_type(x, dy))


def _log_softmax(x):
    shifted = x - jnp.max(x, axis=-1, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


@dataclasses.dataclass(frozen=True, repr=False)
class Softmax(_AlongFeatures):
    """exp(x) / sum(exp(x)) over the last axis, stable for any finite x."""

    def forward(self, x):
        return jnp.exp(_log_softmax(x))

    def backward(self, y, dy):
        return y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))  # dx = y * (dy - sum(dy * y))


@dataclasses.dataclass(frozen=True, repr=False)
class LogSoftmax(_AlongFeatures):
    """x - log(sum(exp(x))) over the last axis, stable for any finite x."""

    def forward(self, x):
        return _log_softmax(x)

    def backward(self, y, dy):
        return dy - jnp.exp(y) * jnp.sum(dy, axis=-1, keepdims=True)  # dx = dy - softmax(x) * sum(dy)
