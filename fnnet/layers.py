"""Layers: the `Layer` contract, and `Linear`.

## The contract

A layer is a `Layer` of pure functions over a parameter pytree:

- `init(key, input_shape) -> (output_shape, params)` draws params and touches
  no data, so `serial` threads shapes through a whole model.
- `apply(params, x, *, train=False, key=None) -> y` is the forward pass.
  `apply(params, x)` is inference: deterministic (`Dropout` is the identity,
  `BatchNorm` normalizes by its running statistics). `train=True` is a
  training step's forward pass: `Dropout` draws its mask from `key`,
  `BatchNorm` normalizes by the batch's statistics.
- `vjp(params, x, dy, *, train=False, key=None) -> (dparams, dx)` is the
  vector-Jacobian product of `apply` at the same `(params, x, train, key)`,
  derived by hand: `dparams` has the structure of params, `dx` the shape of
  x. Given the same key it sees the same random draws as `apply`.
- `update_state(params, x, *, key=None) -> params`, or None for stateless
  layers: the params after one training step's forward pass on x, with the
  leaves under `fnnet.State` moved (running statistics) and the others as
  they were.
- `feature_major`: the same layer for inputs laid out `(features, batch)`, or
  None. XLA's CPU backend multiplies (25x25)(25xN) about twice as fast as
  (Nx25)(25x25), so training on 2-D batches runs this twin; the choice is made
  in one place, `fnnet.grad.layout`, and the public layout stays
  `(batch, features)`.

**Mode and keys.** `train` is a Python bool (static under `jit`); `key` is a
JAX PRNG key, traced, so a `vmap` over keys gives each member its own draws.
`serial` passes `train` to every layer and splits `key` once per layer.
Training (`value_and_grad`, `train_step`, `train`, `fit`, `sweep`) calls
`apply` and `vjp` with `train=True` and, at each step, the run's key with the
step count folded in.

**State.** Non-trainable values live in params under `fnnet.State` nodes:
`model.apply(params, x)` finds them, checkpoints and sweeps carry them, and
optimizers never change them; after each optimizer step, training writes in
those that `update_state` returns.

**Equality.** Two layers are equal when they compute the same thing: equal
`apply`, `vjp`, `update_state` and `feature_major`. `init` (how params are
drawn) is not compared, and compiled programs are cached by layer, so
`Linear(2, 3, w_init=jax.nn.initializers.glorot_normal())` built twice trains
with one program. Constructors return equal layers for equal arguments.

**Your own layer** is `Layer(init, apply, vjp)` whose `apply` and `vjp` take
the keywords `train` and `key` (and may ignore them); write each VJP beside
its forward and check it with `fnnet.check_vjp`. Inputs are `(..., features)`.
"""

import contextlib
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from fnnet._checks import check_init, describe, is_int, is_real
from fnnet._intern import interned
from fnnet._types import Array, Params, PRNGKey, Shape

__all__ = ["Layer", "Linear"]


class Layer(NamedTuple):
    """A layer as pure functions; see the module docstring for the contract.

    Equality and hashing leave out `init`: layers that compute the same
    function share compiled programs, whatever initializers drew their params.
    """

    init: Callable[[PRNGKey, Shape], tuple]
    apply: Callable[..., Array]
    vjp: Callable[..., tuple]
    update_state: Optional[Callable[..., Params]] = None
    feature_major: Optional["Layer"] = None

    def __eq__(self, other):
        return isinstance(other, Layer) and self[1:] == other[1:]

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self[1:])


@contextlib.contextmanager
def contract_hint():
    """Add to a TypeError from calling a layer with the contract's keywords a hint of
    what they are (a layer written for an older contract takes no `train` or `key`)."""
    try:
        yield
    except TypeError as error:
        if type(error) is not TypeError or "unexpected keyword argument" not in str(error):
            raise
        raise TypeError(
            f"{error} (a layer's apply and vjp take the keywords train and key, "
            f"update_state the keyword key: see fnnet.layers)"
        ) from error


