"""The Layer contract end to end: training mode, keys and state through every training path
(value_and_grad, train_step, train, fit, sweep, checkpoints, as_jax), optimizers leaving
state alone, the layout chosen in one place, and compiled programs shared by value.

Oracle: JAX's autodiff of the same forward (`model.apply(..., train=True, key=...)`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, assert_trees_equal, child_xla_flags, count_compilations

import fnnet
from fnnet._layout import feature_major
from fnnet._loop import step_key

# Linear-BatchNorm-ReLU-Dropout-Linear-Sigmoid: every mechanism at once.
MODEL = fnnet.serial(
    fnnet.Linear(2, 8),
    fnnet.BatchNorm(momentum=0.8),
    fnnet.ReLU(),
    fnnet.Dropout(0.25),
    fnnet.Linear(8, 1),
    fnnet.Sigmoid(),
)
LOSS = fnnet.LossBCE()
CLOSE = dict(rtol=1e-5, atol=1e-6)  # float32 runs compared with float32 references
STATE_PATH = (1, "running")  # where MODEL's State sits in its params


def data(n=32, seed=1):
    return fnnet.data.disk(jax.random.key(seed), n)


def init(model=MODEL, seed=0, n=32):
    return model.init(jax.random.key(seed), (n, 2))[1]


def running(params):
    return params[STATE_PATH[0]][STATE_PATH[1]]


@functools.partial(jax.jit, static_argnums=(0, 1))
def oracle(model, loss, params, x, y, key):
    """JAX's value and grad of the training-mode loss."""
    return jax.value_and_grad(lambda p: loss.value(model.apply(p, x, train=True, key=key), y))(params)


# --- value_and_grad in training mode ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("batch_shape", [(32,), (4, 8)], ids=["2-D, feature-major", "3-D"])
def test_training_mode_gradients_match_autodiff(batch_shape):
    params = init()
    x = jax.random.uniform(jax.random.key(3), batch_shape + (2,))
    y = (jax.random.uniform(jax.random.key(4), batch_shape + (1,)) > 0.5).astype(jnp.float32)
    key = jax.random.key(5)
    value, grads = jax.jit(fnnet.value_and_grad(MODEL, LOSS))(params, x, y, key=key)
    want_value, want_grads = oracle(MODEL, LOSS, params, x, y, key)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_trees_close(grads, want_grads, **CLOSE)
    # the running statistics are not used in training: their gradient is zero
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(running(grads)))


