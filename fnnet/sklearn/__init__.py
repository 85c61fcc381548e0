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
