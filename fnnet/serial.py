"""The serial combinator: layers applied one after another."""

import jax

from fnnet._shared import shared
from fnnet.layers import _FEATURE_MAJOR, Layer, feature_major

__all__ = ["serial", "Sequential"]


def _check_params(params, n_layers):
    if not isinstance(params, (tuple, list)) or len(params) != n_layers:
        got = f"{type(params).__name__} of length {len(params)}" if isinstance(
            params, (tuple, list)) else jax.tree.structure(params)
        raise ValueError(f"serial of {n_layers} layers: params must be a tuple of "
                         f"{n_layers} entries (one per layer), got {got}")


def _at(position, fn, *args):
    """Call a layer's function, naming its position in any ValueError or plain TypeError."""
    try:
        return fn(*args)
    except ValueError as error:
        raise ValueError(f"serial layer {position}: {error}") from error
    except TypeError as error:
        if type(error) is not TypeError:  # e.g. jax's errors: keep their type
            raise
        raise TypeError(f"serial layer {position}: {error}") from error


def _compose(layers) -> Layer:
    n = len(layers)

    def init(key, input_shape):
        keys = jax.random.split(key, n)  # one key per layer
        shape, params = tuple(input_shape), []
        for i, (layer, layer_key) in enumerate(zip(layers, keys)):
            shape, layer_params = _at(i, layer.init, layer_key, shape)
            params.append(layer_params)
        return shape, tuple(params)

    def apply(params, x):
        _check_params(params, n)
        for i, (layer, layer_params) in enumerate(zip(layers, params)):
            x = _at(i, layer.apply, layer_params, x)
        return x

    def vjp(params, x, dy):
        _check_params(params, n)
        inputs = []  # each layer's input, from one forward pass
        for i, (layer, layer_params) in enumerate(zip(layers, params)):
            inputs.append(x)
            x = _at(i, layer.apply, layer_params, x)
        dparams = [None] * n
        for i in reversed(range(n)):
            dparams[i], dy = _at(i, layers[i].vjp, params[i], inputs[i], dy)
        return tuple(dparams), dy

    return Layer(init, apply, vjp)


@shared
def serial(*layers: Layer) -> Layer:
    """Compose layers: `serial(f, g).apply(p, x) == g.apply(p[1], f.apply(p[0], x))`.

    `init` splits its key once per layer and threads the shapes, so mismatched
    sizes fail at `init`. Params are a tuple with one entry per layer. `vjp`
    runs the forward once, keeping each layer's input, then the layers' vjps
    in reverse order. A serial is a Layer, so serials nest.

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
            raise TypeError(f"serial: argument {i} must be a Layer, got {type(layer).__name__}"
                            + (" (did you forget to call the constructor, e.g. ReLU()?)"
                               if callable(layer) else ""))
    model = _compose(layers)
    twins = [feature_major(layer) for layer in layers]
    if all(twin is not None for twin in twins):
        _FEATURE_MAJOR[model] = _compose(twins)
    return model


Sequential = serial
