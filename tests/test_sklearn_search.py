"""fnnet.sklearn.GridSearchCV and RandomizedSearchCV: the same results as scikit-learn's own
search of the same estimator (which fits each candidate and fold alone), one program per
architecture, the fallback path for what does not train together, and the errors."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn.model_selection as sk  # noqa: E402
from scipy.stats import loguniform, randint  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import FitFailedWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402

import fnnet  # noqa: E402
from fnnet.sklearn import (  # noqa: E402
    GridSearchCV,
    MLPClassifier,
    MLPRegressor,
    NeuralNetClassifier,
    RandomizedSearchCV,
)
from helpers import count_compilations  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X, Y = make_classification(n_samples=60, n_features=5, n_informative=3, n_classes=3, random_state=0)
X_REG, Y_REG = make_regression(n_samples=48, n_features=4, random_state=0)


def small(estimator=MLPClassifier, **settings):
    """A tiny MLP that trains in a few epochs of a few minibatches."""
    options = dict(
        hidden_layer_sizes=(6,), batch_size=16, max_iter=4, learning_rate_init=0.01, random_state=0
    )
    return estimator(**{**options, **settings})


def assert_same_results(ours, theirs):
    """Every entry of cv_results_ but the times equal (scores up to float rounding), the
    keys scikit-learn's, and the best candidate and its score the same."""
    assert sorted(ours.cv_results_) == sorted(theirs.cv_results_)
    for key, value in theirs.cv_results_.items():
        if key.endswith("_time"):
            continue
        if key.startswith(("split", "mean_", "std_")):
            np.testing.assert_allclose(ours.cv_results_[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
        elif key == "params":
            assert ours.cv_results_[key] == value
        else:
            np.testing.assert_array_equal(ours.cv_results_[key], value, err_msg=key)
    for name in ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_"):
        if hasattr(theirs, name):
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name), nan_ok=True), name
        else:
            assert not hasattr(ours, name), name


def test_grid_search_equals_each_fit_alone():
    grid = {"learning_rate_init": [0.003, 0.03], "alpha": [1e-4, 0.1], "tol": [1e-4, 0.05]}
    estimator = small(n_iter_no_change=1)  # tol 0.05: members stop on their own, epochs apart
    ours = GridSearchCV(estimator, grid, cv=3, return_train_score=True).fit(X, Y)
    theirs = sk.GridSearchCV(estimator, grid, cv=3, return_train_score=True).fit(X, Y)
    assert_same_results(ours, theirs)
    for a, b in zip(ours.best_estimator_.coefs_, theirs.best_estimator_.coefs_):
        np.testing.assert_array_equal(a, b)
    assert ours.refit_time_ > 0 and ours.scorer_ is not None
    assert isinstance(ours, sk.GridSearchCV)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_a_splitter_sample_weights_and_several_scores_refit_by_name():
    cv = sk.StratifiedKFold(3, shuffle=True, random_state=0)
    grid = {"solver": ["sgd"], "momentum": [0.5, 0.9], "nesterovs_momentum": [True, False]}
    settings = dict(cv=cv, scoring=["accuracy", "neg_log_loss"], refit="neg_log_loss")
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(Y))
    ours = GridSearchCV(small(), grid, **settings).fit(X, Y, sample_weight=weights)
    theirs = sk.GridSearchCV(small(), grid, **settings).fit(X, Y, sample_weight=weights)
    assert ours.multimetric_ and set(ours.scorer_) == {"accuracy", "neg_log_loss"}
    assert_same_results(ours, theirs)


def test_a_regressor_refit_false():
    grid = {"alpha": [1e-4, 1.0], "learning_rate_init": [0.01, 0.1]}
    settings = dict(cv=sk.KFold(3), scoring="r2", refit=False)
    ours = GridSearchCV(small(MLPRegressor), grid, **settings).fit(X_REG, Y_REG)
    theirs = sk.GridSearchCV(small(MLPRegressor), grid, **settings).fit(X_REG, Y_REG)
    assert_same_results(ours, theirs)
    assert not hasattr(ours, "best_estimator_")


def test_randomized_search_with_distributions():
    distributions = {"learning_rate_init": loguniform(1e-3, 1e-1), "n_iter_no_change": randint(1, 5)}
    settings = dict(n_iter=4, cv=3, random_state=0)
    ours = RandomizedSearchCV(small(max_iter=6), distributions, **settings).fit(X, Y)
    theirs = sk.RandomizedSearchCV(small(max_iter=6), distributions, **settings).fit(X, Y)
    assert_same_results(ours, theirs)


def members_programs(compiled):
    return [name for name in compiled if "_members" in name]


