"""fnnet.metrics and fnnet.evaluate against NumPy references written here."""

import jax
import numpy as np
import pytest
from helpers import count_compilations, device

import fnnet
from fnnet.metrics import Accuracy, R2

# A model whose output is x @ w (params given), so references can be written by hand.
LINEAR = fnnet.Sequential(fnnet.Linear(4, 3))


def _params(seed, n_out=3):
    rng = np.random.default_rng(seed)
    return ({"w": device(rng.normal(size=(4, n_out))), "b": device(rng.normal(size=n_out))},)


def _x(seed, n=50):
    return np.random.default_rng(seed + 100).normal(size=(n, 4))


def _out(params, x):
    return x @ np.asarray(params[0]["w"]) + np.asarray(params[0]["b"])


def numpy_r2(pred, target):
    """scikit-learn's r2_score, uniform average over outputs."""
    res = np.sum((target - pred) ** 2, axis=0)
    tot = np.sum((target - target.mean(axis=0)) ** 2, axis=0)
    return float(
        np.mean(np.where(tot > 0, 1 - res / np.where(tot > 0, tot, 1), np.where(res == 0, 1.0, 0.0)))
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch_size", [None, 7])
def test_metrics_match_numpy(seed, batch_size):
    params, x = _params(seed), _x(seed)
    out = _out(params, x)
    rng = np.random.default_rng(seed + 200)
    labels = rng.integers(0, 3, len(x))
    one_hot = np.eye(3)[labels]
    targets = out + rng.normal(size=out.shape)
    got = fnnet.evaluate(LINEAR, params, x, labels, ["accuracy"], batch_size=batch_size)
    assert got == {"accuracy": pytest.approx(np.mean(out.argmax(1) == labels), abs=1e-12)}
    got = fnnet.evaluate(LINEAR, params, x, one_hot, "accuracy", batch_size=batch_size)
    assert got["accuracy"] == pytest.approx(np.mean(out.argmax(1) == labels), abs=1e-12)
    got = fnnet.evaluate(LINEAR, params, x, targets, ["mse", "mae", "r2"], batch_size=batch_size)
    assert got["mse"] == pytest.approx(np.mean((out - targets) ** 2), rel=1e-10)
    assert got["mae"] == pytest.approx(np.mean(np.abs(out - targets)), rel=1e-10)
    assert got["r2"] == pytest.approx(numpy_r2(out, targets), rel=1e-9)


@pytest.mark.parametrize("threshold", [0.5, 0.0])
def test_accuracy_of_one_output_by_threshold(threshold):
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    params, x = _params(0, n_out=1), _x(0)
    out = _out(params, x)[:, 0]
    targets = (np.random.default_rng(3).uniform(size=len(x)) > 0.5).astype(np.float64)[:, None]
    want = np.mean((out > threshold) == (targets[:, 0] > threshold))
    got = fnnet.evaluate(model, params, x, targets, [Accuracy(threshold=threshold)])
    assert got["accuracy"] == pytest.approx(want, abs=1e-12)


def test_r2_of_a_constant_output_and_weights():
    pred = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    exact = R2()
    sums = jax.device_get(exact.sums(device(pred), device(pred), device(np.ones(3))))
    assert exact.value(sums) == 1.0  # the constant column predicted exactly counts 1
    off = pred + np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    sums = jax.device_get(exact.sums(device(off), device(pred), device(np.ones(3))))
    assert exact.value(sums) == pytest.approx(np.mean([0.0, 1 - 1 / 2]))
    # weights: a sample of weight 2 counts as two
    sums = jax.device_get(exact.sums(device(off), device(pred), device(np.array([2.0, 1.0, 1.0]))))
    twice = np.concatenate([off[:1], off]), np.concatenate([pred[:1], pred])
    assert exact.value(sums) == pytest.approx(numpy_r2(*twice), rel=1e-12)


def test_another_size_in_the_bucket_compiles_nothing():
    params = _params(1)
    x = _x(1, n=60)
    labels = np.random.default_rng(1).integers(0, 3, 60)
    fnnet.evaluate(LINEAR, params, x[:57], labels[:57], ["accuracy"], batch_size=8)
    with count_compilations() as compiled:
        got = fnnet.evaluate(LINEAR, params, x[:59], labels[:59], ["accuracy"], batch_size=8)
    assert compiled == [], compiled
    assert got["accuracy"] == pytest.approx(np.mean(_out(params, x[:59]).argmax(1) == labels[:59]), abs=1e-12)


@pytest.mark.parametrize(
    "metrics, kwargs, error, says",
    [
        (["precision"], {}, ValueError, r"evaluate: unknown metric 'precision'; expected one of"),
        ([], {}, TypeError, r"evaluate: metrics must be a non-empty list"),
        (["mse", "mse"], {}, ValueError, r"evaluate: metrics must have distinct names"),
        ([3], {}, TypeError, r"evaluate: a metric must be a name or a Metric, got 3"),
        (["accuracy"], {"batch_size": 0}, ValueError, r"evaluate: batch_size must be None or an int >= 1"),
    ],
)
def test_bad_metrics_and_batch_sizes_are_refused_by_name(metrics, kwargs, error, says):
    with pytest.raises(error, match=says):
        fnnet.evaluate(LINEAR, _params(0), _x(0), np.zeros(50, np.int32), metrics, **kwargs)


def test_targets_that_do_not_fit_a_metric_are_refused_before_any_work():
    params, x = _params(0), _x(0)
    with pytest.raises(ValueError, match=r"evaluate: accuracy: targets for 3 outputs must be integer labels"):
        fnnet.evaluate(LINEAR, params, x, np.zeros((50, 2)), ["accuracy"])
    with pytest.raises(ValueError, match=r"evaluate: mse: predictions and targets must have the same shape"):
        fnnet.evaluate(LINEAR, params, x, np.zeros((50, 1)), ["mse"])
    with pytest.raises(TypeError, match=r"evaluate: model must be a Layer"):
        fnnet.evaluate("model", params, x, np.zeros(50), ["mse"])
    with pytest.raises(TypeError, match=r"Accuracy: threshold must be a finite float"):
        Accuracy(threshold="0.5")


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_r2_of_targets_far_from_zero(dtype, batch_size):
    """Targets near 2000 (years) with a spread of ~10, integer or float32: R2 as NumPy's in
    float64 (sums of targets and their squares would cancel in float32, or overflow int32)."""
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    w = rng.normal(size=(4, 1))
    targets = (2000 + 10 * (x @ w) + rng.normal(size=(600, 1))).astype(dtype)
    params = ({"w": device(w * 10, np.float32), "b": device(np.full(1, 2000.0), np.float32)},)
    pred = x @ (w * 10) + 2000.0
    got = fnnet.evaluate(model, params, x, targets, ["r2"], batch_size=batch_size)
    assert got["r2"] == pytest.approx(numpy_r2(pred, targets.astype(np.float64)), abs=2e-4)


def test_labels_accuracy_cannot_score_are_refused():
    params, x = _params(0), _x(0)
    with pytest.raises(
        ValueError,
        match=r"evaluate: accuracy: labels must be in \[0, 3\) for 3 outputs, got values in \[1, 3\]",
    ):
        fnnet.evaluate(LINEAR, params, x, np.arange(50) % 3 + 1, ["accuracy"])
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    with pytest.raises(ValueError, match=r"evaluate: accuracy: one output classifies two ways"):
        fnnet.evaluate(model, _params(0, n_out=1), x, (np.arange(50) % 5)[:, None], ["accuracy"])


def test_a_threshold_that_does_not_split_the_targets_is_refused_naming_the_one_that_does():
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    params, x = _params(0, n_out=1), _x(0)
    signs = np.where(np.random.default_rng(4).uniform(size=(50, 1)) > 0.5, 1.0, -1.0)
    with pytest.raises(
        ValueError,
        match=r"evaluate: accuracy: the threshold 0.5 does not split the targets -1 and 1.*Accuracy\(threshold=0\)",
    ):
        fnnet.evaluate(model, params, x, signs, ["accuracy"])
    with pytest.raises(
        ValueError, match=r"the threshold 0.5 does not split the targets 2 and 3.*Accuracy\(threshold=2.5\)"
    ):
        fnnet.evaluate(model, params, x, signs / 2 + 2.5, ["accuracy"])
    with pytest.raises(ValueError, match=r"the threshold 1.0 does not split the targets 0 and 1"):
        fnnet.evaluate(model, params, x, (signs > 0).astype(np.float64), [Accuracy(threshold=1.0)])
    out = _out(params, x)[:, 0]
    got = fnnet.evaluate(model, params, x, signs, [Accuracy(threshold=0.0)])
    assert got["accuracy"] == pytest.approx(np.mean((out > 0) == (signs[:, 0] > 0)), abs=1e-12)


def test_evaluate_resolves_names_by_the_loss_as_fit_does():
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    params, x = _params(1, n_out=1), _x(1)
    labels = (np.random.default_rng(6).uniform(size=(50, 1)) > 0.5).astype(np.float64)
    logits = _out(params, x)[:, 0]
    got = fnnet.evaluate(model, params, x, labels, ["accuracy"], loss=fnnet.LossBCEWithLogits())
    assert got["accuracy"] == pytest.approx(np.mean((logits > 0) == (labels[:, 0] > 0.5)), abs=1e-12)
    with pytest.raises(TypeError, match=r"evaluate: loss must be None or a fnnet loss"):
        fnnet.evaluate(model, params, x, labels, ["accuracy"], loss="bce")


@pytest.mark.parametrize("labels", [np.array(["no", "yes"] * 25), np.array([None, 1] * 25, dtype=object)])
def test_labels_that_are_not_numbers_are_refused_naming_y(labels):
    model = fnnet.Sequential(fnnet.Linear(4, 2))
    params, x = _params(0, n_out=2), _x(0)
    with pytest.raises(TypeError, match=r"evaluate: y must hold numbers .* encode class labels as integers"):
        fnnet.evaluate(model, params, x, labels, ["accuracy"])
    with pytest.raises(TypeError, match=r"fit: y must hold numbers"):
        fnnet.fit(
            model, fnnet.LossCrossEntropy(), fnnet.SGD(lr=0.1), params, x, labels, epochs=1, progress=False
        )
    with pytest.raises(TypeError, match=r"fit: y_val must hold numbers"):
        fnnet.fit(
            model,
            fnnet.LossCrossEntropy(),
            fnnet.SGD(lr=0.1),
            params,
            x,
            np.arange(50) % 2,
            epochs=1,
            progress=False,
            validation=(x, labels),
        )


def test_data_of_another_feature_count_is_named_with_its_own_shape():
    model = fnnet.Sequential(fnnet.Linear(4, 1))
    x = np.c_[_x(0), _x(1)]  # 8 features for a model of 4
    with pytest.raises(
        ValueError, match=r"evaluate: the model on x: .*Linear\(n_in=4, n_out=1\).* got \(50, 8\)"
    ):
        fnnet.evaluate(model, _params(0, n_out=1), x, np.zeros((50, 1)), ["mse"])


@pytest.mark.parametrize("weights", ["zeros", "uneven"])
def test_fit_r2_with_sample_weights_is_the_weighted_r2(weights):
    """The training R2 of a weighted run centers the targets on their weighted mean: samples
    of weight 0 take no part (here targets of 0 among targets near 10,000, whose plain mean
    would leave the R2 at 0), uneven weights count as copies."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (10_000 + 0.1 * x[:, :1] + 0.01 * rng.normal(size=(200, 1))).astype(np.float32)
    if weights == "zeros":
        y[100:] = 0.0
        w = np.r_[np.ones(100), np.zeros(100)]
    else:
        w = rng.integers(1, 4, size=200).astype(np.float64)
    model = fnnet.Linear(2, 1)
    params = {
        "w": device(np.array([[0.1], [0.0]]), np.float32),
        "b": device(np.array([10_000.0]), np.float32),
    }
    with jax.enable_x64(False):
        run = fnnet.fit(
            model,
            fnnet.LossMSE(),
            fnnet.SGD(1e-9),
            params,
            x,
            y,
            1,
            sample_weight=w,
            metrics=["r2"],
            progress=False,
        )
        pred = np.asarray(model.apply(run.params, x), np.float64)
    copies = np.repeat(np.arange(200), w.astype(int))  # each sample as many times as its weight
    assert run.metrics["r2"][-1] == pytest.approx(
        numpy_r2(pred[copies], y[copies].astype(np.float64)), abs=1e-3
    )


def test_a_batch_size_past_n_compiles_nothing_for_another_n_in_the_bucket():
    """batch_size >= n is one batch: the data's bucket, not n, sets the program."""
    model = fnnet.Sequential(fnnet.Linear(4, 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)).astype(np.float32), rng.integers(0, 3, 200)
    params = model.init(jax.random.key(0), x.shape)[1]
    fnnet.evaluate(model, params, x, y, ["accuracy"], batch_size=256)
    with count_compilations() as compiled:
        for n in (199, 198, 197):
            fnnet.evaluate(model, params, x[:n], y[:n], ["accuracy"], batch_size=256)
    assert compiled == []
