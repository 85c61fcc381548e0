"""Training: a jitted step, and a whole run as one pure compiled function (`train`); the
loop they run is `fnnet._loop`'s."""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fnnet._checks import check_key, describe, donated
from fnnet._setup import check_count, check_kinds, prepare_run
from fnnet._layout import feature_major
from fnnet.grad import check_input
from fnnet.layers import Layer
from fnnet.losses import Loss
from fnnet.metrics import as_metrics
from fnnet.optim import Optimizer, OptState
from fnnet.stopping import EarlyStopping, restored, start
from fnnet._loop import _runner, _step, centers_of, prepare_watching, step_key

__all__ = ["train_step", "train"]


def check_step_args(opt, opt_state, x, y) -> None:
    """Trace-time checks of train_step's arguments that its computation would otherwise
    meet deep inside JAX: an OptState, and arrays (a list is a pytree to `jit`)."""
    if not isinstance(opt_state, OptState):
        raise TypeError(
            f"train_step: opt_state must be an OptState, from opt.init(params) ({opt.name}), "
            f"got {describe(opt_state)}"
        )
    for name, a in (("x", x), ("y", y)):
        if not hasattr(a, "shape"):
            raise TypeError(f"train_step: {name} must be an array (jnp.asarray it), got {describe(a)}")


def _train_step_body(model, loss, step_rule, params, opt_state, x, y, key):
    key = step_key(key, opt_state.count)
    check_input(model, params, x)
    twin = feature_major(model, x)
    if twin is None:
        return _step(model, loss, step_rule, False, None)(params, opt_state, x, y, None, key)
    return _step(twin, loss, step_rule, True, None)(params, opt_state, x.T, y, None, key)


# the model in training mode without a key, its numbers concrete: traced once per model
_keyless_apply = jax.jit(lambda model, params, x: model.apply(params, x, train=True), static_argnums=0)

# one program per (model structure, loss, step rule) value and shapes: equal configurations
# share it, and so do models that differ only in their numbers (traced: `fnnet._values`)
_train_step_jit = jax.jit(_train_step_body, static_argnums=(1, 2), donate_argnums=(3, 4))


def train_step(model: Layer, loss: Loss, opt: Optimizer) -> "TrainStep":
    """A jitted `step(params, opt_state, x, y, *, key=None) -> (params, opt_state, loss_value)`.

    One optimizer step on the batch `(x, y)` in training mode. `key` is the
    run's key: each step folds in the step count (`opt_state.count`), so pass
    the same key every step; layers that draw (Dropout) need one. Leaves under
    `State` (running statistics) take their new values from the step's forward
    pass. It donates `params` and `opt_state`: the arrays you pass in are
    deleted (keep a copy, `jax.tree.map(jnp.copy, params)`, to reuse them).
    One program per configuration: equal models and losses, and optimizers
    that step the same way (other hyperparameters included, which are data in
    the state), share it. `step.lower(...)` takes the same arguments
    (`jax.stages`). It does not read its data's values (NaN in x or y comes out
    as a NaN loss): `fit` and `train` check their data before any work.
    """
    check_kinds("train_step", model, loss, opt)
    return TrainStep(model, loss, opt)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """What `train_step` returns: a value of its model, loss and optimizer."""

    model: Layer
    loss: Loss
    optimizer: Optimizer

    def arguments(self, params, opt_state, x, y, key):
        if donated((params, opt_state)):
            raise ValueError(
                "train_step: params or opt_state hold arrays an earlier step was donated and "
                "deleted: pass the ones the step returned, or keep a copy to reuse, "
                "jax.tree.map(jnp.copy, params)"
            )
        if key is not None:
            key = check_key("train_step", key)
        check_step_args(self.optimizer, opt_state, x, y)
        if key is None:  # a layer that draws (Dropout at a rate > 0) refuses, naming itself
            _keyless_apply.eval_shape(self.model, params, x)
        return (self.model, self.loss, self.optimizer.step, params, opt_state, x, y, key)

    def __call__(self, params, opt_state, x, y, *, key=None):
        return _train_step_jit(*self.arguments(params, opt_state, x, y, key))

    def lower(self, params, opt_state, x, y, *, key=None):
        return _train_step_jit.lower(*self.arguments(params, opt_state, x, y, key))


