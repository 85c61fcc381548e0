"""`fit`: a compiled training run in chunks, with progress, checkpoints, resume and a NaN guard."""

import dataclasses
import os
import warnings
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import _resume
from fnnet._atomic import check_writable
from fnnet._checks import describe
from fnnet._hosts import on_writer
from fnnet._setup import HyperparameterMismatch, check_count, prepare_run, underflow_step
from fnnet._progress import Progress as _Progress
from fnnet.checkpoint import save_run
from fnnet.stopping import EarlyStopping, as_record, restored, start
from fnnet._loop import _runner, centers_of, prepare_watching, recorded_names

__all__ = [
    "CheckpointError",
    "EarlyStoppingWithoutBest",
    "FitResult",
    "HyperparameterMismatch",
    "LearningRateUnderflow",
    "TrainingDiverged",
    "fit",
]

# Every call of the compiled loop runs this many epochs' worth of loop, the first `active`
# of them for real: one program for every setting, so the bits cannot depend on them.
_CHUNK = 500
_PROGRESS_UPDATES = 20  # with a progress bar, an update (and NaN check) at least this often a run


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """What `fit` returns; it unpacks as `params, opt_state, losses, val_losses`.

    params: the trained params (with any `State`, e.g. BatchNorm's running statistics):
      with `EarlyStopping(restore_best=True)`, those of the best epoch (`best_epoch`);
    opt_state: the optimizer state after the last step (resume from it);
    losses: `(epochs_run,)` NumPy, each epoch's training loss (before its steps);
    val_losses: `(epochs_run,)` NumPy, each epoch's validation loss (after it), or None;
    metrics: `{name: (epochs_run,)}` NumPy, each metric on the training data after each
      epoch (in inference mode); empty without `metrics=`;
    val_metrics: the same on the validation data, or None without it;
    best_epoch: with early stopping, the epochs run to the params of the best monitored
      value (a run of that many epochs has them; for "loss", measured before each epoch's
      steps, one less than the epoch that recorded it), else None (or none finite);
    stopped_epoch: the epochs run when early stopping ended the run, else None.
    Printed, it is a one-line summary.
    """

    params: object
    opt_state: object
    losses: np.ndarray
    val_losses: Optional[np.ndarray]
    metrics: dict = dataclasses.field(default_factory=dict)
    val_metrics: Optional[dict] = None
    best_epoch: Optional[int] = None
    stopped_epoch: Optional[int] = None

    def __iter__(self) -> Iterator:
        return iter((self.params, self.opt_state, self.losses, self.val_losses))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):  # result[0] is params, as when FitResult was a tuple
        return (self.params, self.opt_state, self.losses, self.val_losses)[index]

    def __repr__(self):
        leaves = jax.tree.leaves(self.params)
        values = sum(int(np.size(leaf)) for leaf in leaves)
        loss = f"loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}" if len(self.losses) else "no epochs"
        val = (
            ""
            if self.val_losses is None or not len(self.val_losses)
            else (f", validation loss {self.val_losses[-1]:.4g}")
        )
        last = {**self.metrics, **{"val_" + k: v for k, v in (self.val_metrics or {}).items()}}
        shown = "".join(f", {name} {v[-1]:.4g}" for name, v in last.items() if len(v))
        stop = "" if self.stopped_epoch is None else f", stopped after {self.stopped_epoch}"
        best = "" if self.best_epoch is None else f", best epoch {self.best_epoch}"
        return (
            f"FitResult({len(self.losses)} epochs, {loss}{val}{shown}{best}{stop}; params: "
            f"{len(leaves)} arrays, {values} values)"
        )


class TrainingDiverged(FloatingPointError):
    """The loss, the params or the optimizer state became non-finite.

    Attributes: `epoch` (the first epoch whose loss was not finite, or whose
    step made the params or optimizer state non-finite); `params` and
    `opt_state`, the last ones whose loss was finite: those at the start of
    epoch `start_epoch` (`start_epoch` epochs in, so the loss at them is that
    of epoch `start_epoch`); `losses`, the `start_epoch` losses before them.
    """

    def __init__(self, message, epoch, start_epoch, params, opt_state, losses):
        super().__init__(message)
        self.epoch, self.start_epoch = epoch, start_epoch
        self.params, self.opt_state, self.losses = params, opt_state, losses


