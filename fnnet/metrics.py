"""Metrics, and `evaluate`: a model's accuracy, mean squared error, mean absolute error or R²
on any data, in inference mode, in batches when asked.

A metric is a value (a frozen dataclass of its settings) with two functions: `sums(y,
target, weights)`, the weighted sums it needs from one batch (they add over batches, so a
large set is measured a batch at a time, and padding weighs 0), and `value(sums)`, the
metric from the sums of all batches, both traced (jnp): `fit(..., metrics=...)` computes
them inside its compiled loop, each epoch. `evaluate` pads the data to a bucket
(`fnnet._buckets`): another data set of a size in the same bucket runs the same program.
"""

import dataclasses
from typing import ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet._buckets import padded_samples, run_size
from fnnet._checks import as_array, describe, is_int, is_real
from fnnet._hosts import whole
from fnnet._precision import wide
from fnnet._setup import check_data, check_param_dtypes, check_params, traced_apply
from fnnet._values import settings_repr
from fnnet.layers import Layer
from fnnet.losses import Loss, LossBCEWithLogits, one_output_hint

__all__ = ["Metric", "Accuracy", "MeanSquaredError", "MeanAbsoluteError", "R2", "evaluate"]


class Metric:
    """The base of every metric: `sums(y, target, weights) -> dict of arrays` (weighted
    sums over one batch's samples, `weights` `(batch,)`) and `value(sums) -> scalar array`
    (the metric from the sums added over all batches), both written with `jax.numpy`, as
    they run inside compiled programs. `name` names it in results; `greater_is_better`
    says which way `EarlyStopping(mode="auto")` watches it."""

    name: ClassVar[str] = "metric"
    greater_is_better: ClassVar[bool] = True
    # R2's sums are taken of y and targets less the targets' mean (`evaluate` subtracts it)
    centered: ClassVar[bool] = False

    def check_targets(self, target, n_outputs: int) -> None:
        """Raise ValueError for targets (host NumPy) the metric cannot take; none by default."""

    def sums(self, y, target, weights) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define sums(y, target, weights)")

    def value(self, sums) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define value(sums)")

    def __repr__(self) -> str:
        return settings_repr(self)


def _weighted(per_sample, weights):
    """sum(weights * per_sample) and sum(weights), in at least float32."""
    weights = wide(jnp.asarray(weights, jnp.result_type(float)))
    return jnp.sum(weights * wide(per_sample)), jnp.sum(weights)


def _per_sample_mean(a):
    """Each sample's mean over its other axes: `(batch,)`."""
    return jnp.mean(a.reshape(a.shape[0], -1), axis=1)


