"""The one preparation of a training run, shared by `fit` and `train`'s run: every check
names the argument, what was expected and what came, and runs before any work.

Checks of values (finiteness, valid targets, hyperparameters) run where the values are
concrete; inside `vmap` or `jit` (a sweep) they are tracers and pass: `fnnet.sweep`
checks the stacked values (finiteness, targets, hyperparameters) before it vmaps, and
`Optimizer.valid` judges traced hyperparameters on the device.
"""

import dataclasses
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet._buckets import padded_samples, run_size, validation_size
from fnnet._checks import INT32_MAX, as_array, check_key, check_not_donated, describe, is_int
from fnnet._hosts import count_beyond, check_same_on_every_process, count_nonfinite
from fnnet.combinators import shape_mismatch
from fnnet.layers import Layer
from fnnet.losses import ONE_OUTPUT_HINT, Loss, check_targets, one_output_hint
from fnnet.optim import Optimizer, OptState, check_hyperparams, check_schedule, learning_rate, schedule_steps
from fnnet.state import trainable_mask


# Traced (not run) once per model structure, loss or step rule and shapes, then served from
# jit's cache: a search's every fit checks the same model again. The model is an argument
# (its numbers traced), the loss and the step rule static values.
traced_apply = jax.jit(lambda model, params, x: model.apply(params, x))
_traced_loss = jax.jit(lambda loss, y, target: loss.value(y, target), static_argnums=0)
_traced_step = jax.jit(lambda step, params, grads, state: step(params, grads, state), static_argnums=0)


class Setup(NamedTuple):
    """A checked run: the epochs (an int), x and y as arrays, one typed PRNG key, the
    batch size (None for full batch, also when it equals n), the steps per epoch, the
    optimizer state to start from, the validation pair (or None), and what the program
    runs on: `data`, `(x, y, weights)` padded (`fnnet._buckets`) and placed on the mesh
    (if any), and `validation_data` the same of the validation pair (or None); and the
    checked `sample_weight` (or None)."""

    epochs: int
    x: Any
    y: Any
    key: Any
    batch_size: Optional[int]
    steps_per_epoch: int
    opt_state: Any
    validation: Any
    data: Any
    validation_data: Any
    sample_weight: Any = None


def prepare_run(
    owner,
    model,
    loss,
    opt,
    params,
    opt_state,
    x,
    y,
    epochs,
    batch_size,
    key,
    mesh,
    validation=None,
    sample_weight=None,
    stops_early: bool = False,
) -> Setup:
    """Check a run's arguments, in the order a reader would, and prepare it (see `Setup`).

    `opt_state` None is `opt.init(params)`; `key` None is `jax.random.key(0)`;
    `validation` None or `(x_val, y_val)`, checked like `(x, y)`; `sample_weight` None
    or `(n,)` weights >= 0 (`check_sample_weight`). `stops_early`: `fit`'s run has an early
    stopping rule (its epochs a bound, run a chunk at a time: not past the int32 step
    count in practice; `train`'s one program loops over all its epochs).
    """
    check_kinds(owner, model, loss, opt)
    epochs = check_count(f"{owner}: epochs", epochs)
    key = _typed_key(owner, key)
    x, y = as_array(owner, "x", x), as_array(owner, "y", y)
    check_data(owner, "x", "y", x, y)
    check_param_dtypes(owner, params)
    n_outputs = check_shapes(owner, model, loss, params, "x", "y", x, y)
    check_params(owner, model, params, x)
    check_targets_of(owner, loss, "y", y, n_outputs)
    check_per_sample(owner, model, loss, params, x, y)
    size = check_batch_size(owner, batch_size, x.shape[0])
    sample_weight = check_sample_weight(owner, sample_weight, x.shape[0])
    if validation is not None:
        if not (isinstance(validation, tuple) and len(validation) == 2):
            raise TypeError(f"{owner}: validation must be a pair (x_val, y_val), got {describe(validation)}")
        validation = (as_array(owner, "x_val", validation[0]), as_array(owner, "y_val", validation[1]))
        check_data(owner, "x_val", "y_val", *validation)
        check_shapes(owner, model, loss, params, "x_val", "y_val", *validation)
        check_targets_of(owner, loss, "y_val", validation[1], n_outputs)
    counted = x.shape[0]
    if sample_weight is not None and not isinstance(sample_weight, jax.core.Tracer):
        counted = int(np.count_nonzero(sample_weight))  # the samples the device counts
    steps_per_epoch = 1 if size is None else -(-counted // size)
    opt_state = opt.init(params) if opt_state is None else opt_state
    if not isinstance(opt_state, OptState):
        raise TypeError(
            f"{owner}: opt_state must be an OptState, from opt.init(params), got {describe(opt_state)}"
        )
    if not stops_early:  # an early stopping rule ends a run of "as many epochs as it takes"
        check_step_range(owner, epochs, steps_per_epoch, opt_state.count)
    check_schedule(opt, epochs * steps_per_epoch, opt_state.count)  # the steps this run will take
    try:
        _traced_step.eval_shape(opt.step, params, params, opt_state)  # a foreign state fails
    except (TypeError, ValueError) as error:
        raise type(error)(f"{owner}: opt_state: {error}") from error
    check_hyperparams(opt, owner, opt_state)
    if owner == "fit":  # train's run takes a sweep's per-member states as they come
        _warn_of_other_hyperparams(owner, opt, opt_state)
    _non_finite(owner, "opt_state", opt_state)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"{owner}: mesh must be a jax.sharding.Mesh, got {describe(mesh)}")
    check_same_on_every_process(owner, mesh, {"params": params, "opt_state": opt_state})
    check_one_sample_steps(owner, model, params, x, size, key, mesh, counted)
    data = place(owner, mesh, x, y, size, sample_weight)
    validation_data = None
    if validation is not None:
        x_val, y_val = validation
        validation_data = place(owner, None, x_val, y_val, None, size=validation_size(x_val.shape[0]))
        if mesh is not None:  # inference on every device: replicated
            replicated = NamedSharding(mesh, PartitionSpec())
            validation_data = jax.device_put(validation_data, replicated)
    return Setup(
        epochs, x, y, key, size, steps_per_epoch, opt_state, validation, data, validation_data, sample_weight
    )