def test_inference_mode_gradients_match_autodiff():
    params = jax.tree.map(lambda p: p + 0.1, init())  # running stats away from 0 and 1
    x, y = data()
    value, grads = jax.jit(fnnet.value_and_grad(MODEL, LOSS, train=False))(params, x, y)
    want_value, want_grads = jax.value_and_grad(lambda p: LOSS.value(MODEL.apply(p, x), y))(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_trees_close(grads, want_grads, **CLOSE)
    assert any(np.any(leaf) for leaf in jax.tree.leaves(running(grads)))  # used in inference


def test_training_mode_needs_a_key_for_dropout():
    x, y = data()
    with pytest.raises(
        ValueError,
        match=r"serial layer 3: Dropout\(rate=0.25\): training mode "
        r"draws a mask and needs a key",
    ):
        fnnet.value_and_grad(MODEL, LOSS)(init(), x, y)


def test_inference_is_deterministic_and_per_example():
    params = jax.tree.map(lambda p: p + 0.1, init())
    x, _ = data()
    whole = MODEL.apply(params, x)
    np.testing.assert_array_equal(whole, MODEL.apply(params, x))
    # running statistics, not the batch's: one example alone gives the same output
    np.testing.assert_allclose(MODEL.apply(params, x[:1]), whole[:1], rtol=1e-6)


# --- train_step, train, fit ------------------------------------------------------------------


def manual_step(params, opt_state, x, y, key, opt=fnnet.SGD(lr=0.1)):
    """What one training step must do, spelt out with the oracle's gradients."""
    key = step_key(key, opt_state.count)
    _, grads = oracle(MODEL, LOSS, params, x, y, key)
    new, opt_state = opt.step(params, grads, opt_state)
    stats = MODEL.update_state(params, x, key=key)
    return fnnet.state.with_state(new, fnnet.state.state_leaves(stats)), opt_state


def test_train_step_moves_the_running_statistics_and_equals_manual_steps():
    opt = fnnet.SGD(lr=0.1)
    x, y = data()
    key = jax.random.key(7)
    params = init()
    step = fnnet.train_step(MODEL, LOSS, opt)
    got, state = jax.tree.map(jnp.copy, params), opt.init(params)
    want, want_state = params, opt.init(params)
    for _ in range(3):
        got, state, _ = step(got, state, x, y, key=key)
        want, want_state = manual_step(want, want_state, x, y, key)
    assert_trees_close(got, want, **CLOSE)
    # momentum 0.8 from mean 0, var 1: the running mean moved towards the batch's
    first_layer = x @ params[0]["w"] + params[0]["b"][None, :]
    assert not np.allclose(running(got)["mean"], 0)
    assert np.all(np.sign(running(got)["mean"]) == np.sign(first_layer.mean(axis=0)))


def test_fit_result_params_hold_the_state_and_train_equals_fit():
    opt = fnnet.SGD(lr=0.2)
    x, y = data()
    params = init()
    key = jax.random.key(11)
    result = fnnet.fit(MODEL, LOSS, opt, params, x, y, epochs=6, key=key, progress=False)
    run = fnnet.train(MODEL, LOSS, opt, epochs=6)
    trained, _, losses = run(params, opt.init(params), x, y, key=key)
    assert_trees_close(result.params, trained, rtol=1e-6, atol=1e-6)  # fit runs in chunks
    np.testing.assert_allclose(result.losses, losses, rtol=1e-6)
    assert isinstance(running(result.params), fnnet.State)
    assert not np.allclose(running(result.params)["var"], 1)
    # six manual steps (full batch: one step per epoch) give the same params
    want, state = params, opt.init(params)
    for _ in range(6):
        want, state = manual_step(want, state, x, y, key, opt)
    assert_trees_close(result.params, want, rtol=1e-4, atol=1e-5)


def test_minibatches_draw_new_masks_each_step_and_depend_on_the_key():
    opt = fnnet.SGD(lr=0.2)
    x, y = data()
    params = init()
    run = fnnet.train(MODEL, LOSS, opt, epochs=3, batch_size=8)
    a = run(params, opt.init(params), x, y, key=jax.random.key(1))
    again = run(params, opt.init(params), x, y, key=jax.random.key(1))
    other = run(params, opt.init(params), x, y, key=jax.random.key(2))
    assert_trees_equal(a, again)
    assert not np.allclose(a[2], other[2])


@pytest.mark.parametrize(
    "opt",
    [fnnet.SGD(lr=0.5, momentum=0.9, weight_decay=0.5), fnnet.Adam(lr=0.1, decay=0.99)],
    ids=["SGD", "Adam"],
)
def test_no_optimizer_moves_state_even_given_a_gradient_for_it(opt):
    params = init()
    grads = jax.tree.map(jnp.ones_like, params)  # a gradient for everything, state included
    state = opt.init(params)
    new = params
    for _ in range(3):
        new, state = opt.step(new, grads, state)
    assert_trees_equal(running(new), running(params))
    assert not np.allclose(new[0]["w"], params[0]["w"])  # the rest did move


# --- sweeps, checkpoints, as_jax, data parallel ----------------------------------------------


def test_sweep_members_draw_their_own_masks():
    opt = fnnet.SGD(lr=0.2)
    x, y = data()
    keys = jax.random.split(jax.random.key(0), 2)
    params = fnnet.init_many(jnp.stack([keys[0], keys[0]]), MODEL, x.shape)  # same init
    states = jax.vmap(opt.init)(params)
    run = fnnet.train(MODEL, LOSS, opt, epochs=3)
    out_params, _, losses, finite = fnnet.sweep(run, params, states, x, y, keys=keys)
    assert finite.tolist() == [True, True]
    assert not np.allclose(losses[0], losses[1])  # same init and data: only the masks differ
    alone = run(jax.tree.map(lambda a: a[1], params), opt.init(init(seed=0)), x, y, key=keys[1])
    np.testing.assert_allclose(losses[1], alone[2], rtol=1e-5)
    assert running(out_params)["mean"].shape == (2, 8)


def test_checkpoint_round_trips_state(tmp_path):
    params = jax.tree.map(lambda p: p + 0.5, init())
    opt = fnnet.Adam(lr=0.1)
    path = tmp_path / "bn.npz"
    fnnet.save(path, params, opt.init(params))
    loaded, state, _ = fnnet.load(path, init(), opt.init(init()))
    assert_trees_equal(loaded, params)
    assert isinstance(running(loaded), fnnet.State)
    assert "params[1]['running']['mean']" in np.load(path).files


def test_as_jax_in_training_mode_uses_the_hand_vjp():
    params = init()
    x, y = data()
    key = jax.random.key(9)
    f = fnnet.as_jax(MODEL, train=True)
    grads = jax.jit(jax.grad(lambda p: LOSS.value(f(p, x, key), y)))(params)
    _, want = fnnet.value_and_grad(MODEL, LOSS)(params, x, y, key=key)
    assert_trees_close(grads, want, **CLOSE)
    np.testing.assert_array_equal(f(params, x, key), MODEL.apply(params, x, train=True, key=key))


def test_data_parallel_averages_the_running_statistics(tmp_path):
    """Over a 2-device mesh, each device normalizes its shard and the running statistics
    are the average of the shards' updates: checked against two single-device updates."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import jax, numpy as np
        from jax.sharding import Mesh
        import fnnet
        model = fnnet.serial(fnnet.Linear(2, 4), fnnet.BatchNorm(momentum=0.5), fnnet.Tanh(),
                             fnnet.Dropout(0.5), fnnet.Linear(4, 1))
        loss, opt = fnnet.LossMSE(), fnnet.SGD(lr=0.0001)
        x, y = fnnet.data.disk(jax.random.key(1), 16)
        params = model.init(jax.random.key(0), x.shape)[1]
        mesh = Mesh(np.array(jax.devices()), ("data",))
        out = fnnet.fit(model, loss, opt, params, x, y, epochs=1, progress=False, mesh=mesh)
        halves = [model.update_state(params, x[i * 8:(i + 1) * 8], key=None)[1]["running"]
                  for i in range(2)]
        got = out.params[1]["running"]
        for name in ("mean", "var"):
            np.testing.assert_allclose(got[name], (halves[0][name] + halves[1][name]) / 2, rtol=1e-5)
        assert got["mean"].sharding.is_fully_replicated
        print("ok")
    """)
    env = {
        "XLA_FLAGS": child_xla_flags(2),
        "JAX_PLATFORMS": "cpu",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# --- the layout, in one place ----------------------------------------------------------------


def test_errors_speak_of_the_shapes_the_user_passed():
    model = fnnet.serial(fnnet.Linear(2, 4), fnnet.ReLU(), fnnet.Linear(4, 1))
    params = model.init(jax.random.key(0), (16, 2))[1]
    x = jnp.ones((16, 3))
    y = jnp.ones((16, 1))
    message = (
        r"serial layer 0: Linear\(n_in=2, n_out=4\): expected input with 2 features on "
        r"axis -1, got shape \(16, 3\)"
    )
    with pytest.raises(ValueError, match=message):
        fnnet.value_and_grad(model, fnnet.LossMSE())(params, x, y)
    opt = fnnet.SGD(lr=0.1)
    with pytest.raises(ValueError, match=message):
        fnnet.train_step(model, fnnet.LossMSE(), opt)(params, opt.init(params), x, y)


def test_the_layout_is_private_and_picked_for_full_batch_2d_runs_of_linear_models():
    """A full-batch 2-D run of a model with built-in Linear layers gets a feature-major twin
    (other layers run transposed inside it); minibatches, images and models without a
    Linear stay batch-major."""
    mlp = fnnet.Sequential(
        fnnet.Linear(2, 4), fnnet.Tanh(), fnnet.Residual(fnnet.Sequential(fnnet.Linear(4, 4)))
    )
    assert "feature_major" not in dir(fnnet.Layer) and "feature_major" not in dir(mlp)
    x = jnp.ones((16, 2))
    assert feature_major(mlp, x) is not None
    assert feature_major(mlp, x, minibatches=True) is None
    assert feature_major(mlp, jnp.ones((4, 4, 2))) is None
    # BatchNorm has a twin of its own; Dropout runs its own math on the input transposed back
    layers = str(feature_major(MODEL, x).layers)
    assert (
        "_BatchNormFeatureMajor(BatchNorm(momentum=0.8))" in layers and "_Transposed(Dropout(0.25))" in layers
    )
    lin = fnnet.Linear(2, 1)
    assert feature_major(fnnet.Sequential(fnnet.Layer(lin.init, lin.apply, lin.vjp)), x) is None


def test_a_loss_of_your_own_checks_its_targets_before_training():
    checked = []

    def check(t, n):
        checked.append((t.shape, n))

    loss = fnnet.Loss(fnnet.LossMSE().value, fnnet.LossMSE().grad, check)
    lin = fnnet.Linear(2, 1)
    x, y = data()
    fnnet.fit(
        lin, loss, fnnet.SGD(lr=0.1), lin.init(jax.random.key(0), x.shape)[1], x, y, epochs=2, progress=False
    )
    assert checked == [((32, 1), 1)]


# --- layers, losses and optimizers are values --------------------------------------------------


def _model(rate=0.25, slope=0.01, w_init=None):
    return fnnet.Sequential(
        fnnet.Linear(2, 8, w_init=w_init),
        fnnet.BatchNorm(momentum=0.8),
        fnnet.LeakyReLU(slope),
        fnnet.Dropout(rate),
        fnnet.Linear(8, 1),
        fnnet.Sigmoid(),
    )


def test_layers_are_equal_by_their_settings():
    assert fnnet.Linear(2, 3) == fnnet.Linear(2, 3) and hash(fnnet.Linear(2, 3)) == hash(fnnet.Linear(2, 3))
    assert fnnet.Linear(2, 3) != fnnet.Linear(3, 2)
    assert _model() == _model() and hash(_model()) == hash(_model())
    assert _model(rate=0.5) != _model() and _model(slope=0.2) != _model()
    assert fnnet.ReLU() != fnnet.Tanh() and fnnet.Dropout(0.5) == fnnet.Dropout(np.float32(0.5))
    assert fnnet.Conv2D(3, 8, 3) == fnnet.Conv2D(3, 8, (3, 3), stride=1, padding="same")
    assert fnnet.MaxPool2D(2) == fnnet.MaxPool2D((2, 2), stride=2)
    # initializers and dtypes shape init only: not compared
    assert _model(w_init=jax.nn.initializers.glorot_normal()) == _model()


def _square(x):
    return x * x


def _square_derivative(x, y):
    return 2 * x


def test_a_users_layer_of_module_functions_is_equal_when_rebuilt_one_of_closures_is_new():
    lin = fnnet.Linear(2, 3)

    def vjp(params, x, dy, *, train=False, key=None):
        return lin.vjp(params, x, dy)

    assert fnnet.Layer(lin.init, _square, _square) == fnnet.Layer(lin.init, _square, _square)
    assert fnnet.elementwise("Sq", _square, _square_derivative) == fnnet.elementwise(
        "Sq", _square, _square_derivative
    )
    assert fnnet.Layer(lin.init, lin.apply, vjp) != fnnet.Layer(
        lin.init, lin.apply, lambda *a, **k: vjp(*a, **k)
    )
    assert isinstance(fnnet.Layer(lin.init, _square, _square), fnnet.Layer)
    with pytest.raises(TypeError, match=r"Layer: apply must be a function, got 3 \(int\)"):
        fnnet.Layer(lin.init, 3, _square)


def test_a_model_prints_as_the_code_that_builds_it():
    assert repr(_model()) == (
        "Sequential(Linear(2, 8), BatchNorm(momentum=0.8), LeakyReLU(), Dropout(0.25), Linear(8, 1), Sigmoid())"
    )
    assert repr(fnnet.Conv2D(3, 8, 3, stride=2)) == "Conv2D(3, 8, (3, 3), stride=(2, 2))"
    assert (
        repr(fnnet.Residual(fnnet.Sequential(fnnet.ELU(alpha=0.5)))) == "Residual(Sequential(ELU(alpha=0.5)))"
    )
    assert repr(fnnet.Linear(2, 3, dtype=jnp.float64)) == "Linear(2, 3, dtype=jnp.float64)"
    assert repr(fnnet.elementwise("Sq", _square, _square_derivative)) == (
        "elementwise('Sq', _square, _square_derivative)"
    )
    assert repr(fnnet.Layer(fnnet.Linear(2, 3).init, _square, _square)).startswith(
        "Layer(init=Linear.init, apply=_square"
    )
    assert "0x" not in repr(_model(w_init=jax.nn.initializers.glorot_normal()))


def test_summary_lists_output_shapes_and_parameter_counts(capsys):
    fnnet.summary(_model(), (32, 2))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "trainable", "state"]
    assert lines[1].split() == ["Linear(2,", "8)", "(32,", "8)", "24", "0"]
    assert lines[2].split() == ["BatchNorm(momentum=0.8)", "(32,", "8)", "16", "16"]
    assert lines[-1].split() == ["total", str(24 + 16 + 9), "16"]
    params = _model().init(jax.random.key(0), (32, 2))[1]
    assert 24 + 16 + 9 + 16 == sum(leaf.size for leaf in jax.tree.leaves(params))
    with pytest.raises(TypeError, match=r"summary: input_shape must be a tuple of ints"):
        fnnet.summary(_model(), 32)
    nested = fnnet.Sequential(fnnet.Linear(2, 4), fnnet.Sequential(fnnet.ReLU(), fnnet.Linear(3, 1)))
    with pytest.raises(
        ValueError, match=r"^summary: layer 1: layer 1: Linear\(n_in=3, n_out=1\): expected input_shape"
    ):
        fnnet.summary(nested, (32, 2))


