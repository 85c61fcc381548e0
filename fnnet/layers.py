"""Layers: the `Layer` contract, and `Linear`.

## The contract

A layer is a value: a frozen dataclass whose fields are the settings it was built
with (`Linear(2, 25)`, `Dropout(0.1)`), subclassing `Layer`, with these methods,
pure functions of their arguments and the settings:

- `init(key, input_shape) -> (output_shape, params)` draws params and touches
  no data, so `Sequential` threads shapes through a whole model.
- `apply(params, x, *, train=False, key=None) -> y` is the forward pass.
  `apply(params, x)` is inference: deterministic (`Dropout` is the identity,
  `BatchNorm` normalizes by its running statistics). `train=True` is a
  training step's forward pass: `Dropout` draws its mask from `key`,
  `BatchNorm` normalizes by the batch's statistics.
- `vjp(params, x, dy, *, train=False, key=None) -> (dparams, dx)` is the
  vector-Jacobian product of `apply` at the same `(params, x, train, key)`,
  derived by hand and written right below `apply`: `dparams` has the
  structure of params, `dx` the shape of x. Given the same key it sees the
  same random draws as `apply`.
- `update_state(params, x, *, key=None) -> params`, only for a layer with
  state: the params after one training step's forward pass on x, with the
  leaves under `fnnet.State` moved (running statistics) and the others as
  they were. Other layers leave it `None`.

A new built-in layer is one such class in its module, exported by its
`__all__`; nothing else to register. Settings that are functions
(initializers) or only shape `init` (`dtype`) are fields with
`compare=False`: they do not change what `apply` and `vjp` compute (so
never cache `init` by the layer's value: fnnet draws params unjitted).

**Values.** Equal settings make equal layers with equal hashes
(`Linear(2, 3) == Linear(2, 3)`), so every compiled program (`jax.jit`
caches by the value of its static arguments) is shared by equal models,
with no cache of constructors; `repr(model)` reads as the code that builds
it, and `summary(model, input_shape)` lists each layer's output shape and
parameter counts.

**Your own layer** is either such a class, or `Layer(init, apply, vjp,
update_state=None)` of four functions. Built from the same module-level
functions, two such layers are equal; built from fresh closures (a lambda
made at each call) each is a new layer, and compiles its own programs.
Write each VJP beside its forward and check it with `fnnet.check_vjp`.

**Mode and keys.** `train` is a Python bool (static under `jit`); `key` is a
JAX PRNG key, traced, so a `vmap` over keys gives each member its own draws.
`Sequential` passes `train` to every layer and splits `key` once per layer.
Training calls `apply` and `vjp` with `train=True`: `train_step`, `train`,
`fit` and `sweep` with the run's key and the step count folded in at each
step; `value_and_grad` with the key it is given (fold in your own step).

**Padding and masks.** To run data of any size in one compiled program, training
pads the samples to a bucket (`fnnet._buckets`) and gives each a weight, 0 for
padding: the loss is their weighted mean, so padded samples move nothing. A layer
that mixes samples (`BatchNorm`'s batch statistics) sets the class attribute
`uses_mask = True` (`Layer(..., uses_mask=True)` for one of functions); its `apply`,
`vjp` and `update_state` then take a keyword
`mask=None`: `(batch,)`, 1 for samples that count and 0 for padding (None: all
count), and leave the padding out of every statistic, its dx zero. Other layers
treat samples one by one and never see a mask (a layer of your own that mixes
samples must declare it too, or its statistics include the padding).

**State.** Non-trainable values live in params under `fnnet.State` nodes:
`model.apply(params, x)` finds them, checkpoints and sweeps carry them, and
optimizers never change them; after each optimizer step, training writes in
those that `update_state` returns.

Inputs are `(..., features)`; how a run lays them out in memory is private
(`fnnet._layout`).
"""

import contextlib
import dataclasses
import math
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from fnnet import _draws
from fnnet._checks import check_init, describe, is_finite, is_int, is_real, shown
from fnnet._types import Params, Shape
from fnnet._values import check_functions, functions_repr, register_settings, settings_repr, setattr_frozen

