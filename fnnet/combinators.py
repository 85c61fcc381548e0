"""Combinators: `serial` (layers one after another) and `Residual` (x + layer(x))."""

import jax
import jax.numpy as jnp

from fnnet._checks import check_init, check_key, describe
from fnnet._intern import interned
from fnnet.layers import Layer, check_cotangent, contract_hint
from fnnet.state import check_update

__all__ = ["serial", "Sequential", "Residual"]


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


def _layer_keys(key, n):
    """One key per layer (split once), or None for each when there is no key."""
    return [None] * n if key is None else list(jax.random.split(check_key("serial", key), n))


@interned
def _serial_init(inits):
    def init(key, input_shape):
        shape, params = check_init("serial", key, input_shape), []
        keys = jax.random.split(key, len(inits))  # one key per layer
        for i, (layer_init, layer_key) in enumerate(zip(inits, keys)):
            shape, layer_params = _naming_layer(i, layer_init, layer_key, shape)
            params.append(layer_params)
        return shape, tuple(params)

    return init


@interned
def _compose(layers) -> Layer:
    """The serial of `layers` (init left to the caller: equal layers may have other inits)."""
    n = len(layers)

    def forward(params, x, train, key, upto=n):
        """The inputs and keys of the first `upto` layers, and the output of the last of them."""
        _check_params(params, n)
        inputs, keys = [], _layer_keys(key, n)
        for i, layer in enumerate(layers[:upto]):
            inputs.append(x)
            x = _naming_layer(i, layer.apply, params[i], x, train=train, key=keys[i])
        return inputs, keys, x

    def apply(params, x, *, train=False, key=None):
        return forward(params, x, train, key)[2]

    def vjp(params, x, dy, *, train=False, key=None):
        inputs, keys, y = forward(params, x, train, key)
        check_cotangent("serial", dy, jnp.shape(y))
        dparams = [None] * n
        for i in reversed(range(n)):
            dparams[i], dy = _naming_layer(
                i, layers[i].vjp, params[i], inputs[i], dy, train=train, key=keys[i]
            )
        return tuple(dparams), dy

    stateful = [i for i, layer in enumerate(layers) if layer.update_state is not None]

    def _updated(layer, params, x, key):
        return check_update(params, layer.update_state(params, x, key=key))

    def update_state(params, x, *, key=None):
        # the forward only up to the last stateful layer's input
        inputs, keys, last_input = forward(params, x, True, key, upto=stateful[-1])
        inputs.append(last_input)
        return tuple(
            _naming_layer(i, _updated, layers[i], p, inputs[i], keys[i]) if i in stateful else p
            for i, p in enumerate(params)
        )

    # A layer's own twin, when it agrees with the layer about state; else the layer
    # itself, run transposed inside the serial's twin.
    twins = [
        layer.feature_major
        if layer.feature_major is not None
        and (layer.feature_major.update_state is None) == (layer.update_state is None)
        else None
        for layer in layers
    ]
    twin = None
    if any(t is not None for t in twins):
        twin = _compose(tuple(t if t is not None else _transposed(layer) for t, layer in zip(twins, layers)))
    return Layer(
        _serial_init(tuple(layer.init for layer in layers)),
        apply,
        vjp,
        update_state if stateful else None,
        twin,
    )


@interned
def _transposed(layer: Layer) -> Layer:
    """`layer` on a feature-major 2-D input: transposed in, run batch-major, transposed out."""

    def apply(params, x, *, train=False, key=None):
        return layer.apply(params, x.T, train=train, key=key).T

    def vjp(params, x, dy, *, train=False, key=None):
        dparams, dx = layer.vjp(params, x.T, dy.T, train=train, key=key)
        return dparams, dx.T

    def update_state(params, x, *, key=None):
        return layer.update_state(params, x.T, key=key)

    return Layer(layer.init, apply, vjp, None if layer.update_state is None else update_state)


def serial(*layers: Layer) -> Layer:
    """Compose layers: `serial(f, g).apply(p, x) == g.apply(p[1], f.apply(p[0], x))`.

    `init` splits its key once per layer and threads the shapes, so mismatched
    sizes fail at `init`. Params are a tuple with one entry per layer. `apply`
    and `vjp` pass `train` to every layer and split `key` once per layer;
    `vjp` runs the forward once, keeping each layer's input, then the layers'
    vjps in reverse order. A serial is a Layer, so serials nest. Its
    feature-major twin runs the layers' twins, and a layer without one
    transposed in and out, so one such layer does not cost the whole model
    its fast layout.

    Example:
      >>> model = serial(Linear(2, 25), ReLU(), Linear(25, 1), Sigmoid())
      >>> out_shape, params = model.init(jax.random.key(0), (1000, 2))
      >>> out_shape
      (1000, 1)
    """
    if not layers:
        raise ValueError("serial needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial: argument {i} must be a Layer, got {describe(layer)}"
                + (" (did you forget to call the constructor, e.g. ReLU()?)" if callable(layer) else "")
            )
    return _compose(tuple(layers))._replace(init=_serial_init(tuple(layer.init for layer in layers)))


Sequential = serial


def Residual(layer: Layer) -> Layer:
    """`y = x + layer(x)`, a skip connection around `layer` (whose output has x's shape).

    Params are `layer`'s; `train` and `key` pass through. The VJP adds the
    skip's identity: `dx = dy + layer's dx`.

    Example:
      >>> block = Residual(serial(Linear(25, 25), ReLU()))
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"Residual: layer must be a Layer, got {describe(layer)}")
    return _residual(layer)._replace(init=_residual_init(layer.init))


@interned
def _residual_init(layer_init):
    def init(key, input_shape):
        input_shape = check_init("Residual", key, input_shape)
        output_shape, params = layer_init(key, input_shape)
        if tuple(output_shape) != tuple(input_shape):
            raise ValueError(
                f"Residual: the layer must keep its input's shape, got "
                f"{tuple(input_shape)} -> {tuple(output_shape)}"
            )
        return tuple(input_shape), params

    return init


@interned
def _residual(layer: Layer) -> Layer:
    def apply(params, x, *, train=False, key=None):
        y = layer.apply(params, x, train=train, key=key)
        if y.shape != x.shape:
            raise ValueError(f"Residual: the layer must keep its input's shape, got {x.shape} -> {y.shape}")
        return x + y

    def vjp(params, x, dy, *, train=False, key=None):
        check_cotangent("Residual", dy, jnp.shape(x))
        dparams, dx = layer.vjp(params, x, dy, train=train, key=key)
        return dparams, dy + dx  # d(x + f(x)) = dy + f's dx

    twin = None if layer.feature_major is None else _residual(layer.feature_major)
    return Layer(layer.init, apply, vjp, layer.update_state, twin)