def _real(dtype) -> bool:
    """Real numbers: bool, integers or floats (bfloat16 and the other ml_dtypes too)."""
    return np.dtype(dtype).kind in "biu" or jnp.issubdtype(dtype, jnp.floating)


def check_sample_weight(owner, sample_weight, n):
    """`sample_weight` as a NumPy float64 array `(n,)` of finite weights >= 0, not all 0
    (None passes): each sample's weight in the loss, a weighted mean, as scikit-learn's
    `fit(X, y, sample_weight)` takes it."""
    if sample_weight is None:
        return None
    weights = as_array(owner, "sample_weight", sample_weight)
    if isinstance(weights, jax.core.Tracer):  # a sweep's member, its values unseen here
        if not _real(weights.dtype) or weights.shape != (n,):
            raise ValueError(
                f"{owner}: sample_weight must be real numbers of shape ({n},), got "
                f"{weights.dtype}{list(weights.shape)}"
            )
        weights = weights.astype(jnp.promote_types(weights.dtype, jnp.float32))
        largest = jnp.max(weights)
        valid = jnp.all(jnp.isfinite(weights)) & jnp.all(weights >= 0) & (largest > 0)
        return jnp.where(valid, weights / largest, jnp.nan)  # a bad row: NaN losses, flagged
    weights = np.asarray(weights)
    if not _real(weights.dtype):
        raise TypeError(f"{owner}: sample_weight must be real numbers, got dtype {weights.dtype}")
    if weights.shape != (n,):
        raise ValueError(
            f"{owner}: sample_weight must have shape ({n},), one weight per sample, got {weights.shape}"
        )
    weights = weights.astype(np.float64)
    if not np.all(np.isfinite(weights)):
        raise ValueError(
            f"{owner}: sample_weight holds {int(np.sum(~np.isfinite(weights)))} NaN or infinite value(s)"
        )
    if np.any(weights < 0):
        raise ValueError(f"{owner}: sample_weight must be >= 0, got a minimum of {weights.min()}")
    if not np.any(weights > 0):
        raise ValueError(f"{owner}: sample_weight is 0 for every sample: nothing to train on")
    # a weighted mean is the same for weights scaled alike: scaled to a largest of 1, they
    # neither overflow nor underflow float32; a weight below 2**-126 of the largest (which
    # the device would flush to 0 or could not hold) is 0, here as there
    weights = weights / weights.max()
    return np.where(weights < np.finfo(np.float32).tiny, 0.0, weights)


