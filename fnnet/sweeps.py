"""Sweeps: many training runs as one program, spread over the local devices (on a CPU each
device runs its members one after another, elsewhere they are vmapped)."""

import dataclasses
import inspect
import functools
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet._checks import check_keys, check_shape, describe, is_int, is_real
from fnnet._hosts import whole
from fnnet._setup import check_sample_weight
from fnnet._types import Array
from fnnet.layers import Layer
from fnnet.losses import check_targets
from fnnet.optim import OptState, check_schedule
from fnnet._loop import _all_finite

__all__ = ["init_many", "spread", "vmapped", "sweep", "SweepResult"]


def _warn_of_vmapped_rbg(owner: str, keys) -> None:
    """Warn where the keys' PRNG draws otherwise under `vmap` than alone (JAX's rbg and
    unsafe_rbg): the members would not be the runs their keys give one at a time."""
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(keys)) if typed else jax.config.jax_default_prng_impl  # type: ignore[attr-defined]
    if impl in ("rbg", "unsafe_rbg"):
        warnings.warn(
            f"{owner}: keys of the {impl} PRNG draw otherwise under vmap than alone, so a "
            f"member will not equal the run its key gives on its own; for that, use "
            f"threefry keys, e.g. jax.random.key(0, impl='threefry2x32')",
            stacklevel=3,
        )


def init_many(keys, model: Layer, input_shape) -> object:
    """Params of `len(keys)` models stacked on a leading axis: one per key.

    Args:
      keys: `(M,)` PRNG keys, e.g. `jax.random.split(key, M)`.
      model: a Layer.
      input_shape: one member's input shape, e.g. `x.shape`.

    Example:
      >>> params = init_many(jax.random.split(jax.random.key(0), 8), model, (1000, 2))
    """
    check_keys("init_many", keys)
    if not isinstance(model, Layer):
        raise TypeError(f"init_many: model must be a Layer, got {describe(model)}")
    _warn_of_vmapped_rbg("init_many", keys)
    input_shape = check_shape("init_many", input_shape)
    return jax.vmap(lambda key: model.init(key, input_shape)[1])(keys)


