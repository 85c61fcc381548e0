"""GridSearchCV and RandomizedSearchCV: scikit-learn's searches, their candidates and folds
trained together by fnnet.

Each is scikit-learn's class (a subclass: its parameters, `cv_results_` and every
attribute, its `_run_search`, scoring, result formatting and refit), with another
`evaluate_candidates`: the fits of fnnet's MLPClassifier and MLPRegressor that train one
run at one rate (sgd or adam; not L-BFGS, `learning_rate="adaptive"` or
`early_stopping`) are prepared as their `fit` prepares them (`_search_plan`), grouped by
architecture (`_members.group_key`) and trained one compiled program per group
(`_members.train_group`), then scored as scikit-learn scores them. Every other fit (those
settings, another estimator, a fit that raises or diverges) goes through scikit-learn's
own `_fit_and_score`, with `n_jobs` workers, so its errors, warnings and `error_score`
are scikit-learn's. A search given callbacks (`set_callbacks`) is scikit-learn's search.
"""

import os
import time
from collections import defaultdict
from itertools import product

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.model_selection import GridSearchCV as _GridSearchCV
from sklearn.model_selection import RandomizedSearchCV as _RandomizedSearchCV
from sklearn.model_selection._search import _insert_error_scores, _warn_or_raise_about_fit_failures
from sklearn.model_selection._split import check_cv
from sklearn.model_selection._validation import _fit_and_score, _score
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _check_method_params, _num_samples, check_array, indexable

from fnnet.sklearn import _members
from fnnet.sklearn._mlp_base import DTYPE, BaseMLP

__all__ = ["GridSearchCV", "RandomizedSearchCV"]


def _prepared(base, X, y, pairs, fit_params):
    """`{pair's index: (estimator, plan, seconds)}` for the pairs fnnet trains together: the
    estimator with the candidate's parameters, prepared on the fold's training samples."""
    if not isinstance(base, BaseMLP) or set(fit_params) - {"sample_weight"}:
        return {}
    prepared = {}
    for i, ((_, parameters), (_, (train, _))) in enumerate(pairs):
        start = time.time()
        # set_params raises as in scikit-learn's _fit_and_score (bad names), before its fit
        estimator = clone(base).set_params(**clone(parameters, safe=False))
        weights = _check_method_params(X, params=fit_params, indices=train).get("sample_weight")
        X_train, y_train = _safe_split(estimator, X, y, train)
        try:
            plan = estimator._search_plan(X_train, y_train, weights)
            if plan is None or not _members.batchable(plan):
                continue  # fitted alone, by its own fit
            _members.check(plan)  # what fnnet.fit would raise before training
        except Exception:  # its own fit raises it again, as scikit-learn reports it
            continue
        prepared[i] = (estimator, plan, time.time() - start)
    return prepared


def _scored(estimator, X, y, train, test, fit_time, scorer, score_params, return_train_score, error_score):
    """scikit-learn's `_fit_and_score` result for an estimator fitted on `train`."""
    X_train, y_train = _safe_split(estimator, X, y, train)
    X_test, y_test = _safe_split(estimator, X, y, test, train)
    start = time.time()
    test_params = _check_method_params(X, params=score_params, indices=test)
    result = {
        "fit_error": None,
        "test_scores": _score(estimator, X_test, y_test, scorer, test_params, error_score),
        "n_test_samples": _num_samples(X_test),
        "fit_time": fit_time,
        "score_time": time.time() - start,
    }
    if return_train_score:
        train_params = _check_method_params(X, params=score_params, indices=train)
        result["train_scores"] = _score(estimator, X_train, y_train, scorer, train_params, error_score)
    return result


def _trained_together(prepared, X, y, pairs, scoring, jobs, extra):
    """`({pair's index: result}, {group_key: Program})`: the results of the prepared pairs
    whose runs trained and stayed finite, one program per group of `group_key`; each
    fit's time is its preparation, its share of its group's program and its fitted
    attributes. The programs hold `extra` (the refit's samples) too."""
    groups = defaultdict(list)
    for i, (_, plan, _) in prepared.items():
        groups[_members.group_key(plan)].append(i)
    results, programs = {}, {}
    for key, members in groups.items():
        start = time.time()
        plans = [prepared[i][1] for i in members]
        programs[key] = _members.Program(plans, jobs, extra)
        trained = programs[key].train(plans)
        share = (time.time() - start) / len(members)
        for i, run in zip(members, trained):
            estimator, plan, seconds = prepared[i]
            if run is None:
                continue
            start = time.time()
            try:
                estimator._search_fitted(plan, run)
            except ValueError:  # non-finite weights: its own fit reports it
                continue
            seconds += share + time.time() - start
            train, test = pairs[i][1][1]
            results[i] = _scored(estimator, X, y, train, test, seconds, **scoring)
    return results, programs