class CheckpointError(OSError):
    """A checkpoint could not be written mid-run (a full disk); training stopped there.

    An OSError with the failed write's errno. Attributes: `epoch` (epochs
    done), `params` (with early stopping's restore_best, the best so far),
    `opt_state`, `losses` and `val_losses` (None without validation data) of
    the run up to then: what `FitResult` would hold.
    """

    def __init__(self, message, *, errno, epoch, params, opt_state, losses, val_losses):
        super().__init__(errno, message) if errno else super().__init__(message)
        self.epoch, self.params, self.opt_state = epoch, params, opt_state
        self.losses, self.val_losses = losses, val_losses


class EarlyStoppingWithoutBest(UserWarning):
    """Early stopping's monitored quantity was never finite (a NaN or infinite validation
    loss, a metric of your own giving NaN): the run has no best epoch."""


class LearningRateUnderflow(UserWarning):
    """The learning rate decays to exactly 0.0 before the run ends: the epochs after
    that change nothing."""


def fit(
    model,
    loss,
    opt,
    params,
    x,
    y,
    epochs: int,
    *,
    batch_size: Optional[int] = None,
    key=None,
    progress: bool = True,
    opt_state=None,
    validation=None,
    checkpoint=None,
    checkpoint_every: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    mesh=None,
    run_id: Optional[str] = None,
    sample_weight=None,
    metrics=None,
    early_stopping: Optional[EarlyStopping] = None,
    shuffle: bool = True,
) -> FitResult:
    """Train `model` on `(x, y)` for `epochs` epochs in a compiled loop.

    Epochs run a chunk at a time in one compiled program (a loop of 500
    epochs, of which each call runs the first few or all); between chunks the
    progress bar moves, a checkpoint is written and the run is checked for
    NaN. Every setting runs the same program, so on one device the result
    does not change by a bit with `progress`, `checkpoint` or
    `checkpoint_every`, nor when a run is resumed. Programs are cached by
    configuration: a second `fit` with the same model, loss and optimizer
    kind and shapes does not recompile, whatever its hyperparameters and
    epochs.

    Args:
      model, loss, opt: a Layer, a Loss, an Optimizer.
      params: initial params, the tree `model.init` gives: trainable leaves
        floating point (float32, float64, bfloat16, float16), all finite.
      x: `(n, n_in)` floating point; y: real targets, `(n, ...)`.
      epochs: number of passes over the data.
      batch_size: None for full batch; else minibatches reshuffled every epoch
        from `key` (in the samples' order with `shuffle=False`), the last one
        smaller when `batch_size` does not divide n: every sample once per epoch.
      key: one JAX PRNG key (default `jax.random.key(0)`): the shuffles and
        the draws of layers such as Dropout.
      progress: show a tqdm bar (if tqdm is installed) with the loss, the validation
        loss and the metrics; where stderr is not a terminal, plain lines instead (one
        at most every 10 s, and one at the end).
      opt_state: a state to start from; default `opt.init(params)`.
      validation: optional `(x_val, y_val)`; its loss is recorded each epoch.
      checkpoint: a path; its folder must be writable (checked before
        training). The run is saved there at the end and, with
        `checkpoint_every`, at most that many epochs after the last save (or
        the resume point): params, opt_state, and metadata with the epochs
        done, the losses and what defines the run.
      resume: continue from `checkpoint` if it exists (else start fresh). The
        checkpoint must come from the same run: the same data (x, y and
        validation), key, batch_size, initial params and opt_state, model,
        loss, optimizer and hyperparameters, `jax_enable_x64` and `run_id` (a
        mismatch raises ValueError naming it, before any training); `epochs`
        may grow, and `progress`, `checkpoint_every` and `mesh` may change.
        On the same device the result is bitwise that of an uninterrupted run.
        Functions of your own (a layer's, an initializer) are compared by their
        qualified names only, not their code: after changing one, start anew.
      mesh: a `jax.sharding.Mesh` for data-parallel training (see `train`).
      overwrite: replace the file at `checkpoint` when not resuming (without it, any
        file there is refused, a checkpoint's epochs named: finished work is never lost).
      run_id: an optional name of the run, recorded in the checkpoint and
        compared on resume.
      sample_weight: None, or `(n,)` weights >= 0 (finite, not all 0), one per
        sample of x: each batch's loss is the weighted mean of its samples'
        (as scikit-learn's `fit(X, y, sample_weight)`), the epoch's loss the
        weighted mean over all of them; a sample of weight 0 takes no part
        (BatchNorm's statistics count each sample of weight > 0 once, whatever
        its weight). Scaled to a largest weight of 1 (the same weighted means);
        recorded in the checkpoint (a digest).
      metrics: None, or names (`"accuracy"`, `"mse"`, `"mae"`, `"r2"`) or `Metric`s
        computed after each epoch inside the compiled loop, in inference mode, on the
        training data (weighted by `sample_weight`) and on `validation`: an extra
        forward pass over each per epoch. Shown by the progress bar, returned per
        epoch in `FitResult.metrics` / `.val_metrics`.
      early_stopping: None, or a `fnnet.EarlyStopping`: the run ends once its
        monitored quantity (`"val_loss"`, `"loss"`, a metric's name or `"val_"` and
        one) has not improved for `patience` epochs, decided inside the compiled loop;
        a checkpointed, killed and resumed run stops where the uninterrupted one does,
        with the same bits (the checkpoint holds the last params, where a resume goes
        on, and the best ones: `fnnet.load_best(path, params)`).

    Returns:
      FitResult: unpacks as `params, opt_state, losses, val_losses`; also `metrics`,
      `val_metrics`, `best_epoch`, `stopped_epoch`.

    Raises:
      TypeError, ValueError: bad input (checked before any training).
      OSError: the checkpoint cannot be written (checked before training).
      TrainingDiverged: the loss, params or optimizer state went NaN or
        infinite; it carries the last params whose loss was finite.
      CheckpointError: a checkpoint failed mid-run; it carries the run so far.

    Warns:
      LearningRateUnderflow: the learning rate decays to exactly 0.0 within
        the run (e.g. `SGD(0.1, decay=0.5)` for 300 epochs).
    """
    setup = prepare_run(
        "fit",
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
        validation,
        sample_weight,
        stops_early=early_stopping is not None,
    )
    epochs, key, size, opt_state = setup.epochs, setup.key, setup.batch_size, setup.opt_state
    steps_per_epoch = setup.steps_per_epoch
    validate, validation = validation is not None, setup.validation
    watching = prepare_watching("fit", metrics, early_stopping, model, loss, params, setup)
    stopping, dtype = watching.stopping, jnp.result_type(float)
    if checkpoint_every is not None:
        checkpoint_every = check_count("fit: checkpoint_every", checkpoint_every)
    for name, flag in (
        ("resume", resume),
        ("overwrite", overwrite),
        ("shuffle", shuffle),
        ("progress", progress),
    ):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"fit: {name} must be True or False, got {describe(flag)}")
    if run_id is not None and not isinstance(run_id, str):
        raise TypeError(f"fit: run_id must be None or a str naming the run, got {describe(run_id)}")
    if (checkpoint_every or resume) and checkpoint is None:
        raise ValueError("fit: checkpoint_every and resume need a checkpoint path")
    spec: Optional[dict] = None
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(
                f"fit: checkpoint must be a path (a str or os.PathLike), got {describe(checkpoint)}"
            )
        checkpoint = os.fspath(checkpoint)
        check_writable(checkpoint, "fit")
        if not (resume or overwrite):
            _resume.refuse_to_overwrite(checkpoint)
        spec = _resume.run_record(
            model,
            loss,
            opt,
            params,
            opt_state,
            setup.x,
            setup.y,
            validation,
            size,
            key,
            run_id,
            setup.sample_weight,
            watching,
            bool(shuffle),
        )
    names = recorded_names(watching, validate)
    history: dict = {name: [] for name in names}
    done = 0
    watch = None if stopping is None else start(stopping, params, dtype)
    if resume and spec is not None and os.path.exists(checkpoint):
        params, opt_state, history, done, spec["start_count"], watch = _resume.resume(
            checkpoint, params, opt_state, spec, epochs, steps_per_epoch, names, stopping, dtype
        )
    stopped = watch is not None and bool(watch.stopped)
    _warn_underflow(opt, opt_state, (epochs - done) * steps_per_epoch, done, steps_per_epoch)

    run = _runner(mesh)
    centers = centers_of(watching, setup)

    def run_chunk(params, opt_state, count, watch):
        return run(
            model,
            loss,
            opt.step,
            size,
            bool(shuffle),
            _CHUNK,
            watching.static(),
            params,
            opt_state,
            setup.data,
            key,
            setup.validation_data,
            np.int32(count),
            watch,
            centers,
        )

    claimed = resume or overwrite  # a new run's first save refuses a file that appeared meanwhile

    def saved():
        nonlocal claimed
        _save(checkpoint, params, opt_state, epochs, history, validate, spec, watch, not claimed)
        claimed = True

    bar = _Progress(epochs, done) if progress else None
    updates = 1 if bar is None else _PROGRESS_UPDATES
    plan = iter(() if stopped else _chunks(done, epochs, checkpoint_every, checkpoint is not None, updates))
    starts = [(params, opt_state, done, watch)]  # the starts of the last two chunks, for a replay
    try:
        following = next(plan, None)
        new = None if following is None else run_chunk(params, opt_state, following[0], watch)
        while following is not None:
            count, save_after = following
            chunk = new
            assert chunk is not None  # queued by the previous turn
            following = next(plan, None)
            if following is not None:  # queued behind this one: the device needs no host to go on
                new = run_chunk(chunk.params, chunk.opt_state, following[0], chunk.watch)
            if chunk.watch is not None:
                stopped = bool(chunk.watch.stopped)
                count = int(chunk.watch.epoch) - done
            chunk_losses = np.asarray(chunk.losses)[:count]
            if not (np.all(np.isfinite(chunk_losses)) and bool(chunk.finite)):
                losses = history["loss"] + chunk_losses.tolist()
                raise _diverged(run_chunk, starts, losses, count, loss, steps_per_epoch)
            params, opt_state, watch = chunk.params, chunk.opt_state, chunk.watch
            records = {"loss": chunk.losses, "val_loss": chunk.val_losses, **chunk.metrics}
            for name in names:
                history[name] += np.asarray(records[name])[:count].tolist()
            done += count
            starts = [starts[-1], (params, opt_state, done, watch)]
            if bar is not None:
                last = {name: values[-1] for name, values in history.items() if values}
                bar.update(done, last, stopped)
            if checkpoint is not None and (save_after or stopped):
                saved()
            if stopped:
                break
    finally:
        if bar is not None:
            bar.close()
    best_epoch = None if watch is None else int(watch.best_epoch)
    if stopping is not None and best_epoch == -1 and done:
        warnings.warn(
            f"fit: early stopping's {stopping.monitor!r} was never finite in {done} epochs: no best "
            f"epoch, the params are the last ones",
            EarlyStoppingWithoutBest,
            stacklevel=2,
        )
    params = restored(watch, params)
    return FitResult(
        params,
        opt_state,
        _as_losses(history["loss"]),
        _as_losses(history["val_loss"]) if validate else None,
        {m.name: _as_losses(history[m.name]) for m in watching.metrics},
        {m.name: _as_losses(history["val_" + m.name]) for m in watching.metrics} if validate else None,
        None if best_epoch == -1 else best_epoch,
        done if stopped else None,
    )


