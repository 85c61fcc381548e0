"""Losses: values with `value(y, target)` and `grad(y, target)`, gradients derived by hand.

`value(y, target)` is a scalar: the mean over all elements (over all examples
for `LossCrossEntropy`). `grad(y, target)` is d value / d y, shaped like `y`.
A target outside a loss's domain (a BCE target outside [0, 1], a class label
outside [0, classes), a negative class weight) makes both NaN: under `jit`
its value cannot be checked, and `fit`, `train` and `sweep` refuse such
targets by name before any work.

A built-in loss is a value: a frozen dataclass of its settings, so equal
settings make equal, equally hashed losses (`LossBCE() == LossBCE()`) that
share compiled programs, and a loss prints as the code that builds it
(`LossBCE(eps=1e-06)`). Your own loss is `Loss(value, grad, check_targets=None)`
of functions, or a subclass of `Loss` like the built-in ones.
"""

import dataclasses
from typing import Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet._checks import as_number, describe, is_real
from fnnet._hosts import host_parts
from fnnet._precision import wide
from fnnet._types import Array
from fnnet._values import check_functions, functions_repr, settings_repr, setattr_frozen

__all__ = ["Loss", "FunctionLoss", "LossMSE", "LossBCE", "LossBCEWithLogits", "LossCrossEntropy"]


def check_targets(loss: "Loss", target, n_outputs: int) -> None:
    """Raise ValueError if `target` is invalid for `loss` (BCE targets outside
    [0, 1], class labels outside [0, n_outputs)). Runs on the host, on the part of
    `target` this process holds; a tracer (inside `jit` or `vmap`) is not checked."""
    if loss.check_targets is not None:
        for part in host_parts(target) or []:
            loss.check_targets(part, n_outputs)


def _in_unit_interval(t):
    """t where it lies in [0, 1], NaN elsewhere: under `jit` targets cannot be checked
    (fit, train and sweep check them before any work), and a NaN loss is loud where a
    value for a target outside the loss's domain would be silently wrong."""
    return jnp.where((t >= 0) & (t <= 1), t, jnp.nan)


def _check_probabilities(name, t):
    if t.size and not (np.all(t >= 0) and np.all(t <= 1)):
        raise ValueError(f"{name}: targets must be in [0, 1], got values in [{t.min()}, {t.max()}]")


class Loss:
    """A loss: `value(y, target)` and `grad(y, target)`, pure functions.

    `value` is a mean over the batch's samples of per-sample terms, each sample's
    depending on its own prediction and target alone (every fnnet loss is): training
    weighs samples through it (padding weighs 0, `fit(sample_weight=)` its weights:
    `fnnet.grad.shared_loss`) and data-parallel training averages shards; `fit` and
    `train` refuse a loss of your own whose value on a few samples is not the mean of
    its values on each (a batch statistic, a sum).
    `check_targets(target, n_outputs)`, if not None, checks a whole target
    array on the host (a NumPy array; `n_outputs` is the model's last
    dimension) and raises ValueError on targets the loss cannot take; `fit`
    runs it before any work.

    `Loss(value, grad, check_targets=None)` makes a loss of your own functions
    (a `FunctionLoss`); built from the same functions, two such losses are equal.
    """

    check_targets: Optional[Callable[[np.ndarray, int], None]] = None
    # What `fit` adds when the loss is not finite at the params a run starts from.
    non_finite_hint: ClassVar[str] = ""
    # True where the value is a mean of per-sample terms by construction (the built-in
    # losses); a loss of your own is checked on a few samples before training
    per_sample: ClassVar[bool] = False

    def __new__(cls, *args, **kwargs):
        return object.__new__(FunctionLoss if cls is Loss else cls)

    def value(self, y: Array, target: Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__} must define value(y, target)")

    def grad(self, y: Array, target: Array) -> Array:
        raise NotImplementedError(f"{type(self).__name__} must define grad(y, target)")

    def __repr__(self) -> str:
        return settings_repr(self)


