"""fnnet.fit: it learns, compiles once per configuration, guards NaNs, checkpoints and resumes."""

import errno
import os
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, count_compilations, interrupt_on_checkpoint

import fnnet

from fnnet import fitting as fit_module

# One configuration for most tests, so compiled programs are shared between them.
MODEL = fnnet.serial(fnnet.Linear(2, 16), fnnet.Tanh(), fnnet.Linear(16, 1), fnnet.Sigmoid())
LOSS = fnnet.LossBCE()
EPOCHS = 12
EVERY = 3  # checkpoint_every in the checkpoint tests


def data(n=64, seed=1):
    return fnnet.data.disk(jax.random.key(seed), n)


def init(model=MODEL, seed=0):
    return model.init(jax.random.key(seed), (1, 2))[1]


def all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


@pytest.mark.slow
def test_fit_learns_the_disk_and_records_validation():
    x, y = data(256)
    x_val, y_val = data(256, seed=2)
    params = init()
    result = fnnet.fit(
        MODEL,
        LOSS,
        fnnet.SGD(lr=0.5, momentum=0.9),
        params,
        x,
        y,
        epochs=200,
        progress=False,
        validation=(x_val, y_val),
    )
    assert isinstance(result, fnnet.FitResult)
    assert result.losses.shape == (200,) and result.val_losses.shape == (200,)
    assert np.all(np.isfinite(result.losses)) and np.all(np.isfinite(result.val_losses))
    assert result.losses[-1] < 0.4 * result.losses[0]
    assert result.val_losses[-1] < 0.4 * result.val_losses[0]
    accuracy = np.mean((np.asarray(MODEL.apply(result.params, x_val)) > 0.5) == (y_val > 0.5))
    assert accuracy > 0.85
    # The last validation loss is that of the returned params.
    last = float(LOSS.value(MODEL.apply(result.params, x_val), y_val))
    np.testing.assert_allclose(result.val_losses[-1], last, rtol=1e-5)
    assert int(result.opt_state.count) == 200


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)], ids=["f32", "f64"])
def test_validation_loss_is_taken_after_each_epoch(dtype, rtol):
    """Validating on the training data, full batch: val_losses[i] is the loss after step i,
    which is the training loss before step i + 1."""
    model = fnnet.serial(
        fnnet.Linear(2, 16, dtype=dtype), fnnet.Tanh(), fnnet.Linear(16, 1, dtype=dtype), fnnet.Sigmoid()
    )
    x, y = (a.astype(dtype) for a in data(256))
    result = fnnet.fit(
        model,
        LOSS,
        fnnet.SGD(lr=0.5, momentum=0.9),
        init(model),
        x,
        y,
        epochs=200,
        progress=False,
        validation=(x, y),
    )
    assert {a.dtype for a in jax.tree.leaves((result.params, result.opt_state.slots))} == {np.dtype(dtype)}
    np.testing.assert_allclose(result.val_losses[:-1], result.losses[1:], rtol=rtol)


@jax.jit
def _manual_sgd_step(params, x, y, lr):
    value, grads = fnnet.value_and_grad(MODEL, LOSS)(params, x, y)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), value


def manual_sgd(params, x, y, lr, epochs):
    """Plain full-batch gradient descent, hand-written: (params, losses)."""
    losses = []
    for _ in range(epochs):
        params, value = _manual_sgd_step(params, x, y, np.float32(lr))
        losses.append(float(value))
    return params, np.asarray(losses, np.float32)


def test_one_program_for_every_setting_compiled_once(tmp_path):
    """Chunks of 5, 5 and 2 epochs, of 12, of 3 epochs, with or without a progress bar: one
    loop program, compiled once, and bitwise the same result."""
    model = fnnet.serial(fnnet.Linear(2, 5), fnnet.Tanh(), fnnet.Linear(5, 1), fnnet.Sigmoid())
    x, y = data()
    params = init(model)

    def run(**kwargs):
        return fnnet.fit(
            model, LOSS, fnnet.SGD(lr=0.3), params, x, y, epochs=12, **{"progress": False, **kwargs}
        )

    with count_compilations() as compiled:
        chunked = run(checkpoint=tmp_path / "run.npz", checkpoint_every=5)
    assert len([name for name in compiled if "run" in name]) == 1, compiled
    with count_compilations() as compiled:
        others = [
            run(checkpoint=tmp_path / "whole.npz", checkpoint_every=12),
            run(),
            run(checkpoint=tmp_path / "three.npz", checkpoint_every=3),
            run(progress=True),
        ]
    assert [name for name in compiled if "run" in name] == [], compiled
    for other in others:
        assert_trees_equal(other.params, chunked.params)
        assert np.array_equal(other.losses, chunked.losses)


