"""The MLP as an fnnet model: its layers, scikit-learn's initial weights, and its forward
pass in NumPy (prediction from `coefs_` and `intercepts_`, as scikit-learn's own).

The model is `Linear, [BatchNorm], activation, [Dropout]` per hidden layer, then a
`Linear` to the outputs: logits for a classifier (the sigmoid or softmax is applied by
`predict_proba`, and by the loss in training), values for a regressor.
"""

import numpy as np
from scipy.special import expit, softmax

from fnnet.activations import Identity, ReLU, Sigmoid, Tanh
from fnnet.combinators import Sequential
from fnnet.dropout import Dropout
from fnnet.layers import Linear
from fnnet.norm import BatchNorm
from fnnet.state import State

__all__ = ["build_model", "initial_params", "forward", "out_function", "BN_EPS"]

ACTIVATIONS = {"identity": Identity, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
_NUMPY_ACTIVATIONS = {
    "identity": lambda z: z,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
}
BN_EPS = 1e-5  # BatchNorm's default eps, which `forward` uses too


def build_model(layer_units, activation, dropout, batch_norm) -> Sequential:
    """The fnnet model of an MLP with `layer_units` (inputs, hidden sizes..., outputs)."""
    layers: list = []
    for i, (n_in, n_out) in enumerate(zip(layer_units[:-1], layer_units[1:])):
        layers.append(Linear(n_in, n_out))
        if i < len(layer_units) - 2:
            layers += [BatchNorm()] if batch_norm else []
            layers.append(ACTIVATIONS[activation]())
            layers += [Dropout(dropout)] if dropout else []
    return Sequential(*layers)


def glorot_weights(random_state, layer_units, activation, dtype):
    """scikit-learn's initial coefs and intercepts: U[-b, b], b = sqrt(f / (fan_in +
    fan_out)), f 2 for the logistic activation and 6 otherwise, drawn in its order."""
    factor = 2.0 if activation == "logistic" else 6.0
    coefs, intercepts = [], []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        coefs.append(random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        intercepts.append(random_state.uniform(-bound, bound, fan_out).astype(dtype))
    return coefs, intercepts


def initial_params(model, coefs, intercepts, norms, dtype):
    """The model's params (a tuple, one entry per layer) as NumPy arrays of `dtype`: the
    Linear layers' from `coefs` and `intercepts`, the BatchNorms' from `norms` (a list of
    their params, None for fresh ones)."""
    params, linear, norm = [], 0, 0
    for layer in model.layers:
        if isinstance(layer, Linear):
            params.append({"w": coefs[linear].astype(dtype), "b": intercepts[linear].astype(dtype)})
            linear += 1
        elif isinstance(layer, BatchNorm):
            n = coefs[norm].shape[1]
            fresh = {
                "scale": np.ones(n),
                "shift": np.zeros(n),
                "running": State(mean=np.zeros(n), var=np.ones(n)),
            }
            given = fresh if norms is None else norms[norm]
            params.append(_as_dtype(given, dtype))
            norm += 1
        else:
            params.append(())
    return tuple(params)


def _as_dtype(tree, dtype):
    if isinstance(tree, dict):
        return type(tree)((k, _as_dtype(v, dtype)) for k, v in tree.items())
    return np.asarray(tree, dtype)


def split_params(model, params):
    """`(coefs, intercepts, norms)` of trained params, NumPy: the inverse of `initial_params`."""
    coefs, intercepts, norms = [], [], []
    for layer, p in zip(model.layers, params):
        if isinstance(layer, Linear):
            coefs.append(np.asarray(p["w"]))
            intercepts.append(np.asarray(p["b"]))
        elif isinstance(layer, BatchNorm):
            norms.append(_as_dtype(p, np.float64))
    return coefs, intercepts, norms


def forward(x, coefs, intercepts, norms, activation):
    """The MLP's output (before the output activation) on `x` `(n, features)`, in float64:
    each hidden layer `activation(batch_norm(x @ coef + intercept))` (BatchNorm by its
    running statistics when `norms` is not empty; Dropout is the identity here)."""
    out = np.asarray(x, np.float64)
    act = _NUMPY_ACTIVATIONS[activation]
    for i, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        out = out @ np.asarray(coef, np.float64) + np.asarray(intercept, np.float64)
        if i < len(coefs) - 1:
            if norms:
                bn = norms[i]
                scale = bn["scale"] / np.sqrt(bn["running"]["var"] + BN_EPS)
                out = (out - bn["running"]["mean"]) * scale + bn["shift"]
            out = act(out)
    return out


def out_function(out_activation):
    """The output activation's NumPy function by scikit-learn's name for it."""
    functions = {"identity": lambda z: z, "exp": np.exp, "logistic": expit}
    return functions.get(out_activation, lambda z: softmax(z, axis=1))
