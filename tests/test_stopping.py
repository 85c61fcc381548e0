"""Metrics per epoch and early stopping inside fit's and train's compiled loop: each
checked against what it must equal (evaluate on each epoch's params, a run of the best
epoch's length, the rule replayed on the recorded history, the uninterrupted run)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import fitting as fit_module
from helpers import count_compilations, interrupt_on_checkpoint

MODEL = fnnet.serial(fnnet.Linear(2, 16), fnnet.Tanh(), fnnet.Linear(16, 1), fnnet.Sigmoid())
LOSS, OPT = fnnet.LossBCE(), fnnet.Adam(lr=3e-2)
X, Y = fnnet.data.disk(jax.random.key(1), 96)
XV, YV = fnnet.data.disk(jax.random.key(2), 40)
PARAMS = MODEL.init(jax.random.key(0), X.shape)[1]
METRICS = ["accuracy", "mse", "mae", "r2"]


def _fit(epochs, **kwargs):
    kwargs = {"batch_size": 16, "key": jax.random.key(3), "progress": False, **kwargs}
    return fnnet.fit(MODEL, LOSS, OPT, PARAMS, X, Y, epochs, **kwargs)


def _members(count):
    """`count` members starting from PARAMS with the same key: (params, states, keys)."""
    stacked = jax.tree.map(lambda a: jnp.stack([a] * count), PARAMS)
    return stacked, jax.vmap(lambda p: OPT.init(p))(stacked), jnp.stack([jax.random.key(3)] * count)


def _equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _replayed(values, mode, patience, min_delta, before=False):
    """(best_epoch, stopped_epoch or None): EarlyStopping's rule run on the host; `before`:
    each value is measured before its epoch's steps (the training loss)."""
    sign = 1 if mode == "min" else -1
    best, best_epoch, wait = np.inf, 0, 0
    for epoch, value in enumerate(values, 1):
        gain = best - sign * value  # best kept as sign * value
        if gain > 0:
            best, best_epoch = sign * value, epoch - before
        wait = 0 if gain > min_delta else wait + 1
        if wait >= patience:
            return best_epoch, epoch
    return best_epoch, None


def test_the_metrics_of_each_epoch_are_evaluate_on_its_params():
    result = _fit(6, validation=(XV, YV), metrics=METRICS)
    assert set(result.metrics) == set(result.val_metrics) == set(METRICS)
    _equal(result.losses, _fit(6).losses)  # recording metrics changes no step
    for epochs in (1, 4, 6):
        params = _fit(epochs).params
        for data, recorded in (((X, Y), result.metrics), ((XV, YV), result.val_metrics)):
            expected = fnnet.evaluate(MODEL, params, *data, METRICS)
            for name in METRICS:
                assert recorded[name].shape == (6,)
                np.testing.assert_allclose(recorded[name][epochs - 1], expected[name], rtol=1e-6, atol=1e-7)


def test_training_metrics_weigh_each_sample_by_its_weight():
    weights = np.where(np.arange(96) % 3 == 0, 0.0, 1.0)
    result = _fit(3, sample_weight=weights, metrics=["accuracy", "mse"])
    kept = weights > 0
    expected = fnnet.evaluate(MODEL, result.params, X[kept], Y[kept], ["accuracy", "mse"])
    assert result.metrics["accuracy"][-1] == pytest.approx(expected["accuracy"], rel=1e-6)
    assert result.metrics["mse"][-1] == pytest.approx(expected["mse"], rel=1e-6)


@pytest.mark.parametrize(
    "monitor, mode, patience, min_delta",
    [("val_loss", "min", 3, 0.0), ("val_accuracy", "max", 4, 0.0), ("loss", "min", 2, 1e-3)],
)
def test_a_run_stops_by_the_rule_and_restores_a_run_of_its_best_epoch(monitor, mode, patience, min_delta):
    stopping = fnnet.EarlyStopping(monitor, mode="auto", patience=patience, min_delta=min_delta)
    result = _fit(400, validation=(XV, YV), metrics=["accuracy"], early_stopping=stopping)
    history = {
        "loss": result.losses,
        "val_loss": result.val_losses,
        "val_accuracy": result.val_metrics["accuracy"],
    }
    best_epoch, stopped = _replayed(history[monitor], mode, patience, min_delta, monitor == "loss")
    assert stopped is not None and stopped < 400, "the run did not stop: the test proves nothing"
    assert (result.best_epoch, result.stopped_epoch) == (best_epoch, stopped)
    assert len(result.losses) == len(result.val_losses) == stopped
    _equal(result.params, _fit(best_epoch).params)  # bitwise a run of that many epochs