def test_second_fit_with_new_objects_does_not_recompile():
    x, y = data()
    params = init()

    def build():  # a model built anew, as MODEL is (built here: the constructors' caches are
        # bounded, and other tests in this process may have pushed MODEL's layers out of them)
        return fnnet.serial(fnnet.Linear(2, 16), fnnet.Tanh(), fnnet.Linear(16, 1), fnnet.Sigmoid())

    first = fnnet.fit(
        build(), fnnet.LossBCE(), fnnet.SGD(lr=0.1), params, x, y, epochs=EPOCHS, progress=False
    )
    model = build()
    with count_compilations() as compiled:
        second = fnnet.fit(
            model, fnnet.LossBCE(), fnnet.SGD(lr=0.2), params, x, y, epochs=EPOCHS, progress=False
        )
    assert compiled == []
    # Each run used its own learning rate, not a cached one.
    for result, lr in ((first, 0.1), (second, 0.2)):
        want_params, want_losses = manual_sgd(params, x, y, lr, EPOCHS)
        for g, w in zip(jax.tree.leaves(result.params), jax.tree.leaves(want_params)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.losses, want_losses, rtol=1e-5)
    assert result.losses.shape == (EPOCHS,) and result.val_losses is None


def test_another_epochs_count_with_a_decay_compiles_nothing():
    # fit's check of the decayed lr at the run's last step once compiled an integer power
    # for every run length.
    x, y = data()
    opt = fnnet.SGD(lr=0.1, decay=0.999)
    fnnet.fit(MODEL, LOSS, opt, init(), x, y, epochs=3, progress=False)
    with count_compilations() as compiled:
        fnnet.fit(MODEL, LOSS, opt, init(), x, y, epochs=5, progress=False)
    assert compiled == []


# Divergence ---------------------------------------------------------------------------------------
# A linear model on MSE with a learning rate past 2 / curvature: the loss grows geometrically
# until it overflows float32.

LINEAR = fnnet.serial(fnnet.Linear(2, 1))


def linear_data():
    x, _ = data()
    return x, 3.0 * x[:, :1] - x[:, 1:] + 1.0


@pytest.mark.parametrize("lr", [1e30, 8.0])
def test_divergence_carries_the_last_params_whose_loss_was_finite(lr):
    x, y = linear_data()
    params = init(LINEAR)
    opt = fnnet.SGD(lr=lr)
    epochs = 100
    with pytest.raises(
        fnnet.TrainingDiverged, match=r"fit: the loss became non-finite at epoch (\d+) "
    ) as info:
        fnnet.fit(LINEAR, fnnet.LossMSE(), opt, params, x, y, epochs=epochs, progress=False)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert f"at epoch {error.epoch} " in str(error)

    # The unguarded run, by hand: the first non-finite loss is the reported epoch.
    value_and_grad = jax.jit(fnnet.value_and_grad(LINEAR, fnnet.LossMSE()))
    step = jax.jit(opt.step)
    history, losses, state, p = [params], [], opt.init(params), params
    while len(losses) < epochs:
        value, grads = value_and_grad(p, x, y)
        losses.append(float(value))
        if not np.isfinite(value):
            break
        p, state = step(p, grads, state)
        history.append(p)
    first_bad = len(losses) - 1
    assert not np.isfinite(losses[first_bad]), "this learning rate should diverge"
    assert error.epoch == first_bad
    assert error.start_epoch == first_bad - 1
    assert f"those at the start of epoch {error.start_epoch}," in str(error)
    if lr == 8.0:
        assert error.start_epoch > 5  # the interesting case: diverged after some chunks

    assert all_finite((error.params, error.opt_state))
    assert int(error.opt_state.count) == error.start_epoch
    for g, w in zip(jax.tree.leaves(error.params), jax.tree.leaves(history[error.start_epoch])):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5)
    assert error.losses.shape == (error.start_epoch,)
    np.testing.assert_allclose(error.losses, losses[: error.start_epoch], rtol=1e-5)
    at_params = float(fnnet.LossMSE().value(LINEAR.apply(error.params, x), y))
    assert np.isfinite(at_params)
    np.testing.assert_allclose(at_params, losses[error.start_epoch], rtol=1e-5)