@dataclasses.dataclass(frozen=True, repr=False)
class FunctionLoss(Loss):
    """A loss of your own functions, made by `Loss(value, grad, check_targets=None)`."""

    value: Callable[[Array, Array], Array]  # type: ignore[assignment]
    grad: Callable[[Array, Array], Array]  # type: ignore[assignment]
    check_targets: Optional[Callable[[np.ndarray, int], None]] = None

    def __post_init__(self):
        check_functions("Loss", self, ("value", "grad"), ("check_targets",))

    def __repr__(self) -> str:
        return functions_repr("Loss", self, ("value", "grad"), ("check_targets",))


# the fix for targets without the model's one output axis, (n,) for (n, 1)
ONE_OUTPUT_HINT = "; for a one-output model pass the target as y[:, None]"


def one_output_hint(y, target) -> str:
    """`ONE_OUTPUT_HINT` where `target` lacks the output axis of a one-output `y`, else ""."""
    return ONE_OUTPUT_HINT if jnp.shape(y) == jnp.shape(target) + (1,) else ""


def _check_same_shape(name, y, target):
    if jnp.shape(y) != jnp.shape(target):
        raise ValueError(
            f"{name}: prediction and target must have the same shape, "
            f"got {jnp.shape(y)} and {jnp.shape(target)}{one_output_hint(y, target)}"
        )


def _floating(y):
    """Predictions as a floating-point array: integer ones (or a list of ints) would
    truncate a mean and its gradient."""
    y = jnp.asarray(y)
    return y if jnp.issubdtype(y.dtype, jnp.inexact) else y.astype(jnp.result_type(float))


# Every loss computes in at least float32 (`wide`) and returns the dtype of its inputs
# (`jnp.result_type(y, target)`): in float16 300**2 overflows, a count past 65504 is inf
# (and every quotient by it 0), and a log-probability below -65504 is -inf.


def _sum_per(values, count, dtype):
    """sum(values / count) in at least float32, returned in `dtype`: dividing before
    summing, as the sum of many values near the dtype's largest would overflow."""
    return jnp.sum(wide(values) / max(count, 1)).astype(dtype)


def _per(values, count, dtype):
    """values / count, divided in at least float32, returned in `dtype`."""
    return (wide(values) / count).astype(dtype)


class _MeanLoss(Loss):
    """A loss that is the mean over elements of `_f(y, target)`; `_df` is its derivative in y."""

    per_sample = True

    def _f(self, y, target):
        raise NotImplementedError

    def _df(self, y, target):
        raise NotImplementedError

    def _inputs(self, y, target):
        """`y` and `target` as `_f` and `_df` take them (checked, clamped), in their dtypes."""
        return y, target

    def _wide_inputs(self, y, target):
        """`_inputs` in at least float32, and the dtype to return: theirs."""
        y, target = _floating(y), jnp.asarray(target)
        _check_same_shape(type(self).__name__, y, target)
        y, target = self._inputs(y, target)
        return wide(y), wide(target), jnp.result_type(y, target)

    def value(self, y, target):
        y, target, dtype = self._wide_inputs(y, target)
        return _sum_per(self._f(y, target), jnp.size(y), dtype)

    def grad(self, y, target):
        y, target, dtype = self._wide_inputs(y, target)
        return _per(self._df(y, target), jnp.size(y), dtype)  # d mean / dy = f'(y) / n


@dataclasses.dataclass(frozen=True, repr=False)
class LossMSE(_MeanLoss):
    """Mean squared error, mean((y - target)**2)."""

    def _f(self, y, t):
        return (y - t) ** 2

    def _df(self, y, t):
        return 2 * (y - t)


