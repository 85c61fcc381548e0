"""MLPClassifier and MLPRegressor: scikit-learn's multi-layer perceptrons, trained by fnnet.

The parameters, their defaults and meaning, the fitted attributes and the methods are
scikit-learn's (`sklearn.neural_network`); `dropout=` and `batch_norm=` are added. Where
the two differ, the module `fnnet.sklearn` says how.
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d, validate_data

from fnnet.losses import LossBCEWithLogits, LossCrossEntropy, LossMSE
from fnnet.metrics import Accuracy, R2
from fnnet.sklearn._mlp_base import DTYPE, BaseMLP
from fnnet.sklearn._objectives import HalfPoissonLogLink, SubsetAccuracy, SummedOverOutputs

__all__ = ["MLPClassifier", "MLPRegressor"]

_DOC = """
    Args (scikit-learn's, with its defaults): hidden_layer_sizes, activation
    ('identity', 'logistic', 'tanh', 'relu'), solver ('lbfgs', 'sgd', 'adam'), alpha
    (the L2 penalty 0.5 * alpha * sum(coef**2) / batch_size), batch_size
    ('auto' = min(200, n)), learning_rate ('constant', 'invscaling', 'adaptive'; sgd),
    learning_rate_init, power_t, max_iter (epochs; L-BFGS iterations), shuffle, random_state,
    tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun; and fnnet's
    dropout (the rate of a Dropout after every hidden activation, 0.0 for none) and
    batch_norm (a BatchNorm before every hidden activation).

    Fitted attributes: coefs_, intercepts_, loss_, n_iter_, t_, n_layers_, n_outputs_,
    out_activation_, n_features_in_, feature_names_in_ (named columns); with sgd and adam
    loss_curve_, best_loss_, validation_scores_, best_validation_score_.
"""


def _stochastic(estimator) -> bool:
    if estimator.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit is only available for stochastic optimizers. {estimator.solver} is not stochastic."
        )
    return True


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier: log loss, trained by fnnet (sgd, adam or L-BFGS).

    Binary, multi-class and multi-label targets (any labels: strings too).
    """

    __doc__ = (
        (__doc__ or "")
        + _DOC
        + """
    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> MLPClassifier(max_iter=500, random_state=0).fit(X, y).score(X, y) > 0.9
      True
    """
    )

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        batch_norm=False,
    ):
        self.hidden_layer_sizes, self.activation, self.solver = hidden_layer_sizes, activation, solver
        self.alpha, self.batch_size, self.learning_rate = alpha, batch_size, learning_rate
        self.learning_rate_init, self.power_t, self.max_iter = learning_rate_init, power_t, max_iter
        self.shuffle, self.random_state, self.tol, self.verbose = shuffle, random_state, tol, verbose
        self.warm_start, self.momentum, self.nesterovs_momentum = warm_start, momentum, nesterovs_momentum
        self.early_stopping, self.validation_fraction = early_stopping, validation_fraction
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.n_iter_no_change, self.max_fun = n_iter_no_change, max_fun
        self.dropout, self.batch_norm = dropout, batch_norm

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and set(classes) != set(self.classes_):
                raise ValueError(
                    f"warm_start can only be used where `y` has the same classes as in the previous "
                    f"call to fit. Previously got {self.classes_}, `y` has {classes}"
                )
            if not self.warm_start and len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return X, self._label_binarizer.transform(y).astype(bool)

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _training_target(self, Y):
        """Integer labels for softmax (one label per sample), 0/1 columns otherwise."""
        if self.out_activation_ == "softmax":
            return Y.argmax(axis=1).astype(np.int32)
        return Y.astype(DTYPE)

    def _training_loss(self):
        if self.out_activation_ == "softmax":
            return LossCrossEntropy()
        return SummedOverOutputs(LossBCEWithLogits())

    def _score_metric(self):
        if self.out_activation_ == "softmax":
            return Accuracy()
        return Accuracy(threshold=0.0) if self.n_outputs_ == 1 else SubsetAccuracy()

    def _stratify(self, Y) -> bool:
        return self._label_binarizer.y_type_ != "multilabel-indicator"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to `X` `(n_samples, n_features)` and labels `y` `(n_samples,)` (or an
        indicator matrix `(n_samples, n_labels)`); `sample_weight` `(n_samples,)` or None.

        Returns:
          self.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_stochastic)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over `(X, y)`; `classes` (every label) on the first call.

        Returns:
          self.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """The predicted labels, `(n_samples,)` (or `(n_samples, n_labels)`, multi-label)."""
        proba = self._forward(X)
        return self._label_binarizer.inverse_transform(proba.ravel() if self.n_outputs_ == 1 else proba)

    def predict_proba(self, X):
        """Each class's probability, `(n_samples, n_classes)` in the order of `classes_`."""
        proba = self._forward(X)
        if self.n_outputs_ == 1:
            return np.hstack([1 - proba, proba])
        return proba

    def predict_log_proba(self, X):
        """The log of `predict_proba(X)`."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor: squared error (or Poisson), trained by fnnet."""

    __doc__ = (__doc__ or "") + _DOC.replace("Args (", "Args: loss ('squared_error', 'poisson'); (")

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        batch_norm=False,
    ):
        self.loss = loss
        self.hidden_layer_sizes, self.activation, self.solver = hidden_layer_sizes, activation, solver
        self.alpha, self.batch_size, self.learning_rate = alpha, batch_size, learning_rate
        self.learning_rate_init, self.power_t, self.max_iter = learning_rate_init, power_t, max_iter
        self.shuffle, self.random_state, self.tol, self.verbose = shuffle, random_state, tol, verbose
        self.warm_start, self.momentum, self.nesterovs_momentum = warm_start, momentum, nesterovs_momentum
        self.early_stopping, self.validation_fraction = early_stopping, validation_fraction
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.n_iter_no_change, self.max_fun = n_iter_no_change, max_fun
        self.dropout, self.batch_norm = dropout, batch_norm

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _training_target(self, Y):
        return Y.astype(DTYPE)

    def _training_loss(self):
        if self.loss == "poisson":
            return HalfPoissonLogLink()
        return SummedOverOutputs(LossMSE(), 0.5)

    def _loss_scale(self) -> float:
        return float(self.n_outputs_)

    def _score_metric(self):
        return R2()

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to `X` `(n_samples, n_features)` and targets `y` `(n_samples,)` or
        `(n_samples, n_targets)`; `sample_weight` `(n_samples,)` or None.

        Returns:
          self.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(_stochastic)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over `(X, y)`.

        Returns:
          self.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """The predicted values, `(n_samples,)` (or `(n_samples, n_targets)`)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out