__all__ = ["Layer", "FunctionLayer", "Linear"]


class Layer:
    """The base of every layer; see the module docstring for the contract.

    `Layer(init, apply, vjp, update_state=None, uses_mask=False)` makes a layer of your
    own functions (a `FunctionLayer`); `uses_mask=True` for one that mixes samples.
    """

    update_state: Optional[Callable[..., Params]] = None
    # True for a layer that mixes samples: it takes `mask=` (see "Padding and masks")
    uses_mask: ClassVar[bool] = False

    def __new__(cls, *args, **kwargs):
        return object.__new__(FunctionLayer if cls is Layer else cls)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_settings(cls, Layer)  # a pytree of its numbers (fnnet._values)

    def init(self, key, input_shape: Shape) -> tuple:
        raise NotImplementedError(f"{type(self).__name__} must define init(key, input_shape)")

    def apply(self, params, x, *, train=False, key=None):
        raise NotImplementedError(f"{type(self).__name__} must define apply(params, x, *, train, key)")

    def vjp(self, params, x, dy, *, train=False, key=None) -> tuple:
        raise NotImplementedError(f"{type(self).__name__} must define vjp(params, x, dy, *, train, key)")

    def __repr__(self) -> str:
        return settings_repr(self)

    @property
    def name(self) -> str:
        """How errors name the layer: as the code that builds it, `ReLU` for `ReLU()`."""
        text = repr(self)
        return text[:-2] if text.endswith("()") else text


@dataclasses.dataclass(frozen=True, repr=False)
class FunctionLayer(Layer):
    """A layer of your own functions, made by `Layer(init, apply, vjp, update_state=None)`.

    Equal when its `apply`, `vjp` and `update_state` are the same functions (`init`, how
    params are drawn, is not compared: the params are data).
    """

    # Fields without defaults, said so: else a dataclass takes the inherited method as one.
    init: Callable = dataclasses.field(compare=False)  # type: ignore[assignment]
    apply: Callable = dataclasses.field()  # type: ignore[assignment]
    vjp: Callable = dataclasses.field()  # type: ignore[assignment]
    update_state: Optional[Callable] = None
    uses_mask: bool = False  # type: ignore[misc]  # the class's ClassVar, here a setting

    def __post_init__(self):
        check_functions("Layer", self, ("init", "apply", "vjp"), ("update_state",))
        if not isinstance(self.uses_mask, bool):
            raise TypeError(f"Layer: uses_mask must be True or False, got {describe(self.uses_mask)}")

    def __repr__(self) -> str:
        text = functions_repr("Layer", self, ("init", "apply", "vjp"), ("update_state",))
        return text[:-1] + ", uses_mask=True)" if self.uses_mask else text


@contextlib.contextmanager
def contract_hint():
    """Add to a TypeError from calling a layer with the contract's keywords a hint of
    what they are (a layer written for an older contract takes no `train` or `key`)."""
    try:
        yield
    except TypeError as error:
        message = str(error)
        if (
            type(error) is not TypeError
            or "unexpected keyword argument" not in message
            or "see fnnet.layers)" in message
        ):
            raise  # not a keyword error, or hinted already (by an inner Sequential)
        raise TypeError(
            f"{error} (a layer's apply and vjp take the keywords train and key, "
            f"update_state the keyword key, and all three mask where the layer sets "
            f"uses_mask: see fnnet.layers)"
        ) from error


def masked(layer: Layer, mask) -> dict:
    """The keywords that give `layer` the sample mask: `{"mask": mask}` for a layer that
    uses one (a mask there), else none."""
    return {"mask": mask} if mask is not None and layer.uses_mask else {}


def check_cotangent(name: str, dy, y_shape) -> None:
    """Raise ValueError unless `dy`, a vjp's cotangent of the output, has the output's
    shape: another shape would broadcast into a silently wrong gradient."""
    if jnp.shape(dy) != tuple(y_shape):
        raise ValueError(f"{name}: expected dy of the output's shape {tuple(y_shape)}, got {jnp.shape(dy)}")


