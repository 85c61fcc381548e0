"""`fit`: a compiled training run in chunks, with progress, checkpoints and a NaN guard."""

import math
import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.checkpoint import load, save
from fnnet.losses import check_targets
from fnnet.optim import check_schedule
from fnnet.train import _check_batch_size, _check_count, _check_samples, _runner, place

__all__ = ["fit", "FitResult", "TrainingDiverged"]

_PROGRESS_UPDATES = 20  # chunks per run when not checkpointing


class FitResult(NamedTuple):
    """params, opt_state; losses: `(epochs,)` numpy; val_losses: `(epochs,)` or None."""

    params: object
    opt_state: object
    losses: np.ndarray
    val_losses: Optional[np.ndarray]


class TrainingDiverged(FloatingPointError):
    """The loss or the params became non-finite; carries the last finite state.

    Attributes: `epoch` (the first epoch whose loss or result was not finite),
    `params` and `opt_state` (finite: those at the start of the failing chunk,
    `start_epoch` epochs in), `losses` (all finite losses up to `start_epoch`).
    """

    def __init__(self, message, epoch, start_epoch, params, opt_state, losses):
        super().__init__(message)
        self.epoch, self.start_epoch = epoch, start_epoch
        self.params, self.opt_state, self.losses = params, opt_state, losses


def _check_data(name_x, name_y, x, y):
    """Host-side checks before any work: types, lengths, finiteness."""
    for name, a in ((name_x, x), (name_y, y)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"fit: {name} must be an array, got {type(a).__name__}")
    _check_samples(x, y, "fit", (name_x, name_y))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"fit: {name_x} must be floating point, got dtype {x.dtype}; "
                        f"convert it, e.g. {name_x}.astype(jnp.float32)")
    for name, a in ((name_x, x), (name_y, y)):
        if jnp.issubdtype(a.dtype, jnp.inexact) and not np.all(np.isfinite(np.asarray(a))):
            bad = int(np.sum(~np.isfinite(np.asarray(a))))
            raise ValueError(f"fit: {name} holds {bad} NaN or infinite value(s)")


def _check_shapes(model, loss, params, name_x, name_y, x, y) -> int:
    """Trace (not run) the model and loss on all of `x`, `y`: params must fit the model, x the
    params, y the model's output. Returns the model's number of outputs."""
    out = jax.eval_shape(model.apply, params, x)
    try:
        jax.eval_shape(loss.value, out, y)
    except ValueError as error:
        raise ValueError(f"fit: {name_y} does not fit the model's output on {name_x}: "
                         f"{error}") from error
    return out.shape[-1]