# --- compiled programs shared by value -------------------------------------------------------


def test_equal_configurations_share_one_compiled_program():
    """Models built anew (fresh initializers included), another lr, other epochs, another
    Dropout rate or LeakyReLU slope (numbers are data): no new program. Another layer size
    is another model, so it compiles (counted, to prove the counter sees compilations
    here)."""
    x, y = data()
    params = _model().init(jax.random.key(0), x.shape)[1]
    fnnet.fit(_model(), LOSS, fnnet.SGD(lr=0.1), params, x, y, epochs=4, progress=False)
    other = _model(w_init=jax.nn.initializers.glorot_normal())
    with count_compilations() as compiled:
        fnnet.fit(other, fnnet.LossBCE(), fnnet.SGD(lr=0.3), params, x, y, epochs=7, progress=False)
    assert compiled == [], compiled
    with count_compilations() as compiled:
        fnnet.fit(
            _model(rate=0.5, slope=0.2), LOSS, fnnet.SGD(lr=0.1), params, x, y, epochs=4, progress=False
        )
    assert compiled == [], compiled
    wider = fnnet.Sequential(*_model().layers[:-2], fnnet.Linear(8, 2), fnnet.Softmax())
    with count_compilations() as compiled:
        fnnet.fit(
            wider,
            fnnet.LossMSE(),
            fnnet.SGD(lr=0.1),
            wider.init(jax.random.key(0), x.shape)[1],
            x,
            jnp.concatenate([y, 1 - y], axis=1),
            epochs=4,
            progress=False,
        )
    assert compiled, "another layer size is another model"


