"""fnnet.train_step and fnnet.train: compiled once, equal to hand-written steps, honest batches."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    XLA_DEFAULT,
    assert_trees_close,
    assert_trees_equal,
    count_compilations,
    jitted_value_and_grad,
)

import fnnet
from fnnet._buckets import run_size
from fnnet._loop import _order

# One configuration for most tests, so compiled programs are shared between them.
MODEL = fnnet.serial(fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Linear(8, 1), fnnet.Sigmoid())
MODEL64 = fnnet.serial(
    fnnet.Linear(2, 8, dtype=jnp.float64),
    fnnet.Tanh(),
    fnnet.Linear(8, 1, dtype=jnp.float64),
    fnnet.Sigmoid(),
)
LOSS = fnnet.LossBCE()
N = 10
EPOCHS = 5


def data(dtype=jnp.float32, n=N):
    x, y = fnnet.data.disk(jax.random.key(1), n)
    return x.astype(dtype), y.astype(dtype)


def init(model=MODEL, seed=0):
    return model.init(jax.random.key(seed), (1, 2))[1]


def copy(tree):
    """A fresh copy (train_step donates its params and opt_state)."""
    return jax.tree.map(jnp.copy, tree)


def manual_run(model, loss, opt, params, state, batches):
    """Hand-written training: value_and_grad then opt.step, one batch at a time."""
    value_and_grad = jitted_value_and_grad(model, loss)
    step = jax.jit(opt.step)
    values = []
    for x, y in batches:
        value, grads = value_and_grad(params, x, y)
        params, state = step(params, grads, state)
        values.append(float(value))
    return params, state, np.asarray(values)


def test_count_compilations_sees_a_compile():
    """The helper is live, so the "no compilation" assertions below cannot pass vacuously."""
    fresh = jax.jit(lambda a: a * 3 + 1)
    a, b = jnp.zeros(3), jnp.ones(3)
    with count_compilations() as compiled:
        fresh(a)
    assert len(compiled) == 1, compiled
    with count_compilations() as compiled:
        fresh(b)  # same shapes: served from the cache
    assert compiled == []


# train_step ---------------------------------------------------------------------------------------


def test_train_step_is_jitted_and_never_recompiles_for_new_hyperparameters():
    x, y = data()
    params = init()
    opt = fnnet.SGD(lr=0.5)
    step = fnnet.train_step(MODEL, LOSS, opt)
    assert isinstance(step.lower(params, opt.init(params), x, y), jax.stages.Lowered)  # a jit
    step(copy(params), opt.init(params), x, y)  # compiles here (or earlier in the session)

    for other in (fnnet.SGD(lr=0.1), fnnet.SGD(lr=0.05, decay=0.5, momentum=0.9, weight_decay=1e-3)):
        state = other.init(params)
        donated = copy(params)
        with count_compilations() as compiled:
            new_params, new_state, value = fnnet.train_step(MODEL, LOSS, other)(donated, state, x, y)
            jax.block_until_ready(new_params)
        assert compiled == []
        assert int(new_state.count) == 1

    # The value is value_and_grad's, and the step used the state's lr (0.05), not a cached one.
    want_value, grads = jitted_value_and_grad(MODEL, LOSS)(params, x, y)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
    want_params = jax.tree.map(
        lambda p, g: np.asarray(p) - 0.05 * (np.asarray(g) + 1e-3 * np.asarray(p)), params, grads
    )
    for got, want in zip(jax.tree.leaves(new_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


# train, full batch -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-6), (jnp.float64, 1e-12)])
def test_full_batch_equals_manual_steps(dtype, rtol):
    model = MODEL if dtype == jnp.float32 else MODEL64
    x, y = data(dtype)
    params = init(model)
    opt = fnnet.SGD(lr=0.5, decay=0.99, momentum=0.9)
    got_params, got_state, losses = fnnet.train(model, LOSS, opt, epochs=EPOCHS)(
        params, opt.init(params), x, y
    )
    want_params, want_state, want_losses = manual_run(
        model, LOSS, opt, params, opt.init(params), [(x, y)] * EPOCHS
    )
    assert losses.shape == (EPOCHS,)
    # float32 training stays float32 (the losses come back in jnp.result_type(float)).
    assert {a.dtype for a in jax.tree.leaves((got_params, got_state.slots))} == {np.dtype(dtype)}
    assert_trees_close(got_params, want_params, rtol=rtol, atol=rtol / 10)
    assert_trees_close(got_state.slots, want_state.slots, rtol=rtol, atol=rtol / 10)
    np.testing.assert_allclose(np.asarray(losses), want_losses, rtol=rtol)
    assert int(got_state.count) == EPOCHS


def test_full_batch_ignores_the_key():
    x, y = data()
    params = init()
    opt = fnnet.SGD(lr=0.5)
    run = fnnet.train(MODEL, LOSS, opt, epochs=EPOCHS)
    without = run(params, opt.init(params), x, y)
    with_key = run(params, opt.init(params), x, y, key=jax.random.key(7))
    assert_trees_equal(without, with_key)


# train, minibatches ------------------------------------------------------------------------------
#
# A probe that shows which samples each step used. Sample i is the one-hot row e_i; the model is
# y = x @ w + b; the loss is mean(y). Its gradient does not depend on the params:
# d loss / d w = (sum of the batch's one-hot rows) / |batch| and d loss / d b = 1. With plain SGD
# and lr_t = 0.9**t, starting from w = 0, a sample used once, at step t in a batch of size s,
# ends with w_i = -0.9**t / s. Decreasing steps tell the batches apart (0.25, 0.225, 0.405 for
# 10 samples in batches of 4), and a sample used twice or never gives a value outside that set.

PROBE = fnnet.Linear(N, 1, dtype=jnp.float64)
PROBE_LOSS = fnnet.Loss(value=lambda y, t: jnp.mean(y), grad=lambda y, t: jnp.ones_like(y) / y.size)
PROBE_OPT = fnnet.SGD(lr=1.0, decay=0.9)


def probe_epoch(batch_size, key, params=None, state=None):
    """One epoch of the probe: (params, state, epoch loss, batches as sorted index arrays)."""
    if params is None:
        params = {"w": jnp.zeros((N, 1)), "b": jnp.zeros(1)}
        state = PROBE_OPT.init(params)
    run = fnnet.train(PROBE, PROBE_LOSS, PROBE_OPT, epochs=1, batch_size=batch_size)
    new_params, new_state, losses = run(params, state, jnp.eye(N), jnp.zeros((N, 1)), key=key)
    t0, n_steps = int(state.count), int(new_state.count) - int(state.count)
    sizes = [batch_size] * (N // batch_size) + ([N % batch_size] if N % batch_size else [])
    assert n_steps == len(sizes)

    moved = np.asarray(params["w"] - new_params["w"])[:, 0]
    expected = np.asarray([0.9 ** (t0 + k) / size for k, size in enumerate(sizes)])
    assert len(set(np.round(expected, 12))) == len(expected), "the probe cannot tell steps apart"
    step_of = [int(np.argmin(np.abs(expected - m))) for m in moved]
    # Each sample was used exactly once: its move is one step's, not a sum of steps' or nothing.
    np.testing.assert_allclose(moved, expected[step_of], rtol=1e-12)
    batches = [np.flatnonzero(np.asarray(step_of) == k) for k in range(len(sizes))]
    assert [len(b) for b in batches] == sizes  # the last batch is the smaller rest
    np.testing.assert_allclose(
        float(params["b"][0] - new_params["b"][0]),
        sum(0.9 ** (t0 + k) for k in range(len(sizes))),
        rtol=1e-12,
    )
    return new_params, new_state, float(losses[0]), batches


@pytest.mark.parametrize("batch_size", [4, 5])
def test_each_epoch_uses_every_sample_exactly_once(batch_size):
    key = jax.random.key(3)
    params, state, loss, first = probe_epoch(batch_size, key)
    _, _, _, second = probe_epoch(batch_size, key, params, state)  # the next epoch
    # Reshuffled: with these sizes the same batches twice would be a 1-in-126 coincidence at most
    assert any(not np.array_equal(a, b) for a, b in zip(first, second)), "not reshuffled"


def test_epoch_loss_weights_batches_by_size():
    """The epoch's loss is the size-weighted mean of the batch losses, each before its step."""
    _, _, loss, batches = probe_epoch(4, jax.random.key(3))
    # Before step k the batch's own w entries are still 0 (each sample is used once) and
    # b = -(1 + 0.9 + ...), so batch k's loss is b_k.
    b = [0.0, -1.0, -1.9]
    want = sum(len(batch) * b_k for batch, b_k in zip(batches, b)) / N
    assert want == pytest.approx(-0.78)
    assert loss == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("batch_size", [None, 4])