def vmapped(run: Callable, per_member_data: bool = False, groups: int = 1) -> Callable:
    """`jax.vmap(run)` over stacked params, states and keys, jitted.

    Args:
      run: `run(params, opt_state, x, y, *, key)`, e.g. from `fnnet.train`.
      per_member_data: x and y are stacked per member too; else shared.
      groups: how many groups the members are spread over (the device count
        after `spread`). On CPUs, where XLA runs a batch of small matrix
        products slower than the same products one by one, each group runs
        its members one after another (`lax.map`), unbatched: one group
        alone, or one per device where `spread` put them (`jax.shard_map`),
        else the groups vmapped (a data-parallel run's groups too). The same
        results as a vmap up to rounding, about 1.4x faster per member (a batch
        of one group compiles and runs as a batch: 15% slower). On this CPU an
        unbatched member has its run's bits alone, but for BatchNorm's and
        LayerNorm's rounding on several devices (which Adam can grow in a
        param whose gradient is 0 but for rounding, a bias before BatchNorm).

    Returns:
      `f(params, opt_states, x, y, keys) -> run's outputs stacked over members`.
      Equal runs (`train`'s runs of equal settings) share its compiled program.
    """
    if not callable(run):
        raise TypeError(f"vmapped: run must be a function, got {describe(run)}")
    if not isinstance(per_member_data, bool):
        raise TypeError(f"vmapped: per_member_data must be True or False, got {per_member_data!r}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"vmapped: groups must be an int >= 1, got {groups!r}")
    return Vmapped(run, per_member_data, int(groups), jax.default_backend() == "cpu")


@dataclasses.dataclass(frozen=True)
class Vmapped:
    """What `vmapped` returns: `f(params, opt_states, x, y, keys)`, and `f.lower(...)`."""

    run: Callable
    per_member_data: bool
    groups: int
    one_by_one: bool

    def __call__(self, params, opt_states, x, y, keys, models=None, sample_weights=None, validation=None):
        extra = _extra(models, sample_weights, validation)
        return self._sweep(_run_sweep, params, opt_states, x, y, keys, extra)

    def lower(self, params, opt_states, x, y, keys, models=None, sample_weights=None, validation=None):
        extra = _extra(models, sample_weights, validation)
        return self._sweep(_run_sweep.lower, params, opt_states, x, y, keys, extra)

    def _sweep(self, call, params, opt_states, x, y, keys, extra):
        """`call(*static settings, params, ..., keys, *extra)`: each device's group
        unbatched where `spread` put them, else (a run of its own shard_map, as a
        data-parallel run: it cannot sit inside the groups') the groups vmapped."""
        settings = (self.run, self.per_member_data, self.groups, self.one_by_one)
        arguments = (params, opt_states, x, y, keys, *extra)
        data_parallel = getattr(self.run, "mesh", None) is not None  # fnnet.train(..., mesh=)
        mesh = None if data_parallel or not self.one_by_one else _groups_mesh(keys, self.groups)
        if mesh is not None:
            try:
                return call(*settings, mesh, *arguments)
            except Exception:  # retried as a vmap: the run's own error, if any, raised from there
                pass
        return call(*settings, None, *arguments)


def _groups_mesh(keys, groups: int) -> Optional[Mesh]:
    """The mesh of `groups` devices that `spread` sharded the members' keys over (one
    axis), or None (one group, keys traced or placed otherwise)."""
    sharding = None if isinstance(keys, jax.core.Tracer) else getattr(keys, "sharding", None)
    if groups == 1 or not isinstance(sharding, NamedSharding):
        return None
    mesh = sharding.mesh
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1 or mesh.devices.size != groups:
        return None
    return mesh if sharding.spec == PartitionSpec(mesh.axis_names[0]) else None


def _extra(models, sample_weights, validation) -> tuple:
    """`()`, or `(own, shared)`: the run's keyword arguments given, each member's own
    stacked (`model`, `sample_weight`) and those all share (`validation`)."""
    own = {name: v for name, v in (("model", models), ("sample_weight", sample_weights)) if v is not None}
    shared = {} if validation is None else {"validation": validation}
    return (own, shared) if own or shared else ()


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _run_sweep(run, per_member_data, groups, one_by_one, mesh, params, states, x, y, keys, *extra_arg):
    """The members' runs; `extra_arg` empty, or `(own, shared)`: dicts of the members' own
    keyword arguments of the run, stacked (`model`: `sweep`'s `models`; `sample_weight`),
    and of those they share (`validation`); arguments only when given: a program lowered
    without them takes the five arguments it always took. `mesh`: None, or the devices
    the groups are sharded over, one group each (`_groups_mesh`)."""
    models, shared = extra_arg if extra_arg else ({}, {})
    data_axis = 0 if per_member_data else None
    axes = (0, 0, data_axis, data_axis, 0, 0, None)  # of params, states, x, y, keys, models, shared

    def one(params, state, x, y, key, extra, shared):
        return run(params, state, x, y, key=key, **extra, **shared)

    if not one_by_one:
        return jax.vmap(one, in_axes=axes)(params, states, x, y, keys, models, shared)

    def group(params, states, x, y, keys, models, shared):  # one group's members, one after another
        if per_member_data:
            return lax.map(lambda member: one(*member, shared), (params, states, x, y, keys, models))
        return lax.map(
            lambda member: one(member[0], member[1], x, y, member[2], member[3], shared),
            (params, states, keys, models),
        )

    def alone(params, states, x, y, keys, models, shared):  # a block of one group, unbatched
        first = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
        params, states, keys, models = first((params, states, keys, models))
        if per_member_data:
            x, y = x[0], y[0]
        return jax.tree.map(lambda a: a[None], group(params, states, x, y, keys, models, shared))

    members = jnp.shape(keys)[0]
    if members % groups:
        raise ValueError(
            f"vmapped: {members} members do not split into {groups} equal groups; pad them (see spread)"
        )
    split = lambda a: a.reshape((groups, -1) + a.shape[1:])  # noqa: E731
    params, states, keys, models = jax.tree.map(split, (params, states, keys, models))
    if per_member_data:
        x, y = split(x), split(y)
    arguments = (params, states, x, y, keys, models, shared)
    if groups == 1:  # the products unbatched: XLA compiles a batch of one as a batch
        out = alone(*arguments)
    elif mesh is not None:  # each device its own group, unbatched
        own, replicated = PartitionSpec(mesh.axis_names[0]), PartitionSpec()
        data = own if per_member_data else replicated
        specs = (own, own, data, data, own, own, replicated)
        out = jax.shard_map(alone, mesh=mesh, in_specs=specs, out_specs=own, check_vma=False)(*arguments)
    else:
        out = jax.vmap(group, in_axes=axes)(*arguments)
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)