# --- what a user's layer gets wrong is caught -----------------------------------------------


def _tracking(update, state=True):
    """A layer that records its input's mean in a State (or a plain dict)."""
    lin = fnnet.Linear(3, 3)

    def init(key, input_shape):
        leaf = {"m": jnp.zeros(3)}
        return tuple(input_shape), {"run": fnnet.State(leaf) if state else leaf}

    def apply(params, x, *, train=False, key=None):
        return x

    def vjp(params, x, dy, *, train=False, key=None):
        return jax.tree.map(jnp.zeros_like, params), dy

    return fnnet.serial(lin, fnnet.Layer(init, apply, vjp, update), fnnet.Linear(3, 1))


def _mean_update(params, x, *, key=None):
    return {"run": fnnet.State(m=jnp.mean(x, axis=0))}


def test_a_users_layer_moves_its_state():
    model = _tracking(_mean_update)
    x, y = jnp.ones((8, 3)), jnp.ones((8, 1))
    params = model.init(jax.random.key(0), x.shape)[1]
    out = fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(lr=0.01), params, x, y, epochs=1, progress=False)
    moved = x @ params[0]["w"] + params[0]["b"][None, :]
    np.testing.assert_allclose(out.params[1]["run"]["m"], moved.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    "update, state, match",
    [
        (
            lambda p, x, *, key=None: {"run": fnnet.State(m=x.mean(0), extra=x.mean(0))},
            True,
            r"serial layer 1: update_state must return params of the structure it was given",
        ),
        (
            lambda p, x, *, key=None: {"run": {"m": x.mean(0)}},
            True,
            r"serial layer 1: update_state must return params of the structure it was given",
        ),
        (
            lambda p, x, *, key=None: {"run": {"m": x.mean(0)}},
            False,
            r"serial layer 1: a layer with update_state keeps its state under fnnet.State",
        ),
    ],
    ids=["an extra leaf", "a dict for a State", "state outside a State"],
)
def test_a_wrong_update_state_is_refused(update, state, match):
    model = _tracking(update, state=state)
    x, y = jnp.ones((8, 3)), jnp.ones((8, 1))
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(ValueError, match=match):
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(lr=0.01), params, x, y, epochs=1, progress=False)