def test_the_epoch_loop_has_a_length_xla_knows(batch_size):
    """The loop over epochs runs a static count of times, each count its own program: on a
    GPU, a loop whose length XLA cannot see reads its condition back to the host every
    epoch (W1 on an H200: 0.66 s, 0.53 s with the length known)."""
    from fnnet._buckets import padded_samples, run_size
    from fnnet._loop import Watching, _runner

    opt = fnnet.SGD(lr=0.1)
    params, (x, y) = init(), data()
    runner = _runner(None)
    for count in (EPOCHS, 2):
        padded = padded_samples(x, y, run_size(x.shape[0], batch_size))
        args = (params, opt.init(params), padded, jax.random.key(0), None, None, None, None)
        hlo = (
            runner.lower(MODEL, LOSS, opt.step, batch_size, True, count, Watching(), *args)
            .compile(compiler_options=XLA_DEFAULT)
            .as_text()
        )
        trips = re.findall(r'"known_trip_count":\{"n":"(\d+)"\}', hlo)
        assert len(trips) == hlo.count(" while("), (trips, hlo.count(" while("))  # every loop
        assert str(count) in trips


def test_multi_epoch_run_continues_like_separate_epochs():
    """epochs=2 in one run equals two runs of one epoch: the shuffle follows the state's count."""
    key = jax.random.key(5)
    params = {"w": jnp.zeros((N, 1)), "b": jnp.zeros(1)}
    both = fnnet.train(PROBE, PROBE_LOSS, PROBE_OPT, epochs=2, batch_size=4)(
        params, PROBE_OPT.init(params), jnp.eye(N), jnp.zeros((N, 1)), key=key
    )
    one_params, one_state, _, _ = probe_epoch(4, key)
    two_params, two_state, _, _ = probe_epoch(4, key, one_params, one_state)
    assert_trees_close(both[0], two_params, rtol=1e-13)
    assert int(both[1].count) == int(two_state.count) == 6