def check_cotangent(name: str, dy, y_shape) -> None:
    """Raise ValueError unless `dy`, a vjp's cotangent of the output, has the output's
    shape: another shape would broadcast into a silently wrong gradient."""
    if jnp.shape(dy) != tuple(y_shape):
        raise ValueError(f"{name}: expected dy of the output's shape {tuple(y_shape)}, got {jnp.shape(dy)}")


def _check_train(name: str, train) -> bool:
    """`train` selects a Python branch: it must be a bool, not an array or a tracer."""
    if not isinstance(train, bool):
        raise TypeError(
            f"{name}: train must be a Python bool (True for a training step), got {describe(train)}"
        )
    return train


def _check_dtype(name: str, dtype):
    """`dtype` as a NumPy dtype; TypeError unless floating (params must be)."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dtype}")
    return dtype


def _check_init(name: str, init):
    if init is not None and not callable(init):
        raise TypeError(f"{name} must be None or a (key, shape, dtype) -> array initializer, got {init!r}")
    return init


def _check_size(name: str, value, low: int = 1) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_float(name: str, value) -> float:
    if not is_real(value):
        raise TypeError(f"{name} must be a float, got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_floating(name: str, x) -> None:
    """Raise TypeError unless `x` is floating point: an integer input would get an integer
    cotangent (its fraction cut off) from `vjp`."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: input must be floating point, got dtype {dtype}; convert it, e.g. x.astype(jnp.float32)"
        )


@interned
def no_params_init(owner: str) -> Callable:
    """The `init` of a parameter-free layer named `owner`: shape in, shape out, params ()."""

    def init(key, input_shape):
        return check_init(owner, key, input_shape), ()

    return init


def _uniform(bound: float):
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def Linear(n_in: int, n_out: int, *, w_init=None, b_init=None, dtype=jnp.float32) -> Layer:
    """A fully connected layer, `y = x @ w + b`.

    Args:
      n_in: number of input features.
      n_out: number of output features.
      w_init, b_init: optional `(key, shape, dtype) -> array` initializers
        (`jax.nn.initializers` fit); by default both draw from
        U[-1/sqrt(n_in), 1/sqrt(n_in)]. They change `init` only, so Linears of
        the same sizes are equal layers and share compiled programs.
      dtype: dtype of the parameters made by `init`.

    Params: `{"w": (n_in, n_out), "b": (n_out,)}`. Input `(..., n_in)`, output
    `(..., n_out)`.

    Example:
      >>> layer = Linear(2, 25)
      >>> out_shape, params = layer.init(jax.random.key(0), (1000, 2))
      >>> out_shape
      (1000, 25)
    """
    n_in, n_out = _check_size("Linear: n_in", n_in), _check_size("Linear: n_out", n_out)
    layer, output_shape = _linear(n_in, n_out)
    return layer._replace(
        init=_weights_init(
            f"Linear(n_in={n_in}, n_out={n_out})",
            output_shape,
            (n_in, n_out),
            n_in,
            w_init,
            b_init,
            dtype,
        )
    )


def _check_weights(name: str, params, w_shape, b_shape):
    """`(w, b)` of a layer's params `{"w": w_shape, "b": b_shape}`; ValueError naming the layer."""
    if not isinstance(params, dict) or set(params) != {"w", "b"}:
        raise ValueError(
            f"{name}: params must be a dict with keys 'w' and 'b', got {jax.tree.structure(params)}"
        )
    w, b = params["w"], params["b"]
    if jnp.shape(w) != w_shape or jnp.shape(b) != b_shape:
        raise ValueError(
            f"{name}: params must have w {w_shape} and b {b_shape}, got w {jnp.shape(w)} and b {jnp.shape(b)}"
        )
    return w, b