def test_errors_in_train_and_sweep_speak_of_the_users_shapes():
    model = fnnet.serial(fnnet.Linear(2, 4), fnnet.ReLU(), fnnet.Linear(4, 1))
    params = model.init(jax.random.key(0), (16, 2))[1]
    opt = fnnet.SGD(lr=0.1)
    x, y = jnp.ones((16, 3)), jnp.ones((16, 1))
    for batch_size in (None, 4):
        run = fnnet.train(model, fnnet.LossMSE(), opt, epochs=1, batch_size=batch_size)
        with pytest.raises(
            ValueError,
            match=r"expected input with 2 features on axis -1, got "
            r"shape \(16, 3\)",
        ):
            run(params, opt.init(params), x, y)


def test_a_layer_of_the_older_contract_gets_a_hint():
    lin = fnnet.Linear(2, 1)
    old = fnnet.Layer(
        lin.init, lambda params, x: lin.apply(params, x), lambda params, x, dy: lin.vjp(params, x, dy)
    )
    x, y = data()
    with pytest.raises(
        TypeError,
        match=r"unexpected keyword argument .* \(a layer's apply and "
        r"vjp take the keywords train and key",
    ):
        fnnet.value_and_grad(old, fnnet.LossMSE())(lin.init(jax.random.key(0), x.shape)[1], x, y)