@pytest.mark.slow
@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-6), (jnp.float64, 1e-12)])
def test_minibatch_run_equals_manual_steps_on_its_batches(dtype, rtol):
    """A real model trained by minibatches equals value_and_grad + opt.step on the same batches."""
    model = MODEL if dtype == jnp.float32 else MODEL64
    key = jax.random.key(3)
    _, _, _, batches = probe_epoch(4, key)  # the shuffle depends only on (key, count, n)
    x, y = data(dtype)
    params = init(model)
    opt = fnnet.SGD(lr=0.5, momentum=0.5)
    got_params, got_state, losses = fnnet.train(model, LOSS, opt, epochs=1, batch_size=4)(
        params, opt.init(params), x, y, key=key
    )
    want_params, _, values = manual_run(
        model, LOSS, opt, params, opt.init(params), [(x[b], y[b]) for b in batches]
    )
    assert {a.dtype for a in jax.tree.leaves((got_params, got_state.slots))} == {np.dtype(dtype)}
    assert_trees_close(got_params, want_params, rtol=rtol, atol=rtol / 10)
    assert int(got_state.count) == 3
    sizes = np.asarray([len(b) for b in batches])
    np.testing.assert_allclose(float(losses[0]), np.sum(values * sizes) / N, rtol=rtol)


