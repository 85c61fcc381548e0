"""Training: a jitted step, a pure compiled training run, and `fit`."""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet._checks import check_key, describe, donated
from fnnet._setup import check_count, check_kinds, prepare_run
from fnnet._types import Array
from fnnet._layout import feature_major
from fnnet.grad import check_input, loss_and_grads_in, shared_loss
from fnnet.layers import Layer, masked
from fnnet.losses import Loss
from fnnet.metrics import as_metrics, center_of, check_metrics, measure
from fnnet.optim import Optimizer, OptState
from fnnet.state import check_update, state_leaves, with_state
from fnnet.stopping import EarlyStopping, Watch, restored, start, static_part, watched

__all__ = ["train_step", "train"]


def step_key(key, count):
    """The key of the training step taken after `count` steps: the run's key with the
    count folded in (then a 1, so it differs from the epoch's shuffling key), or None."""
    if key is None:
        return None
    return jax.random.fold_in(jax.random.fold_in(key, count), 1)


def _gradients(layer: Layer, loss: Loss, transposed: bool, mesh: Optional[Mesh]) -> Callable:
    """`(params, x, y, weights, key) -> (value, grads, state)` for one batch in training mode.

    `weights` is None (every sample counts) or `(batch,)` (0 for padding): the value is
    the weighted mean loss, and a layer that mixes samples leaves the padding out.
    `state` holds the new values of the leaves under `State` (from
    `layer.update_state`), or None for a stateless layer. x is in `layer`'s
    layout (`transposed`: a feature-major twin on `(features, batch)`).
    """

    def core(params, x, y, share, key):
        value, grads = loss_and_grads_in(
            layer, loss, params, x, y, train=True, key=key, transposed=transposed, share=share
        )
        mask = masked(layer, None if share is None else share > 0)
        state = (
            None
            if layer.update_state is None
            else state_leaves(check_update(params, layer.update_state(params, x, key=key, **mask)))
        )
        return value, grads, state

    return _data_parallel(core, mesh, x_batch_axis=1 if transposed else 0)


def _step(layer: Layer, loss: Loss, step_rule: Callable, transposed: bool, mesh: Optional[Mesh]) -> Callable:
    """One training step: `(params, opt_state, x, y, weights, key) -> (params, opt_state,
    value)`, with `key` the step's own key and `step_rule` the optimizer's `step`. The
    optimizer moves the trainable leaves; the leaves under `State` take their new values
    from the same forward pass."""
    gradients = _gradients(layer, loss, transposed, mesh)

    def step(params, opt_state, x, y, weights, key):
        value, grads, state = gradients(params, x, y, weights, key)
        new_params, opt_state = step_rule(params, grads, opt_state)
        if state is not None:
            new_params = with_state(new_params, state)
        return new_params, opt_state, value

    return step


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
    (`jax.stages`).
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


def _data_parallel(core: Callable, mesh: Optional[Mesh], x_batch_axis: int = 0) -> Callable:
    """`core(params, x, y, share, key) -> (value, grads, state)` as `(params, x, y, weights,
    key) -> (value, grads, state)`, split over the mesh's first axis.

    `share` is each sample's share of the loss: its weight over the batch's total (None
    when `weights` is None, a train_step's batch on one device: the loss's own mean). On a mesh each device takes its shard
    of the batch (axis `x_batch_axis` of x, axis 0 of y and weights), folds its index
    into the key (so its draws are its own) and runs `core` with the weights themselves
    as shares (its loss a weighted sum); one all-reduce then sums every output and the
    weights at once (a flat vector), and the loss and grads are divided by the total
    weight, the running statistics averaged over devices weighted by their samples' weights. Without a mesh: `core` on
    the batch.
    """
    if mesh is None:
        return lambda params, x, y, weights, key: core(
            params, x, y, None if weights is None else weights / jnp.sum(weights), key
        )
    axis = mesh.axis_names[0]

    def local(params, x, y, weights, key):  # weights: a run's, always given on a mesh
        if key is not None:
            key = jax.random.fold_in(key, lax.axis_index(axis))
        value, grads, state = core(params, x, y, weights, key)
        # the running statistics weighted by the device's samples: a device of padding
        # alone (weights all 0) counts for nothing
        total = jnp.sum(weights)
        state = jax.tree.map(lambda a: a * total.astype(a.dtype), state)
        flat, unflatten = ravel_pytree((value, grads, state, total))
        value, grads, state, total = unflatten(lax.psum(flat, axis))
        return jax.tree.map(lambda a: a / total.astype(a.dtype), (value, grads, state))

    x_spec = PartitionSpec(*[None] * x_batch_axis, axis)
    return jax.shard_map(
        local,
        mesh=mesh,
        out_specs=PartitionSpec(),
        in_specs=(PartitionSpec(), x_spec, PartitionSpec(axis), PartitionSpec(axis), PartitionSpec()),
    )


