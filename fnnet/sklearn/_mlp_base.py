"""What MLPClassifier and MLPRegressor share: their parameters, their checks and `fit`.

Training runs in fnnet: the stochastic solvers through `fnnet.fit`'s compiled loop
(`_training`), L-BFGS as one compiled loop of its own (`_lbfgs`); the weights come back as
scikit-learn's `coefs_` and `intercepts_`, from which `predict` computes in NumPy.
"""

import warnings
from numbers import Integral, Real
from typing import Optional

import jax
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fnnet._buckets import padded_samples, run_size
from fnnet._checks import INT32_MAX
from fnnet.sklearn import _lbfgs, _network
from fnnet.sklearn._objectives import sklearn_adam, sklearn_sgd
from fnnet.sklearn._training import Plan, Trained, train_epochs, unchanged_on_failure
from fnnet.stopping import EarlyStopping

DTYPE = np.float32  # fnnet trains in float32; predictions are computed in float64
_MOST_PATIENCE = INT32_MAX  # EarlyStopping's largest: a rule that never ends a run


class BaseMLP(BaseEstimator):
    """The base of MLPClassifier and MLPRegressor; not for use on its own."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
    }

    # -- what the subclasses define --------------------------------------------------
    def _validate_input(self, X, y, incremental, reset):
        raise NotImplementedError

    def _training_target(self, Y):
        raise NotImplementedError

    def _training_loss(self):
        raise NotImplementedError

    def _score_metric(self):
        raise NotImplementedError

    def _loss_scale(self) -> float:
        """The recorded loss over scikit-learn's (its regression losses average outputs)."""
        return 1.0

    # -- fitting -----------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False):
        with unchanged_on_failure(self):
            X, Y, sample_weight, random_state = self._prepare(X, y, sample_weight, incremental)
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, Y, sample_weight)
            else:
                plan = self._plan(X, Y, sample_weight, random_state, incremental)
                self._finish(plan, train_epochs(plan), incremental)
            return self._checked_weights()

    def _prepare(self, X, y, sample_weight, incremental):
        """What fit does before training: the checks, the validated `(X, Y, sample_weight)`
        (Y 2-D) and, on a first pass, the initial weights and fitted attributes; returns
        them and the random state (its initial weights drawn)."""
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if not all(isinstance(h, Integral) for h in hidden):
            raise TypeError(f"hidden_layer_sizes must be integers, got {hidden}.")
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        if self.solver == "lbfgs" and (self.dropout or self.batch_norm):
            raise ValueError(
                f"solver='lbfgs' trains full batch in inference mode: dropout must be 0 and "
                f"batch_norm False, got dropout={self.dropout}, batch_norm={self.batch_norm}; "
                f"use solver='adam' or 'sgd'"
            )
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.solver != "lbfgs" and not np.float32(self.learning_rate_init) > 0:
            raise ValueError(
                f"learning_rate_init={self.learning_rate_init!r} is 0 in float32, where fnnet trains "
                f"(its smallest positive number is about 1e-45): give a larger one"
            )
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        for name, a in (("X", X), ("y", Y)):  # fnnet trains in float32
            with np.errstate(over="ignore"):
                finite = not np.issubdtype(a.dtype, np.number) or np.all(np.isfinite(a.astype(DTYPE)))
            if not finite:
                raise ValueError(
                    f"{name} holds values beyond float32's range (fnnet trains in float32): scale "
                    f"the data, e.g. with StandardScaler"
                )
        layer_units = [X.shape[1]] + [int(h) for h in hidden] + [Y.shape[1]]
        random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units, random_state)
        elif [c.shape for c in self.coefs_] != list(zip(layer_units[:-1], layer_units[1:])):
            raise ValueError(
                f"warm_start / partial_fit: the fitted layers {[c.shape for c in self.coefs_]} do not "
                f"fit layer units {layer_units}"
            )
        return X, Y, sample_weight, random_state

    def _checked_weights(self):
        weights = self.coefs_ + self.intercepts_
        if not all(np.isfinite(w).all() for w in weights):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            )
        return self

    # -- a fit in parts, for a search that trains many at once ----------------------------
    def _search_plan(self, X, y, sample_weight=None) -> Optional[Plan]:
        """`fit(X, y, sample_weight)` up to its training: the checks, the initial weights and
        fitted attributes set as fit sets them, and the run fit would train; None (and
        nothing done) where fit trains otherwise than one run at one rate: L-BFGS,
        `learning_rate="adaptive"`, `early_stopping` (its own validation split) or a
        `warm_start` from fitted weights. Raises what fit raises."""
        if (
            self.solver == "lbfgs"
            or self.early_stopping
            or (self.solver == "sgd" and self.learning_rate == "adaptive")
            or (self.warm_start and hasattr(self, "coefs_"))
        ):
            return None
        self._validate_params()
        X, Y, sample_weight, random_state = self._prepare(X, y, sample_weight, False)
        return self._plan(X, Y, sample_weight, random_state, False)

    def _search_fitted(self, plan: Plan, trained: Trained):
        """The fitted estimator from `plan`'s run trained elsewhere (`_search_plan`); raises
        what fit raises on non-finite weights. Returns self."""
        self._finish(plan, trained, False)
        return self._checked_weights()

    def _initialize(self, Y, layer_units, random_state):
        self.n_iter_, self.t_ = 0, 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        self.coefs_, self.intercepts_ = _network.glorot_weights(
            random_state, layer_units, self.activation, np.float64
        )
        self._norms = None
        self._opt_state = None
        self._lr = float(self.learning_rate_init)
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
            else:
                self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None

    def _model(self):
        layer_units = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        return _network.build_model(layer_units, self.activation, self.dropout, self.batch_norm)

    def _params(self, model):
        return _network.initial_params(model, self.coefs_, self.intercepts_, self._norms, DTYPE)

    def _store(self, model, params):
        coefs, intercepts, norms = _network.split_params(model, jax.device_get(params))
        self.coefs_ = [c.astype(np.float64) for c in coefs]
        self.intercepts_ = [b.astype(np.float64) for b in intercepts]
        self._norms = norms or None

    def _fit_lbfgs(self, X, Y, sample_weight):
        model = self._model()
        n = X.shape[0]
        x, y, weights = padded_samples(
            X.astype(DTYPE), self._training_target(Y), run_size(n, None), sample_weight
        )
        total = n if sample_weight is None else float(np.sum(sample_weight))
        params, result = _lbfgs.fit_lbfgs(
            model,
            self._training_loss(),
            self._params(model),
            x,
            y,
            weights,
            l2=self.alpha / total,
            max_iter=self.max_iter,
            max_fun=self.max_fun,
            gtol=self.tol,
        )
        if not np.isfinite(float(result.value)):
            raise ValueError(
                "Solver produced a non-finite loss. The input data may contain large values and "
                "need to be preprocessed."
            )
        self._store(model, params)
        status, n_iter = int(result.status), int(result.n_iter)
        self.n_iter_ = min(n_iter, self.max_iter)
        self.loss_ = float(result.value) / self._loss_scale()
        if status != _lbfgs.CONVERGED:
            warnings.warn(_lbfgs.not_converged(status, self.n_iter_, self.max_iter), ConvergenceWarning)

    def _split(self, X, Y, sample_weight, random_state):
        """The training and validation parts for `early_stopping` (stratified by class for a
        classifier of one label per sample)."""
        stratify = None
        if self._stratify(Y):  # one label per sample: a 0/1 column, or one-hot rows
            stratify = Y[:, 0] if Y.shape[1] == 1 else Y.argmax(axis=1)
        arrays = [X, Y] + ([] if sample_weight is None else [sample_weight])
        parts = train_test_split(
            *arrays, random_state=random_state, test_size=self.validation_fraction, stratify=stratify
        )
        if parts[1].shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        x_train, x_val, y_train, y_val = parts[:4]
        return x_train, y_train, (None if sample_weight is None else parts[4]), (x_val, y_val)

    def _stratify(self, Y) -> bool:
        return False

    def _plan(self, X, Y, sample_weight, random_state, incremental) -> Plan:
        """The stochastic solver's run on validated `(X, Y)` (its key drawn from
        `random_state`), to go on from the stored weights and optimizer state."""
        validation = None
        if self.early_stopping:
            X, Y, sample_weight, validation = self._split(X, Y, sample_weight, random_state)
            validation = (validation[0].astype(DTYPE), self._training_target(validation[1]))
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped"
                )
            batch_size = int(np.clip(self.batch_size, 1, n))
        mean_weight = 1.0 if sample_weight is None else float(np.mean(sample_weight))
        l2 = self.alpha / (batch_size * mean_weight) if mean_weight > 0 else 0.0
        solver, beta_1, beta_2, epsilon = self.solver, self.beta_1, self.beta_2, self.epsilon
        momentum, nesterov = self.momentum, bool(self.nesterovs_momentum)
        power_t = self.power_t if self.learning_rate == "invscaling" else 0.0

        def make_opt(lr):
            if solver == "adam":
                return sklearn_adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, l2=l2)
            return sklearn_sgd(
                lr,
                momentum=momentum,
                nesterov=nesterov,
                power_t=power_t,
                l2=l2,
                steps_per_epoch=-(-n // batch_size),
                n_samples=n,
            )

        epochs = 1 if incremental else self.max_iter
        if not incremental:
            self._opt_state, self._lr = None, float(self.learning_rate_init)
        model = self._model()
        return Plan(
            model=model,
            loss=self._training_loss(),
            make_opt=make_opt,
            lr=self._lr,
            params=self._params(model),
            opt_state=self._opt_state,
            x=X.astype(DTYPE),
            y=self._training_target(Y),
            sample_weight=sample_weight,
            epochs=epochs,
            batch_size=None if batch_size >= n else batch_size,
            key=jax.random.key(random_state.randint(np.iinfo(np.int32).max)),
            validation=validation,
            metric=self._score_metric() if validation is not None else None,
            stopping=None if incremental else self._stopping(validation is not None, epochs),
            adaptive=self.solver == "sgd" and self.learning_rate == "adaptive",
            shuffle=bool(self.shuffle),
        )

    def _finish(self, plan: Plan, trained: Trained, incremental):
        """The fitted attributes from `plan`'s trained run."""
        self._store(plan.model, trained.params)
        self._opt_state = jax.device_get(trained.opt_state)
        self._lr = trained.lr
        self._record(trained, plan.x.shape[0], incremental, plan.adaptive)

    def _stopping(self, validating, epochs):
        """scikit-learn's rule as an EarlyStopping, or None where it cannot stop a run."""
        never = self.n_iter_no_change >= epochs  # np.inf included: the rule never ends a run
        patience = _MOST_PATIENCE if never else int(self.n_iter_no_change) + 1
        if validating:  # the best weights restored, whether or not the rule ends the run
            return EarlyStopping("val_" + self._score_metric().name, "max", patience, self.tol, True)
        if never:
            return None
        return EarlyStopping("loss", "min", patience, self.tol * self._loss_scale(), False)

    def _record(self, trained, n, incremental, adaptive):
        """The fitted attributes of a stochastic run, by scikit-learn's bookkeeping."""
        losses = trained.losses / self._loss_scale()
        self.n_iter_ = len(losses)
        self.t_ += n * len(losses)
        self.loss_curve_ += losses.tolist()
        self.loss_ = float(losses[-1])
        if trained.scores is not None:
            self.validation_scores_ += trained.scores.tolist()
            self.best_validation_score_ = max(self.best_validation_score_, float(np.max(trained.scores)))
        else:
            for loss in losses:  # scikit-learn's _update_no_improvement_count
                self._no_improvement_count = (
                    self._no_improvement_count + 1 if loss > self.best_loss_ - self.tol else 0
                )
                self.best_loss_ = min(self.best_loss_, float(loss))
            if incremental and self._no_improvement_count > self.n_iter_no_change:
                if adaptive and self._lr > 1e-6:
                    self._lr /= 5.0
                self._no_improvement_count = 0
        if self.verbose:
            for i, loss in enumerate(losses):
                print(f"Iteration {i + 1}, loss = {loss:.8f}")
        if not incremental and not trained.stopped and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                f"optimization hasn't converged yet.",
                ConvergenceWarning,
            )

    # -- prediction --------------------------------------------------------------------
    def _forward(self, X):
        """The output layer's activation on validated X, float64 `(n, n_outputs_)`."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        out = _network.forward(X, self.coefs_, self.intercepts_, self._norms, self.activation)
        return _network.out_function(self.out_activation_)(out)