def test_minibatches_of_a_padded_run_equal_jax_grad_steps_in_its_order():
    """A real model in minibatches of 128 over 300 samples (padded to their bucket): each
    step equals jax.grad of the plain model on that batch, in the run's order, the last
    batch (44 samples) smaller."""
    n, batch = 300, 128  # batches of 128, 128 and 44
    model = fnnet.serial(fnnet.Linear(3, 16), fnnet.Tanh(), fnnet.Linear(16, 1), fnnet.Sigmoid())
    x = jax.random.normal(jax.random.key(7), (n, 3), jnp.float32)
    y = (jax.random.uniform(jax.random.key(8), (n, 1)) < 0.4).astype(jnp.float32)
    params, opt, key = (
        model.init(jax.random.key(0), (1, 3))[1],
        fnnet.SGD(lr=0.5, momentum=0.5),
        jax.random.key(3),
    )
    got, _, losses = fnnet.train(model, LOSS, opt, epochs=1, batch_size=batch)(
        params, opt.init(params), x, y, key=key
    )

    def plain_loss(p, xb, yb):
        h = jnp.tanh(xb @ p[0]["w"] + p[0]["b"][None])
        out = jax.nn.sigmoid(h @ p[2]["w"] + p[2]["b"][None])
        return -jnp.mean(yb * jnp.log(out) + (1 - yb) * jnp.log(1 - out))

    order = np.asarray(_order(jnp.arange(run_size(n, batch)) < n, fnnet._draws.fold_in(key, 0)))[:n]
    want, state, total = params, opt.init(params), 0.0
    for start in range(0, n, batch):
        b = order[start : start + batch]
        value, grads = jax.value_and_grad(plain_loss)(want, x[b], y[b])
        want, state = opt.step(want, grads, state)
        total += float(value) * len(b)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(losses[0]), total / n, rtol=1e-5)


def test_same_key_same_result_other_key_other_result():
    x, y = data()
    params = init()
    opt = fnnet.SGD(lr=0.5)
    run = fnnet.train(MODEL, LOSS, opt, epochs=1, batch_size=4)
    a = run(params, opt.init(params), x, y, key=jax.random.key(0))
    b = run(params, opt.init(params), x, y, key=jax.random.key(0))
    c = run(params, opt.init(params), x, y, key=jax.random.key(1))
    assert_trees_equal(a, b)
    assert not np.array_equal(np.asarray(a[0][0]["w"]), np.asarray(c[0][0]["w"]))
    assert not np.array_equal(np.asarray(a[2]), np.asarray(c[2]))


@pytest.mark.parametrize(
    "batch_size, error, match",
    [
        (0, ValueError, r"batch_size must be in \[1, 10\] \(the number of samples\), got 0"),
        (11, ValueError, r"batch_size must be in \[1, 10\] \(the number of samples\), got 11"),
        (-3, ValueError, r"batch_size must be in \[1, 10\]"),
        (2.0, TypeError, r"batch_size must be an int or None, got 2\.0"),
        (True, TypeError, r"batch_size must be an int or None, got True"),
        ("4", TypeError, r"batch_size must be an int or None, got '4'"),
    ],
)
def test_bad_batch_size_raises(batch_size, error, match):
    x, y = data()
    params = init()
    opt = fnnet.SGD(lr=0.5)
    with pytest.raises(error, match=match):  # when the run is built or, knowing n, when it runs
        run = fnnet.train(MODEL, LOSS, opt, epochs=EPOCHS, batch_size=batch_size)
        run(params, opt.init(params), x, y, key=jax.random.key(0))


@pytest.mark.parametrize("epochs", [0, -1, 2.0, True, None])
def test_bad_epochs_raise(epochs):
    with pytest.raises(ValueError, match=rf"train: epochs must be an int >= 1, got {epochs!r}"):
        fnnet.train(MODEL, LOSS, fnnet.SGD(lr=0.5), epochs=epochs)


# --- issue #12: the run makes fit's checks before any work -------------------------------


OPT = fnnet.SGD(lr=0.5)


@pytest.mark.parametrize(
    "make", [fnnet.train, lambda m, loss, o, **kw: fnnet.train_step(m, loss, o)], ids=["train", "train_step"]
)
@pytest.mark.parametrize(
    "parts, match",
    [
        (
            (LOSS, MODEL, OPT),
            r"model must be a Layer \(e\.g\. fnnet\.serial\(\.\.\.\)\), got LossBCE\(\) \(LossBCE\)",
        ),
        (
            (MODEL, OPT, LOSS),
            r"loss must be a Loss \(e\.g\. fnnet\.LossMSE\(\)\), got SGD\(lr=0\.5\) \(SGD\)",
        ),
        ((MODEL, LOSS, lambda p, g, s: (p, s)), r"opt must be an? Optimizer .*got the function"),
        ((MODEL.apply, LOSS, OPT), r"model must be a Layer .*got the method Sequential\.apply of"),
        ((MODEL, LOSS.value, OPT), r"loss must be a Loss .*got the method"),
    ],
    ids=["loss-as-model", "opt-as-loss", "function-as-opt", "function-as-model", "function-as-loss"],
)
def test_train_and_train_step_refuse_misplaced_parts(make, parts, match):
    owner = "train_step" if make is not fnnet.train else "train"
    with pytest.raises(TypeError, match=rf"^{owner}: " + match):
        make(*parts, epochs=EPOCHS)