_INDEX_BITS = 12  # up to 2**12 samples are ordered by one sort of one uint32 array


def _order(counts, key):
    """An epoch's order of the padded samples: those that count (`counts`, weight > 0)
    shuffled by `key` (in their order for None), then the others in theirs. Each sample's
    place depends on its own random bits and index alone, never on how many padding rows
    follow, so a run does not depend on its bucket.

    Up to 2**12 samples: one sort of uint32 keys, 20 random bits above the index (ties,
    about one pair an epoch at 1,500 samples, go by index): a quarter of the time of
    argsort's sort of two arrays (a third of a small model's epoch on a CPU). More: an
    argsort of 31 random bits."""
    n = counts.shape[0]
    index = jnp.arange(n, dtype=jnp.uint32)
    bits = index << 1 if key is None else jax.random.bits(key, (n,), jnp.uint32)
    if n > 2**_INDEX_BITS:
        return jnp.argsort(jnp.where(counts, bits >> 1, jnp.uint32(2**32 - 1)), stable=True)
    last = jnp.uint32(2 ** (32 - _INDEX_BITS) - 1)  # the rank of what does not count
    rank = jnp.where(counts, jnp.minimum(bits >> _INDEX_BITS, last - 1) if key is not None else 0, last)
    return jnp.sort((rank << _INDEX_BITS) | index) & jnp.uint32(2**_INDEX_BITS - 1)