@interned
def _weights_init(name: str, output_shape: Callable, w_shape: Shape, fan_in: int, w_init, b_init, dtype):
    """`init` of a layer with params `{"w": w_shape, "b": (w_shape[-1],)}`, both drawn from
    `w_init` and `b_init`, by default U[-1/sqrt(fan_in), 1/sqrt(fan_in)]. It lives apart
    from the layer's program: initializers change init only."""
    owner = name.split("(")[0]  # "Linear", "Conv2D", ...: how the user called the constructor
    w_init = _check_init(f"{owner}: w_init", w_init) or _uniform(1 / math.sqrt(fan_in))
    b_init = _check_init(f"{owner}: b_init", b_init) or _uniform(1 / math.sqrt(fan_in))
    dtype = _check_dtype(f"{owner}: dtype", dtype)

    def init(key, input_shape):
        input_shape = check_init(name, key, input_shape)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, w_shape, dtype), "b": b_init(b_key, w_shape[-1:], dtype)}
        return output_shape(input_shape), params

    return init


@interned
def _linear(n_in, n_out):
    """The layer (its init with the default initializers) and its output shape function."""
    name = f"Linear(n_in={n_in}, n_out={n_out})"

    def output_shape(input_shape):
        if len(input_shape) < 1 or input_shape[-1] != n_in:
            raise ValueError(f"{name}: expected input_shape (..., {n_in}), got {input_shape}")
        return input_shape[:-1] + (n_out,)

    def check_params(params):
        return _check_weights(name, params, (n_in, n_out), (n_out,))

    def check_input(x, axis):
        _check_floating(name, x)
        if jnp.ndim(x) < 1 or jnp.shape(x)[axis] != n_in:
            raise ValueError(
                f"{name}: expected input with {n_in} features on axis {axis}, got shape {jnp.shape(x)}"
            )

    def apply(params, x, *, train=False, key=None):
        w, b = check_params(params)
        check_input(x, -1)
        with jax.named_scope(name):
            y = x @ w
            return y + b.reshape((1,) * (y.ndim - 1) + (n_out,))

    def vjp(params, x, dy, *, train=False, key=None):
        w, b = check_params(params)
        check_input(x, -1)
        check_cotangent(name, dy, jnp.shape(x)[:-1] + jnp.shape(w)[1:])
        with jax.named_scope(name):
            # dw = x^T dy (summed over batch dims), db = sum dy, dx = dy w^T
            dw = jnp.tensordot(x, dy, axes=(tuple(range(x.ndim - 1)),) * 2)
            db = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
            # Cotangents take their primal's dtype (as JAX's autodiff does) when dtypes mix.
            return {"w": dw.astype(w.dtype), "b": db.astype(b.dtype)}, (dy @ w.T).astype(x.dtype)

    def apply_fm(params, x, *, train=False, key=None):  # x: (n_in, batch)
        w, b = check_params(params)
        check_input(x, 0)
        with jax.named_scope(name):
            # w.T is copied (the barrier keeps XLA from folding the transpose into the
            # product): XLA's CPU backend multiplies a plain (n_out, n_in) @ (n_in, batch)
            # faster, and the copy is small.
            return lax.optimization_barrier(w.T) @ x + b[:, None]

    def vjp_fm(params, x, dy, *, train=False, key=None):  # x: (n_in, batch), dy: (n_out, batch)
        w, b = check_params(params)
        check_input(x, 0)
        check_cotangent(name, dy, jnp.shape(w)[1:] + jnp.shape(x)[1:])
        with jax.named_scope(name):
            # dw = x dy^T, db = sum over batch of dy, dx = w dy
            return (
                {"w": (x @ dy.T).astype(w.dtype), "b": jnp.sum(dy, axis=1).astype(b.dtype)},
                (w @ dy).astype(x.dtype),
            )

    init = _weights_init(name, output_shape, (n_in, n_out), n_in, None, None, jnp.dtype(jnp.float32))
    return Layer(init, apply, vjp, feature_major=Layer(init, apply_fm, vjp_fm)), output_shape
