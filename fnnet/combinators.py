"""Combinators: `Sequential` (layers one after another, also `serial`), `Residual`
(x + layer(x)), and `summary` of a model."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from fnnet import _draws
from fnnet._checks import as_array, check_init, check_key, check_not_donated, check_shape, describe, is_int
from fnnet.layers import FunctionLayer, Layer, check_cotangent, check_dparams, contract_hint, masked
from fnnet.state import check_update, trainable_mask

__all__ = ["Sequential", "serial", "Residual", "summary"]


def _check_params(params, n_layers):
    if not isinstance(params, (tuple, list)) or len(params) != n_layers:
        got = (
            f"{type(params).__name__} of length {len(params)}"
            if isinstance(params, (tuple, list))
            else jax.tree.structure(params)
        )
        raise ValueError(
            f"serial of {n_layers} layers: params must be a tuple of "
            f"{n_layers} entries (one per layer), got {got}"
        )
    check_not_donated("serial", "params", params)


def _naming_layer(position, fn, *args, **kwargs):
    """Call a layer's function, naming its position in any ValueError or plain TypeError."""
    try:
        with contract_hint():
            return fn(*args, **kwargs)
    except ValueError as error:
        raise ValueError(f"serial layer {position}: {error}") from error
    except TypeError as error:
        if type(error) is not TypeError:  # e.g. jax's errors: keep their type
            raise
        raise TypeError(f"serial layer {position}: {error}") from error


def _checked_init(layer, key, shape):
    """`layer.init`'s `(output_shape, params)`, refusing anything else by what came."""
    result = layer.init(key, shape)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (tuple, list))):
        raise TypeError(f"{layer.name}: init must return (output_shape, params), got {describe(result)}")
    params = result[1]
    if isinstance(params, (tuple, list)) and params and all(is_int(d) for d in params):
        raise TypeError(
            f"{layer.name}: init returned params {tuple(params)}, plain ints like a shape: init must "
            f"return (output_shape, params), in that order, got {describe(result)}"
        )
    return tuple(result[0]), params


def _checked_apply(layer, params, x, **mode):
    """`layer.apply`'s output, refused unless it is one array (a pair would pass on as data)."""
    y = layer.apply(params, x, **mode)
    if not (hasattr(y, "shape") and hasattr(y, "dtype")):
        raise TypeError(f"{layer.name}: apply must return an array, got {describe(y)}")
    return y


def _shape_mismatch(position, layer, x, y, any_rank=False):
    """For a user's own `layer` (at `position` of a Sequential) that gave `y` on `x`: the
    message naming it if `y` is not the shape its `init` gives for x's, else None. On an
    error path only: `init` is traced (not run) here, never in a working model. Shapes of
    another rank count only with `any_rank` (the whole batch known: under a per-sample
    `vmap` a layer sees one sample where its init speaks of a batch)."""
    if not (isinstance(layer, FunctionLayer) or not type(layer).__module__.startswith("fnnet.")):
        return None
    found = []

    def init(key):
        output_shape, params = layer.init(key, tuple(jnp.shape(x)))
        found.append(output_shape)
        return params

    try:
        jax.eval_shape(init, jax.random.key(0))
        declared = tuple(int(d) for d in found[0])
    except Exception:  # not a shape its init takes, or not a shape: nothing to say
        return None
    if (not any_rank and len(declared) != jnp.ndim(y)) or min(declared, default=0) < 0:
        return None
    if declared == tuple(jnp.shape(y)):
        return None
    return (
        f"serial layer {position}: {layer.name}: apply returned an output of shape "
        f"{tuple(jnp.shape(y))} for x of shape {tuple(jnp.shape(x))}, where its init gives the "
        f"output shape {declared}"
    )


def _first_mismatch(layers, chain, any_rank=False):
    """The first `_shape_mismatch` of `layers`, `chain` their inputs then the last output."""
    for position, layer in enumerate(layers):
        found = _shape_mismatch(position, layer, chain[position], chain[position + 1], any_rank)
        if found:
            return found
    return None


def shape_mismatch(model, params, x):
    """Where a user's own layer in `model` (a Sequential, or the model itself) returns
    another shape than its `init` gives, traced on `x`: the message naming it, else None
    (for an error that names a layer after it, or the loss: `fnnet.fit`'s checks)."""
    try:
        if isinstance(model, Sequential):
            inputs, _, out = jax.eval_shape(lambda p, x: model.forward(p, x, False, None), params, x)
            return _first_mismatch(model.layers, [*inputs, out], any_rank=True)
        out = jax.eval_shape(functools.partial(_checked_apply, model), params, x)
        return _shape_mismatch(0, model, x, out, any_rank=True)
    except Exception:  # the model's own error says the rest
        return None