def fit(model, loss, opt, params, x, y, epochs: int, batch_size: Optional[int] = None,
        key=None, progress: bool = True, *, opt_state=None, validation=None,
        checkpoint=None, checkpoint_every: Optional[int] = None, resume: bool = False,
        mesh=None) -> FitResult:
    """Train `model` on `(x, y)` for `epochs` epochs in a compiled loop.

    Epochs run inside one compiled loop, a chunk at a time (20 chunks, or
    `checkpoint_every` epochs each); between chunks the progress bar moves, a
    checkpoint is written and the loss is checked. The loop's length is part
    of the program (a GPU then runs it without asking the host each epoch),
    so a shorter last chunk compiles a second program. Compiled programs are
    cached by configuration, so a second `fit` with the same model, loss and
    optimizer kind, shapes and epochs does not recompile, whatever its
    hyperparameters.

    Args:
      model, loss, opt: a Layer, a Loss, an Optimizer.
      params: initial params.
      x: `(n, n_in)` floating point; y: targets, `(n, ...)`.
      epochs: number of passes over the data.
      batch_size: None for full batch; else minibatches reshuffled every epoch
        from `key` (default `jax.random.key(0)`), the last one smaller when
        `batch_size` does not divide n: every sample once per epoch.
      progress: show a tqdm bar (if tqdm is installed).
      opt_state: a state to start from; default `opt.init(params)`.
      validation: optional `(x_val, y_val)`; its loss is recorded each epoch.
      checkpoint: a path; with `checkpoint_every`, a checkpoint (params,
        opt_state, and metadata with the epoch and losses) is saved every that
        many epochs and at the end.
      resume: continue from `checkpoint` if it exists (else start fresh); the
        result equals that of an uninterrupted run. The params and optimizer
        state (hyperparameters included) come from the checkpoint; pass the
        same `key` as the first run, since it fixes the minibatch order.
      mesh: a `jax.sharding.Mesh` for data-parallel training (see `train`).

    Returns:
      FitResult(params, opt_state, losses, val_losses).

    Raises:
      TrainingDiverged: the loss went NaN or infinite; it carries the last
        finite params and optimizer state.
    """
    _check_count("fit: epochs", epochs)
    _check_data("x", "y", x, y)
    n_outputs = _check_shapes(model, loss, params, "x", "y", x, y)
    check_targets(loss, y, n_outputs)
    size = _check_batch_size(batch_size, x.shape[0])
    validate = validation is not None
    if validate:
        if not (isinstance(validation, tuple) and len(validation) == 2):
            raise TypeError("fit: validation must be a pair (x_val, y_val)")
        _check_data("x_val", "y_val", *validation)
        _check_shapes(model, loss, params, "x_val", "y_val", *validation)
        check_targets(loss, validation[1], n_outputs)
    if checkpoint_every is not None:
        _check_count("fit: checkpoint_every", checkpoint_every)
    if (checkpoint_every or resume) and checkpoint is None:
        raise ValueError("fit: checkpoint_every and resume need a checkpoint path")

    steps_per_epoch = 1 if size is None else -(-x.shape[0] // size)
    check_schedule(opt, epochs * steps_per_epoch)
    opt_state = opt.init(params) if opt_state is None else opt_state
    jax.eval_shape(opt.step, params, params, opt_state)  # traced, not run: a foreign state fails
    losses, val_losses, done = [], [], 0
    if resume and os.path.exists(checkpoint):
        params, opt_state, metadata = load(checkpoint, like=(params, opt_state))
        losses, val_losses = list(metadata["losses"]), list(metadata["val_losses"])
        done = metadata["epochs_done"]
        if done > epochs:
            raise ValueError(f"fit: checkpoint {checkpoint!r} has {done} epochs done, "
                             f"more than epochs={epochs}")

    key = jax.random.key(0) if key is None else key
    x, y = place(mesh, jnp.asarray(x), jnp.asarray(y), size)
    chunk = checkpoint_every or max(1, math.ceil(epochs / _PROGRESS_UPDATES))
    run = _runner(model, loss, opt, size, mesh)
    bar = _progress_bar(progress, epochs, done)

    def save_checkpoint():
        save(checkpoint, params, opt_state, metadata={
            "epochs_done": done, "epochs": epochs,
            "losses": losses, "val_losses": val_losses})

    try:
        while done < epochs:
            count = min(chunk, epochs - done)
            new = run(params, opt_state, x, y, key, count, validation)
            chunk_losses = np.asarray(new.losses).tolist()
            if not (np.all(np.isfinite(chunk_losses)) and bool(new.finite)):
                first = int(np.argmin(np.isfinite(chunk_losses))) if not np.all(
                    np.isfinite(chunk_losses)) else count - 1
                raise TrainingDiverged(
                    f"fit: the loss became non-finite at epoch {done + first} "
                    f"(loss {chunk_losses[first]}); the error carries the last finite params "
                    f"and optimizer state, from epoch {done}. Try a smaller learning rate.",
                    epoch=done + first, start_epoch=done, params=params,
                    opt_state=opt_state, losses=np.asarray(losses))
            params, opt_state = new.params, new.opt_state
            losses += chunk_losses
            if validate:
                val_losses += np.asarray(new.val_losses).tolist()
            done += count
            if bar is not None:
                bar.update(count)
                bar.set_postfix(loss=f"{chunk_losses[-1]:.4g}")
            if checkpoint is not None and (checkpoint_every and done % checkpoint_every == 0
                                           or done == epochs):
                save_checkpoint()
    finally:
        if bar is not None:
            bar.close()
    return FitResult(params, opt_state, np.asarray(losses, np.float32),
                     np.asarray(val_losses, np.float32) if validate else None)


def _progress_bar(progress, epochs, done):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, initial=done, unit="epoch", desc="fit")
