"""fnnet.sklearn: scikit-learn's conformance suite, accuracy against scikit-learn's own MLP on
its bundled data sets, a second fit that compiles nothing, pickling, labels and errors."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn.neural_network as sk  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fnnet  # noqa: E402
from fnnet.sklearn import MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor  # noqa: E402
from helpers import count_compilations  # noqa: E402


class SmallNet:
    """A model for the data, built in fit (the conformance checks use many feature counts);
    printed by name, so test ids are the same in every pytest-xdist worker."""

    def __call__(self, n_features, n_outputs):
        return fnnet.Sequential(fnnet.Linear(n_features, 16), fnnet.ReLU(), fnnet.Linear(16, n_outputs))

    def __repr__(self):
        return "SmallNet()"


small_net = SmallNet()


# Small, fast configurations that still pass the checks' accuracy floors. The drop-ins take
# every check; the wrappers of any model, whose fitting is the same code, the API checks
# (scikit-learn's legacy=False), which keeps the suite's time.
CONFORMANCE = [
    MLPClassifier(hidden_layer_sizes=(10,), learning_rate_init=0.01, max_iter=100, random_state=0),
    MLPRegressor(hidden_layer_sizes=(10,), learning_rate_init=0.01, max_iter=100, random_state=0),
]
API_CONFORMANCE = [
    NeuralNetClassifier(small_net, optimizer=fnnet.Adam(1e-2), epochs=20, random_state=0),
    NeuralNetRegressor(small_net, optimizer=fnnet.Adam(1e-2), epochs=20, random_state=0),
]

EXPECTED_FAILURES = {
    # scikit-learn's own MLPs fail it too: minibatches drawn at random make a sample of
    # weight 2 and the same sample twice different runs, not the same fit bit for bit
    "check_sample_weight_equivalence_on_dense_data": (
        "shuffled minibatches: weighting a sample is not repeating it, bit for bit"
    ),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CONFORMANCE, expected_failed_checks=lambda estimator: EXPECTED_FAILURES)
def test_scikit_learn_conformance(estimator, check):
    check(estimator)


@parametrize_with_checks(
    API_CONFORMANCE, legacy=False, expected_failed_checks=lambda estimator: EXPECTED_FAILURES
)
def test_scikit_learn_api_conformance_of_the_wrappers(estimator, check):
    check(estimator)


def _data(name):
    loader = {"iris": load_iris, "digits": load_digits, "breast_cancer": load_breast_cancer}.get(name)
    X, y = (loader or load_diabetes)(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def _both(name, estimator, **params):
    """Test scores of scikit-learn's estimator and fnnet's, same data and parameters."""
    X_train, X_test, y_train, y_test = _data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = estimator(random_state=0, **params).fit(X_train, y_train).score(X_test, y_test)
        theirs = getattr(sk, estimator.__name__)(random_state=0, **params).fit(X_train, y_train)
    return theirs.score(X_test, y_test), ours


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_classifier_accuracy_with_the_defaults_is_scikit_learns(name):
    theirs, ours = _both(name, MLPClassifier)
    assert ours >= theirs - 0.03, (theirs, ours)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_classifier_accuracy_on_iris_is_scikit_learns(solver):
    theirs, ours = _both("iris", MLPClassifier, solver=solver)
    assert ours >= theirs - 0.03, (theirs, ours)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_regressor_r2_on_diabetes_is_scikit_learns(solver):
    theirs, ours = _both("diabetes", MLPRegressor, solver=solver, max_iter=500)
    assert ours >= theirs - 0.1, (theirs, ours)


def test_sgd_starts_from_scikit_learns_weights_and_tracks_its_loss():
    """The same random_state draws the same initial coefs; the same rule then gives the
    same losses up to the order of the minibatches."""
    X, _, y, _ = _data("iris")
    params = dict(solver="sgd", hidden_layer_sizes=(8,), max_iter=30, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPClassifier(**params).fit(X, y), sk.MLPClassifier(**params).fit(X, y)
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_] == [(4, 8), (8, 3)]
    np.testing.assert_allclose(ours.loss_curve_[0], theirs.loss_curve_[0], rtol=1e-3)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=0.05)
    assert ours.n_iter_ == 30 and ours.t_ == 30 * X.shape[0]


def test_a_second_fit_compiles_nothing():
    X, _, y, _ = _data("iris")
    fit = dict(hidden_layer_sizes=(12,), batch_size=32, max_iter=20, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(random_state=0, **fit).fit(X, y)
        with count_compilations() as compiled:
            MLPClassifier(random_state=1, **fit).fit(X[:100], y[:100])  # another seed, another size
    assert compiled == []


def test_early_stopping_restores_the_best_validation_score():
    X, _, y, _ = _data("digits")
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_the_training_loss_rule_stops_a_run():
    X, _, y, _ = _data("iris")
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, y)  # no loss curve for L-BFGS
    assert not hasattr(clf, "loss_curve_")
    clf = MLPClassifier(learning_rate_init=0.05, tol=1e-2, n_iter_no_change=2, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200 and clf.best_loss_ == min(clf.loss_curve_)


def test_max_iter_warns_convergence():
    X, _, y, _ = _data("iris")
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(solver="lbfgs", max_iter=2, random_state=0).fit(X, y)


@pytest.mark.parametrize("rate", ["adaptive", "invscaling"])
def test_adaptive_and_invscaling_learning_rates_are_scikit_learns(rate):
    params = dict(solver="sgd", learning_rate=rate, learning_rate_init=0.05, tol=1e-3, max_iter=300)
    theirs, ours = _both("iris", MLPClassifier, **params)
    assert ours >= theirs - 0.05, (theirs, ours)


def test_pickle_round_trip_predicts_the_same():
    X, X_test, y, _ = _data("iris")
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    for estimator in (
        MLPClassifier(solver="lbfgs", random_state=0, dropout=0.0).fit(X, labels),
        MLPClassifier(max_iter=5, batch_norm=True, dropout=0.2, random_state=0),
        NeuralNetClassifier(small_net, epochs=3, random_state=0).fit(X, labels),
    ):
        if not hasattr(estimator, "coefs_") and isinstance(estimator, MLPClassifier):
            with pytest.warns(ConvergenceWarning):
                estimator.fit(X, labels)
        again = pickle.loads(pickle.dumps(estimator))
        np.testing.assert_array_equal(again.predict(X_test), estimator.predict(X_test))
        np.testing.assert_array_equal(again.predict_proba(X_test), estimator.predict_proba(X_test))
        assert set(again.predict(X_test)) <= set(labels)


def test_string_labels_binary_and_multilabel():
    X, X_test, y, _ = _data("breast_cancer")
    words = np.array(["benign", "malignant"])[y]
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, words)
    assert list(clf.classes_) == ["benign", "malignant"] and clf.out_activation_ == "logistic"
    assert clf.predict_proba(X_test).shape == (len(X_test), 2) and clf.n_outputs_ == 1
    multilabel = np.stack([y, 1 - y, (X[:, 0] > 0).astype(int)], axis=1)
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, multilabel)
    assert clf.predict(X_test).shape == (len(X_test), 3) and clf.score(X, multilabel) > 0.9
    with pytest.warns(ConvergenceWarning):
        MLPClassifier(early_stopping=True, max_iter=5, random_state=0).fit(X, multilabel)


def test_multi_output_regression_and_partial_fit():
    X, _, y, _ = _data("diabetes")
    Y = np.stack([y, -y], axis=1) / 100
    reg = MLPRegressor(solver="lbfgs", max_iter=2000, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == Y.shape and reg.n_outputs_ == 2 and reg.coefs_[-1].shape == (100, 2)
    reg = MLPRegressor(random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y / 100)
    assert reg.n_iter_ == 1 and len(reg.loss_curve_) == 3 and reg.t_ == 3 * len(X)


def test_lists_and_dataframes():
    X, _, y, _ = _data("iris")
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X.tolist(), y.tolist())
    assert clf.score(X, y) > 0.9
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(frame, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]


@pytest.mark.slow
def test_the_digits_cnn_in_a_pipeline():
    from digits import cnn

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    net = NeuralNetClassifier(
        cnn(), input_shape=(8, 8, 1), epochs=5, optimizer=fnnet.Adam(3e-3), random_state=0
    )
    pipeline = make_pipeline(MinMaxScaler(), net).fit(X_train, y_train)
    assert pipeline.score(X_test, y_test) > 0.9


def test_errors():
    X, _, y, _ = _data("iris")
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    with pytest.raises(InvalidParameterError, match="'activation' parameter of MLPClassifier"):
        MLPClassifier(activation="softsign").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'dropout' parameter"):
        MLPClassifier(dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be > 0"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="solver='lbfgs' trains full batch"):
        MLPClassifier(solver="lbfgs", dropout=0.5).fit(X, y)
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
        clf.partial_fit(X, y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="loss must be LossCrossEntropy"):
        NeuralNetClassifier(small_net, loss=fnnet.LossMSE()).fit(X, y)
    with pytest.raises(TypeError, match="must return an fnnet Layer"):
        NeuralNetRegressor(lambda n_in, n_out: None).fit(X, y)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_without_shuffling_the_loss_curve_is_scikit_learns(solver):
    """shuffle=False: the same batches in the same order from the same initial weights, so
    every epoch's loss is scikit-learn's (float32 against its float64)."""
    X_train, _, y_train, _ = _data("iris")
    params = {"solver": solver, "shuffle": False, "max_iter": 8, "alpha": 0.0, "batch_size": 32}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(random_state=0, **params).fit(X_train, y_train)
        theirs = sk.MLPClassifier(random_state=0, **params).fit(X_train, y_train)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=2e-5)


def test_early_stopping_restores_the_best_even_when_the_rule_never_ends_the_run():
    X_train, _, y_train, _ = _data("diabetes")
    y_train = (y_train - y_train.mean()) / y_train.std()
    params = {
        "early_stopping": True,
        "n_iter_no_change": np.inf,
        "learning_rate_init": 0.05,
        "random_state": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        long = MLPRegressor(max_iter=10, **params).fit(X_train, y_train)
        best = int(np.argmax(long.validation_scores_)) + 1
        assert best < 10, "the last epoch was the best: the test proves nothing"
        short = MLPRegressor(max_iter=best, **params).fit(X_train, y_train)
    for a, b in zip(long.coefs_ + long.intercepts_, short.coefs_ + short.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_a_failed_fit_leaves_the_estimator_unfitted():
    X, y = load_iris(return_X_y=True)
    for estimator, kwargs in (
        (MLPClassifier(max_iter=5), {"sample_weight": -np.ones(len(y))}),
        (MLPClassifier(solver="lbfgs", max_iter=5), {"sample_weight": -np.ones(len(y))}),
        (MLPRegressor(max_iter=5), {}),
    ):
        target = y * 1e39 if isinstance(estimator, MLPRegressor) else y
        with pytest.raises(ValueError, match="Negative values|beyond float32"):
            estimator.fit(X, target, **kwargs)
        with pytest.raises(NotFittedError):
            estimator.predict(X)
    with pytest.raises(ValueError, match="X holds values beyond float32"):
        MLPRegressor(solver="lbfgs").fit(X * 1e39, y)
    with pytest.raises(TypeError, match=r"hidden_layer_sizes must be integers, got \[5.5\]"):
        MLPClassifier(hidden_layer_sizes=(5.5,)).fit(X, y)
    five = NeuralNetClassifier(fnnet.Sequential(fnnet.Linear(4, 5)), epochs=1)
    with pytest.raises(ValueError, match="the model gives 5 outputs a sample, the targets need 3"):
        five.fit(X, y)
    with pytest.raises(NotFittedError):
        five.predict(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_failed_fit_leaves_the_estimator_as_it_was():
    """A fitted estimator whose next fit raises still predicts as before; scikit-learn's
    own attributes (a metadata request) survive a failed first fit."""
    X, y = load_iris(return_X_y=True)
    for estimator in (
        MLPClassifier(max_iter=5, random_state=0),
        NeuralNetClassifier(fnnet.Sequential(fnnet.Linear(4, 3)), epochs=2),
    ):
        before = estimator.fit(X, y).predict_proba(X)
        with pytest.raises(ValueError):
            estimator.fit(X[:0], y[:0])
        np.testing.assert_array_equal(estimator.predict_proba(X), before)
    import sklearn

    with sklearn.config_context(enable_metadata_routing=True):
        requested = MLPClassifier(max_iter=5).set_fit_request(sample_weight=True)
        with pytest.raises(ValueError, match="Negative values"):
            requested.fit(X, y, sample_weight=-np.ones(len(y)))
        assert requested.get_metadata_routing().fit.requests["sample_weight"] is True
    with pytest.raises(NotFittedError):
        requested.predict(X)


def test_lbfgs_takes_iteration_limits_past_int32():
    X, y = load_iris(return_X_y=True)
    fitted = MLPClassifier(solver="lbfgs", max_iter=2**31, max_fun=2**40, random_state=0).fit(X[:40], y[:40])
    assert 1 <= fitted.n_iter_ < 2**31


def test_a_failed_fit_keeps_the_parameters_it_was_given():
    X, y = load_iris(return_X_y=True)
    state = np.random.RandomState(0)
    estimator = MLPClassifier(max_iter=5, random_state=state)
    with pytest.raises(ValueError, match="Negative values"):
        estimator.fit(X, y, sample_weight=-np.ones(len(y)))
    assert estimator.random_state is state


def test_a_learning_rate_init_float32_cannot_hold_is_named():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=r"learning_rate_init=1e-50 is 0 in float32, where fnnet trains"):
        MLPClassifier(learning_rate_init=1e-50, max_iter=2).fit(X, y)