def _checked_vjp(layer, params, x, dy, **mode):
    """`layer.vjp`'s `(dparams, dx)`, dx of x's shape: else the error would blame the layer
    before it, in its shapes."""
    result = layer.vjp(params, x, dy, **mode)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{layer.name}: vjp must return (dparams, dx), got {describe(result)}")
    if jnp.shape(result[1]) != jnp.shape(x):
        raise ValueError(
            f"{layer.name}: vjp returned dx of shape {jnp.shape(result[1])} for x of shape {jnp.shape(x)}"
        )
    check_dparams(layer.name, params, result[0])
    return result


def _layer_keys(key, n):
    """One key per layer (split once), or None for each when there is no key."""
    return [None] * n if key is None else _draws.split(check_key("serial", key), n)


def _updated(layer, params, x, key, mask):
    return check_update(params, layer.update_state(params, x, key=key, **masked(layer, mask)))


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Sequential(Layer):
    """Layers one after another: `Sequential(f, g).apply(p, x) == g.apply(p[1], f.apply(p[0], x))`.

    `init` splits its key once per layer and threads the shapes, so mismatched
    sizes fail at `init`. Params are a tuple with one entry per layer. `apply`
    and `vjp` pass `train` to every layer and split `key` once per layer;
    `vjp` runs the forward once, keeping each layer's input, then the layers'
    vjps in reverse order. A Sequential is a Layer, so they nest.
    `serial` is the same class.

    Example:
      >>> model = Sequential(Linear(2, 25), ReLU(), Linear(25, 1), Sigmoid())
      >>> out_shape, params = model.init(jax.random.key(0), (1000, 2))
      >>> out_shape
      (1000, 1)
    """

    layers: tuple

    def __init__(self, *layers: Layer):
        if not layers:
            raise ValueError("serial needs at least one layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"serial: argument {i} must be a Layer, got {describe(layer)}"
                    + (" (did you forget to call the constructor, e.g. ReLU()?)" if callable(layer) else "")
                )
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(layer) for layer in self.layers)})"

    def init(self, key, input_shape):
        shape, params = check_init("serial", key, input_shape), []
        keys = _draws.split(key, len(self.layers))  # one key per layer
        for i, (layer, layer_key) in enumerate(zip(self.layers, keys)):
            shape, layer_params = _naming_layer(i, _checked_init, layer, layer_key, shape)
            params.append(layer_params)
        return shape, tuple(params)

    @property
    def uses_mask(self) -> bool:  # type: ignore[override]
        return any(layer.uses_mask for layer in self.layers)

    def forward(self, params, x, train, key, upto=None, mask=None):
        """The inputs and keys of the first `upto` layers (all by default), and the output
        of the last of them."""
        n = len(self.layers)
        _check_params(params, n)
        x = jnp.asarray(as_array("serial", "x", x))
        inputs, keys = [], _layer_keys(key, n)
        for i, layer in enumerate(self.layers[:upto]):
            inputs.append(x)
            mode = dict(train=train, key=keys[i], **masked(layer, mask))
            try:
                x = _naming_layer(i, _checked_apply, layer, params[i], x, **mode)
            except (TypeError, ValueError) as error:
                found = _first_mismatch(self.layers[:i], inputs)  # a layer before it broke its shape
                if found:
                    raise ValueError(found) from error
                raise
        return inputs, keys, x

    def apply(self, params, x, *, train=False, key=None, mask=None):
        return self.forward(params, x, train, key, mask=mask)[2]

    def vjp(self, params, x, dy, *, train=False, key=None, mask=None):
        inputs, keys, y = self.forward(params, x, train, key, mask=mask)
        check_cotangent("serial", dy, jnp.shape(y))
        dparams = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            mode = dict(train=train, key=keys[i], **masked(layer, mask))
            dparams[i], dy = _naming_layer(i, _checked_vjp, layer, params[i], inputs[i], dy, **mode)
        return (dparams if isinstance(params, list) else tuple(dparams)), dy  # params' container

    @property
    def update_state(self):  # type: ignore[override]
        """Moves the state of every stateful layer; None when no layer has state."""
        stateful = [i for i, layer in enumerate(self.layers) if layer.update_state is not None]
        if not stateful:
            return None

        def update_state(params, x, *, key=None, mask=None):
            # the forward only up to the last stateful layer's input
            inputs, keys, last_input = self.forward(params, x, True, key, upto=stateful[-1], mask=mask)
            inputs.append(last_input)
            return tuple(
                _naming_layer(i, _updated, self.layers[i], p, inputs[i], keys[i], mask)
                if i in stateful
                else p
                for i, p in enumerate(params)
            )

        return update_state