def spread(tree, devices: Optional[Sequence[jax.Device]] = None):
    """Shard a tree of stacked members over devices along its leading axis.

    The member count is padded to a multiple of the device count by repeating
    the last member; drop the padding from results with `a[:members]`.
    With one device the tree is returned as it is.
    """
    devices = _check_devices("spread", devices)
    members = _members("spread", tree, "tree")
    if len(devices) == 1:
        return tree
    size = -(-members // len(devices)) * len(devices)

    def pad(a):
        a = np.asarray(jax.random.key_data(a)) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
        return np.concatenate([a, np.repeat(a[-1:], size - members, axis=0)])

    def put(a):
        padded = pad(a)
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            padded = jax.random.wrap_key_data(padded, impl=jax.random.key_impl(a))
        return jax.device_put(padded, sharding)

    sharding = NamedSharding(Mesh(np.array(devices), ("members",)), PartitionSpec("members"))
    return jax.tree.map(put, tree)


def _check_devices(owner, devices) -> list:
    devices = jax.local_devices() if devices is None else devices
    if (
        not isinstance(devices, (list, tuple))
        or not devices
        or not all(isinstance(d, jax.Device) for d in devices)
    ):
        raise TypeError(
            f"{owner}: devices must be a non-empty list of jax devices "
            f"(e.g. jax.local_devices()), got {devices!r}"
        )
    if len(set(devices)) != len(devices):
        raise ValueError(f"{owner}: devices must be distinct, got {list(devices)} (a device more than once)")
    return list(devices)


def _leading(leaf) -> Optional[int]:
    """A leaf's leading (member) size, None for a scalar."""
    return jnp.shape(leaf)[0] if jnp.ndim(leaf) else None


def _members(owner, tree, name, members=None) -> int:
    """The common leading size of `tree`'s leaves (`members`, the keys' count, if given);
    raise if they differ."""
    of_keys = members is not None
    if not jax.tree.leaves(tree):
        raise ValueError(
            f"{owner}: {name} has no arrays (no leaves) to stack members on, got {describe(tree)}"
        )
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        size = _leading(leaf)
        if members is None:
            members = size
        if size is None or size != members:
            because = f" ({members} keys: one per member)" if of_keys else ""
            raise ValueError(
                f"{owner}: every leaf of {name} must be stacked on a leading "
                f"member axis of size {members}{because}, got "
                f"{name}{jax.tree_util.keystr(path)} of shape {jnp.shape(leaf)}"
            )
    return members


def _check_targets(x, y, params, per_member_data, run):
    """Raise ValueError naming the members whose concrete targets the run's loss refuses
    (for a run from `fnnet.train`, which knows its model and loss)."""
    model, loss, host = getattr(run, "model", None), getattr(run, "loss", None), whole(y)
    if model is None or loss is None or host is None:
        return

    def member(a):
        return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)

    one_x = member(x) if per_member_data else x
    n_outputs = jax.eval_shape(model.apply, jax.tree.map(member, params), one_x).shape[-1]
    sets = list(host) if per_member_data else [host]
    errors = {}
    for m, targets in enumerate(sets):
        try:
            check_targets(loss, targets, n_outputs)
        except ValueError as error:
            errors[m] = error
    if errors:
        first = next(iter(errors.values()))
        which = f" of member(s) {list(errors)}" if per_member_data else ""
        raise ValueError(f"sweep: y{which}: {first}")