def _as_losses(values) -> np.ndarray:
    """Losses as NumPy in the dtype the training loop computes them in: float32, float64
    under jax_enable_x64 (as train's run returns them)."""
    return np.asarray(values, jnp.result_type(float))


def _chunks(done, epochs, checkpoint_every, checkpointing, updates=_PROGRESS_UPDATES):
    """`(count, save)` for each chunk from epoch `done` to `epochs`: at most `_CHUNK` epochs,
    at least `updates` chunks a run (progress updates: without a bar, 1, as each call of the
    program costs its call and the loop's skipped epochs), and with `checkpointing` a save
    at the end and at most `checkpoint_every` epochs after the last (or the start)."""
    every = max(1, -(-epochs // updates))
    last_save = done
    while done < epochs:
        count = min(_CHUNK, every, epochs - done)
        if checkpoint_every:
            count = min(count, last_save + checkpoint_every - done)
        done += count
        save = checkpointing and (
            done == epochs or bool(checkpoint_every) and done - last_save >= checkpoint_every
        )
        if save:
            last_save = done
        yield count, save


def _save(path, params, opt_state, epochs, history, validate, spec, watch, exclusive=False):
    losses = history["loss"]
    try:
        on_writer(  # with several processes, process 0 alone writes; the others wait
            save_run,
            path,
            params,
            opt_state,
            metadata={
                "epochs_done": len(losses),
                "epochs": epochs,
                "losses": losses,
                "val_losses": history.get("val_loss", []),
                "metrics": {k: v for k, v in history.items() if k not in ("loss", "val_loss")},
                "early_stopping": None if watch is None else as_record(watch),
                "run": spec,
            },
            best_params=None if watch is None else watch.best_params,
            exclusive=exclusive,
        )
    except OSError as error:
        raise CheckpointError(
            f"fit: training stopped at epoch {len(losses)}, as its checkpoint could not be "
            f"written ({error}); the error carries the params (the best ones, with early "
            f"stopping's restore_best), optimizer state and losses up to there",
            errno=error.errno,
            epoch=len(losses),
            params=restored(watch, params),
            opt_state=opt_state,
            losses=_as_losses(losses),
            val_losses=_as_losses(history["val_loss"]) if validate else None,
        ) from error


def _warn_underflow(opt, opt_state, steps, done, steps_per_epoch):
    if steps <= 0:
        return
    found = underflow_step(opt, opt_state, steps)
    if found is not None:
        step, dtype = found
        epoch = done + (step - int(opt_state.count)) // steps_per_epoch
        warnings.warn(
            f"fit: the learning rate underflows to 0.0 in {dtype} at step {step} "
            f"(epoch {epoch}): lr * decay**t (* schedule(t)) is exactly 0 from there "
            f"on, and the epochs after it change nothing; use a decay closer to 1 or "
            f"fewer epochs",
            LearningRateUnderflow,
            stacklevel=3,
        )


def _diverged(run_chunk, starts, losses, count, loss, steps_per_epoch=1):
    """The TrainingDiverged for a chunk of `count` epochs that went non-finite. `losses`
    are the run's losses, this chunk's last; an epoch of several steps records their
    losses, each before its step (so its loss may be non-finite from params the epoch's
    own steps made).

    The params at the start of epoch g are good when they, their optimizer state and the
    loss at them, losses[g], are finite. The first non-finite loss (or, if every loss is
    finite, the chunk's non-finite end) bounds the last good g; replays of the chunk (the
    same program, so the same bits) from its start, or the previous chunk's, then find
    the last g whose params and state are finite, by bisection: only after a divergence.
    """
    start = starts[-1][2]
    bad_loss = [start + i for i, value in enumerate(losses[start:]) if not np.isfinite(value)]
    epoch = bad_loss[0] if bad_loss else start + count - 1
    good = epoch - 1 if bad_loss else epoch
    for params, opt_state, at, watch in reversed(starts):
        if at > good:
            continue
        low, high, best = at, good, (params, opt_state)  # the state at `at` is finite
        while low < high:  # the last g in [low, high] whose params and state are finite
            middle = (low + high + 1) // 2
            new = run_chunk(params, opt_state, middle - at, watch)
            if bool(new.finite):
                low, best = middle, (new.params, new.opt_state)
            else:
                high = middle - 1
        if bad_loss:
            what = f"the loss became non-finite at epoch {epoch} (loss {losses[epoch]})"
        else:  # the step of epoch `low` made them non-finite
            epoch = low
            what = (
                f"the params or optimizer state became non-finite in epoch {epoch} (its "
                f"loss {losses[epoch]} was finite)"
            )
        return TrainingDiverged(
            f"fit: {what}; the error carries the last params whose loss and state were finite "
            f"({losses[low]}), those at the start of epoch {low}, and their optimizer state. "
            f"Try a smaller learning rate.",
            epoch=epoch,
            start_epoch=low,
            params=best[0],
            opt_state=best[1],
            losses=_as_losses(losses[:low]),
        )
    params, opt_state, at, _ = starts[0]
    what = f"the loss became non-finite at epoch {epoch} (loss {losses[epoch]})"
    if steps_per_epoch > 1:  # its steps' losses: the start's, or params its own steps made
        why = (
            f"an epoch's loss is its {steps_per_epoch} minibatches' losses, each before its "
            f"step, so the params went non-finite within the epoch (or the loss was not finite "
            f"even at the params this run started from): the error carries those (epoch "
            f"{at}), the last known finite. Try a smaller learning rate"
        )
    else:
        why = (
            f"the loss is not finite even at the params this run started from (epoch {at}): "
            f"the error carries those, and no params with a finite loss"
        )
    return TrainingDiverged(
        f"fit: {what}; {why}{loss.non_finite_hint}",
        epoch=epoch,
        start_epoch=at,
        params=params,
        opt_state=opt_state,
        losses=_as_losses(losses[:at]),
    )