def check_dparams(name: str, params, dparams) -> None:
    """Raise unless a vjp's `dparams` mirror `params`: their structure, each leaf's shape, and
    floats for float params (an optimizer would otherwise blame the gradients of the whole
    model, broadcast a gradient of another shape, or step by truncated integers)."""
    if jax.tree.structure(dparams) != jax.tree.structure(params):  # type: ignore[operator]
        raise TypeError(
            f"{name}: vjp returned dparams of structure {jax.tree.structure(dparams)} for params of "
            f"structure {jax.tree.structure(params)}; dparams must mirror params (() for none)"
        )
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, p), d in zip(paths, jax.tree.leaves(dparams)):
        where = f"dparams{jax.tree_util.keystr(path)}"
        if jnp.shape(d) != jnp.shape(p):
            raise ValueError(
                f"{name}: vjp returned {where} of shape {jnp.shape(d)} for a param of shape {jnp.shape(p)}"
            )
        if jnp.issubdtype(jnp.result_type(p), jnp.inexact) and not jnp.issubdtype(
            jnp.result_type(d), jnp.inexact
        ):
            raise TypeError(
                f"{name}: vjp returned {where} of dtype {jnp.result_type(d)} for a param of dtype "
                f"{jnp.result_type(p)}; a gradient must be floating point (no cast to an integer)"
            )


def check_train(name: str, train) -> bool:
    """`train` selects a Python branch: it must be a bool, not an array or a tracer."""
    if not isinstance(train, bool):
        raise TypeError(
            f"{name}: train must be a Python bool (True for a training step), got {describe(train)}"
        )
    return train


def check_dtype(name: str, dtype):
    """`dtype` as a NumPy dtype; TypeError unless floating (params must be)."""
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype, such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dtype}")
    return dtype


def check_initializer(name: str, init):
    if init is not None and not callable(init):
        raise TypeError(f"{name} must be None or a (key, shape, dtype) -> array initializer, got {init!r}")
    return init


def check_size(name: str, value, low: int = 1) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_float(name: str, value) -> float:
    """A layer's number: a real, finite in float32, where the layer computes with it (a
    slope of 1e39 is inf there, and inf * 0 is NaN)."""
    if not is_real(value):
        raise TypeError(f"{name} must be a float, got {describe(value)}")
    if not is_finite(value):
        raise ValueError(f"{name} must be finite, got {shown(value)}")
    if abs(float(value)) > float(np.finfo(np.float32).max):
        raise ValueError(f"{name} must be finite in float32 (at most 3.4e38 in size), got {value}")
    return float(value)


def check_floating(name: str, x) -> None:
    """Raise TypeError unless `x` is floating point: an integer input would get an integer
    cotangent (its fraction cut off) from `vjp`."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: input must be floating point, got dtype {dtype}; convert it, e.g. x.astype(jnp.float32)"
        )


def check_no_params(name: str, params) -> None:
    if not (isinstance(params, tuple) and len(params) == 0):
        raise ValueError(f"{name} has no parameters: params must be (), got {params!r}")


def check_weights(name: str, params, w_shape, b_shape):
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


class Parameterless(Layer):
    """A layer without params: `init` checks its arguments and returns `output_shape`'s
    answer (the input shape unless overridden) and params ()."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def init(self, key, input_shape):
        return self.output_shape(check_init(self.name, key, input_shape)), ()


def _uniform(bound: float):
    def init(key, shape, dtype):
        return _draws.uniform(key, shape, dtype, bound)

    return init


_COPIED_TRANSPOSE = 2**16  # the largest x (elements) whose transpose Linear's vjp copies


def draw_weights(layer, key, w_shape: Shape, fan_in: int) -> dict:
    """`{"w": w_shape, "b": (w_shape[-1],)}` drawn with `layer`'s `w_init` and `b_init`, by
    default from U[-1/sqrt(fan_in), 1/sqrt(fan_in)], in `layer.dtype`."""
    default = _uniform(1 / math.sqrt(fan_in))
    w_key, b_key = _draws.split(key, 2)
    return {
        "w": (layer.w_init or default)(w_key, w_shape, layer.dtype),
        "b": (layer.b_init or default)(b_key, w_shape[-1:], layer.dtype),
    }