def test_divergence_at_a_chunk_start_carries_params_with_a_finite_loss():
    """SGD(1e6) on a linear model: the loss is finite for epochs 0-2 and inf at epoch 3, the
    start of the second chunk (60 epochs: progress chunks of 3). The params at epoch 3 are
    finite (about 1e19) but their loss is not; the error carries epoch 2's, replayed from
    the previous chunk's start."""
    x, y = linear_data()
    with pytest.raises(
        fnnet.TrainingDiverged,
        match=r"non-finite at epoch 3 .* those at the "
        r"start of epoch 2,",
    ) as info:
        fnnet.fit(LINEAR, fnnet.LossMSE(), fnnet.SGD(lr=1e6), init(LINEAR), x, y, epochs=60, progress=False)
    error = info.value
    assert (error.epoch, error.start_epoch, int(error.opt_state.count)) == (3, 2, 2)
    assert np.isfinite(float(fnnet.LossMSE().value(LINEAR.apply(error.params, x), y)))


def test_minibatches_that_diverge_within_the_first_epoch_are_not_blamed_on_the_start():
    """SGD(1e10) on 64 samples in batches of 16: the loss at the starting params is finite,
    but the epoch's later batches, taken after steps that diverged, are not: the error says
    the params went non-finite within the epoch and carries the starting ones."""
    x, y = linear_data()
    params = init(LINEAR)
    assert np.isfinite(float(fnnet.LossMSE().value(LINEAR.apply(params, x), y)))
    with pytest.raises(
        fnnet.TrainingDiverged,
        match=r"non-finite at epoch 0 .* an epoch's loss is its 4 minibatches' losses, each before "
        r"its step, so the params went non-finite within the epoch .* Try a smaller learning rate",
    ) as info:
        fnnet.fit(
            LINEAR, fnnet.LossMSE(), fnnet.SGD(lr=1e10), params, x, y, epochs=5, batch_size=16, progress=False
        )
    assert (info.value.epoch, info.value.start_epoch) == (0, 0)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(info.value.params))


def test_an_optimizer_state_that_overflows_is_divergence():
    """Adam's second moment overflows to inf (grads of 1e22) while the loss stays finite (1e24):
    the params then stop moving. The error names the epoch and carries finite state."""
    x, _ = data()
    x, y = x * 1e10, jnp.full((x.shape[0], 1), 1e12, jnp.float32)
    with pytest.raises(
        fnnet.TrainingDiverged,
        match=r"fit: the params or optimizer state "
        r"became non-finite in epoch 0 \(its loss "
        r"9\.9\d*e\+23 was finite\)",
    ):
        fnnet.fit(LINEAR, fnnet.LossMSE(), fnnet.Adam(lr=0.1), init(LINEAR), x, y, epochs=20, progress=False)


@pytest.mark.parametrize("where", ["params", "opt_state"])
def test_non_finite_start_is_refused_before_training(where, monkeypatch):
    monkeypatch.setattr(fit_module, "_runner", lambda *a: pytest.fail("training started"))
    x, y = linear_data()
    params = init(LINEAR)
    state = fnnet.SGD(lr=0.1, momentum=0.5).init(params)
    if where == "params":
        params = ({**params[0], "w": params[0]["w"].at[0, 0].set(np.nan)},)
        match = r"fit: params\[0\]\['w'\] holds 1 NaN or infinite value\(s\); training must start"
    else:
        state = state._replace(
            slots={"velocity": ({**state.slots["velocity"][0], "b": jnp.full((1,), np.inf)},)}
        )
        match = r"fit: opt_state\.slots\['velocity'\]\[0\]\['b'\] holds 1 NaN or infinite"
    with pytest.raises(ValueError, match=match):
        fnnet.fit(
            LINEAR,
            fnnet.LossMSE(),
            fnnet.SGD(lr=0.1, momentum=0.5),
            params,
            x,
            y,
            epochs=5,
            progress=False,
            opt_state=state,
        )


# The learning rate -------------------------------------------------------------------------------


def test_a_learning_rate_that_underflows_to_zero_is_announced():
    """SGD(0.1, decay=0.5): lr * 0.5**t is exactly 0.0 in float32 from some step on; fit says
    which before training, and that step's lr, computed as the optimizer computes it, is 0."""
    x, y = linear_data()
    params = init(LINEAR)
    opt = fnnet.SGD(lr=0.1, decay=0.5)
    with pytest.warns(
        fnnet.LearningRateUnderflow,
        match=r"fit: the learning rate underflows to 0\.0 in float32 at step "
        r"(\d+) \(epoch \1\)",
    ) as record:
        fnnet.fit(LINEAR, fnnet.LossMSE(), opt, params, x, y, epochs=300, progress=False)
    step = int(re.search(r"at step (\d+)", str(record[0].message)).group(1))
    hyperparams = opt.init(params).hyperparams
    lr_at = jax.jit(lambda t: hyperparams["lr"] * hyperparams["decay"] ** t)
    assert float(lr_at(jnp.int32(step))) == 0.0 < float(lr_at(jnp.int32(step - 1)))
    assert 100 < step < 160  # 0.1 * 2**-t leaves float32 between 2**-126 and 2**-149


# Checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs, expected", [(EPOCHS, [3, 6, 9, 12]), (EPOCHS - 2, [3, 6, 9, 10])])
def test_checkpoint_every_writes_checkpoints(tmp_path, saves, epochs, expected):
    x, y = data()
    params = init()
    opt = fnnet.SGD(lr=0.3)
    path = tmp_path / "run.npz"
    result = fnnet.fit(
        MODEL, LOSS, opt, params, x, y, epochs=epochs, progress=False, checkpoint=path, checkpoint_every=EVERY
    )
    assert saves == expected
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    got_params, got_state, metadata = fnnet.load(path, params, opt.init(params))
    assert_trees_equal(got_params, result.params)
    assert_trees_equal(got_state, result.opt_state)
    assert metadata["epochs_done"] == epochs and metadata["epochs"] == epochs
    assert np.array_equal(np.asarray(metadata["losses"], result.losses.dtype), result.losses)


@pytest.mark.parametrize("batch_size", [None, 24], ids=["full_batch", "minibatch_24_of_64"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, batch_size):
    x, y = data()
    params = init()
    x_val, y_val = data(16, seed=3)
    key = jax.random.key(4)

    def run(path, epochs=EPOCHS, resume=False):
        return fnnet.fit(
            MODEL,
            LOSS,
            fnnet.SGD(lr=0.3, momentum=0.5),
            params,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            key=key,
            progress=False,
            validation=(x_val, y_val),
            checkpoint=path,
            checkpoint_every=EVERY,
            resume=resume,
        )

    reference = run(tmp_path / "reference.npz")

    # Interrupted at its 2nd checkpoint (epoch 6): the file on disk holds epoch 3.
    path = tmp_path / "interrupted.npz"
    with monkeypatch.context() as patch:
        interrupt_on_checkpoint(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run(path)
    assert fnnet.load(path, params)[2]["epochs_done"] == EVERY
    resumed = run(path, resume=True)

    # Stopped early by asking for fewer epochs, then resumed to the full count.
    short = tmp_path / "short.npz"
    run(short, epochs=2 * EVERY)
    extended = run(short, resume=True)

    for result in (resumed, extended):
        assert_trees_equal(result.params, reference.params)
        assert_trees_equal(result.opt_state, reference.opt_state)
        assert np.array_equal(result.losses, reference.losses)
        assert np.array_equal(result.val_losses, reference.val_losses)
    assert int(reference.opt_state.count) == EPOCHS * (1 if batch_size is None else 3)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    x, y = data()
    params = init()
    kwargs = dict(epochs=EPOCHS, progress=False, checkpoint_every=EVERY)
    fresh = fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.3), params, x, y, checkpoint=tmp_path / "a.npz", **kwargs)
    resumed = fnnet.fit(
        MODEL, LOSS, fnnet.SGD(lr=0.3), params, x, y, checkpoint=tmp_path / "b.npz", resume=True, **kwargs
    )
    assert_trees_equal(resumed.params, fresh.params)
    assert np.array_equal(resumed.losses, fresh.losses)


def test_resume_checks_the_checkpoint(tmp_path):
    x, y = data()
    params = init()
    path = tmp_path / "run.npz"
    fnnet.fit(
        MODEL,
        LOSS,
        fnnet.SGD(lr=0.3),
        params,
        x,
        y,
        epochs=EPOCHS,
        progress=False,
        checkpoint=path,
        checkpoint_every=EVERY,
    )
    with pytest.raises(ValueError, match=rf"has {EPOCHS} epochs done, more than epochs={EVERY}"):
        fnnet.fit(
            MODEL,
            LOSS,
            fnnet.SGD(lr=0.3),
            params,
            x,
            y,
            epochs=EVERY,
            progress=False,
            checkpoint=path,
            checkpoint_every=EVERY,
            resume=True,
        )
    with pytest.raises(ValueError, match=r"another run's: the optimizer .* is OptimizerStep\(name='Adam'"):
        fnnet.fit(
            MODEL,
            LOSS,
            fnnet.Adam(lr=0.3),
            params,
            x,
            y,
            epochs=EPOCHS,
            progress=False,
            checkpoint=path,
            checkpoint_every=EVERY,
            resume=True,
        )


def training_fails(*args):
    raise AssertionError("fit started training")