class HyperparameterMismatch(UserWarning):
    """The optimizer state given to a run holds other hyperparameters than the optimizer
    was built with: the state's values train (they are data in it)."""


def _warn_of_other_hyperparams(owner, opt, opt_state) -> None:
    """Warn, naming both, where a concrete state's hyperparameter differs from `opt`'s
    (`fit(opt=SGD(0.001), opt_state=<a state of SGD(0.5)>)` trains at 0.5)."""
    differ = []
    for name, hyper in (opt.hyperparameters or {}).items():
        value = opt_state.hyperparams.get(name) if isinstance(opt_state.hyperparams, dict) else None
        if value is None or isinstance(value, jax.core.Tracer) or jnp.ndim(value):
            continue  # traced or stacked (a sweep): the state's values are the point
        wanted = np.asarray(hyper.value, np.asarray(value).dtype)
        if not np.array_equal(np.asarray(value), wanted):
            differ.append(f"{name} {np.asarray(value)} in opt_state, {wanted} in {opt!r}")
    if differ:
        warnings.warn(
            f"{owner}: opt_state's hyperparameters differ from opt's ({'; '.join(differ)}): the "
            f"state's train. For opt's, pass opt_state=opt.init(params) (or none); for the "
            f"state's, build opt with them",
            HyperparameterMismatch,
            stacklevel=4,
        )


def check_kinds(owner, model, loss, *opt) -> None:
    """Raise TypeError unless model, loss and opt (where one is passed, None included) are a
    Layer, a Loss and an Optimizer."""
    kinds = [("model", model, Layer, "fnnet.serial(...)"), ("loss", loss, Loss, "fnnet.LossMSE()")]
    kinds += [("opt", o, Optimizer, "fnnet.SGD(lr=0.1)") for o in opt]
    for name, value, kind, example in kinds:
        if not isinstance(value, kind):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            raise TypeError(
                f"{owner}: {name} must be {article} {kind.__name__} (e.g. {example}), got {describe(value)}"
            )


def check_count(name, value) -> int:
    """`value` as an int; raise ValueError unless it is an integer >= 1 (not a bool)."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_step_range(owner, epochs: int, steps_per_epoch: int, count) -> None:
    """Raise ValueError unless the run's epochs and its last step count (from the state's
    `count`, where concrete) fit the device's int32 counters: a run without early
    stopping that would count past them."""
    start = 0 if isinstance(count, jax.core.Tracer) else int(count)
    last = start + epochs * steps_per_epoch
    if epochs > INT32_MAX or last > INT32_MAX:
        raise ValueError(
            f"{owner}: epochs={epochs} ({steps_per_epoch} step(s) each, from step {start}) would "
            f"count past step 2**31 - 1, the largest int32 the run counts its steps and epochs in; "
            f"train fewer epochs, or stop the run early (early_stopping=)"
        )


def check_batch_size(owner, batch_size, n) -> Optional[int]:
    """The batch size to run: None for full batch (also for `batch_size == n`)."""
    if batch_size is None:
        return None
    if not is_int(batch_size):
        raise TypeError(f"{owner}: batch_size must be an int or None, got {batch_size!r}")
    batch_size = int(batch_size)
    if not 1 <= batch_size <= n:
        raise ValueError(f"{owner}: batch_size must be in [1, {n}] (the number of samples), got {batch_size}")
    return None if batch_size == n else batch_size


def _typed_key(owner, key):
    """The run's key: `jax.random.key(0)` for None, a typed key for a raw one."""
    if key is None:
        return jax.random.key(0)
    key = check_key(owner, key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)  # an old-style raw key: the same key