def _check_like(name, y, target):
    if jnp.shape(y) != jnp.shape(target):
        raise ValueError(
            f"{name}: predictions and targets must have the same shape, got {jnp.shape(y)} and "
            f"{jnp.shape(target)}{one_output_hint(y, target)}"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class Accuracy(Metric):
    """The fraction of samples classified right (weighted by sample).

    Several outputs `(batch, classes)`: the class is the argmax, of logits or
    probabilities alike, against integer labels `(batch,)` or one-hot (or probability)
    rows `(batch, classes)`. One output `(batch, 1)`: the class is `y > threshold`, against
    `target > threshold`: 0.5 for probabilities and 0/1 targets (a Sigmoid's output), 0.0
    for logits (with 0/1 targets) or a Tanh's output with -1/+1 targets.

    Example:
      >>> evaluate(model, params, x, y, ["accuracy"])  # a Sigmoid's probabilities: 0.5
      {'accuracy': ...}
      >>> Accuracy(threshold=0.0)  # for logits, or -1/+1 targets
      Accuracy(threshold=0.0)
    """

    threshold: float = 0.5
    name: ClassVar[str] = "accuracy"

    def __post_init__(self):
        if not is_real(self.threshold) or not np.isfinite(self.threshold):
            raise TypeError(f"Accuracy: threshold must be a finite float, got {describe(self.threshold)}")
        object.__setattr__(self, "threshold", float(self.threshold))  # a setting, hashable

    def sums(self, y, target, weights):
        y, target = jnp.asarray(y), jnp.asarray(target)
        if jnp.ndim(y) != 2:
            raise ValueError(f"accuracy: predictions must be (batch, outputs), got shape {jnp.shape(y)}")
        if y.shape[1] == 1:
            _check_like("accuracy", y, target)
            correct = (y[:, 0] > self.threshold) == (target[:, 0] > self.threshold)
        elif jnp.issubdtype(target.dtype, jnp.integer) and jnp.shape(target) == y.shape[:1]:
            correct = jnp.argmax(y, axis=1) == target
        else:
            if jnp.shape(target) != jnp.shape(y):
                raise ValueError(
                    f"accuracy: targets for {y.shape[1]} outputs must be integer labels of shape "
                    f"{y.shape[:1]} or rows of shape {y.shape}, got {target.dtype} of shape "
                    f"{jnp.shape(target)}"
                    + (" (labels must be integers)" if jnp.shape(target) == y.shape[:1] else "")
                )
            correct = jnp.argmax(y, axis=1) == jnp.argmax(target, axis=1)
        total, count = _weighted(correct, weights)
        return {"correct": total, "count": count}

    def check_targets(self, target, n_outputs):  # type: ignore[override]
        if not target.size:
            return
        values = np.unique(target)
        if n_outputs == 1 and len(values) > 2:
            raise ValueError(
                f"accuracy: one output classifies two ways, by its threshold; got "
                f"{len(values)} distinct targets (several classes need one output each; "
                f"for real-valued targets use mse, mae or r2)"
            )
        if n_outputs == 1 and len(values) == 2:
            low, high = (float(v) for v in values)
            probabilities = (low, high) == (0.0, 1.0)
            if not low <= self.threshold < high or (self.threshold == 0.5 and not probabilities):
                raise ValueError(
                    f"accuracy: the threshold {self.threshold} does not split the targets {low:g} "
                    f"and {high:g} as the model's output would be split; for them use "
                    f"Accuracy(threshold={(low + high) / 2:g}) (0.5 is for probabilities against "
                    f"0/1 targets, 0.0 for logits or -1/+1 targets)"
                )
        if not np.issubdtype(target.dtype, np.integer):
            return
        if n_outputs >= 2 and target.ndim == 1 and not (target.min() >= 0 and target.max() < n_outputs):
            raise ValueError(
                f"accuracy: labels must be in [0, {n_outputs}) for {n_outputs} outputs, got values "
                f"in [{target.min()}, {target.max()}]"
            )

    def value(self, sums):
        return sums["correct"] / sums["count"]


class _MeanError(Metric):
    """The mean over samples (weighted) of each sample's mean of `error(y - target)`."""

    greater_is_better: ClassVar[bool] = False

    def error(self, difference):
        raise NotImplementedError

    def sums(self, y, target, weights):
        _check_like(self.name, y, target)
        total, count = _weighted(_per_sample_mean(self.error(wide(y) - wide(target))), weights)
        return {"error": total, "count": count}

    def value(self, sums):
        return sums["error"] / sums["count"]


@dataclasses.dataclass(frozen=True, repr=False)
class MeanSquaredError(_MeanError):
    """The mean over samples (weighted) of each sample's mean squared error."""

    name: ClassVar[str] = "mse"

    def error(self, difference):
        return jnp.square(difference)


@dataclasses.dataclass(frozen=True, repr=False)
class MeanAbsoluteError(_MeanError):
    """The mean over samples (weighted) of each sample's mean absolute error."""

    name: ClassVar[str] = "mae"

    def error(self, difference):
        return jnp.abs(difference)


@dataclasses.dataclass(frozen=True, repr=False)
class R2(Metric):
    """The coefficient of determination, 1 - SS_res / SS_tot, per output and averaged over
    outputs (scikit-learn's `r2_score`, uniform average; an output whose targets are all
    equal counts 1.0 where it is predicted exactly, else 0.0), weighted by sample. SS_tot
    comes from sums of the targets and their squares, taken (by `evaluate`) of the targets
    less their mean, so targets far from zero keep their digits; integer targets are summed
    as floats."""

    name: ClassVar[str] = "r2"
    centered: ClassVar[bool] = True

    def sums(self, y, target, weights):
        _check_like("r2", y, target)
        dtype = jnp.promote_types(jnp.result_type(float), jnp.float32)
        y = jnp.asarray(y, dtype).reshape(jnp.shape(y)[0], -1)
        t = jnp.asarray(target, dtype).reshape(jnp.shape(target)[0], -1)
        w = jnp.asarray(weights, dtype)[:, None]
        return {
            "count": jnp.sum(w),
            "t": jnp.sum(w * t, axis=0),
            "t2": jnp.sum(w * t * t, axis=0),
            "residual": jnp.sum(w * jnp.square(y - t), axis=0),
        }

    def value(self, sums):
        count, t, t2, residual = (sums[k] for k in ("count", "t", "t2", "residual"))
        total = jnp.maximum(t2 - t * t / count, 0)  # sum of w (target - weighted mean)^2 per output
        exact = jnp.where(residual == 0, 1.0, 0.0)
        scores = jnp.where(total > 0, 1 - residual / jnp.where(total > 0, total, 1), exact)
        return jnp.mean(scores)


_NAMES = {"accuracy": Accuracy, "mse": MeanSquaredError, "mae": MeanAbsoluteError, "r2": R2}


def as_metrics(owner, metrics, loss=None) -> tuple:
    """`metrics` (names or Metric values) as a tuple of Metrics, each named once. Trained
    with `loss` LossBCEWithLogits, the model's one output is a logit: "accuracy" is then
    `Accuracy(threshold=0.0)`."""
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise TypeError(
            f"{owner}: metrics must be a non-empty list of names ({', '.join(_NAMES)}) or Metric "
            f"values, got {describe(metrics)}"
        )
    out = []
    for m in metrics:
        if isinstance(m, str):
            if m not in _NAMES:
                raise ValueError(
                    f"{owner}: unknown metric {m!r}; expected one of {sorted(_NAMES)} or a Metric"
                )
            m = Accuracy(0.0) if m == "accuracy" and isinstance(loss, LossBCEWithLogits) else _NAMES[m]()
        if not isinstance(m, Metric):
            raise TypeError(f"{owner}: a metric must be a name or a Metric, got {describe(m)}")
        out.append(m)
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: metrics must have distinct names, got {names}")
    return tuple(out)


def _sums(metrics, out, y, weights, center):
    """Each metric's weighted sums of the outputs `out` against `y`."""
    shift = center.astype(jnp.promote_types(jnp.result_type(float), jnp.float32))
    # a centered metric is the same of y and targets shifted alike
    return tuple(
        m.sums(out - shift.astype(out.dtype), y.astype(shift.dtype) - shift, weights)
        if m.centered
        else m.sums(out, y, weights)
        for m in metrics
    )


def values_of(metrics, out, y, weights, center) -> dict:
    """`{name: value}` of `metrics` for the outputs `out` of all the data at once (traced):
    a run that has them already (its validation loss) measures without another forward."""
    return {m.name: m.value(s) for m, s in zip(metrics, _sums(metrics, out, y, weights, center))}


def measure(model, metrics, batch_size, params, x, y, weights, center) -> dict:
    """`{name: value}` of `metrics` (a tuple of Metrics) on `(x, y)` in inference mode,
    traced: all of x at once (`batch_size` None) or a scan over batches of it (x's length a
    multiple of `batch_size`); `weights` `(n,)` (0 for padding) and `center` (the targets'
    mean, for a centered metric: `center_of`) as `evaluate` pads and computes them."""
    if batch_size is None:
        return values_of(metrics, model.apply(params, x), y, weights, center)

    def batches(a):
        return a.reshape((-1, batch_size) + a.shape[1:])

    def batch_sums(batch):
        x, y, weights = batch
        return _sums(metrics, model.apply(params, x), y, weights, center)

    def add(total, batch):
        return jax.tree.map(jnp.add, total, batch_sums(batch)), None

    first = jax.tree.map(lambda a: a[:batch_size], (x, y, weights))
    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(batch_sums, first))
    sums = lax.scan(add, zero, jax.tree.map(batches, (x, y, weights)))[0]
    return {m.name: m.value(s) for m, s in zip(metrics, sums)}