@pytest.mark.parametrize(
    "where, error, match",
    [
        (
            lambda d: d / "missing" / "run.npz",
            FileNotFoundError,
            (
                r"fit: cannot write checkpoint '[^']*missing/run\.npz': its folder '[^']*missing' does "
                r"not exist"
            ),
        ),
        (lambda d: d, IsADirectoryError, r"fit: checkpoint '[^']*' is a folder"),
    ],
    ids=["missing-folder", "a-folder"],
)
def test_an_unwritable_checkpoint_fails_before_training(tmp_path, monkeypatch, where, error, match):
    monkeypatch.setattr(fit_module, "_runner", training_fails)
    x, y = data()
    with pytest.raises(error, match=match):
        fnnet.fit(
            MODEL,
            LOSS,
            fnnet.SGD(lr=0.3),
            init(),
            x,
            y,
            epochs=EPOCHS,
            progress=False,
            checkpoint=where(tmp_path),
            checkpoint_every=EVERY,
        )


def test_a_read_only_folder_fails_before_training(tmp_path, monkeypatch):
    """The error names the checkpoint, not the temporary file that met the refusal. As root
    (which writes anywhere) the folder's refusal is simulated."""
    monkeypatch.setattr(fit_module, "_runner", training_fails)
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:

        def refuse(dir, prefix, suffix):
            name = os.path.join(dir, prefix + "abcd" + suffix)
            raise PermissionError(errno.EACCES, "Permission denied", name)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    x, y = data()
    try:
        with pytest.raises(
            PermissionError,
            match=r"fit: cannot write checkpoint "
            r"'[^']*read-only/run\.npz': Permission "
            r"denied",
        ) as info:
            fnnet.fit(
                MODEL,
                LOSS,
                fnnet.SGD(lr=0.3),
                init(),
                x,
                y,
                epochs=EPOCHS,
                progress=False,
                checkpoint=folder / "run.npz",
            )
    finally:
        folder.chmod(0o700)
    assert ".tmp" not in str(info.value)
    assert os.listdir(folder) == []


def test_a_checkpoint_that_fails_mid_run_carries_the_run(tmp_path, monkeypatch):
    """The disk fills up at the second checkpoint (epoch 6): the error carries what the run
    trained (bitwise that of a 6-epoch run), and the epoch-3 checkpoint stays intact."""
    x, y = data()
    x_val, y_val = data(16, seed=3)
    params = init()
    path = tmp_path / "run.npz"
    real_savez, calls = np.savez, []

    def savez_then_fill_the_disk(file, **arrays):
        calls.append(1)
        real_savez(file, **arrays)
        if len(calls) == 2:
            file.truncate(file.tell() // 2)
            raise OSError(errno.ENOSPC, "No space left on device")

    def run(epochs, **kwargs):
        return fnnet.fit(
            MODEL,
            LOSS,
            fnnet.SGD(lr=0.3),
            params,
            x,
            y,
            epochs=epochs,
            progress=False,
            validation=(x_val, y_val),
            **kwargs,
        )

    monkeypatch.setattr(fnnet.checkpoint.np, "savez", savez_then_fill_the_disk)
    with pytest.raises(
        fnnet.CheckpointError,
        match=r"fit: training stopped at epoch 6, as its checkpoint could not be "
        r"written \(\[Errno 28\] save: cannot write checkpoint "
        r"'[^']*run\.npz': No space left on device\)",
    ) as info:
        run(EPOCHS, checkpoint=path, checkpoint_every=EVERY)
    monkeypatch.undo()
    error = info.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert ".tmp" not in str(error)
    assert error.epoch == 2 * EVERY
    want = run(2 * EVERY)
    assert_trees_equal(error.params, want.params)
    assert_trees_equal(error.opt_state, want.opt_state)
    assert np.array_equal(error.losses, want.losses)
    assert np.array_equal(error.val_losses, want.val_losses)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    assert fnnet.load(path, params)[2]["epochs_done"] == EVERY


# Progress and input errors -----------------------------------------------------------------------


def test_progress_bar_runs_without_warnings(capsys):
    x, y = data()
    result = fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.1), init(), x, y, epochs=EPOCHS, progress=True)
    err = capsys.readouterr().err
    assert "fit" in err and f"{EPOCHS}/{EPOCHS}" in err
    assert result.losses.shape == (EPOCHS,)


def _x():
    return data()[0]


def _y():
    return data()[1]


