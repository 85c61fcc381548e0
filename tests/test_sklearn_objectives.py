"""fnnet.sklearn's own derivatives and solvers against their oracles: its losses' hand
gradients against jax.grad, its SGD and Adam rules against scikit-learn's optimizers, its
L-BFGS against SciPy's, each on fresh random inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

import fnnet
from fnnet.sklearn._lbfgs import CONVERGED, minimize
from fnnet.sklearn._objectives import HalfPoissonLogLink, SummedOverOutputs, sklearn_adam, sklearn_sgd

LOSSES = {
    "log_loss": (SummedOverOutputs(fnnet.LossBCEWithLogits()), lambda r, s: (r.uniform(size=s) > 0.5) * 1.0),
    "half_squared": (SummedOverOutputs(fnnet.LossMSE(), 0.5), lambda r, s: r.normal(size=s)),
    "poisson": (HalfPoissonLogLink(), lambda r, s: r.poisson(2.0, size=s) * 1.0),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_gradients_are_jax_grad_of_their_values(name, seed):
    loss, targets = LOSSES[name]
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 9)), int(rng.integers(1, 5)))
    z, t = jnp.asarray(rng.normal(size=shape)), jnp.asarray(targets(rng, shape))
    np.testing.assert_allclose(loss.grad(z, t), jax.grad(loss.value)(z, t), rtol=1e-12, atol=1e-14)


def _steps(opt, reference, seed, steps=4):
    """fnnet's rule and scikit-learn's optimizer from the same params on the same grads."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    state = opt.init(params)
    ours = params
    theirs = [params["w"].copy(), params["b"].copy()]
    sk = reference(theirs)
    for _ in range(steps):
        grads = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
        ours, state = opt.step(ours, grads, state)
        sk.update_params(theirs, [grads["w"], grads["b"]])
    np.testing.assert_allclose(ours["w"], theirs[0], rtol=1e-10)
    np.testing.assert_allclose(ours["b"], theirs[1], rtol=1e-10)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_rule_is_scikit_learns_sgd(nesterov, seed):
    opt = sklearn_sgd(
        0.1, momentum=0.9, nesterov=nesterov, power_t=0.0, l2=0.0, steps_per_epoch=1, n_samples=1
    )
    _steps(opt, lambda p: SGDOptimizer(p, 0.1, momentum=0.9, nesterov=nesterov), seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_adam_rule_is_scikit_learns_adam(seed):
    opt = sklearn_adam(1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-6, l2=0.0)
    _steps(opt, lambda p: AdamOptimizer(p, 1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-6), seed)


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_lbfgs_finds_the_minimum_as_scipys_does(seed):
    """A random convex quadratic (its minimum solved exactly) and Rosenbrock's function
    (minimum at ones) from random starts: each converged, as close as SciPy's L-BFGS-B."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=6)
    hessian = a @ a.T + np.eye(6)
    cases = (
        (lambda x: 0.5 * x @ hessian @ x - b @ x, rng.normal(size=6), np.linalg.solve(hessian, b)),
        (_rosenbrock, rng.normal(size=5), np.ones(5)),
    )
    for f, x0, minimum in cases:
        fun = jax.jit(jax.value_and_grad(f))
        result = minimize(fun, jnp.asarray(x0), max_iter=500, max_fun=15000, gtol=1e-9)
        scipys = scipy.optimize.minimize(
            lambda x: tuple(np.asarray(v) for v in fun(x)),
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-9},
        )
        assert int(result.status) == CONVERGED
        ours, theirs = np.abs(np.asarray(result.x) - minimum).max(), np.abs(scipys.x - minimum).max()
        assert ours <= max(10 * theirs, 1e-6), (ours, theirs)
