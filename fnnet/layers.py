"""Layers: `Layer(init, apply, vjp)` triples with hand-derived VJPs.

A layer is three pure functions over a parameter pytree:

- `init(key, input_shape) -> (output_shape, params)`
- `apply(params, x) -> y`
- `vjp(params, x, dy) -> (dparams, dx)`, the vector-Jacobian product of
  `apply` at `(params, x)`: `dparams` has the structure of `params`, `dx` the
  shape of `x`.

Inputs are `(..., features)`: any leading batch dimensions, features last.
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from fnnet._shared import shared
from fnnet._types import Array, Params, PRNGKey, Shape

__all__ = [
    "Layer", "Linear", "elementwise", "ReLU", "Tanh", "Sigmoid", "LeakyReLU",
    "ELU", "Softplus", "Identity", "feature_major",
]


class Layer(NamedTuple):
    """A layer as three pure functions; see the module docstring."""

    init: Callable[[PRNGKey, Shape], tuple]
    apply: Callable[[Params, Array], Array]
    vjp: Callable[[Params, Array, Array], tuple]


# Layers that can also run on feature-major activations, x of shape
# (features, batch): their `Layer` in that layout. XLA's CPU backend runs
# (25x25)@(25xN) about twice as fast as (Nx25)@(25x25), so the training loop
# transposes the data once and uses these. Filled by the constructors below.
_FEATURE_MAJOR: dict = {}


def feature_major(layer: Layer) -> Optional[Layer]:
    """The feature-major twin of `layer` (inputs `(features, batch)`), or None."""
    return _FEATURE_MAJOR.get(layer)


def _check_size(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_floating(name: str, x) -> None:
    """Raise TypeError unless `x` is floating point: an integer input would get an integer
    cotangent (its fraction cut off) from `vjp`."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: input must be floating point, got dtype {dtype}; "
                        f"convert it, e.g. x.astype(jnp.float32)")


def _uniform(bound: float):
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


@shared
def Linear(n_in: int, n_out: int, *, w_init=None, b_init=None, dtype=jnp.float32) -> Layer:
    """A fully connected layer, `y = x @ w + b`.

    Args:
      n_in: number of input features.
      n_out: number of output features.
      w_init, b_init: optional `(key, shape, dtype) -> array` initializers
        (`jax.nn.initializers` fit); by default both draw from
        U[-1/sqrt(n_in), 1/sqrt(n_in)].
      dtype: dtype of the parameters made by `init`.

    Params: `{"w": (n_in, n_out), "b": (n_out,)}`. Input `(..., n_in)`, output
    `(..., n_out)`.

    Example:
      >>> layer = Linear(2, 25)
      >>> out_shape, params = layer.init(jax.random.key(0), (1000, 2))
      >>> out_shape
      (1000, 25)
    """
    _check_size("Linear: n_in", n_in)
    _check_size("Linear: n_out", n_out)
    w_init = w_init or _uniform(1 / math.sqrt(n_in))
    b_init = b_init or _uniform(1 / math.sqrt(n_in))
    name = f"Linear(n_in={n_in}, n_out={n_out})"

    def check_params(params):
        if not isinstance(params, dict) or set(params) != {"w", "b"}:
            raise ValueError(f"{name}: params must be a dict with keys 'w' and 'b', "
                             f"got {jax.tree.structure(params)}")
        w, b = params["w"], params["b"]
        if jnp.shape(w) != (n_in, n_out) or jnp.shape(b) != (n_out,):
            raise ValueError(f"{name}: params must have w {(n_in, n_out)} and b {(n_out,)}, "
                             f"got w {jnp.shape(w)} and b {jnp.shape(b)}")
        return w, b

    def check_input(x, axis):
        _check_floating(name, x)
        if jnp.ndim(x) < 1 or jnp.shape(x)[axis] != n_in:
            raise ValueError(f"{name}: expected input with {n_in} features "
                             f"on axis {axis}, got shape {jnp.shape(x)}")

    def init(key, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 or input_shape[-1] != n_in:
            raise ValueError(f"{name}: expected input_shape (..., {n_in}), got {input_shape}")
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (n_in, n_out), dtype), "b": b_init(b_key, (n_out,), dtype)}
        return input_shape[:-1] + (n_out,), params

    def apply(params, x):
        w, b = check_params(params)
        check_input(x, -1)
        y = x @ w
        return y + b.reshape((1,) * (y.ndim - 1) + (n_out,))

    def vjp(params, x, dy):
        w, b = check_params(params)
        check_input(x, -1)
        # dw = x^T dy (summed over batch dims), db = sum dy, dx = dy w^T
        dw = jnp.tensordot(x, dy, axes=(tuple(range(x.ndim - 1)),) * 2)
        db = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
        # Cotangents take their primal's dtype (as JAX's autodiff does) when dtypes mix.
        return {"w": dw.astype(w.dtype), "b": db.astype(b.dtype)}, (dy @ w.T).astype(x.dtype)

    def apply_fm(params, x):  # x: (n_in, batch)
        w, b = check_params(params)
        check_input(x, 0)
        # w.T is copied (the barrier keeps XLA from folding the transpose into the
        # product): XLA's CPU backend multiplies a plain (n_out, n_in) @ (n_in, batch)
        # faster, and the copy is small.
        return lax.optimization_barrier(w.T) @ x + b[:, None]

    def vjp_fm(params, x, dy):  # x: (n_in, batch), dy: (n_out, batch)
        w, b = check_params(params)
        check_input(x, 0)
        # dw = x dy^T, db = sum over batch of dy, dx = w dy
        return ({"w": (x @ dy.T).astype(w.dtype), "b": jnp.sum(dy, axis=1).astype(b.dtype)},
                (w @ dy).astype(x.dtype))

    layer = Layer(init, apply, vjp)
    _FEATURE_MAJOR[layer] = Layer(init, apply_fm, vjp_fm)
    return layer