def weights_field(default=None) -> Any:
    """A setting that shapes only `init` (an initializer, a dtype): keyword-only and
    left out of equality, so layers that differ in it share programs."""
    return dataclasses.field(default=default, kw_only=True, compare=False)


def check_weights_settings(layer, owner: str) -> None:
    """Check and normalize `w_init`, `b_init` and `dtype` of a layer with weights."""
    setattr_frozen(
        layer,
        w_init=check_initializer(f"{owner}: w_init", layer.w_init),
        b_init=check_initializer(f"{owner}: b_init", layer.b_init),
        dtype=check_dtype(f"{owner}: dtype", layer.dtype),
    )


@dataclasses.dataclass(frozen=True, repr=False)
class Linear(Layer):
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

    n_in: int
    n_out: int
    w_init: Optional[Callable] = weights_field()
    b_init: Optional[Callable] = weights_field()
    dtype: Any = weights_field(np.dtype("float32"))

    def __post_init__(self):
        setattr_frozen(
            self, n_in=check_size("Linear: n_in", self.n_in), n_out=check_size("Linear: n_out", self.n_out)
        )
        check_weights_settings(self, "Linear")

    @property
    def name(self) -> str:
        return f"Linear(n_in={self.n_in}, n_out={self.n_out})"

    def init(self, key, input_shape):
        input_shape = check_init(self.name, key, input_shape)
        if len(input_shape) < 1 or input_shape[-1] != self.n_in:
            raise ValueError(f"{self.name}: expected input_shape (..., {self.n_in}), got {input_shape}")
        params = draw_weights(self, key, (self.n_in, self.n_out), self.n_in)
        return input_shape[:-1] + (self.n_out,), params

    def check(self, params, x, axis: int = -1):
        """`(w, b)`, with x checked to hold `n_in` features on `axis`."""
        w, b = check_weights(self.name, params, (self.n_in, self.n_out), (self.n_out,))
        check_floating(self.name, x)
        if jnp.ndim(x) < 1 or jnp.shape(x)[axis] != self.n_in:
            raise ValueError(
                f"{self.name}: expected input with {self.n_in} features on axis {axis}, got shape {jnp.shape(x)}"
            )
        return w, b

    def apply(self, params, x, *, train=False, key=None):
        w, b = self.check(params, x)
        with jax.named_scope(self.name):
            y = x @ w
            return y + b.reshape((1,) * (y.ndim - 1) + (self.n_out,))

    def vjp(self, params, x, dy, *, train=False, key=None):
        w, b = self.check(params, x)
        check_cotangent(self.name, dy, jnp.shape(x)[:-1] + (self.n_out,))
        with jax.named_scope(self.name):
            # dw = x^T dy (summed over batch dims), db = sum dy, dx = dy w^T
            if x.ndim == 1:
                dw = jnp.outer(x, dy)
            elif x.size <= _COPIED_TRANSPOSE:
                # x^T copied (the barrier keeps XLA from folding the transpose back into the
                # product): XLA's CPU backend multiplies a small plain (n_in, batch) @ (batch,
                # n_out) 10-30% faster than one contracting both operands' first axes; at
                # larger sizes the copy costs time and memory instead.
                xt = lax.optimization_barrier(jnp.reshape(x, (-1, self.n_in)).T)
                dw = xt @ jnp.reshape(dy, (-1, self.n_out))
            else:
                dw = jnp.tensordot(x, dy, axes=(tuple(range(x.ndim - 1)),) * 2)
            db = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
            # Cotangents take their primal's dtype (as JAX's autodiff does) when dtypes mix.
            return {"w": dw.astype(w.dtype), "b": db.astype(b.dtype)}, (dy @ w.T).astype(x.dtype)