@dataclasses.dataclass(frozen=True, repr=False)
class LossBCE(_MeanLoss):
    """Binary cross-entropy on probabilities, -mean(t log p + (1 - t) log(1 - p)).

    The clamp: p is clipped to [eps, 1 - eps] before the logs, so predictions
    of exactly 0 or 1 give a finite value (at most -log(eps), about 16.1 for
    the default eps) and a finite gradient. The gradient is taken at the
    clipped point, (p_c - t) / (p_c (1 - p_c)) / n, so a confidently wrong
    prediction is still pushed back (a plain clip would give it zero gradient).
    For logits, prefer `LossBCEWithLogits`: exact at any magnitude.

    Example:
      >>> LossBCE(eps=1e-6)
      LossBCE(eps=1e-06)
    """

    non_finite_hint: ClassVar[str] = (
        "; LossBCE takes probabilities in [0, 1]: a model whose output is not one (no final "
        "Sigmoid) gives NaN (use LossBCEWithLogits on its logits)"
    )

    eps: float = 1e-7

    def __post_init__(self):
        if not is_real(self.eps):
            raise TypeError(f"LossBCE: eps must be a float, got {describe(self.eps)}")
        if not 0 < self.eps < 0.5:
            raise ValueError(f"LossBCE: eps must be in (0, 0.5), got {self.eps}")
        setattr_frozen(self, eps=as_number(self.eps))

    def _clamp(self, p):
        # Also strictly inside (0, 1) in p's dtype: in float32, 1 - 1e-8 rounds to 1.
        info = jnp.finfo(jnp.result_type(p, float))
        return jnp.clip(p, max(self.eps, float(info.tiny)), min(1 - self.eps, 1 - float(info.epsneg)))

    def _probabilities(self, p):
        """p clamped in its own dtype (a half-precision gradient stays finite), NaN where it
        is not a probability (a model without its Sigmoid gives logits: use
        LossBCEWithLogits); concrete predictions raise, naming the fix."""
        if not isinstance(p, jax.core.Tracer) and p.size and not bool(jnp.all((p >= 0) & (p <= 1))):
            raise ValueError(
                f"LossBCE: predictions must be probabilities in [0, 1], got values in "
                f"[{float(jnp.min(p))}, {float(jnp.max(p))}]; for logits (a model without its "
                f"Sigmoid) use LossBCEWithLogits"
            )
        return self._clamp(_in_unit_interval(p))

    def _inputs(self, p, t):
        return self._probabilities(p), _in_unit_interval(t)

    def _f(self, p, t):
        return -(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))

    def _df(self, p, t):
        return (p - t) / (p * (1 - p))  # d/dp of -(t log p + (1-t) log(1-p))

    def check_targets(self, t, n_outputs):  # type: ignore[override]
        _check_probabilities("LossBCE", t)