def train(
    model: Layer,
    loss: Loss,
    opt: Optimizer,
    epochs: int,
    batch_size: Optional[int] = None,
    mesh: Optional[Mesh] = None,
    *,
    metrics=None,
    early_stopping: Optional[EarlyStopping] = None,
    shuffle: bool = True,
) -> "TrainRun":
    """A whole training run as one pure, jitted, vmappable function.

    Args:
      model, loss, opt: what to train, on what, with what.
      epochs: number of passes over the data (static).
      batch_size: None for full batch, else minibatches reshuffled each epoch
        (see below).
      metrics: None, or names / `Metric`s recorded after each epoch in inference
        mode, on the training data and on `validation=` data (`"val_"` names).
      early_stopping: None, or an `EarlyStopping`: each run (each member of a
        vmapped sweep) stops on its own; once stopped its params no longer change.
      shuffle: False to take the minibatches in the samples' order every epoch.
      mesh: a `jax.sharding.Mesh` for data-parallel training: x and y are
        sharded along its first axis, params and optimizer state replicated;
        each device computes the loss and grads of its shard, and one
        all-reduce per step averages them (so the loss must be a mean over
        samples, as every fnnet loss is). BatchNorm normalizes by each
        device's samples: 1 per device is refused, before any work.

    Returns:
      `run(params, opt_state, x, y, *, key=None, validation=None) -> (params, opt_state,
      losses)` with `losses` of shape `(epochs,)`, one per epoch. With metrics,
      early stopping or `validation=(x_val, y_val)`, the third output is a history
      instead: `{"loss": (epochs,), "val_loss": ..., "accuracy": ..., "val_accuracy":
      ...}` and, with early stopping, `"epochs"` (the epochs run) and `"best_epoch"`
      (the epochs run to the params of the best value; -1 if none was finite), each epoch after a stop recording NaN;
      `params` are the best ones when `restore_best`. `sample_weight` is `fit`'s
      (`(n,)`, >= 0): traced inside a sweep, each member its own (`sweep(...,
      sample_weights=)`: cross-validation folds as 0/1 masks share one program). Epoch e shuffles with
      `fold_in(key, opt_state.count)` and each step draws (Dropout) with
      `step_key(key, opt_state.count)`, so a run continued from a saved state
      repeats the uninterrupted one. `key` defaults to `jax.random.key(0)`.
      Each call first makes the checks `fit` makes (one preparation serves
      both): x floating point and against y, params against the model, the
      model against the loss, the lr schedule (if any) over its steps and,
      where they are concrete (not traced inside `vmap` or `jit`), x, y,
      params and opt_state finite, y valid targets for the loss and the
      optimizer's hyperparameters valid; it raises TypeError or ValueError
      before any work. A run that diverges returns its
      non-finite losses (`fit` raises `TrainingDiverged`; `fnnet.sweep`
      flags the member). `run(..., model=other)` trains `other`, a model of
      the same structure whose numbers (a Dropout rate, a slope: data, see
      `fnnet._values`) differ, in the same program: `fnnet.sweep(...,
      models=...)` gives each member its own.
      The samples are padded to a bucket (`fnnet._buckets`: at most 1/8 more, 1/32 for a full batch),
      the padding weighing nothing, so one program serves every n in it.

    Example:
      >>> opt = SGD(lr=0.5)
      >>> run = train(model, LossBCE(), opt, epochs=100)
      >>> params, state, losses = run(params, opt.init(params), x, y, key=jax.random.key(0))
      >>> keys = jax.random.split(jax.random.key(1), 8)  # a sweep over seeds
      >>> params8 = fnnet.init_many(keys, model, x.shape)
      >>> out = jax.vmap(run, in_axes=(0, 0, None, None))(params8, jax.vmap(opt.init)(params8),
      ...                                                 x, y, key=keys)
      >>> out[2].shape  # losses: 8 members, 100 epochs
      (8, 100)
    """
    check_kinds("train", model, loss, opt)
    epochs = check_count("train: epochs", epochs)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"train: mesh must be a jax.sharding.Mesh, got {describe(mesh)}")
    metrics = () if metrics is None else as_metrics("train", metrics, loss)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"train: early_stopping must be None or a fnnet.EarlyStopping, got {describe(early_stopping)}"
        )
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"train: shuffle must be True or False, got {describe(shuffle)}")
    return TrainRun(model, loss, opt, epochs, batch_size, mesh, metrics, early_stopping, bool(shuffle))


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """`run(params, opt_state, x, y, *, key=None, model=None, validation=None,
    sample_weight=None) -> (params, opt_state, losses or history)`, made by `train`: a value of its settings, so equal
    settings make equal runs. Runs of optimizers that step the same way are equal
    (`opt.step`): their hyperparameters are data in the state, and a sweep of them shares
    one program."""

    model: Layer
    loss: Loss
    optimizer: Optimizer = dataclasses.field(compare=False)
    epochs: int
    batch_size: Optional[int] = None
    mesh: Optional[Mesh] = None
    metrics: tuple = ()
    early_stopping: Optional[EarlyStopping] = None
    shuffle: bool = True
    step: Callable = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "step", self.optimizer.step)

    def __call__(self, params, opt_state, x, y, *, key=None, model=None, validation=None, sample_weight=None):
        loss, opt = self.loss, self.optimizer
        model = self.model if model is None else self.same_structure(model)
        # Checked here, where n is known: a gather past the end of y would clamp, not fail.
        setup = prepare_run(
            "train",
            model,
            loss,
            opt,
            params,
            opt_state,
            x,
            y,
            self.epochs,
            self.batch_size,
            key,
            self.mesh,
            validation,
            sample_weight,
        )
        watching = prepare_watching(
            "train", self.metrics or None, self.early_stopping, model, loss, params, setup
        )
        stopping = watching.stopping
        result = _runner(self.mesh)(
            model,
            loss,
            opt.step,
            setup.batch_size,
            self.shuffle,
            self.epochs,
            watching.static(),
            params,
            setup.opt_state,
            setup.data,
            setup.key,
            setup.validation_data,
            None,
            None if stopping is None else start(stopping, params, jnp.result_type(float)),
            centers_of(watching, setup),
        )
        # Hyperparameters traced inside vmap (a sweep) were not checked on the host: a run
        # given invalid ones reports NaN losses, never a result that looks like one.
        valid = opt.valid(opt_state.hyperparams) if isinstance(opt_state, OptState) else True
        if not (self.metrics or stopping is not None or validation is not None):
            return result.params, result.opt_state, jnp.where(valid, result.losses, jnp.nan)
        history = {"loss": result.losses, **({} if validation is None else {"val_loss": result.val_losses})}
        history = {name: jnp.where(valid, v, jnp.nan) for name, v in {**history, **result.metrics}.items()}
        params = result.params
        if stopping is not None:
            history.update(epochs=result.watch.epoch, best_epoch=result.watch.best_epoch)
            params = restored(result.watch, params)
        return params, result.opt_state, history

    def same_structure(self, model):
        """`model`, a model of this run's structure whose numbers may differ (a sweep's
        member, its numbers traced), or TypeError."""
        if not isinstance(model, Layer) or jax.tree.structure(model) != jax.tree.structure(self.model):
            raise TypeError(
                f"train: model must be {self.model!r} with other numbers (a rate, a slope) at "
                f"most, got {describe(model)}"
            )
        return model
