"""Resuming `fit`: the run record a checkpoint stores, compared when a run resumes.

A run is its data, key, batch size, `jax_enable_x64`, the params and optimizer state
it starts from (digests), the model, loss and optimizer as their settings
(`_values.settings`: no code is read, a function is its qualified name) and the
user's `run_id`. An optimizer is recorded as how it steps (`opt.step`); its
hyperparameters are compared from the checkpoint's optimizer state.
"""

import os
import jax
import numpy as np

from fnnet._hosts import tree_digest
from fnnet._values import settings
from fnnet.checkpoint import load, load_best, read_metadata
from fnnet.stopping import from_record

RECORD = 6  # the record's version: checkpoints without it are refused, never misread
# (4: runs padded to buckets, shuffles of the padded samples: a run of 3 would not continue
# alike; 5: shuffles by one sort of random ranks and indices; 6: past 4096 samples too)


def run_record(
    model,
    loss,
    opt,
    params,
    opt_state,
    x,
    y,
    validation,
    batch_size,
    key,
    run_id,
    sample_weight=None,
    watching=None,
    shuffle=True,
) -> dict:
    """What defines a run, as JSON: compared by `differences` when it resumes. `watching`
    (`training.Watching`): the metrics recorded and the early stopping, as their settings;
    `shuffle` False recorded (each absent from a record without it, as before them)."""
    metrics, stopping = (), None
    if watching is not None:
        metrics, stopping = watching
    extra: dict = {}
    if metrics:
        extra["metrics"] = [settings(m) for m in metrics]
    if stopping is not None:
        extra["early_stopping"] = settings(stopping)
    if not shuffle:
        extra["shuffle"] = False
    return {
        **extra,
        "record": RECORD,
        "run_id": run_id,
        "n": int(x.shape[0]),
        "batch_size": batch_size,
        "key": [str(jax.random.key_impl(key)), np.asarray(jax.random.key_data(key)).tolist()],
        "data": tree_digest((x, y)),
        "sample_weight": None if sample_weight is None else tree_digest(sample_weight),
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
    "metrics": "metrics",
    "early_stopping": "early_stopping",
    "shuffle": "shuffle",
    "n": "the number of samples (n)",
    "batch_size": "batch_size",
    "key": "key",
    "data": "the data (x, y)",
    "sample_weight": "sample_weight",
    "validation": "the validation data",
    "x64": "jax_enable_x64",
    "model": "the model",
    "loss": "the loss",
    "optimizer": "the optimizer (its kind, update rule or lr schedule)",
    "start_params": "the initial params",
    "start_opt_state": "the initial optimizer state (its step count or buffers)",
}
_SHOWN = (
    "run_id",
    "metrics",
    "shuffle",
    "early_stopping",
    "n",
    "batch_size",
    "key",
    "x64",
    "model",
    "loss",
    "optimizer",
)  # by value


def differences(stored: dict, current: dict) -> list:
    """What differs between a checkpoint's run and this one, as phrases."""
    found = []
    for field, what in _WHAT.items():
        was, now = stored.get(field), current.get(field)
        if field == "shuffle":  # recorded only when False
            was, now = was is not False, now is not False
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


def refuse_to_overwrite(path) -> None:
    """Raise FileExistsError if `path` holds a file: a run started again on it would replace
    it with its first save (a checkpoint's epochs done, or a file of `save`'s or another's)."""
    if not os.path.lexists(path):
        return
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError):
        held = "a file that is not a checkpoint of fit (unreadable, truncated or foreign)"
    else:
        done = metadata.get("epochs_done") if isinstance(metadata, dict) else None
        held = f"a run with {done} epochs done" if isinstance(done, int) else "a checkpoint written by save"
    raise FileExistsError(
        f"fit: checkpoint {path!r} holds {held}; pass resume=True to continue a run of fit, "
        f"or overwrite=True to replace the file"
    )


def _refusal(path, why) -> ValueError:
    return ValueError(f"fit: cannot resume from {path!r}: {why}")


def resume(path, params, opt_state, record, epochs, steps_per_epoch, names, stopping, dtype):
    """`(params, opt_state, history, epochs_done, start_count, watch)` from the checkpoint
    at `path`, after checking that it is this run's: `history` `{name: list}` of the
    quantities `names` (`loss`, metrics, `val_` ones), `watch` the early stopping's state
    (`stopping` an EarlyStopping or None; its best params read from the checkpoint)."""
    metadata = read_metadata(path)
    stored = metadata.get("run") if isinstance(metadata, dict) else None
    if not isinstance(stored, dict):
        raise _refusal(path, "it holds no fit metadata (a file written by save, not by fit)")
    if stored.get("record") != RECORD:
        raise _refusal(
            path,
            "it was written by an earlier version of fnnet, whose run record cannot be compared; "
            "its params load with fnnet.load, but start the run again (resume=False) to train on",
        )
    found = differences(stored, record)
    if not found:  # the same model and optimizer: the arrays have this run's shapes
        loaded_params, loaded_state, metadata = load(path, params, opt_state)
        found = _hyperparam_differences(loaded_state, opt_state)
    if found:
        raise _refusal(
            path,
            f"it is another run's: {'; '.join(found)}. Resume with the same settings, or start a new checkpoint",
        )
    done = metadata.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise _refusal(path, f"corrupt metadata: epochs_done is {done!r}, not an int >= 0")
    if done > epochs:
        raise ValueError(f"fit: checkpoint {path!r} has {done} epochs done, more than epochs={epochs}")
    stored_metrics = metadata.get("metrics") or {}
    history = {}
    for name in names:
        values = {"loss": metadata.get("losses"), "val_loss": metadata.get("val_losses")}.get(
            name, stored_metrics.get(name) if isinstance(stored_metrics, dict) else None
        )
        if not (
            isinstance(values, list)
            and len(values) == done
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            what = {"loss": "losses", "val_loss": "val_losses"}.get(name, f"metrics[{name!r}]")
            raise _refusal(
                path, f"corrupt metadata: {what} must be a list of {done} numbers, got {values!r:.80}"
            )
        history[name] = values
    if record["validation"] is None and metadata.get("val_losses") != []:
        raise _refusal(
            path,
            f"corrupt metadata: val_losses must be a list of 0 numbers, got {metadata.get('val_losses')!r:.80}",
        )
    start, count = stored.get("start_count"), int(loaded_state.count)
    if not isinstance(start, int) or count != start + done * steps_per_epoch:
        raise _refusal(
            path,
            f"corrupt metadata: the optimizer took {count} steps, not the {done} epochs x "
            f"{steps_per_epoch} steps the metadata says (from step {start!r})",
        )
    watch = None
    if stopping is not None:
        best = load_best(path, params) if stopping.restore_best else None
        watch = from_record(metadata.get("early_stopping"), stopping, dtype, best)
        if watch is None or int(watch.epoch) != done:
            raise _refusal(
                path, f"corrupt metadata: early_stopping is {metadata.get('early_stopping')!r:.80}"
            )
    return loaded_params, loaded_state, history, done, start, watch


def _hyperparam_differences(stored_state, state) -> list:
    stored, given = stored_state.hyperparams, state.hyperparams
    return [
        f"{name} is {np.asarray(given[name])!s} now, {np.asarray(stored[name])!s} in the checkpoint's run"
        for name in sorted(stored)
        if name in given and not np.array_equal(np.asarray(stored[name]), np.asarray(given[name]))
    ]
