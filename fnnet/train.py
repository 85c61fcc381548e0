"""Training: a jitted step, a pure compiled training run, and `fit`."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet._shared import shared
from fnnet.grad import loss_and_grads, loss_and_grads_fm
from fnnet.layers import Layer, feature_major
from fnnet.losses import Loss
from fnnet.optim import Optimizer, check_schedule

__all__ = ["train_step", "train"]


@shared
def _train_step(model, loss, opt_step):
    def step(params, opt_state, x, y):
        value, grads = loss_and_grads(model, loss, params, x, y)
        params, opt_state = opt_step(params, grads, opt_state)
        return params, opt_state, value
    return jax.jit(step, donate_argnums=(0, 1))


def train_step(model: Layer, loss: Loss, opt: Optimizer) -> Callable:
    """A jitted `step(params, opt_state, x, y) -> (params, opt_state, loss_value)`.

    One optimizer step on the batch `(x, y)`. It donates `params` and
    `opt_state` (do not reuse the arrays you pass in). Built once per
    configuration: new optimizers of the same kind (same update rule, schedule
    and state layout) with other hyperparameters share it, and their states run
    it without recompiling.
    """
    return _train_step(model, loss, opt.step)


def _check_samples(x, y, owner="train", names=("x", "y")):
    """Raise ValueError unless x and y hold the same number of samples, at least one."""
    for name, a in zip(names, (x, y)):
        if jnp.ndim(a) < 1:
            raise ValueError(f"{owner}: {name} must have a leading sample axis, "
                             f"got shape {jnp.shape(a)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{owner}: {names[0]} and {names[1]} must have the same number of "
                         f"samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{owner}: {names[0]} is empty (0 samples)")


def _check_count(name, value):
    """Raise ValueError unless `value` is an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_batch_size(batch_size, n):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int or None, got {batch_size!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}] (the number of samples), got {batch_size}")
    return None if batch_size == n else batch_size


def _data_parallel(grads_fn: Callable, mesh: Optional[Mesh], x_batch_axis: int = 0) -> Callable:
    """`grads_fn(params, x, y) -> (value, grads)` split over the mesh's first axis.

    Each device takes its shard of the batch (axis `x_batch_axis` of x, axis 0
    of y) and computes the loss and grads of its samples; one all-reduce then
    averages them all at once (a flat vector of the value and every grad).
    The average of the shards' mean losses is the batch's mean loss, as
    `place` makes every shard the same size. Without a mesh: `grads_fn`.
    """
    if mesh is None:
        return grads_fn
    axis = mesh.axis_names[0]
    n_shards = mesh.shape[axis]

    def local(params, x, y):
        flat, unflatten = ravel_pytree(grads_fn(params, x, y))
        return unflatten(lax.psum(flat, axis) / n_shards)

    x_spec = PartitionSpec(*[None] * x_batch_axis, axis)
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), x_spec, PartitionSpec(axis)),
                         out_specs=PartitionSpec())


def _epoch(model, loss, opt_step, batch_size, mesh):
    """One pass over the data, as `(prepare, epoch)`.

    `prepare(x)` runs once, before the training loop; then each pass is
    `epoch(params, state, prepare(x), y, key) -> (params, state, loss)`.
    Full batch: one step. For a 2-D x and a model with a feature-major twin,
    `prepare` transposes x (XLA does not hoist the transpose out of the loop
    itself) and the step runs the twin. With `batch_size`: the samples are
    shuffled by `fold_in(key, state.count)`, cut into `n // batch_size` full
    batches and, when `batch_size` does not divide n, one last smaller batch
    of the rest, so every sample is used exactly once per epoch. The epoch's
    loss is the mean of its batches' losses weighted by their sizes, each
    taken before its step.
    """
    twin = feature_major(model)
    grads_fn = _data_parallel(lambda params, x, y: loss_and_grads(model, loss, params, x, y), mesh)
    twin_grads = _data_parallel(
        lambda params, x_fm, y: loss_and_grads_fm(twin, loss, params, x_fm, y), mesh, x_batch_axis=1)

    def one_twin_batch(x):  # the same answer for x and x.T
        return batch_size is None and twin is not None and x.ndim == 2

    def prepare(x):
        return x.T if one_twin_batch(x) else x

    def step(grads_of, params, state, x, y):
        value, grads = grads_of(params, x, y)
        params, state = opt_step(params, grads, state)
        return params, state, value

    def epoch(params, state, x, y, key):
        if one_twin_batch(x):
            return step(twin_grads, params, state, x, y)
        n = x.shape[0]
        if batch_size is None:
            return step(grads_fn, params, state, x, y)
        order = jax.random.permutation(jax.random.fold_in(key, state.count), n)
        n_full = n // batch_size
        full = order[:n_full * batch_size].reshape(n_full, batch_size)

        def batch(carry, indices):
            params, state, value = step(grads_fn, *carry, x[indices], y[indices])
            return (params, state), value

        (params, state), values = lax.scan(batch, (params, state), full)
        total = jnp.sum(values) * batch_size
        rest = order[n_full * batch_size:]
        if rest.size:
            params, state, value = step(grads_fn, params, state, x[rest], y[rest])
            total = total + value * rest.size
        return params, state, total / n

    return prepare, epoch


