"""Early stopping: a run ends once a watched quantity stops improving, decided inside the
compiled loop.

A `lax.scan` cannot end early, but a run can stop changing: the loop carries a `Watch`
(the best value so far, its epoch, the epochs since the last improvement, whether the run
has stopped and, to restore them, the best params), and once stopped every later epoch of
the loop passes the params through. Under `vmap` (a sweep, a search) each member stops on
its own and the program stays one; `fit` stops calling the loop once its run has stopped.
"""

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._checks import INT32_MAX, describe, is_int, is_real
from fnnet._values import settings_repr

__all__ = ["EarlyStopping"]

_MODES = ("auto", "min", "max")
_MOST_PATIENCE = INT32_MAX  # an int32 counts the epochs


@dataclasses.dataclass(frozen=True, repr=False)
class EarlyStopping:
    """Stop a run when `monitor` has not improved for `patience` epochs.

    Args:
      monitor: what to watch, recorded after each epoch: `"loss"` (the training
        loss), `"val_loss"` (the loss on `validation=`), a metric's name (from
        `metrics=`, on the training data) or `"val_"` and a metric's name (on the
        validation data), e.g. `"val_accuracy"`.
      mode: `"min"`, `"max"`, or `"auto"`: `"max"` for a metric whose
        `greater_is_better` (accuracy, r2), else `"min"`.
      patience: epochs (>= 1) without an improvement after which the run stops.
      min_delta: an epoch improves when its value beats the best so far by more
        than `min_delta` (>= 0); patience counts the epochs since the last one.
        The best value, its epoch and (restore_best) its params follow every
        new best, however small its lead (scikit-learn's `tol` rule).
      restore_best: return the params at the best value (bitwise those of a run
        of `best_epoch` epochs) instead of the last ones: those after the best
        epoch, or for `"loss"` those before it (each epoch's loss is taken as
        its steps go, each batch's before its own step: full batch, at the
        params the epoch starts from). A run whose
        monitored value was never finite has no best: it returns the last
        params (and `fit` warns).

    Example:
      >>> result = fit(model, loss, opt, params, x[:48], y[:48], 1000, validation=(x[48:], y[48:]),
      ...              metrics=["accuracy"], early_stopping=EarlyStopping("val_accuracy", patience=20),
      ...              progress=False)
      >>> result.stopped_epoch is None or result.best_epoch <= result.stopped_epoch
      True
    """

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if not isinstance(self.monitor, str) or not self.monitor:
            raise TypeError(
                f"EarlyStopping: monitor must be a name (e.g. 'val_loss'), got {describe(self.monitor)}"
            )
        if self.mode not in _MODES:
            raise ValueError(f"EarlyStopping: mode must be one of {_MODES}, got {self.mode!r}")
        if not is_int(self.patience) or not 1 <= self.patience <= _MOST_PATIENCE:
            raise ValueError(
                f"EarlyStopping: patience must be an int in [1, {_MOST_PATIENCE}], got {self.patience!r}"
            )
        if not is_real(self.min_delta) or not np.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be a finite float >= 0, got {self.min_delta!r}")
        if not isinstance(self.restore_best, (bool, np.bool_)):
            raise TypeError(
                f"EarlyStopping: restore_best must be True or False, got {describe(self.restore_best)}"
            )

    def __repr__(self) -> str:
        return settings_repr(self)

    def resolved(self, owner: str, recorded: dict) -> "EarlyStopping":
        """This with `mode` "min" or "max", after checking that `monitor` names one of the
        `recorded` quantities (`{name: greater_is_better}`), else ValueError naming them."""
        if self.monitor not in recorded:
            hint = (
                "; validation quantities need validation=(x_val, y_val)"
                if self.monitor.startswith("val_") and "val_loss" not in recorded
                else ""
            )
            raise ValueError(
                f"{owner}: early_stopping monitors {self.monitor!r}, which the run does not record; "
                f"it records {sorted(recorded)} (metrics come from metrics=){hint}"
            )
        if self.mode != "auto":
            return self
        return dataclasses.replace(self, mode="max" if recorded[self.monitor] else "min")


