"""The compiled training loop: a step's gradients (data-parallel on a mesh), an epoch's
shuffle and batches, a run of epochs with its metrics and early stopping (`_runner`).
`fit` runs it in chunks, `train` as one program, `fnnet.sklearn`'s search per member."""

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet import _draws
from fnnet._checks import describe
from fnnet._types import Array
from fnnet._layout import feature_major
from fnnet.grad import loss_and_grads_in, shared_loss
from fnnet.layers import Layer, masked
from fnnet.losses import Loss
from fnnet.metrics import as_metrics, center_of, check_metrics, measure, values_of
from fnnet.state import check_update, state_leaves, with_state
from fnnet.stopping import EarlyStopping, Watch, static_part, watched


def step_key(key, count):
    """The key of the training step taken after `count` steps: the run's key with the
    count folded in (then a 1, so it differs from the epoch's shuffling key), or None."""
    if key is None:
        return None
    return _draws.fold_in(_draws.fold_in(key, count), 1)


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
            key = _draws.fold_in(key, lax.axis_index(axis))
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
    shuffled by `key` (in their order for None), then the others in theirs.

    Each sample's place depends on its own random bits and index alone (a prefix of a
    larger draw is the same draw), never on how many padding rows follow, so a run does not
    depend on its bucket. While the samples that count lie in the first 2**12 rows: one
    sort of uint32 keys, 20 random bits above the index (ties, about one pair an epoch at
    1,500 samples, go by index), a quarter of the time of argsort's sort of two arrays (a
    third of a small model's epoch on a CPU). Past them: an argsort of 31 random bits (more
    ties would leave long runs in the data's order). Which of the two is chosen by where
    the last sample that counts lies, not by the padded size (`lax.cond` when it is past
    2**12 rows)."""
    n = counts.shape[0]
    bits = jnp.zeros(n, jnp.uint32) if key is None else _draws.bits(key, (n,))

    def one_sort(counts, bits):
        index = jnp.arange(counts.shape[0], dtype=jnp.uint32)
        last = jnp.uint32(2 ** (32 - _INDEX_BITS) - 1)  # the rank of what does not count
        rank = jnp.where(counts, jnp.minimum(bits >> _INDEX_BITS, last - 1), last)
        return (jnp.sort((rank << _INDEX_BITS) | index) & jnp.uint32(2**_INDEX_BITS - 1)).astype(jnp.int32)

    head = 2**_INDEX_BITS
    if n <= head:
        return one_sort(counts, bits)

    def in_the_head(_):
        return jnp.concatenate([one_sort(counts[:head], bits[:head]), jnp.arange(head, n, dtype=jnp.int32)])

    def past_it(_):
        return jnp.argsort(jnp.where(counts, bits >> 1, jnp.uint32(2**32 - 1)), stable=True).astype(jnp.int32)

    return lax.cond(jnp.any(counts[head:]), past_it, in_the_head, None)


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
        order = _order(counts, _draws.fold_in(key, state.count) if shuffle else None)
        x, y, weights = (jnp.take(a, order, axis=0) for a in (x, y, weights))

        def batch(carry, start):
            def trained(carry):
                params, state, total, weight = carry
                xs, ys, ws = (lax.dynamic_slice_in_dim(a, start, batch_size) for a in (x, y, weights))
                params, state, value = step(params, state, xs, ys, ws, step_key(key, state.count))
                w = jnp.sum(ws).astype(dtype)
                return params, state, total + value.astype(dtype) * w, weight + w

            return lax.cond(start < steps * batch_size, trained, lambda c: c, carry), None

        # the loss summed step by step, in order: the same bits whatever padding follows
        starts = jnp.arange(x.shape[0] // batch_size) * batch_size
        zero = jnp.zeros((), dtype)
        (params, state, total, weight), _ = lax.scan(batch, (params, state, zero, zero), starts)
        return params, state, total / weight

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


def recorded_names(watching: Watching, validate: bool) -> list:
    """The quantities a run records each epoch, by name: the loss, the metrics, and with
    validation data the same on it (`"val_"` names)."""
    names = ["loss"] + [m.name for m in watching.metrics]
    return names + (["val_" + name for name in names] if validate else [])


def centers_of(watching: Watching, setup):
    """The training targets' mean (weighted by the run's `sample_weight`) and the validation
    targets' for a centered metric (R2), as data; None without metrics."""
    if not watching.metrics:
        return None
    validation = None if setup.validation is None else center_of(watching.metrics, setup.validation[1])
    return center_of(watching.metrics, setup.y, setup.sample_weight), validation


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

    def validated(params):  # the validation loss and metrics, from one forward pass
        x_val, y_val, weights_val = validation
        out = model.apply(params, x_val)
        found = {"loss": shared_loss(loss, out, y_val, weights_val / jnp.sum(weights_val))[0]}
        if metrics:
            found.update(values_of(metrics, out, y_val, weights_val, centers[1]))
        return {"val_" + name: value for name, value in found.items()}

    def recorded(params, value):
        record = {"loss": value}
        if metrics:
            record.update(measure(model, metrics, batch_size, params, x_in, y, weights, centers[0]))
        if validation is not None:
            record.update(validated(params))
        return {name: value.astype(dtype) for name, value in record.items()}

    def trained(carry):
        before, state, watch = carry
        params, state, value = epoch(before, state, x, y, weights, key)
        record = recorded(params, value)
        if watch is not None:
            watch = watched(stopping, watch, record[stopping.monitor], before, params)
        return (params, state, watch), record

    def skipped(carry):
        names = recorded_names(watching, validation is not None)
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