def _check_schedules(run, opt_states, x, per_member_data) -> None:
    """A train run's lr schedule over the steps each member will take, from its own count
    (inside the sweep the counts are traced: the run cannot check them itself)."""
    opt, epochs = getattr(run, "optimizer", None), getattr(run, "epochs", None)
    counts = whole(opt_states.count) if isinstance(opt_states, OptState) else None
    if opt is None or epochs is None or counts is None or np.ndim(x) < 1 + per_member_data:
        return
    n, size = np.shape(x)[int(per_member_data)], getattr(run, "batch_size", None)
    steps = epochs * (1 if size is None else -(-n // size))
    check_schedule(opt, steps, counts)


def _check_values(members, x, y, params, opt_states, per_member_data, opt):
    """Raise ValueError naming the members whose data, params or hyperparameters (where
    concrete) are bad: NaN or infinite values, hyperparameters out of their range."""
    data = [("x", x, per_member_data), ("y", y, per_member_data)]
    data += [
        ("params" + jax.tree_util.keystr(path), leaf, True)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    for name, a, stacked in data:
        host = whole(a)
        if host is None or not np.issubdtype(host.dtype, np.inexact):
            continue
        bad = ~np.isfinite(host)
        if stacked and bad.any():
            which = np.flatnonzero(bad.reshape(members, -1).any(axis=1)).tolist()
            raise ValueError(f"sweep: {name} of member(s) {which} holds NaN or infinite values")
        if bad.any():
            raise ValueError(f"sweep: {name} holds {int(bad.sum())} NaN or infinite value(s)")
    if isinstance(opt_states, OptState) and opt is not None:  # the optimizer's own checks
        rules = opt.hyperparameters or {}
        for name, value in opt_states.hyperparams.items():
            host = whole(value)
            if host is None or name not in rules:
                continue
            ok = opt.valid({name: host.astype(np.float64)}, numpy=np)
            if not ok.all():
                which = np.flatnonzero(~ok).tolist()
                raise ValueError(
                    f"sweep: member(s) {which} have an invalid {name}: "
                    f"{host[which].tolist()} (it must be {rules[name].expected})"
                )


def _stacked_models(run, models, members):
    """`models`, one per member, as one model whose numbers are stacked `(M,)` arrays."""
    same_structure = getattr(run, "same_structure", None)
    if same_structure is None:
        raise TypeError(f"sweep: models needs a run from fnnet.train, got {describe(run)}")
    if not isinstance(models, (list, tuple)) or len(models) != members:
        raise ValueError(
            f"sweep: models must be a list of {members} models (one per member, as the keys), "
            f"got {f'a {type(models).__name__} of {len(models)}' if isinstance(models, (list, tuple)) else describe(models)}"
        )
    for m, model in enumerate(models):
        try:
            same_structure(model)
        except TypeError as error:
            raise TypeError(f"sweep: models[{m}]: {error}") from None
    for m, model in enumerate(models):
        for number in jax.tree.leaves(model):
            if not (is_real(number) or (np.ndim(number) == 0 and np.asarray(number).dtype.kind in "iuf")):
                raise TypeError(
                    f"sweep: models[{m}]: each number of a layer (a rate, a slope, a momentum, an "
                    f"eps) must be one number, got {describe(number)}"
                )
    dtype = jnp.result_type(float)
    return jax.tree.map(lambda *numbers: np.asarray(numbers, dtype), *models)


class SweepResult(NamedTuple):
    """What `sweep` returns, stacked over M members.

    params, opt_states: the members' final params and optimizer states.
    losses: `(M, epochs)`, each member's loss per epoch; for a run of `train` with
      metrics or early stopping, its history, each entry stacked (`"epochs"` `(M,)`: the
      epochs each member ran before it stopped, NaN recorded after).
    finite: `(M,)` bool: True where the member's every loss (of the epochs it ran) and
      param is finite
      and its hyperparameters are valid (checked on the device, so also for
      values traced inside `jit`, which no host check sees). A False member
      diverged or was given bad hyperparameters: do not read it as a result.
    """

    params: Any
    opt_states: Any
    losses: Array
    finite: Array


@jax.jit
def _finite(params, losses):
    # Per member; one given invalid hyperparameters has NaN losses (from `train`'s run).
    if isinstance(losses, dict):  # a history: the losses of the epochs each member ran
        loss = losses["loss"]
        if "epochs" in losses:
            ran = jnp.arange(loss.shape[-1])[None, :] < losses["epochs"][:, None]
            loss = jnp.where(ran, loss, 0)
        losses = loss
    return jax.vmap(lambda params, losses: _all_finite((params, losses)))(params, losses)


def _check_sample_weights(run, weights, members: int, n: int):
    """`(M, n)` weights, each member's checked as `fit` checks one `sample_weight` where
    concrete (traced, inside `jit`: a bad row gives its member NaN losses, flagged)."""
    if not _takes(run, "sample_weight"):
        raise TypeError(
            f"sweep: sample_weights needs a run that takes sample_weight= (from fnnet.train), got {describe(run)}"
        )
    if not (hasattr(weights, "shape") and hasattr(weights, "dtype")) and not isinstance(
        weights, (list, tuple)
    ):
        raise TypeError(f"sweep: sample_weights must be an array (M, n) of weights, got {describe(weights)}")
    if np.shape(weights) != (members, n):
        raise ValueError(
            f"sweep: sample_weights must have shape ({members}, {n}), one row per member, got {np.shape(weights)}"
        )
    if isinstance(weights, jax.core.Tracer):
        return weights
    host = np.asarray(weights)
    return np.stack([check_sample_weight(f"sweep: member {m}", row, n) for m, row in enumerate(host)])


def _takes(run, name: str) -> bool:
    """Whether `run` takes the keyword `name` (or any keyword)."""
    try:
        parameters = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return True  # a callable Python cannot inspect: let it answer
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def sweep(
    run: Callable,
    params,
    opt_states,
    x,
    y,
    *,
    keys,
    devices: Optional[Sequence[jax.Device]] = None,
    per_member_data: bool = False,
    models: Optional[Sequence[Layer]] = None,
    sample_weights=None,
    validation=None,
) -> SweepResult:
    """Train M members at once: `jax.vmap(run)` with members spread over devices.

    Args:
      run: `run(params, opt_state, x, y, *, key) -> (params, opt_state, losses)`,
        as made by `fnnet.train`.
      params, opt_states, keys: stacked on a leading member axis of size M
        (see `init_many`, and `jax.vmap(lambda p, lr: opt.init(p, lr=lr))` for
        hyperparameter grids).
      x, y: one data set shared by all members (any shape: a 3-D x is still
        shared), or, with `per_member_data=True`, one per member stacked
        `(M, n, ...)`.
      devices: where to run; default all local devices. Members are sharded
        over them (sweep members never communicate; see `spread`).
      per_member_data: x and y hold one data set per member.
      models: None (every member trains the run's model), or M models of the
        run's structure, one per member, differing in their numbers at most
        (Dropout's rate, BatchNorm's momentum and eps, LeakyReLU's slope,
        ELU's alpha: data, like the optimizer's hyperparameters), for a run
        from `fnnet.train`; all train in the run's one program.
      sample_weights: None, or `(M, n)`: each member's `sample_weight` (a
        run from `fnnet.train`), e.g. 0/1 masks of cross-validation folds, so
        every fold trains in one program; each row finite, >= 0, not all 0.
      validation: None, or `(x_val, y_val)` shared by every member (a run from
        `fnnet.train`): its loss and metrics recorded, and early stopping may
        watch them (`"val_loss"`).

    Returns:
      `SweepResult(params, opt_states, losses, finite)`, stacked over members;
      losses `(M, epochs)`, finite `(M,)`: see `SweepResult`. Before any work,
      concrete data, targets (for a run from `fnnet.train`) and
      hyperparameters are checked on the host, and a bad one raises
      ValueError naming its members; `finite` covers the rest
      (a member that diverged, values traced inside `jit`).

    Example:
      >>> keys = jax.random.split(jax.random.key(0), 4)
      >>> params = init_many(keys, model, x.shape)
      >>> states = jax.vmap(lambda p, lr: opt.init(p, lr=lr))(params, jnp.array([0.05, 0.1, 0.2, 0.5]))
      >>> run = fnnet.train(model, loss, opt, epochs=100)
      >>> result = sweep(run, params, states, x, y, keys=keys)
      >>> final = result.losses[result.finite, -1]  # the final losses of the members that trained
    """
    if not callable(run):
        raise TypeError(f"sweep: run must be a function such as fnnet.train(...), got {describe(run)}")
    if not isinstance(per_member_data, bool):
        raise TypeError(f"sweep: per_member_data must be True or False, got {per_member_data!r}")
    for name, a in (("x", x), ("y", y)):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"sweep: {name} must be an array, got {describe(a)}")
    members = check_keys("sweep", keys)
    _warn_of_vmapped_rbg("sweep", keys)
    sizes = {_leading(leaf) for leaf in jax.tree.leaves(params)}
    if len(sizes) == 1 and None not in sizes and sizes != {members}:  # the keys are the odd ones
        (count,) = sizes
        raise ValueError(
            f"sweep: keys holds {members} key(s), one per member, but params is stacked for "
            f"{count} members: pass {count} keys (jax.random.split(key, {count}))"
        )
    _members("sweep", params, "params", members)
    _members("sweep", opt_states, "opt_states", members)
    if per_member_data:
        _members("sweep", {"x": x, "y": y}, "the per-member data", members)
    devices = _check_devices("sweep", devices)
    _check_values(members, x, y, params, opt_states, per_member_data, getattr(run, "optimizer", None))
    _check_schedules(run, opt_states, x, per_member_data)
    _check_targets(x, y, params, per_member_data, run)
    stacked_models = None if models is None else _stacked_models(run, models, members)
    if sample_weights is not None:
        sample_weights = _check_sample_weights(
            run, sample_weights, members, np.shape(x)[int(per_member_data)]
        )
    if validation is not None:
        if not _takes(run, "validation"):
            raise TypeError(
                f"sweep: validation needs a run that takes validation= (from fnnet.train), got {describe(run)}"
            )
        if not (isinstance(validation, tuple) and len(validation) == 2):
            raise TypeError(f"sweep: validation must be a pair (x_val, y_val), got {describe(validation)}")
    stacked = (params, opt_states, keys, stacked_models, sample_weights) + ((x, y) if per_member_data else ())
    stacked = spread(stacked, devices)
    params, opt_states, keys, stacked_models, sample_weights = stacked[:5]
    if per_member_data:
        x, y = stacked[5:]
    out = vmapped(run, per_member_data, len(devices))(
        params, opt_states, x, y, keys, stacked_models, sample_weights, validation
    )
    params, opt_states, losses = jax.tree.map(lambda a: a[:members], out)
    return SweepResult(params, opt_states, losses, _finite(params, losses))