def _epoch(model, loss, step_rule, batch_size, mesh, shuffle=True):
    """One pass over the data, as `(prepare, epoch)`.

    `prepare(x)` runs once, before the training loop; then each pass is
    `epoch(params, state, prepare(x), y, weights, key) -> (params, state, loss)`, the
    samples padded (`fnnet._buckets`): `weights` is 1 for a sample and 0 for padding.
    Where `fnnet._layout` gives the model a feature-major twin, `prepare` transposes x
    (XLA does not hoist the transpose out of the loop itself) and the steps run the twin.
    Full batch: one step. With `batch_size`: the samples are shuffled (unless not
    `shuffle`) by `fold_in(key, state.count)` (one gather per epoch; the padding sorted last, so the order of the
    samples does not depend on it) and cut into batches of `batch_size`, the last one
    padded when `batch_size` does not divide n, so every sample is used exactly once per
    epoch and every step has one shape; the steps of padding alone are skipped
    (`lax.cond`: they move nothing, not even the step count). The epoch's loss is the
    weighted mean of its samples' losses, each taken before its batch's step. Each step
    draws with `step_key(key, count)`.
    """

    def twin(x):  # the same answer for x and prepare(x): 2-D either way
        return feature_major(model, x, minibatches=batch_size is not None)

    def prepare(x):
        return x if twin(x) is None else x.T

    def epoch(params, state, x, y, weights, key):
        fm = twin(x)
        step = _step(model if fm is None else fm, loss, step_rule, fm is not None, mesh)
        dtype = jnp.result_type(float)
        if batch_size is None:
            return step(params, state, x, y, weights, step_key(key, state.count))
        counts = weights > 0
        steps = (jnp.sum(counts, dtype=jnp.int32) + batch_size - 1) // batch_size
        order = _order(counts, jax.random.fold_in(key, state.count) if shuffle else None)
        x, y, weights = (jnp.take(a, order, axis=0) for a in (x, y, weights))

        def batch(carry, start):
            def trained(carry):
                params, state = carry
                samples = (lax.dynamic_slice_in_dim(a, start, batch_size) for a in (x, y, weights))
                params, state, value = step(params, state, *samples, step_key(key, state.count))
                return (params, state), value.astype(dtype)

            return lax.cond(start < steps * batch_size, trained, lambda c: (c, jnp.zeros((), dtype)), carry)

        starts = jnp.arange(x.shape[0] // batch_size) * batch_size
        (params, state), values = lax.scan(batch, (params, state), starts)
        batch_weights = jnp.sum(weights.reshape(-1, batch_size), axis=1)
        return params, state, jnp.sum(values * batch_weights) / jnp.sum(batch_weights)

    return prepare, epoch


class Run(NamedTuple):
    """What `_runner`'s program returns: `count` losses, validation losses (None without
    validation data) and `{name: (count,)}` metrics (`"val_"` names on the validation
    data; empty without metrics), the early-stopping `Watch` (or None), and whether every
    float in the final params and optimizer state is finite (checked once, at the end: a
    check every epoch costs W1 a fifth of its time). Epochs not run (past `active`, or
    after the watch stopped the run) record NaN."""

    params: Any
    opt_state: Any
    losses: Array
    val_losses: Optional[Array]
    metrics: dict
    watch: Optional[Watch]
    finite: Array


def _all_finite(tree) -> Array:
    """Whether every float in `tree` is finite: one reduction over all of them at once (a
    reduction per leaf compiles a kernel each, a tenth of W1's compile time)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    if not leaves:
        return jnp.bool_(True)
    dtype = jnp.result_type(*leaves)
    return jnp.all(jnp.isfinite(jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])))


class Watching(NamedTuple):
    """What a run records and watches besides its loss, static: the metrics (a tuple of
    `Metric`s, on the training data and, with validation data, on it) and the resolved
    `EarlyStopping` (or None)."""

    metrics: tuple = ()
    stopping: Optional[EarlyStopping] = None

    def static(self) -> "Watching":
        """What the compiled run keys on: the early stopping's numbers are data (`Watch`)."""
        return Watching(self.metrics, static_part(self.stopping))


def prepare_watching(owner, metrics, early_stopping, model, loss, params, setup) -> Watching:
    """`metrics` (None, names or Metrics) and `early_stopping` (None or an EarlyStopping)
    checked against the run's model, targets and validation data (a `Setup`), before any
    work: metrics that do not fit the targets, a monitor that names no recorded quantity."""
    metrics = () if metrics is None else as_metrics(owner, metrics, loss)
    validate = setup.validation is not None
    for m in metrics:
        if m.name in ("loss", "epochs", "best_epoch") or m.name.startswith("val_"):
            raise ValueError(f"{owner}: a metric cannot be named {m.name!r} (a name the run records itself)")
    check_metrics(owner, metrics, model, params, setup.x, setup.y)
    if validate:
        x_val, y_val = setup.validation
        check_metrics(owner, metrics, model, params, x_val, y_val, name_y="y_val")
    if early_stopping is None:
        return Watching(metrics, None)
    if not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"{owner}: early_stopping must be None or a fnnet.EarlyStopping, got {describe(early_stopping)}"
        )
    recorded = {"loss": False, **{m.name: m.greater_is_better for m in metrics}}
    if validate:
        recorded.update({"val_" + name: better for name, better in recorded.items()})
    return Watching(metrics, early_stopping.resolved(owner, recorded))


def centers_of(watching: Watching, setup):
    """The training and validation targets' means for a centered metric (R2), as data; None
    without metrics."""
    if not watching.metrics:
        return None
    targets = (setup.y, None if setup.validation is None else setup.validation[1])
    return tuple(None if t is None else center_of(watching.metrics, t) for t in targets)


