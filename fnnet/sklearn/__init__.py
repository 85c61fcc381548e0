"""scikit-learn estimators trained by fnnet (scikit-learn is an optional extra:
`pip install fnnet[examples]`; `import fnnet` never imports this module).

- `MLPClassifier`, `MLPRegressor`: scikit-learn's multi-layer perceptrons, its parameters,
  defaults, fitted attributes and methods, plus `dropout=` and `batch_norm=`.
- `NeuralNetClassifier`, `NeuralNetRegressor`: any fnnet model, loss and optimizer as an
  estimator (in a `Pipeline`, a grid search, cross-validation).
- `GridSearchCV`, `RandomizedSearchCV`: scikit-learn's searches, whose MLP fits of one
  architecture (every candidate and fold) train together as one compiled program.

Training runs in fnnet's compiled loop (`fnnet.fit`), its stopping rules inside it, so a
second fit of the same architecture (another random_state, another fold) compiles
nothing; L-BFGS is written here, a compiled `lax.while_loop` on fnnet's hand gradients.

Where the MLPs differ from scikit-learn's (1.9):
- Training in float32 (predictions in float64 from `coefs_`); data beyond float32's range
  is refused. Minibatch shuffles are drawn from JAX keys (`shuffle=False` gives
  scikit-learn's batches and, from the same initial weights, its loss curve).
- sgd and adam: `alpha`'s L2 term is applied in the update, over `batch_size` for every
  batch (scikit-learn: over the samples of that batch, so its last, smaller batch differs),
  and `loss_curve_`, `loss_`, `best_loss_` and the `tol` rule see the data loss without the
  penalty (lbfgs: with it, as scikit-learn).
- An improvement must beat the best by more than `tol` (scikit-learn: by at least `tol`:
  the same but for exact ties, which matter with `tol=0`).
- `learning_rate="adaptive"`: each division of the rate starts a new compiled run from the
  weights so far, its stopping rule and (with `early_stopping`) its best weights anew.
- `warm_start` and `partial_fit` go on from the weights and optimizer state, but not from
  the stopping rule's count or `invscaling`'s sample count.
- `early_stopping`: the validation split is stratified for every classifier of one label
  per sample (scikit-learn: binary only) and scored without sample weights.
- `sample_weight`: a sample of weight 0 takes no place in the minibatches (scikit-learn
  keeps it in its batch, weighing nothing), and the loss recorded per epoch is the
  weighted mean over all samples (scikit-learn: each batch's weighted mean times its
  length, over n), so with uneven weights `loss_curve_` and the `tol` rule see other
  values; the updates of the same batches are the same. Negative weights are refused.
- Refused where scikit-learn fits: sparse X; `loss="poisson"` with y < 0; `warm_start`
  after `hidden_layer_sizes` changed (scikit-learn keeps the old layers); `early_stopping`
  when a class has one sample (the split is stratified).
- lbfgs counts as SciPy does not: `n_iter_` may differ by one or a few at `max_fun` or
  `tol=0` (the same minimum).
- A fit that raises (or is interrupted) leaves the estimator as it was before it.
- The searches batch a bare MLP estimator; a Pipeline holding one (and lbfgs, `adaptive`,
  `early_stopping`, `shuffle=False`, other estimators) is fitted one fit at a time by
  scikit-learn's own path, with the same results. `n_jobs=None` runs the batched fits on
  every core (scikit-learn: one); with `verbose`, the batched fits print no per-fit line.
"""

from fnnet.sklearn._mlp import MLPClassifier, MLPRegressor
from fnnet.sklearn._neural_net import NeuralNetClassifier, NeuralNetRegressor
from fnnet.sklearn._search import GridSearchCV, RandomizedSearchCV

__all__ = [
    "GridSearchCV",
    "MLPClassifier",
    "MLPRegressor",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "RandomizedSearchCV",
]