class Watch(NamedTuple):
    """The early-stopping state a run carries: `epoch` (epochs trained so far), `best`
    (the best value seen: +-inf before any finite one), `best_epoch` (the epochs trained
    to the params it was measured at; -1 before any),
    `wait` (epochs since the last improvement by more than min_delta), `stopped`,
    `best_params` (the params after the best epoch, or None without restore_best), and
    the numbers `patience` and `min_delta`, data: another value compiles nothing."""

    epoch: Any
    best: Any
    best_epoch: Any
    wait: Any
    stopped: Any
    best_params: Any
    patience: Any
    min_delta: Any


def static_part(stopping: Optional[EarlyStopping]) -> Optional[EarlyStopping]:
    """What a compiled run keys on: `stopping` with its numbers (carried in the `Watch`) at
    their defaults, so runs that differ only in patience or min_delta share a program."""
    if stopping is None:
        return None
    default = EarlyStopping()
    return dataclasses.replace(stopping, patience=default.patience, min_delta=default.min_delta)


def start(stopping: EarlyStopping, params, dtype, epoch: int = 0) -> Watch:
    """The watch of a run that has seen nothing yet, `epoch` epochs in."""
    worst = np.inf if stopping.mode == "min" else -np.inf
    return Watch(  # NumPy scalars: a jnp scalar is a program of its own, compiled once a process
        np.int32(epoch),
        np.asarray(worst, dtype),
        np.int32(-1),
        np.int32(0),
        np.bool_(False),
        params if stopping.restore_best else None,
        np.int32(stopping.patience),
        np.asarray(stopping.min_delta, dtype),
    )


def watched(stopping: EarlyStopping, watch: Watch, value, before, after) -> Watch:
    """The watch after an epoch whose monitored value is `value`, trained from params
    `before` to `after` (traced): the value is that of `after`, or for `"loss"` (taken
    before each step) of `before`, the run one epoch shorter. A NaN never improves."""
    sign = 1 if stopping.mode == "min" else -1
    value = value.astype(watch.best.dtype)
    gain = sign * (watch.best - value)  # > 0: a new best
    better = gain > 0
    improved = gain > watch.min_delta
    epoch = watch.epoch + 1
    at, params = (epoch - 1, before) if stopping.monitor == "loss" else (epoch, after)
    wait = jnp.where(improved, 0, watch.wait + 1)
    best_params = watch.best_params
    if best_params is not None:
        best_params = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best_params)
    return Watch(
        epoch,
        jnp.where(better, value, watch.best),
        jnp.where(better, at, watch.best_epoch),
        wait,
        wait >= watch.patience,
        best_params,
        watch.patience,
        watch.min_delta,
    )


def restored(watch: Optional[Watch], last):
    """The params a run returns: the best ones where the watch keeps them and saw a finite
    value, else `last` (traced or not)."""
    if watch is None or watch.best_params is None:
        return last
    found = watch.best_epoch >= 0
    return jax.tree.map(lambda best, new: jnp.where(found, best, new), watch.best_params, last)


def as_record(watch: Watch) -> dict:
    """The watch's numbers as JSON (a checkpoint's metadata): exact, as a float holds a
    float32's or float64's value; an infinite best as a string (JSON has no infinity)."""
    best = float(watch.best)
    return {
        "epoch": int(watch.epoch),
        "best": best if np.isfinite(best) else str(best),
        "best_epoch": int(watch.best_epoch),
        "wait": int(watch.wait),
        "stopped": bool(watch.stopped),
    }


def from_record(record, stopping: EarlyStopping, dtype, best_params) -> Optional[Watch]:
    """The watch `as_record` wrote, or None when `record` is not one."""
    fields = ("epoch", "best", "best_epoch", "wait", "stopped")
    if not isinstance(record, dict) or set(record) != set(fields):
        return None
    if not all(is_int(record[k]) for k in ("epoch", "best_epoch", "wait")) or not isinstance(
        record["stopped"], bool
    ):
        return None
    best = record["best"]
    if isinstance(best, str) and best in ("inf", "-inf"):
        best = float(best)
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        return None
    return Watch(
        np.int32(record["epoch"]),
        np.asarray(best, dtype),
        np.int32(record["best_epoch"]),
        np.int32(record["wait"]),
        np.bool_(record["stopped"]),
        best_params,
        np.int32(stopping.patience),
        np.asarray(stopping.min_delta, dtype),
    )
