"""NeuralNetClassifier and NeuralNetRegressor: any fnnet model, loss and optimizer as a
scikit-learn estimator, trained by `fnnet.fit` (in a Pipeline, a grid search, a
cross-validation: equal models share their compiled programs across clones and folds).
"""

from numbers import Integral

import jax
import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

import fnnet
from fnnet._checks import describe
from fnnet._setup import traced_apply
from fnnet.sklearn._training import unchanged_on_failure
from fnnet.layers import Layer
from fnnet.losses import Loss, LossBCE, LossBCEWithLogits, LossCrossEntropy, LossMSE
from fnnet.optim import Optimizer

__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]

_BLOCK = 256  # rows per call of the model in prediction

_ARGS = """
    Args:
      model: an fnnet Layer taking `(batch, *input_shape)` inputs, or a function
        `(n_features, n_outputs) -> Layer` that builds one for the data (called in `fit`).
      loss: an fnnet Loss; None for the default (see the class).
      optimizer: an fnnet Optimizer; None for `fnnet.Adam(1e-3)`.
      epochs: passes over the data (>= 1).
      batch_size: samples per step (>= 1; min(batch_size, n) used), None for full batch.
      input_shape: None (the model takes X's rows as they are) or the shape of one
        sample, e.g. (8, 8, 1): each row of X is reshaped to it (an image flattened by a
        Pipeline's scaler).
      random_state: None, an int or a RandomState: the initial params and the shuffles.

    Fitted attributes: model_ (the Layer trained), params_ (its params, NumPy),
    loss_curve_ (each epoch's training loss), n_iter_ (epochs), n_features_in_ and
    feature_names_in_ (named columns).
"""