def test_train_refuses_a_mesh_that_is_not_one_when_built():
    with pytest.raises(TypeError, match=r"train: mesh must be a jax\.sharding\.Mesh, got 'mesh' \(str\)"):
        fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, mesh="mesh")


def with_value(a, index, value):
    a = np.array(a)
    a[index] = value
    return jnp.asarray(a)


def bad_lr_state(params, lr):
    """A state whose lr init never saw as a number: made under jit, where it was traced."""
    return jax.jit(lambda p, lr: OPT.init(p, lr=lr))(params, lr)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            lambda p, s, x, y, k: (p, s, with_value(x, (3, 1), np.nan), y, k),
            ValueError,
            r"train: x holds 1 NaN or infinite value\(s\)",
        ),
        (
            lambda p, s, x, y, k: (p, s, with_value(x, (0, 0), np.inf), y, k),
            ValueError,
            r"train: x holds 1 NaN or infinite value\(s\)",
        ),
        (
            lambda p, s, x, y, k: (p, s, x, with_value(y, (2, 0), np.nan), k),
            ValueError,
            r"train: y holds 1 NaN or infinite value\(s\)",
        ),
        (
            lambda p, s, x, y, k: (
                (p[0], p[1], {"w": with_value(p[2]["w"], (0, 0), np.nan), "b": p[2]["b"]}, p[3]),
                s,
                x,
                y,
                k,
            ),
            ValueError,
            r"train: params\[2\]\['w'\] holds 1 NaN or infinite value\(s\)",
        ),
        (
            lambda p, s, x, y, k: (p, s, x, with_value(y, (1, 0), 2.0), k),
            ValueError,
            r"LossBCE: targets must be in \[0, 1\], got values in \[0\.0, 2\.0\]",
        ),
        (
            lambda p, s, x, y, k: (p, bad_lr_state(p, np.float32(np.nan)), x, y, k),
            ValueError,
            r"train: opt_state: lr must be > 0, got .*nan",
        ),
        (
            lambda p, s, x, y, k: (p, bad_lr_state(p, np.float32(-0.5)), x, y, k),
            ValueError,
            r"train: opt_state: lr must be > 0, got .*-0\.5",
        ),
        (
            lambda p, s, x, y, k: (p, bad_lr_state(p, np.float32(0.0)), x, y, k),
            ValueError,
            r"train: opt_state: lr must be > 0, got .*0\.0",
        ),
        (
            lambda p, s, x, y, k: (p, s, x, y[:, 0], k),
            ValueError,
            (
                r"train: y does not fit the model's output on x: LossBCE: prediction and target must have "
                r"the same shape, got \(10, 1\) and \(10,\)"
            ),
        ),
        (
            lambda p, s, x, y, k: (p, s, x, y, 0),
            TypeError,
            r"train: key must be a PRNG key such as jax\.random\.key\(0\), got 0 \(int\)",
        ),
        (
            lambda p, s, x, y, k: (p, s, x, y, jax.random.split(k, 4)),
            ValueError,
            r"train: key must be one PRNG key, got an array of 4 keys \(shape \(4,\)\)",
        ),
        (
            lambda p, s, x, y, k: (p, s, [["a", "b"]] * len(x), y, k),
            TypeError,
            r"train: x must be an array of numbers",
        ),
    ],
    ids=[
        "nan-x",
        "inf-x",
        "nan-y",
        "nan-params",
        "bad-target",
        "nan-lr",
        "negative-lr",
        "zero-lr",
        "y-shape",
        "int-key",
        "many-keys",
        "list-x",
    ],
)
@pytest.mark.parametrize("batch_size", [None, 4], ids=["full", "minibatch"])
def test_run_refuses_bad_inputs_before_any_work(change, error, match, batch_size):
    x, y = data()
    params = init()
    args = change(params, OPT.init(params), x, y, jax.random.key(0))
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, batch_size=batch_size)
    with count_compilations() as compiled, pytest.raises(error, match=match):
        run(*args[:4], key=args[4])
    assert not [name for name in compiled if "run" in name], compiled  # no work began