@shared
def _runner(model, loss, opt_step, batch_size, validate, mesh):
    """Jitted `run(params, state, x, y, key, count, x_val, y_val)`: `count` epochs.

    Returns `(params, state, losses, val_losses, finite)`: `count` losses, as
    many validation losses (None unless `validate`), and whether every float
    in the final params is finite. `count` is a static int, one compile per
    value: a loop of known length runs on a GPU without reading its condition
    back to the host every epoch.
    """
    prepare, epoch = _epoch(model, loss, opt_step, batch_size, mesh)

    def run(params, state, x, y, key, count, x_val, y_val):
        dtype = jnp.result_type(float)
        x = prepare(x)

        def body(carry, _):
            params, state, value = epoch(*carry, x, y, key)
            val_value = loss.value(model.apply(params, x_val), y_val).astype(dtype) if validate else None
            return (params, state), (value.astype(dtype), val_value)

        (params, state), (losses, val_losses) = lax.scan(body, (params, state), length=count)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)
                                    if jnp.issubdtype(leaf.dtype, jnp.inexact)] or [True]))
        return params, state, losses, val_losses, finite

    shardings = {}
    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        data = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        shardings = dict(out_shardings=replicated, in_shardings=(
            replicated, replicated, data, data, replicated, replicated, replicated))
    return jax.jit(run, static_argnums=5, **shardings)


def place(mesh: Optional[Mesh], x, y, batch_size):
    """Put x and y on the mesh, sharded along its first axis; checks divisibility."""
    if mesh is None:
        return x, y
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    axis = mesh.axis_names[0]
    n_shards = mesh.shape[axis]
    n = x.shape[0]
    sizes = [n] if batch_size is None else [batch_size] + ([n % batch_size] if n % batch_size else [])
    for size in sizes:
        if size % n_shards:
            raise ValueError(f"data-parallel training over {n_shards} devices (mesh axis {axis!r}) "
                             f"needs every batch divisible by {n_shards}, got a batch of {size} "
                             f"(n={n}, batch_size={batch_size}); drop or pad samples to fit")
    data = NamedSharding(mesh, PartitionSpec(axis))
    return jax.device_put(x, data), jax.device_put(y, data)


def train(model: Layer, loss: Loss, opt: Optimizer, epochs: int,
          batch_size: Optional[int] = None, mesh: Optional[Mesh] = None) -> Callable:
    """A whole training run as one pure, jitted, vmappable function.

    Args:
      model, loss, opt: what to train, on what, with what.
      epochs: number of passes over the data (static).
      batch_size: None for full batch, else minibatches reshuffled each epoch
        (see below).
      mesh: a `jax.sharding.Mesh` for data-parallel training: x and y are
        sharded along its first axis, params and optimizer state replicated;
        each device computes the loss and grads of its shard, and one
        all-reduce per step averages them (so the loss must be a mean over
        samples, as every fnnet loss is).

    Returns:
      `run(params, opt_state, x, y, key) -> (params, opt_state, losses)` with
      `losses` of shape `(epochs,)`, one per epoch. Epoch e shuffles with
      `fold_in(key, opt_state.count)`, so a run continued from a saved state
      repeats the uninterrupted one. `key` may be None for full batch. Each call
      first checks x against y and the lr schedule (if any) over its steps.

    Example:
      >>> run = train(model, LossBCE(), SGD(lr=0.5), epochs=1000)
      >>> params, state, losses = run(params, opt.init(params), x, y, jax.random.key(0))
      >>> keys = jax.random.split(jax.random.key(1), 8)  # a sweep over seeds
      >>> jax.vmap(run, in_axes=(0, 0, None, None, 0))(params8, states8, x, y, keys)
    """
    _check_count("train: epochs", epochs)
    return _train(model, loss, opt.step, epochs, batch_size, mesh)


@shared
def _train(model, loss, opt_step, epochs, batch_size, mesh):
    def run(params, opt_state, x, y, key=None):
        # Checked here, where n is known: a gather past the end of y would clamp, not fail.
        _check_samples(x, y)
        size = _check_batch_size(batch_size, x.shape[0])
        check_schedule(opt_step, epochs * (1 if size is None else -(-x.shape[0] // size)))
        if key is None:
            key = jax.random.key(0)
        x, y = place(mesh, x, y, size)
        runner = _runner(model, loss, opt_step, size, False, mesh)
        params, opt_state, losses, _, _ = runner(params, opt_state, x, y, key, epochs, x[:1], y[:1])
        return params, opt_state, losses

    return run