def test_train_must_be_a_bool():
    with pytest.raises(TypeError, match=r"Dropout\(rate=0.5\): train must be a Python bool"):
        fnnet.Dropout(0.5).apply((), jnp.ones((2, 2)), train="no", key=jax.random.key(0))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_params_train_with_adam(dtype):
    model = fnnet.serial(
        fnnet.Linear(2, 8, dtype=dtype), fnnet.Tanh(), fnnet.Linear(8, 1, dtype=dtype), fnnet.Sigmoid()
    )
    x, y = data(64)
    params = model.init(jax.random.key(0), x.shape)[1]
    out = fnnet.fit(
        model, LOSS, fnnet.Adam(lr=0.01), params, x.astype(dtype), y.astype(dtype), epochs=30, progress=False
    )
    assert out.losses[-1] < out.losses[0]
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(out.params))


def test_a_subclass_of_a_built_in_layer_keeps_its_own_math_on_every_layout():
    """The layout pass twins only the built-in classes: a subclass may compute otherwise,
    and runs transposed inside the twin."""

    @dataclasses.dataclass(frozen=True, repr=False)
    class Doubled(fnnet.Linear):
        def apply(self, params, x, *, train=False, key=None):
            return 2 * super().apply(params, x)

        def vjp(self, params, x, dy, *, train=False, key=None):
            return super().vjp(params, x, 2 * dy)

    model = fnnet.Sequential(Doubled(2, 1), fnnet.Sigmoid())
    assert type(feature_major(model, jnp.ones((8, 2))).layers[0]).__name__ == "_Transposed"
    x, y = data()
    params = model.init(jax.random.key(1), x.shape)[1]
    value, _ = fnnet.value_and_grad(model, LOSS)(params, x, y)
    want = LOSS.value(model.apply(params, x), y)
    np.testing.assert_allclose(value, want, rtol=1e-6)