def test_run_under_vmap_checks_what_is_concrete():
    # Shared x is concrete inside vmap over the members: still checked on the host.
    x, y = data()
    keys = jax.random.split(jax.random.key(0), 2)
    params = fnnet.init_many(keys, MODEL, x.shape)
    states = jax.vmap(OPT.init)(params)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS)
    with pytest.raises(ValueError, match=r"train: x holds 1 NaN or infinite value\(s\)"):
        jax.vmap(run, in_axes=(0, 0, None, None))(params, states, with_value(x, (0, 0), np.nan), y, key=keys)


@pytest.mark.parametrize(
    "n, padded", [(1437, 1536), (4000, 5120), (5000, 5120)], ids=["one_sort", "across", "argsort"]
)
def test_an_epochs_order_puts_the_counted_samples_first_whatever_the_padding(n, padded):
    """The order is a permutation: the samples of weight > 0 shuffled (in order without a
    key), then the others in their order; the counted ones' order is the same whatever
    padding follows them (4000 samples padded to 5120 still take the one sort of the first
    4096 rows, as alone: the same order), and another key draws another order."""
    from fnnet._loop import _order

    weights = np.ones(n)
    weights[::7] = 0  # samples of weight 0 among them
    counted = np.flatnonzero(weights > 0)
    orders = {}
    for size in (n, padded):
        padded_weights = np.pad(weights, (0, size - n))
        counts = jnp.asarray(padded_weights > 0)
        order = np.asarray(_order(counts, jax.random.key(3)))
        assert sorted(order.tolist()) == list(range(size))
        assert sorted(order[: len(counted)].tolist()) == counted.tolist()
        assert order[len(counted) :].tolist() == sorted(set(range(size)) - set(counted.tolist()))
        orders[size] = order[: len(counted)]
        assert np.asarray(_order(counts, None))[: len(counted)].tolist() == counted.tolist()
    np.testing.assert_array_equal(orders[n], orders[padded])
    counts = jnp.asarray(weights > 0)
    assert not np.array_equal(
        np.asarray(_order(counts, jax.random.key(4))), np.asarray(_order(counts, jax.random.key(3)))
    )


def test_the_shuffle_is_as_uniform_as_numpys_permutation():
    """Over 4000 epochs of 37 samples (6 of weight 0) the shuffle puts each counted sample
    at each place, and before each other, as often as NumPy's uniform permutations do: the
    largest deviation from the uniform frequency within 1.5 times NumPy's own on as many
    draws (seeded: the bounds hold with room)."""
    from fnnet._loop import _order

    n, epochs = 37, 4000
    weights = np.ones(n)
    weights[::7] = 0
    counted = np.flatnonzero(weights > 0)
    m = len(counted)
    keys = jax.random.split(jax.random.key(11), epochs)
    ours = np.asarray(jax.jit(jax.vmap(lambda k: _order(jnp.asarray(weights > 0), k)))(keys))[:, :m]
    rng = np.random.default_rng(11)
    theirs = np.stack([rng.permutation(counted) for _ in range(epochs)])

    def deviations(orders):
        """The largest deviations of a place's and an ordered pair's frequency from 1/m and 1/2."""
        place = np.zeros((epochs, n), int)  # each epoch: the place of each sample
        np.put_along_axis(place, orders, np.broadcast_to(np.arange(m), orders.shape), axis=1)
        place = place[:, counted]
        at = np.stack([(place == k).mean(0) for k in range(m)])
        before = (place[:, :, None] < place[:, None, :]).mean(0)[~np.eye(m, dtype=bool)]
        return np.abs(at - 1 / m).max(), np.abs(before - 0.5).max()

    for got, bound in zip(deviations(ours), deviations(theirs)):
        assert got <= 1.5 * bound