def test_without_restore_best_the_params_are_the_last_ones():
    stopping = fnnet.EarlyStopping("loss", patience=2, min_delta=1e-3, restore_best=False)
    result = _fit(400, early_stopping=stopping)
    assert result.stopped_epoch is not None and result.best_epoch < result.stopped_epoch
    _equal(result.params, _fit(result.stopped_epoch).params)
    _equal(result.opt_state, _fit(result.stopped_epoch).opt_state)


def test_other_patience_or_min_delta_compiles_nothing():
    _fit(30, early_stopping=fnnet.EarlyStopping("loss", patience=2))
    with count_compilations() as compiled:
        _fit(40, early_stopping=fnnet.EarlyStopping("loss", patience=5, min_delta=1e-3))
    assert not [name for name in compiled if "_run" in name], compiled


@pytest.mark.parametrize("restore_best", [True, False])
def test_a_killed_and_resumed_early_stopped_run_is_the_uninterrupted_one(tmp_path, monkeypatch, restore_best):
    stopping = fnnet.EarlyStopping("val_accuracy", patience=20, restore_best=restore_best)
    kwargs = {"validation": (XV, YV), "metrics": ["accuracy", "r2"], "early_stopping": stopping}
    whole = _fit(400, **kwargs)
    assert whole.stopped_epoch is not None and whole.stopped_epoch > 6
    path = tmp_path / "run.npz"
    interrupt_on_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _fit(400, checkpoint=path, checkpoint_every=2, **kwargs)
    monkeypatch.undo()
    assert fnnet.load(path, PARAMS)[2]["epochs_done"] == 4
    resumed = _fit(400, checkpoint=path, checkpoint_every=2, resume=True, **kwargs)
    for name in ("params", "opt_state", "losses", "val_losses", "metrics", "val_metrics"):
        _equal(getattr(resumed, name), getattr(whole, name))
    assert (resumed.best_epoch, resumed.stopped_epoch) == (whole.best_epoch, whole.stopped_epoch)
    # the stopped run's checkpoint resumed again, with more epochs: stopped, the same result
    again = _fit(500, checkpoint=path, resume=True, **kwargs)
    _equal(again.params, whole.params)
    assert (again.stopped_epoch, len(again.losses)) == (whole.stopped_epoch, whole.stopped_epoch)


@pytest.mark.parametrize(
    "metrics, patience, named",
    [(["accuracy"], 4, r"early_stopping is .*patience=4"), (["mse"], 3, r"metrics is")],
)
def test_a_resume_with_other_stopping_or_metrics_is_refused(tmp_path, metrics, patience, named):
    path = tmp_path / "run.npz"
    _fit(5, checkpoint=path, metrics=["accuracy"], early_stopping=fnnet.EarlyStopping("loss", patience=3))
    with pytest.raises(ValueError, match=r"cannot resume .* " + named):
        other = fnnet.EarlyStopping("loss", patience=patience)
        _fit(9, checkpoint=path, resume=True, metrics=metrics, early_stopping=other)


def test_each_member_of_a_sweep_stops_on_its_own():
    stopping = fnnet.EarlyStopping("accuracy", patience=3)
    run = fnnet.train(MODEL, LOSS, OPT, 60, batch_size=16, metrics=["accuracy"], early_stopping=stopping)
    lrs = [3e-2, 1e-3, 1e-1]
    states = jax.vmap(lambda lr: OPT.init(PARAMS, lr=lr))(jnp.asarray(lrs))
    stacked, _, keys = _members(3)
    result = fnnet.sweep(run, stacked, states, X, Y, keys=keys)
    history = result.losses
    assert bool(np.all(result.finite)) and len(set(np.asarray(history["epochs"]).tolist())) > 1
    for member, lr in enumerate(lrs):
        params, _, alone = run(PARAMS, OPT.init(PARAMS, lr=lr), X, Y, key=jax.random.key(3))
        ran = int(alone["epochs"])
        assert int(history["epochs"][member]) == ran and int(history["best_epoch"][member]) == int(
            alone["best_epoch"]
        )
        assert np.all(np.isnan(np.asarray(history["loss"][member, ran:])))
        np.testing.assert_allclose(history["loss"][member, :ran], alone["loss"][:ran], rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[member], b, rtol=1e-5, atol=1e-6), result.params, params
        )