# one program per model structure, metrics, batch size and bucket (the model an argument)
_measure_jit = jax.jit(measure, static_argnums=(1, 2))


def center_of(metrics, y, weights=None):
    """The targets' mean (float64, host) for a centered metric (R2: its sums keep their
    digits for targets far from zero), weighted by `weights` (`(n,)`, a run's
    `sample_weight`; None: every sample alike), else 0."""
    if not any(m.centered for m in metrics):
        return jax.device_put(np.zeros(()))
    host = whole(y)
    keep = jnp.ndim(y) > 1
    if host is None or isinstance(weights, jax.core.Tracer):  # a sweep's member, global data in parts
        y = jnp.asarray(y).astype(jnp.result_type(float))
        if weights is None:
            return jnp.mean(y, axis=0, keepdims=keep)
        w = jnp.asarray(weights, y.dtype).reshape((-1,) + (1,) * (y.ndim - 1))
        return jnp.sum(w * y, axis=0, keepdims=keep) / jnp.sum(w)
    w = None if weights is None else np.asarray(weights, np.float64)
    return jax.device_put(np.average(np.asarray(host, np.float64), axis=0, weights=w, keepdims=keep))


def check_metrics(owner, metrics, model, params, x, y, name_y="y") -> None:
    """Trace (not run) the model on x and each metric's sums on its output and y: errors in
    their shapes, and targets a metric cannot take, raised naming the owner and `name_y`."""
    if not metrics:
        return
    try:
        out = traced_apply.eval_shape(model, params, jax.ShapeDtypeStruct(x.shape, x.dtype))
        for m in metrics:
            sums = jax.eval_shape(
                m.sums,
                out,
                jax.ShapeDtypeStruct(y.shape, y.dtype),
                jax.ShapeDtypeStruct(x.shape[:1], float),
            )
            value = jax.eval_shape(m.value, sums)
            if getattr(value, "shape", None) != ():
                raise ValueError(f"metric {m.name!r}: value(sums) must give a scalar, got {describe(value)}")
        host = whole(y)  # None for a sweep's per-member targets
        if host is not None:
            for m in metrics:
                m.check_targets(host, out.shape[-1] if len(out.shape) > 1 else 1)
    except (TypeError, ValueError) as error:
        where = "" if name_y == "y" else f"{name_y}: "
        raise type(error)(f"{owner}: {where}{error}") from error