def _refitted(estimator, X, y, fit_params, programs):
    """`estimator` fitted on all samples: in the program of its group where one holds
    them (no compilation; the same fit), else by its own fit."""
    if isinstance(estimator, BaseMLP) and programs and set(fit_params) <= {"sample_weight"}:
        candidate = clone(estimator)
        try:
            plan = candidate._search_plan(X, y, fit_params.get("sample_weight"))
        except Exception:  # its own fit raises it
            plan = None
        program = None if plan is None else programs.get(_members.group_key(plan))
        if program is not None and _members.batchable(plan) and program.holds(plan):
            trained = program.train([plan])[0]
            if trained is not None:
                return candidate._search_fitted(plan, trained)
    return estimator.fit(X, y, **fit_params) if y is not None else estimator.fit(X, **fit_params)


def _jobs(n_jobs) -> int:
    """The threads that run a group's program: n_jobs's (None: every core, as XLA's own)."""
    if n_jobs is not None:
        return effective_n_jobs(n_jobs)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _samples(base, X, refit):
    """The refit's samples as an MLP trains on them (float32), or () where none is known."""
    if not (refit and isinstance(base, BaseMLP)):
        return ()
    try:
        return (check_array(X, dtype=(np.float64, np.float32)).astype(DTYPE),)
    except Exception:  # not an array of numbers: the fits say why
        return ()