def test_train_records_metrics_and_validation_as_a_history():
    run = fnnet.train(MODEL, LOSS, OPT, 5, batch_size=16, metrics=["accuracy"])
    params, _, history = run(PARAMS, OPT.init(PARAMS), X, Y, key=jax.random.key(3), validation=(XV, YV))
    fitted = _fit(5, validation=(XV, YV), metrics=["accuracy"])
    _equal(params, fitted.params)
    np.testing.assert_array_equal(history["val_accuracy"], fitted.val_metrics["accuracy"])
    np.testing.assert_array_equal(history["val_loss"], fitted.val_losses)


def test_fit_result_unpacks_and_prints_its_stop():
    result = _fit(400, early_stopping=fnnet.EarlyStopping("loss", patience=2, min_delta=1e-3))
    params, opt_state, losses, val_losses = result
    assert val_losses is None and len(losses) == result.stopped_epoch
    assert f"best epoch {result.best_epoch}, stopped after {result.stopped_epoch}" in repr(result)


def test_progress_without_a_terminal_prints_plain_lines(capsys):
    _fit(4, progress=True, validation=(XV, YV), metrics=["accuracy"])
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("fit: epoch 4/4, loss "), err
    assert "val_loss" in err and "val_accuracy" in err
    result = _fit(400, progress=True, early_stopping=fnnet.EarlyStopping("loss", patience=2, min_delta=1e-3))
    err = capsys.readouterr().err
    assert err.startswith(f"fit: epoch {result.stopped_epoch}/400, loss ") and ", stopped early (" in err, err
    with pytest.raises(TypeError, match=r"fit: progress must be True or False, got 'yes' \(str\)"):
        _fit(2, progress="yes")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"early_stopping": fnnet.EarlyStopping()},
            ValueError,
            r"fit: early_stopping monitors 'val_loss', which the run does not record; it records \['loss'\].*need validation=",
        ),
        (
            {"early_stopping": fnnet.EarlyStopping("accuracy")},
            ValueError,
            r"monitors 'accuracy'.*metrics come from metrics=",
        ),
        (
            {"early_stopping": "val_loss"},
            TypeError,
            r"fit: early_stopping must be None or a fnnet.EarlyStopping, got 'val_loss' \(str\)",
        ),
        ({"metrics": ["f1"]}, ValueError, r"fit: unknown metric 'f1'"),
    ],
)
def test_bad_watching_is_refused_before_any_work(monkeypatch, kwargs, error, match):
    monkeypatch.setattr(fit_module, "_runner", lambda *a: pytest.fail("training started"))
    with pytest.raises(error, match=match):
        _fit(5, **kwargs)


def test_metrics_that_do_not_fit_the_targets_are_refused():
    model = fnnet.serial(fnnet.Linear(2, 1))
    params = model.init(jax.random.key(0), X.shape)[1]
    three = (np.arange(96) % 3)[:, None]  # the loss takes them; a threshold cannot
    with pytest.raises(ValueError, match=r"fit: accuracy: one output classifies two ways"):
        fnnet.fit(model, fnnet.LossMSE(), OPT, params, X, three, 2, progress=False, metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"fit: y_val: accuracy: one output classifies two ways"):
        fnnet.fit(
            model,
            fnnet.LossMSE(),
            OPT,
            params,
            X,
            Y,
            2,
            progress=False,
            metrics="accuracy",
            validation=(X, three),
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"mode": "up"},
            ValueError,
            r"EarlyStopping: mode must be one of \('auto', 'min', 'max'\), got 'up'",
        ),
        ({"patience": 0}, ValueError, r"EarlyStopping: patience must be an int in \[1, 2147483647\], got 0"),
        (
            {"patience": 2.5},
            ValueError,
            r"EarlyStopping: patience must be an int in \[1, 2147483647\], got 2.5",
        ),
        ({"patience": 2**40}, ValueError, r"EarlyStopping: patience must be an int in \[1, 2147483647\]"),
        ({"min_delta": -1.0}, ValueError, r"EarlyStopping: min_delta must be a finite float >= 0, got -1.0"),
        ({"min_delta": float("nan")}, ValueError, r"EarlyStopping: min_delta must be a finite float >= 0"),
        (
            {"restore_best": "yes"},
            TypeError,
            r"EarlyStopping: restore_best must be True or False, got 'yes' \(str\)",
        ),
        ({"monitor": 3}, TypeError, r"EarlyStopping: monitor must be a name"),
    ],
)
def test_early_stopping_checks_its_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        fnnet.EarlyStopping(**kwargs)