def _no_init(key, input_shape):
    return {"w": jnp.ones(3)}  # the params alone, no output shape


def _pair_apply(params, x, *, train=False, key=None):
    return x, x


def _identity_apply(params, x, *, train=False, key=None):
    return x


def _narrow_vjp(params, x, dy, *, train=False, key=None):
    return (), dy[..., :1]  # dx of another shape than x


def _no_params_init(key, input_shape):
    return tuple(input_shape), ()


def _scale_init(key, input_shape):
    return tuple(input_shape), {"a": jnp.ones(input_shape[-1])}


def _scale_apply(params, x, *, train=False, key=None):
    return x * params["a"][None, :]


def _first_column_apply(params, x, *, train=False, key=None):
    return (x * params["a"][None, :])[:, :1]  # init says the output is x's shape


def _summed_vjp(params, x, dy, *, train=False, key=None):
    return {"a": jnp.sum(dy * x)}, dy * params["a"][None, :]  # summed over the features too: ()


def _row_vjp(params, x, dy, *, train=False, key=None):
    return {"a": jnp.sum(dy * x, axis=0, keepdims=True)}, dy * params["a"][None, :]  # (1, 3), broadcasts


def _integer_vjp(params, x, dy, *, train=False, key=None):
    return {"a": jnp.sum(dy * x, axis=0).astype(jnp.int32)}, dy * params["a"][None, :]  # truncated


@pytest.mark.parametrize(
    "layer, error, match",
    [
        (
            fnnet.Layer(_no_init, _identity_apply, _narrow_vjp),
            TypeError,
            r"serial layer 1: Layer\(init=_no_init, .*\): init must return \(output_shape, params\), got",
        ),
        (
            fnnet.Layer(_no_params_init, _pair_apply, _narrow_vjp),
            TypeError,
            r"serial layer 1: Layer\(.*apply=_pair_apply.*\): apply must return an array, got \(.*\) \(tuple\)",
        ),
        (
            fnnet.Layer(_no_params_init, _identity_apply, _narrow_vjp),
            ValueError,
            r"serial layer 1: Layer\(.*vjp=_narrow_vjp.*\): vjp returned dx of shape \(8, 1\) for x of shape \(8, 3\)",
        ),
        (
            fnnet.Layer(_scale_init, _first_column_apply, _integer_vjp),
            ValueError,
            r"serial layer 1: Layer\(.*apply=_first_column_apply.*\): apply returned an output of shape "
            r"\(8, 1\) for x of shape \(8, 3\), where its init gives the output shape \(8, 3\)",
        ),
        (
            fnnet.Layer(_scale_init, _scale_apply, _summed_vjp),
            ValueError,
            r"serial layer 1: Layer\(.*vjp=_summed_vjp.*\): vjp returned dparams\['a'\] of shape \(\) for a "
            r"param of shape \(3,\)",
        ),
        (
            fnnet.Layer(_scale_init, _scale_apply, _row_vjp),
            ValueError,
            r"vjp returned dparams\['a'\] of shape \(1, 3\) for a param of shape \(3,\)",
        ),
        (
            fnnet.Layer(_scale_init, _scale_apply, _integer_vjp),
            TypeError,
            r"serial layer 1: .*vjp returned dparams\['a'\] of dtype int32 for a param of dtype float\d\d; a "
            r"gradient must be floating point",
        ),
    ],
    ids=[
        "init-returns-params-alone",
        "apply-returns-a-tuple",
        "vjp-returns-another-shape",
        "apply-returns-another-shape-than-init-says",
        "vjp-returns-a-summed-gradient",
        "vjp-returns-a-gradient-that-broadcasts",
        "vjp-returns-integers",
    ],
)
def test_a_users_layer_that_breaks_the_contract_is_named_with_what_it_returned(layer, error, match):
    model = fnnet.Sequential(fnnet.Linear(2, 3), layer, fnnet.Linear(3, 1))
    x, y = data(8)
    with pytest.raises(error, match=match):
        params = model.init(jax.random.key(0), x.shape)[1]
        fnnet.value_and_grad(model, fnnet.LossMSE())(params, x, y)
    try:
        params = model.init(jax.random.key(0), x.shape)[1]
    except error:
        return  # init's own error, named above
    with count_compilations() as compiled, pytest.raises(error, match=match):  # fit: before any work
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(0.1), params, x, y, 2, progress=False)
    assert not [c for c in compiled if "run" in c]