def _run(
    mesh,
    model,
    loss,
    step_rule,
    batch_size,
    shuffle,
    count,
    watching,
    params,
    state,
    data,
    key,
    validation,
    active,
    watch,
    centers,
):
    """A loop of `count` epochs, returning a `Run`. `data` is `(x, y, weights)`, padded
    (`fnnet._buckets`); `validation` is None or `(x_val, y_val, weights_val)`, whose loss
    (in inference mode) is recorded after each epoch. `count` is static, one compile per
    value: a loop of known length runs on a GPU without reading its condition back to
    the host every epoch. `active` (an int32 scalar, traced, or None) runs only the first
    `active` epochs of the loop: the others pass the params and state through unchanged
    (`lax.cond`), so one program runs any number of epochs up to `count`. `watching`
    (static) names the metrics recorded after each epoch in inference mode (`centers`:
    the training and validation targets' means, `fnnet.metrics.center_of`) and the early
    stopping whose `watch` the loop carries: once it has stopped, every later epoch is
    skipped as those past `active` are."""
    prepare, epoch = _epoch(model, loss, step_rule, batch_size, mesh, shuffle)
    dtype = jnp.result_type(float)
    x_in, y, weights = data
    x = prepare(x_in)
    metrics, stopping = watching

    def validated(params):
        x_val, y_val, weights_val = validation
        share = weights_val / jnp.sum(weights_val)
        return shared_loss(loss, model.apply(params, x_val), y_val, share)[0].astype(dtype)

    def recorded(params, value):
        record = {"loss": value.astype(dtype)}
        if validation is not None:
            record["val_loss"] = validated(params)
        if metrics:
            record.update(measure(model, metrics, batch_size, params, x_in, y, weights, centers[0]))
            if validation is not None:
                found = measure(model, metrics, None, params, *validation, centers[1])
                record.update({"val_" + name: value for name, value in found.items()})
        return {name: value.astype(dtype) for name, value in record.items()}

    def trained(carry):
        before, state, watch = carry
        params, state, value = epoch(before, state, x, y, weights, key)
        record = recorded(params, value)
        if watch is not None:
            watch = watched(stopping, watch, record[stopping.monitor], before, params)
        return (params, state, watch), record

    names = ["loss"] + [m.name for m in metrics]
    names += [] if validation is None else ["val_" + name for name in names]

    def skipped(carry):
        return carry, {name: jnp.full((), jnp.nan, dtype) for name in names}

    def body(carry, i):
        go = None if active is None else i < active
        if watch is not None:
            go = ~carry[2].stopped if go is None else go & ~carry[2].stopped
        if go is None:
            return trained(carry)
        return lax.cond(go, trained, skipped, carry)

    (params, state, watch), record = lax.scan(
        body, (params, state, watch), jnp.arange(count, dtype=jnp.int32)
    )
    losses, val_losses = record.pop("loss"), record.pop("val_loss", None)
    return Run(params, state, losses, val_losses, record, watch, _all_finite((params, state)))


@functools.lru_cache(maxsize=None)
def _runner(mesh: Optional[Mesh]) -> Callable:
    """`_run` jitted for `mesh` (its data sharded along the mesh's first axis, the rest
    replicated), as `run(model, loss, step_rule, batch_size, shuffle, count, watching, params,
    state, data, key, validation, active, watch, centers)`. jit keeps one program per
    value of the static settings (loss, the optimizer's step rule, batch size, count,
    watching), the model's structure and shapes: the model is an argument, its numbers
    traced (`fnnet._values`)."""
    run = functools.partial(_run, mesh)
    static = (1, 2, 3, 4, 5, 6)
    if mesh is None:
        return jax.jit(run, static_argnums=static)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.jit(
        run,
        static_argnums=static,
        out_shardings=replicated,
        in_shardings=(replicated, replicated, replicated, data) + (replicated,) * 5,
    )


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