def _bce_with_logits(z, t):
    # = max(z, 0) - t z + log1p(exp(-|z|)), written so no term exceeds |z|
    return (1 - t) * jnp.maximum(z, 0) + t * jnp.maximum(-z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


@dataclasses.dataclass(frozen=True, repr=False)
class LossBCEWithLogits(_MeanLoss):
    """Binary cross-entropy on logits z, the fused stable form.

    value = mean((1 - t) max(z, 0) + t max(-z, 0) + log(1 + exp(-|z|))), exact
    and finite for any finite z and t in [0, 1] (each term is at most |z|, and
    the mean divides before it sums); grad = (sigmoid(z) - t) / n.
    """

    def _inputs(self, z, t):
        return z, _in_unit_interval(t)

    def _f(self, z, t):
        return _bce_with_logits(z, t)

    def _df(self, z, t):
        return lax.logistic(z) - t

    def check_targets(self, t, n_outputs):  # type: ignore[override]
        _check_probabilities("LossBCEWithLogits", t)


_CE = "LossCrossEntropy"


def _log_softmax(y):
    shifted = y - jnp.max(y, axis=-1, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


def _as_probabilities(y, target):
    if jnp.ndim(y) < 1:
        raise ValueError(f"{_CE}: logits need a class axis, got shape {jnp.shape(y)}")
    if jnp.shape(y)[-1] < 2:
        raise ValueError(
            f"{_CE}: needs at least 2 classes (logits (..., classes)), got "
            f"logits of shape {jnp.shape(y)}; for one output use "
            f"LossBCEWithLogits (or LossBCE after a Sigmoid)"
        )
    if not jnp.issubdtype(jnp.asarray(target).dtype, jnp.integer) and (
        jnp.shape(target) == jnp.shape(y)[:-1]
    ):
        raise ValueError(
            f"{_CE}: prediction and target must have the same shape, got "
            f"{jnp.shape(y)} and {jnp.shape(target)}: class labels must be "
            f"integers, got {jnp.asarray(target).dtype} labels (convert them, "
            f"e.g. labels.astype(jnp.int32)), or give one-hot rows of the "
            f"model's width, shape {jnp.shape(y)}"
        )
    if jnp.issubdtype(jnp.asarray(target).dtype, jnp.integer):
        if jnp.shape(target) != jnp.shape(y)[:-1]:
            raise ValueError(
                f"{_CE}: integer labels must have shape {jnp.shape(y)[:-1]} "
                f"for logits {jnp.shape(y)}, got {jnp.shape(target)}"
            )
        classes = jnp.arange(y.shape[-1]).reshape((1,) * jnp.ndim(target) + (-1,))
        one_hot = (jnp.asarray(target)[..., None] == classes).astype(y.dtype)
        # a label outside [0, classes) gives NaN rows, not zeros (a silent 0 loss)
        return jnp.where(jnp.any(one_hot, axis=-1, keepdims=True), one_hot, jnp.nan)
    _check_same_shape(_CE, y, target)
    if not jnp.issubdtype(jnp.asarray(target).dtype, jnp.floating):
        return target  # bool one-hot rows: none is negative
    return jnp.where(target >= 0, target, jnp.nan)  # weights must be >= 0


def _wide_logits_and_probabilities(y, target):
    """Logits and target rows (`_as_probabilities`) in at least float32, and their dtype."""
    y = _floating(y)
    t = _as_probabilities(y, target)
    return wide(y), wide(t), jnp.result_type(y, t)


@dataclasses.dataclass(frozen=True, repr=False)
class LossCrossEntropy(Loss):
    """Softmax cross-entropy over the last axis, mean over examples.

    `y` holds logits `(..., classes)`, at least 2 classes (a single output
    has a softmax of 1 and a loss of 0 whatever it is: use `LossBCEWithLogits`);
    `target` is either integer labels `(...)` or one-hot / probability rows
    `(..., classes)` (weights >= 0). Per example, with s = sum(t) (1 for labels
    and probability rows): value = mean(s * logsumexp(y) - sum(t * y));
    grad = (softmax(y) * s - t) / n_examples.
    """

    per_sample = True

    def value(self, y, target):
        y, t, dtype = _wide_logits_and_probabilities(y, target)
        # A class of weight 0 adds 0, even where its log-probability is -inf (|y| ~ 1e38).
        terms = jnp.where(t == 0, 0, t * _log_softmax(y))
        return -_sum_per(terms, jnp.size(y) // y.shape[-1], dtype)

    def grad(self, y, target):
        y, t, dtype = _wide_logits_and_probabilities(y, target)
        n_examples = jnp.size(y) // y.shape[-1]
        # d/dy of -sum(t log softmax(y)) = softmax(y) * sum(t) - t
        return _per(jnp.exp(_log_softmax(y)) * jnp.sum(t, axis=-1, keepdims=True) - t, n_examples, dtype)

    def check_targets(self, t, n_classes):  # type: ignore[override]
        if n_classes < 2:
            raise ValueError(
                f"{_CE}: needs at least 2 classes, got a model with {n_classes} "
                f"output(s); for one output use LossBCEWithLogits"
            )
        if not np.issubdtype(t.dtype, np.integer) and (t.ndim == 0 or t.shape[-1] != n_classes):
            raise ValueError(
                f"{_CE}: class labels must be integers, got {t.dtype} targets of "
                f"shape {t.shape}; or give one-hot rows of the model's width "
                f"{n_classes}"
            )
        if np.issubdtype(t.dtype, np.integer) and t.size and not (t.min() >= 0 and t.max() < n_classes):
            raise ValueError(
                f"{_CE}: labels must be in [0, {n_classes}) for {n_classes} "
                f"classes, got values in [{t.min()}, {t.max()}]"
            )
        if np.issubdtype(t.dtype, np.floating) and t.size and not np.all(t >= 0):
            raise ValueError(
                f"{_CE}: target rows (probabilities or weights) must be >= 0, "
                f"got values in [{t.min()}, {t.max()}]"
            )