def check_data(owner, name_x, name_y, x, y) -> None:
    """Types, lengths and, where concrete, finiteness (this process's part)."""
    for name, a in ((name_x, x), (name_y, y)):  # arrays: see as_array
        if jnp.ndim(a) < 1:
            raise ValueError(f"{owner}: {name} must have a leading sample axis, got shape {jnp.shape(a)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{owner}: {name_x} and {name_y} must have the same number of "
            f"samples, got {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{owner}: {name_x} is empty (0 samples)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{owner}: {name_x} must be floating point, got dtype {x.dtype}; "
            f"convert it, e.g. {name_x}.astype(jnp.float32)"
        )
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(
            f"{owner}: {name_y} must be real, got dtype {y.dtype}: the losses are defined on real targets"
        )
    if not (jnp.issubdtype(y.dtype, jnp.number) or jnp.issubdtype(y.dtype, jnp.bool_)):  # strings, objects
        raise TypeError(
            f"{owner}: {name_y} must hold numbers (bool, int or float), got dtype {y.dtype}; "
            f"encode class labels as integers, e.g. np.unique({name_y}, return_inverse=True)[1] "
            f"(fnnet.sklearn's classifiers take labels of any kind)"
        )
    for name, a in ((name_x, x), (name_y, y)):
        bad = count_nonfinite(a)
        if bad:
            raise ValueError(f"{owner}: {name} holds {bad} NaN or infinite value(s)")
        held = jax.dtypes.canonicalize_dtype(a.dtype)  # float64 is float32 on the device without x64
        if held != a.dtype and (
            jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
        ):
            beyond = count_beyond(a, held)
            if beyond:
                turned = "infinite" if jnp.issubdtype(a.dtype, jnp.floating) else "wrapped around"
                raise ValueError(
                    f"{owner}: {name} holds {beyond} value(s) beyond {held.name}'s range, in which JAX "
                    f"holds {a.dtype.name} data (jax_enable_x64 off): they would be {turned}; scale "
                    f"the data (standardize it, say)"
                )


def check_shapes(owner, model, loss, params, name_x, name_y, x, y) -> int:
    """Trace (not run) the model and loss on all of `x`, `y`: params must fit the model, x the
    params, y the model's output. Returns the model's number of outputs."""
    try:
        out = traced_apply.eval_shape(model, params, x)
    except (TypeError, ValueError) as error:
        if name_x == "x":  # the model's own words: the params or x, the shapes it names
            raise
        raise type(error)(f"{owner}: the model on {name_x}: {error}") from error
    try:
        _traced_loss.eval_shape(loss, out, y)
    except ValueError as error:
        found = shape_mismatch(model, params, x)  # a user's layer that broke its declared shape
        if found:
            raise ValueError(f"{owner}: {found}") from error
        message, hint = str(error), ""
        if one_output_hint(out, y):  # the fix named once, for name_y
            message = message.replace(ONE_OUTPUT_HINT, "")
            hint = f"; {name_y} has no output axis: pass {name_y}[:, None] (or {name_y}.reshape(-1, 1))"
        raise ValueError(
            f"{owner}: {name_y} does not fit the model's output on {name_x}: {message}{hint}"
        ) from error
    return out.shape[-1]


def check_per_sample(owner, model, loss, params, x, y, samples: int = 8) -> None:
    """Raise ValueError unless a loss of your own is a mean of per-sample terms: on the
    model's outputs for the first few samples, its value equals the mean of its values on
    each sample alone (the built-in losses are, by construction; concrete data only)."""
    if loss.per_sample:
        return
    if isinstance(x, jax.core.Tracer) or isinstance(y, jax.core.Tracer) or x.shape[0] < 2:
        return
    k = min(samples, x.shape[0])
    out = traced_apply(model, params, jax.device_put(np.asarray(x[:k])))
    target = jax.device_put(np.asarray(y[:k]))
    whole = float(loss.value(out, target))
    each = float(np.mean([float(loss.value(out[i : i + 1], target[i : i + 1])) for i in range(k)]))
    if not np.isclose(whole, each, rtol=1e-3, atol=1e-6 * max(1.0, abs(each))):
        raise ValueError(
            f"{owner}: the loss must be a mean over samples of per-sample terms (training weighs "
            f"and pads samples through it): on the first {k} samples its value is {whole:.6g}, the "
            f"mean of its values on each alone {each:.6g}; a loss of batch statistics or a sum is "
            f"not one"
        )


def check_targets_of(owner, loss, name_y, y, n_outputs) -> None:
    try:
        check_targets(loss, y, n_outputs)
    except ValueError as error:
        raise ValueError(f"{owner}: {name_y}: {error}") from error


def _non_finite(owner, name, tree, why="training must start from finite values") -> None:
    check_not_donated(owner, name, tree)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        bad = count_nonfinite(leaf)
        if bad:
            raise ValueError(
                f"{owner}: {name}{jax.tree_util.keystr(path)} holds {bad} NaN or infinite value(s); {why}"
            )


