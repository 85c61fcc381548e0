"""Resuming `fit`: the run record a checkpoint stores, compared when a run resumes.

A run is defined by its data, key, batch size, `jax_enable_x64`, the params and
optimizer state it starts from (digests), the model, loss and optimizer as their
settings, and the user's `run_id`. Settings are written by `settings`: a layer,
loss or schedule (a dataclass) as its type and compared fields, a function as its
qualified name (its code is not read: a function of your own that changes under
the same name is the same function), a number by its repr. No code is inspected.
An optimizer is written as how it steps (`opt.step`); its hyperparameters are
compared from the checkpoint's optimizer state.
"""

import dataclasses
import hashlib

import jax
import numpy as np

from fnnet._hosts import whole
from fnnet.checkpoint import load

RECORD = 3  # the record's version: checkpoints without it are refused, never misread


def settings(value) -> str:
    """`value` as text, the same in every process for equal settings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{f.name}={settings(getattr(value, f.name))}" for f in dataclasses.fields(value) if f.compare
        )
        return f"{type(value).__qualname__}({fields})"
    if isinstance(value, (tuple, list)):
        return f"({', '.join(settings(v) for v in value)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {settings(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, np.dtype):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    name = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(name, str):
        return f"{getattr(value, '__module__', None)}.{name}"
    return type(value).__qualname__


def tree_digest(tree) -> str:
    """A hash of a pytree's leaves: their paths, dtypes, shapes and values (of a leaf spread
    over several processes, its shape and dtype only: every process comes to one hash)."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        values = whole(leaf)
        dtype, shape = (leaf.dtype, leaf.shape) if values is None else (values.dtype, values.shape)
        hasher.update(f"{jax.tree_util.keystr(path)}: {dtype}{list(shape)};".encode())
        if values is not None:
            hasher.update(np.ascontiguousarray(values).tobytes())
    return hasher.hexdigest()[:32]


def run_record(model, loss, opt, params, opt_state, x, y, validation, batch_size, key, run_id) -> dict:
    """What defines a run, as JSON: compared by `differences` when it resumes."""
    return {
        "record": RECORD,
        "run_id": run_id,
        "n": int(x.shape[0]),
        "batch_size": batch_size,
        "key": [str(jax.random.key_impl(key)), np.asarray(jax.random.key_data(key)).tolist()],
        "data": tree_digest((x, y)),
        "validation": None if validation is None else tree_digest(tuple(validation)),
        "x64": bool(jax.config.read("jax_enable_x64")),
        "model": settings(model),
        "loss": settings(loss),
        "optimizer": settings(opt.step),
        "start_params": tree_digest(params),
        "start_opt_state": tree_digest(opt_state._replace(hyperparams={})),
        "start_count": int(opt_state.count),
    }


_WHAT = {  # field -> how an error names it
    "run_id": "run_id",
    "n": "the number of samples (n)",
    "batch_size": "batch_size",
    "key": "key",
    "data": "the data (x, y)",
    "validation": "the validation data",
    "x64": "jax_enable_x64",
    "model": "the model",
    "loss": "the loss",
    "optimizer": "the optimizer (its kind, update rule or lr schedule)",
    "start_params": "the initial params",
    "start_opt_state": "the initial optimizer state (its step count or buffers)",
}
_SHOWN = ("run_id", "n", "batch_size", "key", "x64", "model", "loss", "optimizer")  # by value


def differences(stored: dict, current: dict) -> list:
    """What differs between a checkpoint's run and this one, as phrases."""
    found = []
    for field, what in _WHAT.items():
        was, now = stored.get(field), current[field]
        if was == now:
            continue
        if field == "validation" and (was is None) != (now is None):
            found.append(
                f"validation data {'given now, none' if was is None else 'none now, given'} in the checkpoint's run"
            )
        elif field in _SHOWN:
            found.append(f"{what} is {now} now, {was} in the checkpoint's run")
        else:
            found.append(f"{what} differ{'' if what.endswith('s') else 's'} from the checkpoint's run")
    return found


def _refusal(path, why) -> ValueError:
    return ValueError(f"fit: cannot resume from {path!r}: {why}")


def resume(path, params, opt_state, record, epochs, steps_per_epoch):
    """`(params, opt_state, losses, val_losses, epochs_done, start_count)` from the
    checkpoint at `path`, after checking that it is this run's."""
    loaded_params, loaded_state, metadata = load(path, params, opt_state)
    stored = metadata.get("run") if isinstance(metadata, dict) else None
    if not isinstance(stored, dict):
        raise _refusal(path, "it holds no fit metadata (a file written by save, not by fit)")
    if stored.get("record") != RECORD:
        raise _refusal(
            path,
            "it was written by an earlier version of fnnet, whose run record cannot be compared; "
            "its params load with fnnet.load, but start the run again (resume=False) to train on",
        )
    found = differences(stored, record) + _hyperparam_differences(loaded_state, opt_state)
    if found:
        raise _refusal(
            path,
            f"it is another run's: {'; '.join(found)}. Resume with the same settings, or start a new checkpoint",
        )
    done, losses, val_losses = (metadata.get(k) for k in ("epochs_done", "losses", "val_losses"))
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise _refusal(path, f"corrupt metadata: epochs_done is {done!r}, not an int >= 0")
    if done > epochs:
        raise ValueError(f"fit: checkpoint {path!r} has {done} epochs done, more than epochs={epochs}")
    for name, values, length in (
        ("losses", losses, done),
        ("val_losses", val_losses, 0 if record["validation"] is None else done),
    ):
        if not (
            isinstance(values, list)
            and len(values) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise _refusal(
                path, f"corrupt metadata: {name} must be a list of {length} numbers, got {values!r:.80}"
            )
    start, count = stored.get("start_count"), int(loaded_state.count)
    if not isinstance(start, int) or count != start + done * steps_per_epoch:
        raise _refusal(
            path,
            f"corrupt metadata: the optimizer took {count} steps, not the {done} epochs x "
            f"{steps_per_epoch} steps the metadata says (from step {start!r})",
        )
    return loaded_params, loaded_state, losses, val_losses, done, start


def _hyperparam_differences(stored_state, state) -> list:
    stored, given = stored_state.hyperparams, state.hyperparams
    return [
        f"{name} is {np.asarray(given[name])!s} now, {np.asarray(stored[name])!s} in the checkpoint's run"
        for name in sorted(stored)
        if name in given and not np.array_equal(np.asarray(stored[name]), np.asarray(given[name]))
    ]
