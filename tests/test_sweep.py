"""Sweeps: a vmapped grid equals its members' standalone runs and compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import count_compilations

import fnnet

MODEL = fnnet.serial(fnnet.Linear(2, 8), fnnet.ReLU(), fnnet.Linear(8, 1), fnnet.Sigmoid())
LOSS = fnnet.LossBCE()
OPT = fnnet.SGD(lr=0.3)
EPOCHS = 30


def test_vmapped_grid_equals_standalone_runs_and_compiles_once():
    x, y = fnnet.data.disk(64, jax.random.key(3))
    lrs = jnp.asarray([0.1, 0.3, 0.5, 0.1])
    decays = jnp.asarray([1.0, 0.99, 0.999, 0.95])
    keys = jax.random.split(jax.random.key(0), 4)
    params = fnnet.sweep.init_many(MODEL, keys, x.shape)
    states = jax.vmap(lambda p, lr, d: OPT.init(p, lr=lr, decay=d))(params, lrs, decays)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, batch_size=16)
    with count_compilations() as compiled:
        swept = fnnet.sweep.sweep(run, params, states, x, y, keys)
    assert len([name for name in compiled if "run" in name]) == 1, compiled
    for i in range(4):
        p_i = MODEL.init(keys[i], x.shape)[1]
        state_i = fnnet.SGD(lr=float(lrs[i]), decay=float(decays[i])).init(p_i)
        alone = run(p_i, state_i, x, y, keys[i])
        for got, want in zip(jax.tree.leaves(swept), jax.tree.leaves(alone)):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)  # GPUs batch the products
    # members differ: the grid really varied something
    assert not np.allclose(swept[2][0], swept[2][1])


def test_sweep_with_per_member_data():
    keys = jax.random.split(jax.random.key(1), 3)
    xs, ys = jax.vmap(lambda k: fnnet.data.disk(32, k))(keys)
    params = fnnet.sweep.init_many(MODEL, keys, (32, 2))
    states = jax.vmap(OPT.init)(params)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS)
    swept = fnnet.sweep.sweep(run, params, states, xs, ys, keys)
    assert swept[2].shape == (3, EPOCHS)
    for i in range(3):
        alone = run(jax.tree.map(lambda a: a[i], params), jax.tree.map(lambda a: a[i], states),
                    xs[i], ys[i], keys[i])
        np.testing.assert_allclose(swept[2][i], alone[2], rtol=1e-5)