def test_early_stopping_is_a_value():
    assert fnnet.EarlyStopping("loss", patience=3) == fnnet.EarlyStopping("loss", patience=3)
    assert repr(fnnet.EarlyStopping("loss", patience=3)) == "EarlyStopping(monitor='loss', patience=3)"


def test_folds_as_sample_weights_train_in_one_sweep_as_each_fold_alone():
    """Cross-validation's folds as 0/1 masks of one data set: a sweep of them equals each
    fold's run on its samples alone (rounding: the padding differs), stopping included."""
    stopping = fnnet.EarlyStopping("loss", patience=2, min_delta=1e-3)
    run = fnnet.train(MODEL, LOSS, OPT, 40, batch_size=16, early_stopping=stopping)
    masks = np.stack([np.arange(96) % 3 != fold for fold in range(3)]).astype(np.float32)
    stacked, states, keys = _members(3)
    result = fnnet.sweep(run, stacked, states, X, Y, keys=keys, sample_weights=masks)
    assert bool(np.all(result.finite))
    for fold in range(3):
        params, _, alone = run(
            PARAMS, OPT.init(PARAMS), X, Y, key=jax.random.key(3), sample_weight=masks[fold]
        )
        assert int(result.losses["epochs"][fold]) == int(alone["epochs"])
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[fold], b, rtol=1e-5, atol=1e-6), result.params, params
        )
        # the weights as data: the same as training on the fold's samples alone
        fitted = _fit(int(alone["epochs"]), sample_weight=masks[fold])
        np.testing.assert_allclose(fitted.losses, alone["loss"][: int(alone["epochs"])], rtol=1e-5)


def test_sweep_checks_each_members_sample_weights():
    run = fnnet.train(MODEL, LOSS, OPT, 2)
    stacked, states, keys = _members(2)
    bad = np.ones((2, 96))
    bad[1] = 0
    with pytest.raises(ValueError, match=r"sweep: member 1: sample_weight is 0 for every sample"):
        fnnet.sweep(run, stacked, states, X, Y, keys=keys, sample_weights=bad)
    with pytest.raises(ValueError, match=r"sweep: sample_weights must have shape \(2, 96\)"):
        fnnet.sweep(run, stacked, states, X, Y, keys=keys, sample_weights=np.ones((2, 95)))


def test_accuracy_of_a_logit_trained_with_bce_with_logits_thresholds_at_zero():
    model = fnnet.serial(fnnet.Linear(2, 16), fnnet.Tanh(), fnnet.Linear(16, 1))
    params = model.init(jax.random.key(0), X.shape)[1]
    loss = fnnet.LossBCEWithLogits()
    result = fnnet.fit(model, loss, OPT, params, X, Y, 40, metrics=["accuracy"], progress=False)
    at_zero = fnnet.evaluate(model, result.params, X, Y, [fnnet.Accuracy(threshold=0.0)])["accuracy"]
    at_half = fnnet.evaluate(model, result.params, X, Y, ["accuracy"])["accuracy"]
    assert result.metrics["accuracy"][-1] == pytest.approx(at_zero, rel=1e-6) and at_zero != at_half


def test_a_monitor_never_finite_warns_and_fit_and_train_return_the_last_params():
    y_val = np.full((40, 1), 1e30, np.float32)  # an infinite validation loss
    model, loss = fnnet.serial(fnnet.Linear(2, 1)), fnnet.LossMSE()
    params = model.init(jax.random.key(0), X.shape)[1]
    stopping = fnnet.EarlyStopping("val_loss", patience=3)
    with pytest.warns(fnnet.EarlyStoppingWithoutBest, match=r"'val_loss' was never finite in 3 epochs"):
        result = fnnet.fit(
            model,
            loss,
            OPT,
            params,
            X,
            Y,
            20,
            progress=False,
            validation=(XV, y_val),
            early_stopping=stopping,
        )
    assert result.best_epoch is None and result.stopped_epoch == 3
    run = fnnet.train(model, loss, OPT, 20, early_stopping=stopping)
    last, _, history = run(params, OPT.init(params), X, Y, validation=(XV, y_val))
    assert int(history["best_epoch"]) == -1 and int(history["epochs"]) == 3
    _equal(last, result.params)
    _equal(last, fnnet.fit(model, loss, OPT, params, X, Y, 3, progress=False).params)


