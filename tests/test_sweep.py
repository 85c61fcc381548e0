"""Sweeps: a vmapped grid equals its members' standalone runs and compiles once."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, count_compilations

import fnnet

MODEL = fnnet.serial(fnnet.Linear(2, 8), fnnet.ReLU(), fnnet.Linear(8, 1), fnnet.Sigmoid())
LOSS = fnnet.LossBCE()
OPT = fnnet.SGD(lr=0.3)
EPOCHS = 30


@pytest.mark.slow
def test_vmapped_grid_equals_standalone_runs_and_compiles_once():
    x, y = fnnet.data.disk(jax.random.key(3), 64)
    lrs = jnp.asarray([0.1, 0.3, 0.5, 0.1])
    decays = jnp.asarray([1.0, 0.99, 0.999, 0.95])
    keys = jax.random.split(jax.random.key(0), 4)
    params = fnnet.init_many(keys, MODEL, x.shape)
    states = jax.vmap(lambda p, lr, d: OPT.init(p, lr=lr, decay=d))(params, lrs, decays)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, batch_size=16)
    with count_compilations() as compiled:
        swept = fnnet.sweep(run, params, states, x, y, keys=keys)
    assert len([name for name in compiled if "run" in name]) == 1, compiled
    for i in range(4):
        p_i = MODEL.init(keys[i], x.shape)[1]
        state_i = fnnet.SGD(lr=float(lrs[i]), decay=float(decays[i])).init(p_i)
        alone = run(p_i, state_i, x, y, key=keys[i])
        for got, want in zip(jax.tree.leaves(swept), jax.tree.leaves(alone)):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)  # GPUs batch the products
    # members differ: the grid really varied something
    assert not np.allclose(swept[2][0], swept[2][1])


@pytest.mark.slow
def test_sweep_with_per_member_data():
    keys = jax.random.split(jax.random.key(1), 3)
    xs, ys = jax.vmap(lambda k: fnnet.data.disk(k, 32))(keys)
    params = fnnet.init_many(keys, MODEL, (32, 2))
    states = jax.vmap(OPT.init)(params)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS)
    swept = fnnet.sweep(run, params, states, xs, ys, keys=keys, per_member_data=True)
    assert swept[2].shape == (3, EPOCHS)
    for i in range(3):
        alone = run(
            jax.tree.map(lambda a: a[i], params),
            jax.tree.map(lambda a: a[i], states),
            xs[i],
            ys[i],
            key=keys[i],
        )
        np.testing.assert_allclose(swept[2][i], alone[2], rtol=1e-5)


# --- issue #12: shared 3-D data, per-member flags, arguments checked before any work -------


SEQ_MODEL = fnnet.serial(fnnet.Linear(2, 4), fnnet.Tanh(), fnnet.Linear(4, 1))
SEQ_OPT = fnnet.SGD(lr=0.1)
SEQ_RUN = fnnet.train(SEQ_MODEL, fnnet.LossMSE(), SEQ_OPT, epochs=3)


def seq_sweep(lrs):
    """3 members on one shared x of 3 samples of (5, 2): a sweep's arguments and result."""
    x = jax.random.normal(jax.random.key(4), (3, 5, 2))
    y = jnp.tanh(x[..., :1])
    keys = jax.random.split(jax.random.key(5), 3)
    params = fnnet.init_many(keys, SEQ_MODEL, x.shape)
    states = jax.vmap(lambda p, lr: SEQ_OPT.init(p, lr=lr))(params, jnp.asarray(lrs, jnp.float32))
    return (params, states, x, y, keys), fnnet.sweep(SEQ_RUN, params, states, x, y, keys=keys)


@pytest.mark.slow
def test_shared_3d_data_is_shared_unless_said_otherwise():
    # x of 3 samples and 3 members: once misread as one (5, 2) data set per member.
    (params, states, x, y, keys), swept = seq_sweep([0.1, 0.2, 0.05])
    for i in range(3):
        p_i, state_i = jax.tree.map(lambda a, i=i: a[i], (params, states))
        alone = SEQ_RUN(p_i, state_i, x, y, key=keys[i])
        np.testing.assert_allclose(swept.losses[i], alone[2], rtol=1e-5)
    assert swept.finite.tolist() == [True] * 3