def _with_nan(a, value=np.nan):
    a = np.array(a)
    a[3, 0] = value
    return a


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            dict(x=lambda: _x().astype(jnp.int32)),
            TypeError,
            r"fit: x must be floating point, got dtype int32; convert it",
        ),
        (dict(x=lambda: [["a", "b"]] * len(_x())), TypeError, r"fit: x must be an array of numbers"),
        (dict(x=lambda: _with_nan(_x())), ValueError, r"fit: x holds 1 NaN or infinite value\(s\)"),
        (dict(y=lambda: _with_nan(_y(), np.inf)), ValueError, r"fit: y holds 1 NaN or infinite value\(s\)"),
        (
            dict(y=lambda: _y()[:-1]),
            ValueError,
            r"fit: x and y must have the same number of samples, got 64 and 63",
        ),
        (dict(x=lambda: _x()[:0], y=lambda: _y()[:0]), ValueError, r"fit: x is empty \(0 samples\)"),
        (dict(y=lambda: 2 * _y()), ValueError, r"LossBCE: targets must be in \[0, 1\]"),
        (
            dict(validation=lambda: [_x(), _y()]),
            TypeError,
            r"fit: validation must be a pair \(x_val, y_val\)",
        ),
        (dict(validation=lambda: (_x(),)), TypeError, r"fit: validation must be a pair"),
        (
            dict(validation=lambda: (_with_nan(_x()), _y())),
            ValueError,
            r"fit: x_val holds 1 NaN or infinite value\(s\)",
        ),
        (
            dict(validation=lambda: (_x()[:5], _y()[:4])),
            ValueError,
            r"fit: x_val and y_val must have the same number of samples, got 5 and 4",
        ),
        (dict(validation=lambda: (_x(), -_y() - 1)), ValueError, r"LossBCE: targets must be in \[0, 1\]"),
        (
            dict(checkpoint_every=lambda: 3),
            ValueError,
            r"fit: checkpoint_every and resume need a checkpoint path",
        ),
        (dict(resume=lambda: True), ValueError, r"fit: checkpoint_every and resume need a checkpoint path"),
        (
            dict(checkpoint_every=lambda: 0, checkpoint=lambda: "unused.npz"),
            ValueError,
            r"fit: checkpoint_every must be an int >= 1, got 0",
        ),
        (dict(epochs=lambda: 0), ValueError, r"fit: epochs must be an int >= 1, got 0"),
        (dict(epochs=lambda: 5.0), ValueError, r"fit: epochs must be an int >= 1, got 5\.0"),
        (dict(batch_size=lambda: 65), ValueError, r"batch_size must be in \[1, 64\]"),
    ],
)
def test_bad_input_raises_before_any_work(tmp_path, monkeypatch, change, error, match):
    monkeypatch.chdir(tmp_path)
    args = dict(x=_x, y=_y, epochs=lambda: EPOCHS)
    args.update(change)
    args = {name: make() for name, make in args.items()}
    x, y, epochs = args.pop("x"), args.pop("y"), args.pop("epochs")
    with pytest.raises(error, match=match):
        fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.1), init(), x, y, epochs, progress=False, **args)
    assert os.listdir(tmp_path) == []


def test_a_printed_fit_result_is_a_short_summary():
    x, y = data()
    result = fnnet.fit(
        MODEL, LOSS, fnnet.SGD(lr=0.5), init(), x, y, epochs=3, progress=False, validation=(x, y)
    )
    text = repr(result)
    assert text.startswith("FitResult(3 epochs, loss ") and "validation loss" in text, text
    assert "params: 4 arrays, 65 values)" in text and "Array(" not in text and len(text) < 150, text


def test_fit_losses_keep_the_training_loops_dtype_as_train_does():
    """Under x64 (as the suite runs) a float64 model's losses come back in float64, each
    the loss of the params before the epoch's step, as train's run returns them."""
    x = jax.random.uniform(jax.random.key(3), (8, 1), jnp.float64)
    y = 2 * x
    model = fnnet.serial(fnnet.Linear(1, 1, dtype=jnp.float64))
    params = model.init(jax.random.key(4), x.shape)[1]
    opt = fnnet.SGD(0.1)
    result = fnnet.fit(model, fnnet.LossMSE(), opt, params, x, y, epochs=3, progress=False)
    assert result.losses.dtype == jnp.result_type(float) == np.float64
    assert result.losses[0] == float(jnp.mean((model.apply(params, x) - y) ** 2))
    run = fnnet.train(model, fnnet.LossMSE(), opt, epochs=3)
    np.testing.assert_array_equal(result.losses, np.asarray(run(params, opt.init(params), x, y)[2]))


def test_array_likes_train_like_arrays():
    """Lists (and anything np.asarray makes an array of numbers, a pandas frame) are data."""
    x, y = data()
    params = init()
    want = fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.3), params, x, y, epochs=3, progress=False)
    got = fnnet.fit(
        MODEL,
        LOSS,
        fnnet.SGD(lr=0.3),
        params,
        np.asarray(x).tolist(),
        np.asarray(y).tolist(),
        epochs=3,
        progress=False,
        validation=(np.asarray(x).tolist(), y),
    )
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-6)  # lists are float64 under x64