def test_a_checkpoint_failing_at_the_stop_carries_the_best_params(tmp_path, monkeypatch):
    stopping = fnnet.EarlyStopping("val_accuracy", patience=20)
    whole = _fit(400, validation=(XV, YV), metrics=["accuracy"], early_stopping=stopping)
    real_save, calls = fit_module.save_run, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the save at the stop (no checkpoint_every: the only one)
            raise OSError(28, "No space left on device")
        real_save(*args, **kwargs)

    monkeypatch.setattr(fit_module, "save_run", full_disk)
    with pytest.raises(fnnet.CheckpointError) as caught:
        _fit(
            400,
            validation=(XV, YV),
            metrics=["accuracy"],
            early_stopping=stopping,
            checkpoint=tmp_path / "c.npz",
        )
    assert caught.value.epoch == whole.stopped_epoch
    _equal(caught.value.params, whole.params)


def test_fit_result_indexes_as_its_four_fields():
    result = _fit(2)
    assert len(result) == 4 and result[2] is result.losses and result[-1] is None
    _equal(result[0], result.params)


def test_sweep_takes_shared_validation_and_traced_sample_weights():
    stopping = fnnet.EarlyStopping("val_loss", patience=2, min_delta=1e-2)
    run = fnnet.train(MODEL, LOSS, OPT, 40, batch_size=16, early_stopping=stopping)
    stacked, states, keys = _members(2)
    masks = np.stack([np.arange(96) % 2 == 0, np.ones(96, bool)]).astype(np.float32)
    swept = jax.jit(
        lambda w: fnnet.sweep(run, stacked, states, X, Y, keys=keys, sample_weights=w, validation=(XV, YV))
    )
    result = swept(masks)
    for member in range(2):
        _, _, alone = run(
            PARAMS,
            OPT.init(PARAMS),
            X,
            Y,
            key=jax.random.key(3),
            validation=(XV, YV),
            sample_weight=masks[member],
        )
        assert int(result.losses["epochs"][member]) == int(alone["epochs"]) < 40
    bad = swept(np.stack([masks[0], -masks[1]]))  # traced: a negative row is flagged, not trained
    assert np.asarray(bad.finite).tolist() == [True, False]


def test_bad_metrics_and_names_are_refused():
    class Vector(fnnet.metrics.MeanSquaredError):
        name = "vec"

        def value(self, sums):
            return jnp.stack([sums["error"] / sums["count"]])

    with pytest.raises(ValueError, match=r"fit: metric 'vec': value\(sums\) must give a scalar"):
        _fit(2, metrics=[Vector()])

    class Epochs(fnnet.metrics.MeanSquaredError):
        name = "epochs"

    with pytest.raises(ValueError, match=r"fit: a metric cannot be named 'epochs'"):
        _fit(2, metrics=[Epochs()])
    assert fnnet.Accuracy(threshold=jnp.float32(0.5)) == fnnet.Accuracy(0.5)  # a setting: a float
    real = np.asarray(X[:, :1] * 3 + 5)
    with pytest.raises(
        ValueError, match=r"fit: accuracy: one output classifies two ways.*use mse, mae or r2"
    ):
        fnnet.fit(MODEL, fnnet.LossMSE(), OPT, PARAMS, X, real, 2, progress=False, metrics=["accuracy"])


def test_a_checkpoint_holds_the_last_params_and_the_best(tmp_path):
    path = tmp_path / "run.npz"
    stopping = fnnet.EarlyStopping("val_accuracy", patience=20)
    result = _fit(400, validation=(XV, YV), metrics=["accuracy"], early_stopping=stopping, checkpoint=path)
    _equal(fnnet.load_best(path, PARAMS), result.params)
    _equal(fnnet.load(path, PARAMS)[0], _fit(result.stopped_epoch).params)
    plain = tmp_path / "plain.npz"
    fnnet.save(plain, PARAMS)
    with pytest.raises(ValueError, match=r"load_best: .* holds no best params"):
        fnnet.load_best(plain, PARAMS)