def test_one_program_per_architecture():
    grid = {
        "hidden_layer_sizes": [(5,), (7,)],
        "learning_rate_init": [0.003, 0.03],
        "tol": [1e-4, 1e-2],
        "n_iter_no_change": [1, 3],
        "max_iter": [2, 3],
    }
    with count_compilations() as compiled:
        GridSearchCV(small(), grid, cv=2, refit=False).fit(X, Y)
    assert len(members_programs(compiled)) == 2, compiled  # the numbers are data: one per size


def test_what_does_not_train_together_is_fitted_alone():
    grid = [
        {"solver": ["sgd"], "learning_rate": ["adaptive"]},  # its rate divided where it stops: alone
        {"early_stopping": [True, False]},  # its validation split: alone
    ]
    ours = GridSearchCV(small(max_iter=3), grid, cv=2).fit(X, Y)
    theirs = sk.GridSearchCV(small(max_iter=3), grid, cv=2).fit(X, Y)
    assert_same_results(ours, theirs)


@pytest.mark.parametrize(
    "estimator, grid",
    [
        pytest.param(small(), {"solver": ["lbfgs", "adam"]}, marks=pytest.mark.slow),
        (LogisticRegression(max_iter=50), {"C": [0.1, 1.0]}),
        (
            NeuralNetClassifier(
                fnnet.Sequential(fnnet.Linear(5, 6), fnnet.ReLU(), fnnet.Linear(6, 3)),
                epochs=1,
                random_state=0,
            ),
            {"epochs": [1, 2]},
        ),
    ],
    ids=["lbfgs", "not_fnnet", "neural_net"],
)
def test_other_estimators_and_solvers_are_fitted_alone(estimator, grid):
    ours = GridSearchCV(estimator, grid, cv=2).fit(X, Y)
    theirs = sk.GridSearchCV(estimator, grid, cv=2).fit(X, Y)
    assert_same_results(ours, theirs)


def test_a_bad_parameter_name_raises_as_scikit_learn():
    for search in (GridSearchCV, sk.GridSearchCV):
        with pytest.raises(ValueError, match="Invalid parameter 'learning_rat' for estimator MLPClassifier"):
            search(small(), {"learning_rat": [0.1]}, cv=2).fit(X, Y)


def test_a_failed_fit_scores_error_score_or_raises():
    grid = {"learning_rate_init": [0.01, -1.0]}
    with pytest.warns(FitFailedWarning, match="2 fits failed out of a total of 4"):
        ours = GridSearchCV(small(), grid, cv=2, error_score=-7.0).fit(X, Y)
    assert ours.cv_results_["split0_test_score"][1] == -7.0 and ours.best_index_ == 0
    with pytest.raises(InvalidParameterError, match="learning_rate_init"):
        GridSearchCV(small(), grid, cv=2, error_score="raise").fit(X, Y)


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_fits_that_fnnet_fit_refuses_fail_in_the_search_as_alone():
    """A fold whose fit alone raises before training (BatchNorm given a last batch of one
    sample; Poisson targets below 0) fails in the search too, scored by error_score as
    scikit-learn's own search scores it, not trained with the others."""
    rng = np.random.RandomState(0)
    x = rng.randn(50, 3)
    y = x[:, 0] * x[:, 1]
    estimator = small(MLPRegressor, hidden_layer_sizes=(5,), batch_size=8, batch_norm=True)
    cv = sk.KFold(3, shuffle=True, random_state=0)  # training folds of 33, 33 and 34 samples
    with pytest.warns(FitFailedWarning, match="2 fits failed out of a total of 3"):
        ours = GridSearchCV(estimator, {"alpha": [1e-4]}, cv=cv).fit(x, y)
    with pytest.warns(FitFailedWarning, match="2 fits failed out of a total of 3"):
        theirs = sk.GridSearchCV(estimator, {"alpha": [1e-4]}, cv=cv).fit(x, y)
    assert_same_results(ours, theirs)
    poisson = small(MLPRegressor, loss="poisson")
    with pytest.raises(ValueError, match="All the 6 fits failed"):
        GridSearchCV(poisson, {"alpha": [1e-4, 1e-3]}, cv=cv).fit(x, y)


def test_scikit_learns_search_reports_a_failed_fit_by_its_own_error():
    """A failed fit leaves the estimator as it was, scikit-learn's own attributes on it too:
    its search (error_score='raise') then raises the fit's error itself."""
    grid = {"hidden_layer_sizes": [(3,), (0,)]}
    with pytest.raises(ValueError, match=r"hidden_layer_sizes must be > 0, got \[0\]"):
        sk.GridSearchCV(small(), grid, cv=2, error_score="raise").fit(X, Y)