def test_targets_without_the_output_axis_get_the_fix_named_once():
    x, y = data()
    for kwargs, name in (({}, "y"), ({"validation": (x, y[:, 0])}, "y_val")):
        target = y if kwargs else y[:, 0]
        with pytest.raises(ValueError) as caught:
            fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.3), init(), x, target, epochs=1, progress=False, **kwargs)
        message = str(caught.value)
        assert f"{name} has no output axis: pass {name}[:, None] (or {name}.reshape(-1, 1))" in message
        assert message.count("[:, None]") == 1, message


def test_a_state_of_other_hyperparameters_is_named_not_silently_used():
    """fit(opt=SGD(0.001), opt_state=<a state of SGD(0.5)>) trains at 0.5: a warning names both."""
    x, y = data()
    params = init()
    with pytest.warns(
        fnnet.HyperparameterMismatch, match=r"lr 0\.5 in opt_state, 0\.001\d* in SGD\(lr=0\.001"
    ):
        fnnet.fit(
            MODEL,
            LOSS,
            fnnet.SGD(0.001),
            params,
            x,
            y,
            epochs=1,
            progress=False,
            opt_state=fnnet.SGD(0.5).init(params),
        )


def test_a_schedule_is_checked_over_the_steps_a_continued_run_takes():
    """A linear decay fine for the first 100 steps reaches lr <= 0 in a run continued from
    step 90: refused before any work, naming the step."""
    x, y = data()
    params = init()
    opt = fnnet.SGD(_linear_decay)
    state = opt.init(params)._replace(count=jnp.int32(90))
    with pytest.raises(
        ValueError, match=r"the lr schedule must give a finite lr > 0 at every step, got .* at step 100"
    ):
        fnnet.fit(MODEL, LOSS, opt, params, x, y, epochs=20, progress=False, opt_state=state)
    with pytest.raises(ValueError, match=r"at step 100"):
        fnnet.train(MODEL, LOSS, opt, epochs=20)(params, state, x, y)
    # A sweep's states, one count per member: checked from each.
    keys = jax.random.split(jax.random.key(0), 2)
    stacked = fnnet.init_many(keys, MODEL, x.shape)
    states = jax.vmap(opt.init)(stacked)._replace(count=jnp.array([0, 95], jnp.int32))
    with pytest.raises(ValueError, match=r"at step 100"):
        fnnet.sweep(fnnet.train(MODEL, LOSS, opt, epochs=10), stacked, states, x, y, keys=keys)


def test_a_schedule_gone_negative_inside_jax_vmap_gives_nan_not_gradient_ascent():
    # Inside jax.vmap the counts are traced and the run cannot check them: the step's lr
    # is NaN where the schedule is negative, so the member's losses say so.
    x, y = data()
    opt = fnnet.SGD(_linear_decay)
    keys = jax.random.split(jax.random.key(0), 2)
    stacked = fnnet.init_many(keys, MODEL, x.shape)
    states = jax.vmap(opt.init)(stacked)._replace(count=jnp.array([95, 0], jnp.int32))
    run = fnnet.train(MODEL, LOSS, opt, epochs=10)
    losses = jax.vmap(lambda p, s, k: run(p, s, x, y, key=k))(stacked, states, keys)[2]
    assert np.isnan(losses[0, -1]) and np.isfinite(losses[1]).all()


def test_bce_on_a_model_without_its_sigmoid_says_to_use_logits():
    x, y = data()
    logits = fnnet.Sequential(fnnet.Linear(2, 1))
    with pytest.raises(
        fnnet.TrainingDiverged, match=r"LossBCE takes probabilities .* \(use LossBCEWithLogits"
    ):
        fnnet.fit(logits, fnnet.LossBCE(), fnnet.SGD(0.1), init(logits), x, y, epochs=2, progress=False)


def _linear_decay(t):
    return 0.1 * (1 - jnp.asarray(t, jnp.float32) / 100)


# --- sample weights ----------------------------------------------------------------------------