def test_result_names_its_parts_and_flags_members_that_diverged():
    # lr 1e30 sends the member's outputs past float32's range, its loss to inf, then NaN.
    _, result = seq_sweep([0.1, 1e30, 0.05])
    assert isinstance(result, fnnet.SweepResult)
    assert result._fields == ("params", "opt_states", "losses", "finite")
    assert result.losses.shape == (3, 3) and result.finite.dtype == jnp.bool_
    assert result.finite.tolist() == [True, False, True]
    assert not np.all(np.isfinite(result.losses[1]))
    assert np.all(np.isfinite(np.asarray(result.losses)[[0, 2]]))


def grid(lrs, run=None):
    """A sweep's arguments over lrs; by default the configuration of the first test (one
    compiled program for both when there are 4 members)."""
    x, y = fnnet.data.disk(jax.random.key(3), 64)
    keys = jax.random.split(jax.random.key(0), len(lrs))
    params = fnnet.init_many(keys, MODEL, x.shape)
    states = jax.vmap(lambda p, lr: OPT.init(p, lr=lr))(params, jnp.asarray(lrs, jnp.float32))
    run = run or fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, batch_size=16)
    return run, params, states, x, y, keys


def test_invalid_hyperparameters_traced_under_jit_are_flagged():
    # Under jit no host check sees the values: the result's finite flag says it.
    run, params, states, x, y, keys = grid([0.3, -0.3, 0.1, 0.0], fnnet.train(MODEL, LOSS, OPT, epochs=1))
    result = jax.jit(lambda states: fnnet.sweep(run, params, states, x, y, keys=keys))(states)
    assert result.finite.tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    "lrs, which, values",
    [
        ([0.3, -0.3, 0.1], [1], [-0.3]),
        ([np.nan, 0.3, 0.0], [0, 2], [np.nan, 0.0]),
    ],
)
def test_concrete_invalid_hyperparameters_raise_naming_the_members(lrs, which, values):
    run, params, states, x, y, keys = grid(lrs)  # vmap(opt.init): lr traced, unchecked there
    match = re.escape(
        f"sweep: member(s) {which} have an invalid lr: {np.asarray(values, np.float32).tolist()}"
    )
    with count_compilations() as compiled, pytest.raises(ValueError, match=match):
        fnnet.sweep(run, params, states, x, y, keys=keys)
    assert not [name for name in compiled if "run" in name], compiled


def test_nan_data_or_params_raise_naming_the_members():
    run, params, states, x, y, keys = grid([0.1, 0.2, 0.3])
    xs, ys = np.stack([np.asarray(x)] * 3), np.stack([np.asarray(y)] * 3)
    xs[2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"sweep: x of member\(s\) \[2\] holds NaN or infinite values"):
        fnnet.sweep(run, params, states, xs, ys, keys=keys, per_member_data=True)
    with pytest.raises(ValueError, match=r"sweep: x holds 1 NaN or infinite value\(s\)"):
        fnnet.sweep(run, params, states, xs[2], ys[2], keys=keys)
    bad = (
        params[0],
        params[1],
        {"w": params[2]["w"].at[1, 0, 0].set(jnp.inf), "b": params[2]["b"]},
        params[3],
    )
    with pytest.raises(ValueError, match=r"sweep: params\[2\]\['w'\] of member\(s\) \[1\] holds NaN"):
        fnnet.sweep(run, bad, states, x, y, keys=keys)