def evaluate(
    model: Layer,
    params,
    x,
    y,
    metrics: Sequence = ("accuracy",),
    *,
    batch_size: Optional[int] = None,
    loss=None,
) -> dict:
    """The model's metrics on `(x, y)`, in inference mode.

    Args:
      model, params: the model and its params.
      x: `(n, ...)` floating point; y: targets `(n, ...)` (integer labels for accuracy
        over several outputs, or rows like the model's output).
      metrics: names (`"accuracy"`, `"mse"`, `"mae"`, `"r2"`) or `Metric` values.
      batch_size: None to run all of x at once, else batches of it: the activations of
        one batch at a time (a large test set), the same metrics up to rounding.
      loss: None, or the loss the model was trained with: names resolve as `fit`
        resolves them (after `LossBCEWithLogits`, "accuracy" thresholds the logit at 0).

    Returns:
      `{name: float}`, one per metric. The data is padded to its bucket with samples
      weighing nothing: another data set of a size in the same bucket compiles nothing.

    Example:
      >>> evaluate(model, params, x, y, ["accuracy", "mse"], batch_size=16)
      {'accuracy': ..., 'mse': ...}
    """
    if not isinstance(model, Layer):
        raise TypeError(f"evaluate: model must be a Layer (e.g. fnnet.serial(...)), got {describe(model)}")
    if loss is not None and not isinstance(loss, Loss):
        raise TypeError(
            f"evaluate: loss must be None or a fnnet loss (e.g. LossBCEWithLogits()), got {describe(loss)}"
        )
    metrics = as_metrics("evaluate", metrics, loss)
    x, y = as_array("evaluate", "x", x), as_array("evaluate", "y", y)
    check_data("evaluate", "x", "y", x, y)
    check_param_dtypes("evaluate", params)
    check_params("evaluate", model, params, x, why="the model's outputs would not be finite")
    n = x.shape[0]
    if batch_size is not None:
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"evaluate: batch_size must be None or an int >= 1, got {batch_size!r}")
        batch_size = None if batch_size >= n else int(batch_size)  # one batch: n's bucket, not n
    check_metrics("evaluate", metrics, model, params, x, y)
    data = tuple(jax.device_put(a) for a in padded_samples(x, y, run_size(n, batch_size)))
    center = center_of(metrics, y)
    values = _measure_jit(model, metrics, batch_size, params, *data, center)
    return {name: float(value) for name, value in jax.device_get(values).items()}