def test_integer_sample_weights_train_as_repeated_samples():
    """Full batch: weights 0, 1, 2, 3 give the run on each sample repeated that many times
    (up to rounding); the oracle is fit on the repeated data."""
    x, y = (np.asarray(a) for a in data(60))
    counts = np.random.default_rng(0).integers(0, 4, 60)
    weighted = fnnet.fit(
        MODEL, LOSS, fnnet.SGD(0.3), init(), x, y, EPOCHS, sample_weight=counts, progress=False
    )
    repeated = fnnet.fit(
        MODEL,
        LOSS,
        fnnet.SGD(0.3),
        init(),
        np.repeat(x, counts, 0),
        np.repeat(y, counts, 0),
        EPOCHS,
        progress=False,
    )
    np.testing.assert_allclose(weighted.losses, repeated.losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sample_weights_of_one_change_nothing_and_another_weighting_compiles_nothing():
    x, y = data(60)

    def fit(weights=None):
        return fnnet.fit(
            MODEL,
            LOSS,
            fnnet.Adam(0.01),
            init(),
            x,
            y,
            4,
            batch_size=8,
            sample_weight=weights,
            progress=False,
        )

    plain = fit()
    with count_compilations() as compiled:
        ones = fit(np.ones(60))
        other = fit(np.linspace(0.1, 2, 60))
    assert compiled == [], compiled
    assert_trees_equal((plain.params, plain.losses), (ones.params, ones.losses))
    assert not np.array_equal(other.losses, plain.losses)


@pytest.mark.parametrize(
    "weights, error, says",
    [
        (
            np.ones(59),
            ValueError,
            r"fit: sample_weight must have shape \(60,\), one weight per sample, got \(59,\)",
        ),
        (np.ones((60, 1)), ValueError, r"fit: sample_weight must have shape \(60,\)"),
        (np.r_[-1.0, np.ones(59)], ValueError, r"fit: sample_weight must be >= 0, got a minimum of -1.0"),
        (np.r_[np.nan, np.ones(59)], ValueError, r"fit: sample_weight holds 1 NaN or infinite value"),
        (np.zeros(60), ValueError, r"fit: sample_weight is 0 for every sample: nothing to train on"),
        (["a"] * 60, TypeError, r"fit: sample_weight must be an array of numbers"),
        (np.ones(60, complex), TypeError, r"fit: sample_weight must be real numbers, got dtype complex128"),
    ],
)
def test_bad_sample_weights_are_refused_by_name(weights, error, says):
    x, y = data(60)
    with pytest.raises(error, match=says):
        fnnet.fit(MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 1, sample_weight=weights, progress=False)


def test_a_resume_with_other_sample_weights_is_refused(tmp_path):
    x, y = data(60)
    path = tmp_path / "run.npz"
    weights = np.linspace(0.5, 1.5, 60)
    fnnet.fit(
        MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 2, checkpoint=path, sample_weight=weights, progress=False
    )
    with pytest.raises(ValueError, match="sample_weight"):
        fnnet.fit(MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 4, checkpoint=path, resume=True, progress=False)
    resumed = fnnet.fit(
        MODEL,
        LOSS,
        fnnet.SGD(0.1),
        init(),
        x,
        y,
        4,
        checkpoint=path,
        resume=True,
        sample_weight=weights,
        progress=False,
    )
    whole = fnnet.fit(MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 4, sample_weight=weights, progress=False)
    assert_trees_equal((resumed.params, resumed.losses), (whole.params, whole.losses))


@pytest.mark.parametrize("scale", [1e39, 1e-46])
def test_sample_weights_beyond_float32_train_as_their_ratios(scale):
    """Weights that overflow or underflow float32 train as the same weights scaled to 1."""
    x, y = data(60)
    weights = np.linspace(0.5, 1.5, 60)
    want = fnnet.fit(MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 3, sample_weight=weights, progress=False)
    got = fnnet.fit(
        MODEL, LOSS, fnnet.SGD(0.1), init(), x, y, 3, sample_weight=weights * scale, progress=False
    )
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-6)


def test_without_shuffling_the_batches_are_the_samples_in_order(tmp_path):
    x, y = data()
    opt = fnnet.SGD(lr=0.5)
    result = fnnet.fit(MODEL, LOSS, opt, init(), x, y, 2, batch_size=24, shuffle=False, progress=False)
    step = fnnet.train_step(MODEL, LOSS, opt)
    params, state = init(), opt.init(init())
    for _ in range(2):
        for start in range(0, x.shape[0], 24):  # 24, 24, then the last 16
            params, state, _ = step(params, state, x[start : start + 24], y[start : start + 24])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), result.params, params)
    path = tmp_path / "run.npz"
    fnnet.fit(
        MODEL, LOSS, opt, init(), x, y, 1, batch_size=24, shuffle=False, progress=False, checkpoint=path
    )
    with pytest.raises(ValueError, match=r"cannot resume .* shuffle is True now, False in the checkpoint"):
        fnnet.fit(
            MODEL, LOSS, opt, init(), x, y, 2, batch_size=24, progress=False, checkpoint=path, resume=True
        )
    with pytest.raises(TypeError, match=r"fit: shuffle must be True or False, got 'no' \(str\)"):
        fnnet.fit(MODEL, LOSS, opt, init(), x, y, 2, batch_size=24, progress=False, shuffle="no")
