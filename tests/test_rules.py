"""Optimizers as per-leaf rules: RMSProp built from the public pieces, against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet.optim import fraction, optimizer, positive


def RMSProp(lr, rho=0.9, eps=1e-8):  # the whole optimizer: a rule for one leaf, lifted
    def rule(p, g, slots, h, lr, t):
        ms = h["rho"] * slots["ms"] + (1 - h["rho"]) * g * g  # ms <- rho ms + (1 - rho) g^2
        return p - lr * g / (jnp.sqrt(ms) + h["eps"]), {"ms": ms}

    return optimizer("RMSProp", rule, lr, ["ms"], rho=fraction(rho), eps=positive(eps))


def test_rmsprop_from_the_public_pieces_matches_numpy():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": (jnp.asarray(rng.normal(size=4)),)}
    opt = RMSProp(lr=0.01, rho=0.8)
    state = opt.init(params)
    assert sorted(state.hyperparams) == ["eps", "lr", "rho"]  # no decay unless asked for
    p = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
    ms = [np.zeros_like(leaf) for leaf in p]
    step = jax.jit(opt.step)
    for _ in range(5):
        grads = jax.tree.map(lambda a: 2 * a + 1, params)
        params, state = step(params, grads, state)
        for i in range(len(p)):
            g = 2 * p[i] + 1
            ms[i] = 0.8 * ms[i] + 0.2 * g * g
            p[i] = p[i] - 0.01 * g / (np.sqrt(ms[i]) + 1e-8)
    for got, want in zip(jax.tree.leaves(params), p):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert int(state.count) == 5


def test_rmsprop_trains_the_disk_with_fit_and_sweeps_its_hyperparameters():
    x, y = fnnet.data.disk(jax.random.key(1), 256)
    model = fnnet.serial(fnnet.Linear(2, 16), fnnet.Tanh(), fnnet.Linear(16, 1), fnnet.Sigmoid())
    params = model.init(jax.random.key(0), x.shape)[1]
    opt = RMSProp(lr=0.05)
    result = fnnet.fit(model, fnnet.LossBCE(), opt, params, x, y, epochs=300, progress=False)
    assert result.losses[-1] < 0.5 * result.losses[0], result.losses[[0, -1]]
    states = jax.vmap(lambda lr: opt.init(params, lr=lr))(jnp.array([0.001, 0.01]))
    assert states.hyperparams["lr"].shape == (2,)


def test_a_rules_hyperparameters_carry_their_checks():
    with pytest.raises(ValueError, match=r"RMSProp: rho must be in \[0, 1\), got 1\.5"):
        RMSProp(lr=0.1, rho=1.5)
    with pytest.raises(ValueError, match=r"RMSProp: eps must be > 0, got 0"):
        RMSProp(lr=0.1).init({"w": jnp.zeros(2)}, eps=0)
    with pytest.raises(TypeError, match=r"RMSProp\.init: unknown hyperparameter\(s\) \['decay'\]"):
        RMSProp(lr=0.1).init({"w": jnp.zeros(2)}, decay=0.9)
    with pytest.raises(TypeError, match=r"Mine: hyperparameter rho must be a Hyperparameter"):
        optimizer("Mine", lambda p, g, s, h, lr, t: (p, s), 0.1, rho=0.9)