def check_param_dtypes(owner, params) -> None:
    """Every leaf an array, the trainable ones floating point."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), trainable in zip(paths, jax.tree.leaves(trainable_mask(params))):
        name = "params" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype"):
            raise TypeError(f"{owner}: {name} must be an array, got {describe(leaf)}")
        if trainable and not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{owner}: {name} has dtype {leaf.dtype}; trainable params must be "
                f"floating point (the gradient of an integer or a bool is zero or "
                f"undefined): convert them, e.g. jax.tree.map(lambda p: "
                f"p.astype(jnp.float32), params)"
            )


def _every_setting(value):
    """`value` as a hashable key of every setting it holds, those left out of equality
    (how a layer draws: `init`, `w_init`) included; a layer class of your own by identity."""
    if isinstance(value, tuple):
        return tuple(_every_setting(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value),) + tuple((f.name, _every_setting(getattr(value, f.name))) for f in fields)
    if isinstance(value, Layer):
        return (type(value), id(value))
    return value


_PARAMS_SPECS: dict = {}  # (every setting, shape) -> (model, spec): a search checks one model again


def _params_spec(model, shape):
    """The params `model.init` gives for inputs of `shape`, as shapes and dtypes (traced,
    not drawn), kept for the model's every setting (its structure alone leaves out `init`)."""
    try:
        key = (_every_setting(model), tuple(shape))
        hash(key)
    except TypeError:  # a setting that cannot be hashed: traced each time
        key = None
    if key in _PARAMS_SPECS:
        return _PARAMS_SPECS[key][1]
    spec = jax.eval_shape(lambda k: model.init(k, shape)[1], jax.random.key(0))
    if key is not None:
        if len(_PARAMS_SPECS) >= 256:
            _PARAMS_SPECS.clear()
        _PARAMS_SPECS[key] = (model, spec)  # the model kept: an id in the key stays its own
    return spec


def check_params(owner, model, params, x, why="training must start from finite values") -> None:
    """params: the tree and shapes `model.init` gives, all finite (else `why` they must be)."""
    try:  # on one sample of x (init's shapes depend on no more): kept for every n
        expected = _params_spec(model, (1,) + tuple(x.shape[1:]))
    except (TypeError, ValueError) as error:
        try:  # again on x's own shape, for the model's message to name it
            _params_spec(model, tuple(x.shape))
        except type(error) as own:
            error = own
        raise type(error)(f"{owner}: the model on x: {error}") from None
    got, want = jax.tree.structure(params), jax.tree.structure(expected)
    if got != want:  # type: ignore[operator]
        kinds = ""
        if type(params) is not type(expected) and isinstance(params, (list, tuple, dict)):
            kinds = f" (a {type(params).__name__} where model.init gives a {type(expected).__name__})"
        raise TypeError(f"{owner}: params must have the structure model.init gives{kinds}, {want}; got {got}")
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), spec in zip(paths, jax.tree.leaves(expected)):
        if jnp.shape(leaf) != spec.shape:
            raise ValueError(
                f"{owner}: params{jax.tree_util.keystr(path)} has shape "
                f"{jnp.shape(leaf)}, model.init gives {spec.shape}"
            )
    _non_finite(owner, "params", params, why)


def _shard_counts(n, batch_size, shards):
    """`(which, size, counts)` for each kind of step: the batch's real samples and how many
    of them each device holds, the run padded (`fnnet._buckets`: padding last, each
    device a contiguous slice of the batch)."""
    if batch_size is None:
        kinds = [("the batch", n, run_size(n, None, shards))]
    else:
        kinds = [("each batch", batch_size, batch_size)] if n >= batch_size else []
        if n % batch_size:
            kinds.append(("the last batch of each epoch", n % batch_size, batch_size))
    for which, real, slots in kinds:
        per = slots // shards
        yield which, real, [min(max(real - k * per, 0), per) for k in range(shards)]