def test_update_state_that_changes_a_leafs_dtype_is_named():
    model = _tracking(
        lambda p, x, *, key=None: {"run": fnnet.State(m=jnp.mean(x, axis=0).astype(jnp.float16))}
    )
    x, y = jnp.ones((8, 3)), jnp.ones((8, 1))
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(
        ValueError,
        match=r"serial layer 1: update_state must keep each leaf's shape and dtype: "
        r"params\['run'\]\['m'\] is float\d\d\[3\], update_state gave float16\[3\]",
    ):
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(lr=0.01), params, x, y, epochs=1, progress=False)


def test_params_donated_to_a_step_are_named_when_reused():
    x, y = data()
    params, opt = init(), fnnet.SGD(lr=0.1)
    step = fnnet.train_step(MODEL, LOSS, opt)
    state = opt.init(params)
    step(params, state, x, y, key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"train_step: params or opt_state hold arrays an earlier step was donated"
    ):
        step(params, state, x, y, key=jax.random.key(0))


def test_params_of_another_container_name_both_kinds():
    x, y = data()
    with pytest.raises(
        TypeError,
        match=r"params must have the structure model.init gives \(a list where "
        r"model.init gives a tuple\)",
    ):
        fnnet.fit(MODEL, LOSS, fnnet.SGD(lr=0.1), list(init()), x, y, epochs=1, progress=False)


def _declares_one_column(key, input_shape):
    return tuple(input_shape[:-1]) + (1,), {"a": jnp.ones(input_shape[-1])}


def _sums_the_columns(params, x, *, train=False, key=None):
    return jnp.sum(x * params["a"][None, :], axis=-1)  # (n,), where init says (n, 1)


def _zero_vjp(params, x, dy, *, train=False, key=None):
    return {"a": jnp.zeros_like(params["a"])}, jnp.zeros_like(x)


@pytest.mark.parametrize(
    "model",
    [
        fnnet.Sequential(fnnet.Linear(2, 3), fnnet.Layer(_declares_one_column, _sums_the_columns, _zero_vjp)),
        fnnet.Sequential(
            fnnet.Linear(2, 3),
            fnnet.Layer(_scale_init, _first_column_apply, _zero_vjp),
            fnnet.Tanh(),
            fnnet.Linear(3, 1),
        ),
    ],
    ids=["the-last-layer-the-loss-meets", "a-layer-after-it-passes-the-shape-on"],
)
def test_a_users_layer_of_the_wrong_shape_is_named_where_the_error_shows_later(model):
    """The wrong shape shows where the loss meets it, or two layers on: fit still names the
    user's layer, not the data or the layer that met it."""
    x, y = data(8)
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(ValueError, match=r"serial layer 1: Layer\(.*\): apply returned an output of shape"):
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(0.1), params, x, y, 1, progress=False)
