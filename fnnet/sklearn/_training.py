"""Epochs of minibatch training through `fnnet.fit`'s compiled loop, with scikit-learn's
stopping rules and its `adaptive` learning rate.

scikit-learn counts an epoch as no improvement when the training loss is not below the
best so far by `tol` (or, with `early_stopping`, the validation score not above the best by
`tol`), and stops after `n_iter_no_change` such epochs in a row plus one: that is
`fnnet.EarlyStopping(monitor, patience=n_iter_no_change + 1, min_delta=tol)`, decided
inside the compiled loop. Its `adaptive` rate divides the rate by 5 where it would stop
(until the rate is 1e-6 or less): here a new `fit` of the same program from where the
last one stopped, with the rate (data in the optimizer state) divided by 5.
"""

import contextlib
import copy
from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet.fitting import TrainingDiverged

__all__ = ["Plan", "Trained", "train_epochs", "unchanged_on_failure"]

_SMALLEST_ADAPTIVE_LR = 1e-6  # scikit-learn stops instead of dividing a rate this small


@contextlib.contextmanager
def unchanged_on_failure(estimator):
    """A fit that raises (or is interrupted) leaves `estimator` as it was before it: the
    attributes it had (scikit-learn's own, such as its metadata requests, included), each
    with its value (the constructor's parameters the very objects given; a fitted list or
    dict appended to in place, restored), not half-made."""
    parameters = set(estimator.get_params(deep=False))
    before = {
        name: copy.copy(value) if name not in parameters and isinstance(value, (list, dict)) else value
        for name, value in vars(estimator).items()
    }
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(before)
        raise


class Plan(NamedTuple):
    """A stochastic fit's training, as the estimator prepares it: `train_epochs`'s arguments.

    model, loss: a Layer and a Loss; make_opt: `lr -> Optimizer`; lr: the rate to start
    with; params: the params to start from; opt_state: the state to go on from (None: a
    fresh one); x, y, sample_weight: the training data; epochs, batch_size (None: full
    batch), key: as `fnnet.fit` takes them; validation, metric: None, or `(x_val, y_val)`
    and the `Metric` scored on it each epoch; stopping: None or the rule that ends the
    run; adaptive: divide the rate by 5 where the rule would stop, and go on; shuffle:
    False to take the minibatches in the samples' order (scikit-learn's `shuffle`).
    """

    model: Any
    loss: Any
    make_opt: Any
    lr: float
    params: Any
    opt_state: Any
    x: np.ndarray
    y: np.ndarray
    sample_weight: Optional[np.ndarray]
    epochs: int
    batch_size: Optional[int]
    key: Any
    validation: Optional[tuple]
    metric: Any
    stopping: Optional[fnnet.EarlyStopping]
    adaptive: bool
    shuffle: bool = True


class Trained(NamedTuple):
    """params, opt_state, each epoch's training loss, each epoch's validation score (None
    without validation data), whether a stopping rule ended the run, the final lr, and
    the epochs run for the best monitored value (None without a rule)."""

    params: object
    opt_state: object
    losses: np.ndarray
    scores: Optional[np.ndarray]
    stopped: bool
    lr: float
    best_epoch: Optional[int]


def _with_lr(opt_state, lr):
    dtype = opt_state.hyperparams["lr"].dtype
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "lr": jnp.asarray(lr, dtype)})


def train_epochs(plan: Plan) -> Trained:
    """Train for at most `plan.epochs` epochs in fnnet's compiled loop.

    Args:
      plan: the run (see `Plan`).

    Returns:
      Trained.

    Raises:
      ValueError: the training diverged (scikit-learn's message for non-finite weights).
    """
    params, opt_state, lr = plan.params, plan.opt_state, plan.lr  # what each pass changes
    validation, metric, stopping = plan.validation, plan.metric, plan.stopping
    losses: list = []
    scores: Optional[list] = None if validation is None else []
    done, stopped, best_epoch = 0, False, None
    options: dict = {} if plan.shuffle else {"shuffle": False}
    if validation is not None:
        options.update(validation=validation, metrics=[metric])
    if stopping is not None:
        options["early_stopping"] = stopping
    while done < plan.epochs:
        opt = plan.make_opt(lr)
        opt_state = opt.init(params) if opt_state is None else _with_lr(opt_state, lr)
        try:
            result = fnnet.fit(
                plan.model,
                plan.loss,
                opt,
                params,
                plan.x,
                plan.y,
                plan.epochs - done,
                batch_size=plan.batch_size,
                key=plan.key,
                progress=False,
                opt_state=opt_state,
                sample_weight=plan.sample_weight,
                **options,
            )
        except TrainingDiverged as error:
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            ) from error
        params, opt_state = result.params, result.opt_state
        losses += np.asarray(result.losses).tolist()
        if scores is not None:
            scores += np.asarray((result.val_metrics or {})[metric.name]).tolist()
        if stopping is not None and result.best_epoch is not None:
            best_epoch = done + result.best_epoch
        done += len(result.losses)
        stopped = stopping is not None and result.stopped_epoch is not None
        if not (stopped and plan.adaptive) or lr <= _SMALLEST_ADAPTIVE_LR:
            break
        lr = lr / 5.0
    return Trained(
        params,
        opt_state,
        np.asarray(losses, np.float64),
        None if scores is None else np.asarray(scores, np.float64),
        stopped,
        lr,
        best_epoch,
    )