def check_one_sample_steps(
    owner, model, params, x, batch_size, key, mesh: Optional[Mesh], counted: Optional[int] = None
) -> None:
    """Where a step gives a device one sample (a batch of 1, or one of a batch split over
    the devices), trace (not run) the model in training mode on one sample: a layer that
    cannot train on it (BatchNorm, on `(1, features)`) raises, named here with the batch
    and devices. `counted`: the samples of weight > 0 (all of x's by default), those the
    batches are made of (the others are sorted last, with the padding)."""
    n = x.shape[0] if counted is None else counted
    devices = 1 if mesh is None else mesh.shape[mesh.axis_names[0]]
    samples = f"n={n}" if n == x.shape[0] else f"{n} of x's {x.shape[0]} samples weigh > 0"
    for which, size, counts in _shard_counts(n, batch_size, devices):
        if 1 not in counts:
            continue
        one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)
        try:
            jax.eval_shape(lambda p, x1, k: model.apply(p, x1, train=True, key=k), params, one, key)
        except ValueError as error:
            if mesh is None:
                where = (
                    f"{which} is 1 sample ({samples}, batch_size={batch_size}), and the model needs at "
                    f"least 2 samples per batch"
                )
            else:
                where = (
                    f"{which} ({size} samples; {samples}, batch_size={batch_size}) split over {devices} "
                    f"devices (mesh axis {mesh.axis_names[0]!r}) gives a device 1 sample ({counts} "
                    f"each, the batch padded to whole devices), and the model needs at least 2 "
                    f"samples per device"
                )
            raise ValueError(f"{owner}: {where} to train: {error}") from error


def place(owner, mesh: Optional[Mesh], x, y, batch_size, sample_weight=None, size=None):
    """`(x, y, weights)` padded to the run's bucket (`fnnet._buckets`) and put on the mesh
    (a Mesh or None), sharded along its first axis; checks that every batch divides over
    the mesh and, with several processes, that every process passed the same x and y."""
    shards = 1
    if mesh is not None:
        check_same_on_every_process(f"{owner}: data-parallel training", mesh, {"x": x, "y": y})
        axis = mesh.axis_names[0]
        shards = mesh.shape[axis]
        if batch_size is not None and batch_size % shards:
            raise ValueError(
                f"{owner}: data-parallel training over {shards} devices (mesh axis {axis!r}) "
                f"needs every batch divisible by {shards}, got batch_size {batch_size} "
                f"(n={x.shape[0]}); pick a batch_size that is a multiple of {shards}"
            )
    size = run_size(x.shape[0], batch_size, shards) if size is None else size
    data = padded_samples(x, y, size, sample_weight)
    if mesh is None:  # device_put, not jnp.asarray: that compiles a copy for every shape
        return tuple(a if isinstance(a, jax.core.Tracer) else jax.device_put(a) for a in data)
    return jax.device_put(data, NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])))


# The step's own formula, t traced: one program whatever the step (a concrete t would
# make decay ** t an integer power, compiled anew for every run length).
_unscheduled_lr = jax.jit(lambda hyperparams, t: learning_rate(hyperparams, None, t))


def underflow_step(opt, opt_state, steps: int):
    """The first of the next `steps` steps whose learning rate is exactly 0.0, with that
    lr's dtype, or None: `optim.learning_rate`, the optimizers' own formula (a schedule's
    on the first 2**22 steps of a longer run)."""
    if not (isinstance(opt_state, OptState) and {"lr", "decay"} <= set(opt_state.hyperparams)):
        return None
    hyper = opt_state.hyperparams
    if opt.schedule is None and np.all(np.asarray(hyper["decay"]) == 1):
        return None  # a constant lr, checked > 0 when set
    start = int(opt_state.count)
    steps = min(steps, INT32_MAX - start)  # a run stopped early may be given more (check_step_range)
    if opt.schedule is None:  # lr * decay**t only falls with t: the first 0 by bisection
        last = _unscheduled_lr(hyper, jnp.int32(start + steps - 1))
        if float(last) != 0:
            return None
        low, high = start, start + steps - 1  # the lr at `high` is 0
        while low < high:
            middle = (low + high) // 2
            if float(_unscheduled_lr(hyper, jnp.int32(middle))) == 0:
                high = middle
            else:
                low = middle + 1
        return low, last.dtype
    with jax.ensure_compile_time_eval():
        t, steps = schedule_steps(start, steps)
        lrs = learning_rate(hyper, opt.schedule, t)
    zero = np.flatnonzero(np.asarray(lrs)[:steps] == 0)
    return (start + int(zero[0]), lrs.dtype) if zero.size else None