def arguments():
    run, params, states, x, y, keys = grid([0.1, 0.2, 0.3])
    return {"run": run, "params": params, "opt_states": states, "x": x, "y": y, "keys": keys}


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            {"keys": [0, 1, 2]},
            TypeError,
            (
                r"sweep: keys must be an array of PRNG keys, one per member, "
                r"such as jax\.random\.split\(jax\.random\.key\(0\), 8\), "
                r"got \[0, 1, 2\] \(list\)"
            ),
        ),
        (
            {"keys": jax.random.key(0)},
            TypeError,
            (
                r"sweep: keys must be an array of PRNG keys, one per "
                r"member"
            ),
        ),
        (
            {"keys": jax.random.split(jax.random.key(0), 2)},
            ValueError,
            r"sweep: keys holds 2 key\(s\), one per member, but params is stacked for 3 members: pass 3 keys",
        ),
        (
            lambda a: {"opt_states": jax.tree.map(lambda v: v[:2] if jnp.ndim(v) else v, a["opt_states"])},
            ValueError,
            (
                r"sweep: every leaf of opt_states must be stacked on a leading member axis of size 3 \(3 keys: one per member\), "
                r"got opt_states\.count of shape \(2,\)"
            ),
        ),
        (
            lambda a: {"per_member_data": True},
            ValueError,
            (
                r"sweep: every leaf of the per-member data must be stacked on a leading member axis of size 3 \(3 keys: one per member\), "
                r"got the per-member data\['x'\] of shape \(64, 2\)"
            ),
        ),
        ({"per_member_data": 1}, TypeError, r"sweep: per_member_data must be True or False, got 1"),
        (
            {"run": MODEL},
            TypeError,
            (
                r"sweep: run must be a function such as fnnet\.train\(\.\.\.\), "
                r"got Sequential\("
            ),
        ),
        ({"x": [[0.0, 1.0]]}, TypeError, r"sweep: x must be an array, got \[\[0.0, 1.0\]\] \(list\)"),
        ({"devices": ["cpu"]}, TypeError, r"sweep: devices must be a non-empty list of jax devices"),
        ({"devices": []}, TypeError, r"sweep: devices must be a non-empty list of jax devices"),
    ],
    ids=[
        "int-keys",
        "one-key",
        "fewer-keys",
        "short-states",
        "shared-data-as-per-member",
        "int-flag",
        "layer-as-run",
        "list-x",
        "str-device",
        "no-device",
    ],
)
def test_sweep_refuses_bad_arguments_before_any_work(change, error, match):
    kwargs = arguments()
    kwargs.update(change(kwargs) if callable(change) else change)
    with count_compilations() as compiled, pytest.raises(error, match=match):
        fnnet.sweep(**kwargs)
    assert not [name for name in compiled if "run" in name], compiled


@pytest.mark.parametrize(
    "args, error, match",
    [
        (
            ([0, 1], MODEL, (64, 2)),
            TypeError,
            (
                r"init_many: keys must be an array of PRNG keys, one per "
                r"member.*got \[0, 1\] \(list\)"
            ),
        ),
        ((jax.random.key(0), MODEL, (64, 2)), TypeError, r"init_many: keys must be an array of PRNG keys"),
        (
            (jax.random.split(jax.random.key(0), 2), MODEL, 2),
            TypeError,
            (
                r"init_many: input_shape must be a tuple of ints, such as x\.shape or \(batch, features\), got 2 "
                r"\(int\)"
            ),
        ),
        (
            (jax.random.split(jax.random.key(0), 2), LOSS, (64, 2)),
            TypeError,
            r"init_many: model must be a Layer, got LossBCE\(\) \(LossBCE\)",
        ),
    ],
    ids=["int-keys", "one-key", "int-shape", "loss-as-model"],
)
def test_init_many_refuses_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        fnnet.init_many(*args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"per_member_data": "yes"}, TypeError, r"vmapped: per_member_data must be True or False"),
        ({"groups": 0}, ValueError, r"vmapped: groups must be an int >= 1, got 0"),
    ],
)
def test_vmapped_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fnnet.vmapped(fnnet.train(MODEL, LOSS, OPT, epochs=1), **kwargs)


def test_spread_refuses_members_of_different_counts():
    with pytest.raises(
        ValueError,
        match=r"spread: every leaf of tree must be stacked on a leading "
        r"member axis of size 3, got tree\[1\] of shape \(2,\)",
    ):
        fnnet.spread((jnp.zeros(3), jnp.zeros(2)))