class _TrainedTogether:
    """The search's fit, scikit-learn's `BaseSearchCV.fit` with fnnet's evaluate_candidates."""

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, as scikit-learn's search does (`**params`:
        the estimator's fit parameters, e.g. sample_weight, and the splitter's groups).

        Returns:
          self.
        """
        if getattr(self, "_skl_callbacks", None) or hasattr(self, "_parent_callback_ctx"):
            return super().fit(X, y, **params)  # type: ignore[misc]
        return self._fit_together(X, y, **params)

    @_fit_context(prefer_skip_nested_validation=False)
    def _fit_together(self, X, y=None, **params):
        search = self  # a BaseSearchCV: the methods below are scikit-learn's
        scorers, refit_metric = search._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = search._get_routed_params_for_fit(params)
        root_ctx = search._init_callback_context(max_subtasks=1 + (search.refit is not False))
        root_ctx = root_ctx.call_on_fit_task_begin(estimator=search, X=X, y=y, metadata=None)
        search._checked_cv_orig = check_cv(search.cv, y, classifier=is_classifier(search.estimator))
        search._check_input_parameters(X=X, y=y, split_params=routed.splitter.split)
        search.n_splits_ = search._checked_cv_orig.get_n_splits(X, y, **routed.splitter.split)
        base = clone(search.estimator)
        scoring = dict(
            scorer=scorers,
            score_params=routed.scorer.score,
            return_train_score=search.return_train_score,
            error_score=search.error_score,
        )
        fit_and_score_kwargs = dict(
            **scoring,
            fit_params=routed.estimator.fit,
            return_n_test_samples=True,
            return_times=True,
            return_parameters=False,
            verbose=search.verbose,
        )
        all_candidate_params: list = []
        all_out: list = []
        all_more_results: dict = defaultdict(list)
        results: dict = {}
        programs: dict = {}
        jobs, extra = _jobs(search.n_jobs), _samples(base, X, search.refit)

        def evaluate_candidates(candidate_params, cv=None, more_results=None, callback_ctx=None):
            nonlocal results
            cv = cv or search._checked_cv_orig
            candidate_params = list(candidate_params)
            n_candidates, n_splits = len(candidate_params), search.n_splits_
            splits = list(cv.split(X, y, **routed.splitter.split))
            if len(splits) != n_splits:
                raise ValueError(
                    f"cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {n_splits} splits, got {len(splits)}"
                )
            if search.verbose > 0:
                print(
                    f"Fitting {n_splits} folds for each of {n_candidates} candidates, "
                    f"totalling {n_candidates * n_splits} fits"
                )
            pairs = list(product(enumerate(candidate_params), enumerate(splits)))
            prepared = _prepared(base, X, y, pairs, routed.estimator.fit)
            done, found = _trained_together(prepared, X, y, pairs, scoring, jobs, extra)
            programs.update(found)
            rest = [i for i in range(len(pairs)) if i not in done]
            alone = Parallel(n_jobs=search.n_jobs, pre_dispatch=search.pre_dispatch)(
                delayed(_fit_and_score)(
                    clone(base),
                    X,
                    y,
                    train=pairs[i][1][1][0],
                    test=pairs[i][1][1][1],
                    parameters=pairs[i][0][1],
                    split_progress=(pairs[i][1][0], n_splits),
                    candidate_progress=(pairs[i][0][0], n_candidates),
                    **fit_and_score_kwargs,
                )
                for i in rest
            )
            done.update(zip(rest, alone))
            out = [done[i] for i in range(len(pairs))]
            if len(out) < 1:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no candidates?"
                )
            _warn_or_raise_about_fit_failures(out, search.error_score)
            if callable(search.scoring):
                _insert_error_scores(out, search.error_score)
            all_candidate_params.extend(candidate_params)
            all_out.extend(out)
            for key, value in (more_results or {}).items():
                all_more_results[key].extend(value)
            results = search._format_results(all_candidate_params, n_splits, all_out, all_more_results)
            return results

        search._run_search(evaluate_candidates, callback_ctx=root_ctx)
        search.multimetric_ = isinstance(all_out[0]["test_scores"], dict)
        if callable(search.scoring) and search.multimetric_:
            search._check_refit_for_multimetric(all_out[0]["test_scores"])
            refit_metric = search.refit
        search._refit(X, y, routed, results, refit_metric, base, programs)
        search.scorer_ = getattr(scorers, "_scorers", scorers)
        search.cv_results_ = results
        root_ctx.call_on_fit_task_end(estimator=search, X=X, y=y, metadata=None)
        return search

    def _refit(self, X, y, routed, results, refit_metric, base, programs):
        """best_index_, best_score_, best_params_ and the refit, as scikit-learn sets them."""
        search = self
        if search.refit or not search.multimetric_:
            search.best_index_ = search._select_best_index(search.refit, refit_metric, results)
            if not callable(search.refit):
                search.best_score_ = results[f"mean_test_{refit_metric}"][search.best_index_]
            search.best_params_ = results["params"][search.best_index_]
        if search.refit:
            search.best_estimator_ = clone(base).set_params(**clone(search.best_params_, safe=False))
            start = time.time()
            fit_params = routed.estimator.fit
            search.best_estimator_ = _refitted(search.best_estimator_, X, y, fit_params, programs)
            search.refit_time_ = time.time() - start
            if hasattr(search.best_estimator_, "feature_names_in_"):
                search.feature_names_in_ = search.best_estimator_.feature_names_in_


class GridSearchCV(_TrainedTogether, _GridSearchCV):
    """scikit-learn's `GridSearchCV`, fnnet's MLP fits of one architecture trained together.

    Its parameters, attributes and methods are scikit-learn's (`cv_results_`,
    `best_params_`, `best_score_`, `best_estimator_`, `best_index_`, `scorer_`,
    `n_splits_`, `multimetric_`, `refit_time_`). The candidates' and folds' fits of
    fnnet's MLPClassifier or MLPRegressor (sgd or adam, a fixed or invscaling rate, no
    early_stopping) train as one compiled program per architecture, their scores those
    of each fit alone up to float rounding; any other fit is scikit-learn's.

    Example:
      >>> from sklearn.datasets import load_iris
      >>> X, y = load_iris(return_X_y=True)
      >>> search = GridSearchCV(MLPClassifier(max_iter=50, random_state=0),
      ...                       {"learning_rate_init": [1e-3, 1e-2], "alpha": [1e-4, 1e-2]}, cv=3)
      >>> search.fit(X, y).best_params_  # doctest: +SKIP
    """


class RandomizedSearchCV(_TrainedTogether, _RandomizedSearchCV):
    """scikit-learn's `RandomizedSearchCV`, fnnet's MLP fits of one architecture trained
    together (see `GridSearchCV`): `n_iter` candidates drawn from `param_distributions`
    (lists or scipy.stats distributions)."""