serial = Sequential


@dataclasses.dataclass(frozen=True, repr=False)
class Residual(Layer):
    """`y = x + layer(x)`, a skip connection around `layer` (whose output has x's shape).

    Params are `layer`'s; `train` and `key` pass through. The VJP adds the
    skip's identity: `dx = dy + layer's dx`.

    Example:
      >>> block = Residual(Sequential(Linear(25, 25), ReLU()))
    """

    layer: Layer

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Residual: layer must be a Layer, got {describe(self.layer)}")

    def init(self, key, input_shape):
        input_shape = check_init("Residual", key, input_shape)
        output_shape, params = self.layer.init(key, input_shape)
        if tuple(output_shape) != tuple(input_shape):
            raise ValueError(
                f"Residual: the layer must keep its input's shape, got "
                f"{tuple(input_shape)} -> {tuple(output_shape)}"
            )
        return tuple(input_shape), params

    @property
    def uses_mask(self) -> bool:  # type: ignore[override]
        return self.layer.uses_mask

    def apply(self, params, x, *, train=False, key=None, mask=None):
        y = self.layer.apply(params, x, train=train, key=key, **masked(self.layer, mask))
        if y.shape != x.shape:
            raise ValueError(f"Residual: the layer must keep its input's shape, got {x.shape} -> {y.shape}")
        return x + y

    def vjp(self, params, x, dy, *, train=False, key=None, mask=None):
        check_cotangent("Residual", dy, jnp.shape(x))
        dparams, dx = self.layer.vjp(params, x, dy, train=train, key=key, **masked(self.layer, mask))
        return dparams, dy + dx  # d(x + f(x)) = dy + f's dx

    @property
    def update_state(self):  # type: ignore[override]
        return self.layer.update_state


def _shapes(layer: Layer, input_shape):
    """`layer.init`'s output shape and params as shapes and dtypes, without drawing."""
    out = {}

    def draw(key):
        out["shape"], params = layer.init(key, input_shape)
        return params

    params = jax.eval_shape(draw, jax.random.key(0))
    return tuple(out["shape"]), params


def _rows(layer: Layer, input_shape, path: str, depth: int):
    """(name, output shape, trainable count, state count) for each layer, nested
    Sequentials indented; `path` names the layer in errors."""
    if isinstance(layer, Sequential):
        rows, shape = [], input_shape
        for i, part in enumerate(layer.layers):
            part_rows, shape = _rows(part, shape, f"{path}layer {i}: ", depth + 1)
            rows += part_rows
        return rows, shape
    try:
        shape, params = _shapes(layer, input_shape)
    except (TypeError, ValueError) as error:
        raise type(error)(f"summary: {path}{error}") from error
    counts = [0, 0]
    for trainable, leaf in zip(jax.tree.leaves(trainable_mask(params)), jax.tree.leaves(params)):
        counts[not trainable] += math.prod(leaf.shape)
    return [("  " * max(depth, 0) + repr(layer), shape, *counts)], shape


def summary(model: Layer, input_shape, *, file=None) -> None:
    """Print a table of `model`'s layers: each one's output shape and parameter counts
    (trainable, and state such as BatchNorm's running statistics), with totals.
    Nothing is drawn or run: shapes come from `jax.eval_shape`.

    Args:
      model: a Layer; a Sequential's layers get a row each, nested ones indented.
      input_shape: the input's shape, e.g. `x.shape`.
      file: where to print (default: standard output).

    Example:
      >>> summary(Sequential(Linear(2, 25), ReLU(), Linear(25, 1)), (1000, 2))
      layer          output shape  trainable  state
      Linear(2, 25)  (1000, 25)           75      0
      ReLU()         (1000, 25)            0      0
      Linear(25, 1)  (1000, 1)            26      0
      total                              101      0
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a Layer, got {describe(model)}")
    input_shape = check_shape("summary", input_shape)
    rows, _ = _rows(model, input_shape, "", -1)
    table = [("layer", "output shape", "trainable", "state")]
    table += [(name, str(shape), str(trainable), str(state)) for name, shape, trainable, state in rows]
    table.append(("total", "", str(sum(r[2] for r in rows)), str(sum(r[3] for r in rows))))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for name, shape, trainable, state in table:
        line = f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {trainable:>{widths[2]}}  {state:>{widths[3]}}"
        print(line.rstrip(), file=file)