class _BaseNeuralNet(BaseEstimator):
    _parameter_constraints: dict = {
        "model": [Layer, callable],
        "loss": [Loss, None],
        "optimizer": [Optimizer, None],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "input_shape": [tuple, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        model,
        *,
        loss=None,
        optimizer=None,
        epochs=10,
        batch_size=32,
        input_shape=None,
        random_state=None,
    ):
        self.model, self.loss, self.optimizer, self.epochs = model, loss, optimizer, epochs
        self.batch_size, self.input_shape, self.random_state = batch_size, input_shape, random_state

    def _inputs(self, X, dtype=np.float32):
        """X as the model takes it: rows reshaped to `input_shape` (if given)."""
        if self.input_shape is None:
            return X.astype(dtype)
        shape = tuple(self.input_shape)
        if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
            raise ValueError(
                f"{type(self).__name__}: input_shape {shape} holds {int(np.prod(shape))} values, "
                f"each sample of X {int(np.prod(X.shape[1:]))}"
            )
        return X.reshape((X.shape[0],) + shape).astype(dtype)

    def _train(self, X, y, sample_weight, n_outputs):
        random_state = check_random_state(self.random_state)
        if isinstance(self.model, Layer):
            self.model_ = self.model
        else:
            self.model_ = self.model(X.shape[1], n_outputs)
            if not isinstance(self.model_, Layer):
                raise TypeError(
                    f"{type(self).__name__}: model(n_features, n_outputs) must return an fnnet Layer, "
                    f"got {describe(self.model_)}"
                )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        x = self._inputs(X)
        seeds = random_state.randint(np.iinfo(np.int32).max, size=2)
        _, params = self.model_.init(jax.random.key(seeds[0]), (1,) + x.shape[1:])
        out = traced_apply.eval_shape(self.model_, params, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
        if out.shape[-1] != n_outputs:
            raise ValueError(
                f"{type(self).__name__}: the model gives {out.shape[-1]} outputs a sample, the targets "
                f"need {n_outputs} ({'one per class' if n_outputs > 2 else 'their columns'})"
            )
        result = fnnet.fit(
            self.model_,
            self._loss(),
            fnnet.Adam(1e-3) if self.optimizer is None else self.optimizer,
            params,
            x,
            y,
            self.epochs,
            batch_size=None if self.batch_size is None else min(self.batch_size, x.shape[0]),
            key=jax.random.key(seeds[1]),
            progress=False,
            sample_weight=sample_weight,
        )
        self.params_ = jax.device_get(result.params)
        self.loss_curve_ = np.asarray(result.losses).tolist()
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _outputs(self, X):
        """The model's outputs (inference mode) on X, float64 `(n, outputs)`, computed in
        blocks of `_BLOCK` rows (the last one padded): one program for every size, and each
        sample's output the same whatever the others."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=(np.float64, np.float32))
        floats = [a for a in jax.tree.leaves(self.params_) if np.issubdtype(np.asarray(a).dtype, np.floating)]
        x = self._inputs(X, np.asarray(floats[0]).dtype if floats else np.float32)
        n = x.shape[0]
        padded = np.concatenate([x, np.zeros((-n % _BLOCK,) + x.shape[1:], x.dtype)])
        blocks = [
            np.asarray(traced_apply(self.model_, self.params_, padded[i : i + _BLOCK]), np.float64)
            for i in range(0, padded.shape[0], _BLOCK)
        ]
        return np.concatenate(blocks)[:n].reshape(n, -1)


class NeuralNetClassifier(ClassifierMixin, _BaseNeuralNet):
    """An fnnet model as a classifier: its outputs are logits for `LossCrossEntropy` (the
    default; one output per class, integer labels), one logit for `LossBCEWithLogits` or
    one probability for `LossBCE` (two classes, 0/1 targets). Labels may be any values.

    Example:
      >>> net = fnnet.Sequential(fnnet.Linear(4, 16), fnnet.ReLU(), fnnet.Linear(16, 3))
      >>> NeuralNetClassifier(net, epochs=50, random_state=0).fit(X_iris, y_iris).score(X_iris, y_iris)
    """

    __doc__ = (__doc__ or "") + _ARGS

    def _loss(self):
        loss = LossCrossEntropy() if self.loss is None else self.loss
        if not isinstance(loss, (LossCrossEntropy, LossBCEWithLogits, LossBCE)):
            raise ValueError(
                f"NeuralNetClassifier: loss must be LossCrossEntropy (logits, one per class), "
                f"LossBCEWithLogits or LossBCE (one output, two classes), got {describe(loss)}"
            )
        return loss

    def _one_output(self) -> bool:
        return not isinstance(self._loss(), LossCrossEntropy)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Train on `X` `(n_samples, ...)` and labels `y` `(n_samples,)`; returns self."""
        with unchanged_on_failure(self):  # a failed fit leaves the estimator as it was
            X, y = validate_data(self, X, y, allow_nd=True, dtype=(np.float64, np.float32))
            check_classification_targets(y)
            encoder = LabelEncoder().fit(y)
            if len(encoder.classes_) < 2:
                raise ValueError(
                    f"NeuralNetClassifier: y must hold at least 2 classes, got 1 class: {encoder.classes_}"
                )
            if self._one_output() and len(encoder.classes_) != 2:
                raise ValueError(
                    f"NeuralNetClassifier: {describe(self._loss())} classifies 2 classes, y holds {len(encoder.classes_)}"
                )
            self.classes_ = encoder.classes_
            labels = encoder.transform(y).astype(np.int32)
            target = labels[:, None].astype(np.float32) if self._one_output() else labels
            return self._train(X, target, sample_weight, 1 if self._one_output() else len(self.classes_))

    def predict_proba(self, X):
        """Each class's probability, `(n_samples, n_classes)` in the order of `classes_`."""
        out = self._outputs(X)
        loss = self._loss()
        if isinstance(loss, LossCrossEntropy):
            return softmax(out, axis=1)
        p = expit(out[:, :1]) if isinstance(loss, LossBCEWithLogits) else np.clip(out[:, :1], 0, 1)
        return np.hstack([1 - p, p])

    def predict(self, X):
        """The predicted labels, `(n_samples,)`."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_log_proba(self, X):
        """The log of `predict_proba(X)`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class NeuralNetRegressor(RegressorMixin, _BaseNeuralNet):
    """An fnnet model as a regressor: `LossMSE` by default, targets `(n,)` or `(n, k)`.

    Example:
      >>> net = fnnet.Sequential(fnnet.Linear(10, 32), fnnet.Tanh(), fnnet.Linear(32, 1))
      >>> NeuralNetRegressor(net, epochs=100).fit(X, y).predict(X[:3])
    """

    __doc__ = (__doc__ or "") + _ARGS

    def _loss(self):
        return LossMSE() if self.loss is None else self.loss

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Train on `X` `(n_samples, ...)` and targets `y` `(n_samples,)` or `(n_samples, k)`;
        returns self."""
        with unchanged_on_failure(self):  # a failed fit leaves the estimator as it was
            X, y = validate_data(
                self, X, y, allow_nd=True, multi_output=True, y_numeric=True, dtype=(np.float64, np.float32)
            )
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            self._one_target = y.ndim == 1
            target = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(np.float32)
            return self._train(X, target, sample_weight, target.shape[1])

    def predict(self, X):
        """The predicted values, `(n_samples,)` (or `(n_samples, k)`)."""
        out = self._outputs(X)
        return out.ravel() if self._one_target else out