def elementwise(name: str, f: Callable, df: Callable) -> Layer:
    """A parameter-free layer applying `f` to every element.

    Args:
      name: the layer's name, for error messages.
      f: `x -> y`, elementwise.
      df: `(x, y) -> f'(x)`, elementwise; it may use the output `y = f(x)`.

    Example:
      >>> Square = elementwise("Square", lambda x: x * x, lambda x, y: 2 * x)
    """

    def check_params(params):
        if not (isinstance(params, tuple) and len(params) == 0):
            raise ValueError(f"{name} has no parameters: params must be (), got {params!r}")

    def init(key, input_shape):
        return tuple(input_shape), ()

    def apply(params, x):
        check_params(params)
        _check_floating(name, x)
        return f(x)

    def vjp(params, x, dy):
        check_params(params)
        _check_floating(name, x)
        return (), dy * df(x, f(x))  # dx = dy * f'(x)

    layer = Layer(init, apply, vjp)
    _FEATURE_MAJOR[layer] = layer  # elementwise: any layout
    return layer


def _sigmoid(x):
    return lax.logistic(x)  # stable for any |x|


@shared
def ReLU() -> Layer:
    """max(x, 0); derivative 0 at x = 0."""
    return elementwise("ReLU", lambda x: jnp.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype))


@shared
def Tanh() -> Layer:
    """tanh(x)."""
    return elementwise("Tanh", jnp.tanh, lambda x, y: 1 - y * y)  # dx = dy * (1 - y**2)


@shared
def Sigmoid() -> Layer:
    """1 / (1 + exp(-x)), finite for any finite x."""
    return elementwise("Sigmoid", _sigmoid, lambda x, y: y * (1 - y))  # dx = dy * y (1 - y)


@shared
def LeakyReLU(slope: float = 0.01) -> Layer:
    """x for x > 0, else slope * x."""
    slope = _check_float("LeakyReLU: slope", slope)
    return elementwise(f"LeakyReLU(slope={slope})",
                       lambda x: jnp.where(x > 0, x, slope * x),
                       lambda x, y: jnp.where(x > 0, 1.0, slope).astype(x.dtype))


@shared
def ELU(alpha: float = 1.0) -> Layer:
    """x for x > 0, else alpha * (exp(x) - 1)."""
    alpha = _check_float("ELU: alpha", alpha)
    # exp only of min(x, 0), so large x never overflows the unused branch.
    return elementwise(f"ELU(alpha={alpha})",
                       lambda x: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0))),
                       lambda x, y: jnp.where(x > 0, 1.0, y + alpha).astype(x.dtype))  # y + alpha = alpha e^x


@shared
def Softplus() -> Layer:
    """log(1 + exp(x)), finite for any finite x."""
    return elementwise("Softplus", lambda x: jnp.logaddexp(x, 0), lambda x, y: _sigmoid(x))


@shared
def Identity() -> Layer:
    """y = x."""
    return elementwise("Identity", lambda x: x, lambda x, y: jnp.ones_like(x))