def test_rbg_keys_are_warned_of_as_they_draw_otherwise_under_vmap():
    """JAX's rbg keys give other draws inside vmap than alone: members would not be the
    runs their keys give one at a time, so init_many says so (threefry keys do not warn)."""
    model = fnnet.serial(fnnet.Linear(2, 3))
    with pytest.warns(UserWarning, match=r"init_many: keys of the rbg PRNG draw otherwise under vmap"):
        fnnet.init_many(jax.random.split(jax.random.key(0, impl="rbg"), 3), model, (4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fnnet.init_many(jax.random.split(jax.random.key(0), 3), model, (4, 2))


def test_runs_of_optimizers_of_other_hyperparameters_share_one_sweep_program():
    (params, states, x, y, keys), _ = seq_sweep([0.1, 0.2, 0.05])
    for lr in (0.3, 0.7):
        run = fnnet.train(SEQ_MODEL, fnnet.LossMSE(), fnnet.SGD(lr=lr), epochs=SEQ_RUN.epochs)
        assert run == SEQ_RUN
        with count_compilations() as compiled:
            fnnet.sweep(run, params, states, x, y, keys=keys)
        assert compiled == [], compiled


def assert_members_are_their_runs_alone(swept, run, params, states, x, y, keys):
    """Each member's params, optimizer state and losses have bitwise its run's bits alone."""
    for i in range(len(keys)):
        member = jax.tree.map(lambda a: a[i], (params, states))
        assert_trees_equal(jax.tree.map(lambda a: a[i], tuple(swept[:3])), run(*member, x, y, key=keys[i]))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="members run one by one on CPUs only")
def test_members_on_one_device_run_unbatched_as_alone():
    (params, states, x, y, keys), swept = seq_sweep([0.1, 0.2, 0.05])
    lowered = fnnet.vmapped(SEQ_RUN).lower(params, states, x, y, keys)
    assert "dot_general" in lowered.as_text() and "batching_dims" not in lowered.as_text()
    assert_members_are_their_runs_alone(swept, SEQ_RUN, params, states, x, y, keys)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="members run one by one on CPUs only")
@pytest.mark.parametrize("batch_size", [None, 128], ids=["full batch", "minibatches"])
def test_batchnorm_members_on_one_device_have_their_runs_bits_alone(batch_size):
    model = fnnet.serial(
        fnnet.Linear(2, 8),
        fnnet.BatchNorm(),
        fnnet.ReLU(),
        fnnet.Dropout(0.2),
        fnnet.Linear(8, 1),
        fnnet.Sigmoid(),
    )
    n = 50 if batch_size is None else 2 * batch_size + 45  # padded either way
    x, y = fnnet.data.disk(jax.random.key(3), n)
    keys = jax.random.split(jax.random.key(1), 3)
    params = fnnet.init_many(keys, model, x.shape)
    opt = OPT if batch_size is None else fnnet.Adam(lr=0.01)
    run = fnnet.train(model, LOSS, opt, epochs=5 if batch_size is None else 2, batch_size=batch_size)
    states = jax.vmap(opt.init)(params)
    swept = fnnet.sweep(run, params, states, x, y, keys=keys)
    assert_members_are_their_runs_alone(swept, run, params, states, x, y, keys)


def test_sweep_takes_its_keys_by_keyword():
    with pytest.raises(TypeError, match=r"sweep\(\) takes 5 positional arguments but 6 were given"):
        fnnet.sweep(*arguments().values())


def test_members_and_keys_of_other_counts_name_the_keys():
    kwargs = arguments()
    kwargs["keys"] = kwargs["keys"][:2]
    with pytest.raises(
        ValueError,
        match=r"^sweep: keys holds 2 key\(s\), one per member, but params is stacked for 3 members: "
        r"pass 3 keys \(jax.random.split\(key, 3\)\)",
    ):
        fnnet.sweep(**kwargs)
    # params whose leaves disagree among themselves: the leaf named
    kwargs = arguments()
    first, *rest = kwargs["params"]
    kwargs["params"] = (dict(first, b=first["b"][:2]), *rest)
    with pytest.raises(
        ValueError, match=r"member axis of size 3 \(3 keys: one per member\), got params\[0\]\['b'\]"
    ):
        fnnet.sweep(**kwargs)
