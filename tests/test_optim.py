"""fnnet.SGD and fnnet.Adam against a plain NumPy reference written here."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HALF_DTYPES, HALF_RTOL, assert_half_close, assert_trees_close, count_compilations

import fnnet
from fnnet import schedules

N_STEPS = 50


def make_params(seed, dtype=np.float64):
    """A small params pytree with dict and tuple nesting and a scalar leaf."""
    rng = np.random.default_rng(seed)
    return {
        "dense": {
            "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
            "b": jnp.asarray(rng.normal(size=(4,)), dtype),
        },
        "stack": (
            jnp.asarray(rng.normal(size=(2,)), dtype),
            (jnp.asarray(rng.normal(size=(2, 2)), dtype), jnp.asarray(rng.normal(), dtype)),
        ),
    }


def make_noise(seed, params, n_steps=N_STEPS):
    """n_steps pytrees of random numbers shaped like params."""
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params) for _ in range(n_steps)
    ]


@jax.jit
def gradient(params, noise):
    """The gradient of a noisy quadratic, so each step's grads depend on the params so far."""
    return jax.tree.map(lambda p, n: 0.5 * p + n, params, noise)


def reference(
    kind,
    params,
    noises,
    lr,
    schedule=None,
    decay=1.0,
    momentum=0.0,
    nesterov=False,
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
):
    """len(noises) optimizer steps in NumPy float64, straight from the textbook formulas."""
    leaves, treedef = jax.tree.flatten(params)
    p = [np.asarray(leaf, np.float64) for leaf in leaves]
    slot_a = [np.zeros_like(x) for x in p]  # velocity, or Adam's first moment
    slot_b = [np.zeros_like(x) for x in p]  # Adam's second moment
    for t, noise in enumerate(noises):
        lr_t = lr * decay**t * (1.0 if schedule is None else schedule(t))
        for i, n in enumerate(jax.tree.leaves(noise)):
            g = 0.5 * p[i] + np.asarray(n, np.float64)
            if kind == "SGD":
                d = g + weight_decay * p[i]
                slot_a[i] = momentum * slot_a[i] + d
                p[i] = p[i] - lr_t * (d + momentum * slot_a[i] if nesterov else slot_a[i])
            else:
                slot_a[i] = b1 * slot_a[i] + (1 - b1) * g
                slot_b[i] = b2 * slot_b[i] + (1 - b2) * g * g
                m_hat = slot_a[i] / (1 - b1 ** (t + 1))
                v_hat = slot_b[i] / (1 - b2 ** (t + 1))
                p[i] = p[i] - lr_t * m_hat / (np.sqrt(v_hat) + eps)
    return jax.tree.unflatten(treedef, p)


def run(opt, params, noises, state=None, step=None):
    """len(noises) steps of opt (jitted unless a step is given); returns params, state."""
    step = jax.jit(opt.step) if step is None else step
    state = opt.init(params) if state is None else state
    for noise in noises:
        params, state = step(params, gradient(params, noise), state)
    return params, state


CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_decay": ("SGD", dict(lr=0.1, decay=0.97)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("SGD", dict(lr=0.1, weight_decay=0.3)),
    "sgd_everything": ("SGD", dict(lr=0.05, decay=0.98, momentum=0.8, nesterov=True, weight_decay=0.05)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_everything": ("Adam", dict(lr=0.02, b1=0.8, b2=0.99, eps=1e-6, decay=0.99)),
}
OPTIMIZERS = {"SGD": fnnet.SGD, "Adam": fnnet.Adam}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference_float64(name):
    kind, hyperparams = CONFIGS[name]
    params = make_params(0)
    noises = make_noise(1, params)
    got, state = run(OPTIMIZERS[kind](**hyperparams), params, noises)
    assert_trees_close(
        got, reference(kind, params, noises, **hyperparams), rtol=1e-11, atol=1e-13, same_dtypes=False
    )
    assert state.count.dtype == jnp.int32 and int(state.count) == N_STEPS


@pytest.mark.parametrize("name", ["sgd_everything", "adam_everything"])
def test_matches_numpy_reference_float32(name):
    kind, hyperparams = CONFIGS[name]
    params = make_params(2, np.float32)
    noises = make_noise(3, params)
    got, state = run(OPTIMIZERS[kind](**hyperparams), params, noises)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((got, state.slots)))
    assert_trees_close(
        got, reference(kind, params, noises, **hyperparams), rtol=1e-4, atol=1e-5, same_dtypes=False
    )


def test_eager_step_equals_jitted_step():
    opt = fnnet.SGD(**CONFIGS["sgd_everything"][1])
    params = make_params(4)
    noises = make_noise(5, params, n_steps=2)
    eager, _ = run(opt, params, noises, step=opt.step)
    jitted, _ = run(opt, params, noises)
    for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(np.asarray(e), np.asarray(j), rtol=1e-14, atol=1e-15)


def test_decay_counts_steps_already_taken():
    """lr_t = lr * decay**t with t = steps taken: the first step uses lr exactly."""
    opt = fnnet.SGD(lr=0.25, decay=0.5)
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.ones(3)}  # powers of two: every value below is exact
    state = opt.init(params)
    moves = []
    for _ in range(4):
        new, state = opt.step(params, grads, state)
        moves.append(float(params["w"][0] - new["w"][0]))
        params = new
    assert moves == [0.25, 0.125, 0.0625, 0.03125]
    assert int(state.count) == 4


def test_adam_first_step_uses_lr_exactly():
    """Bias correction makes Adam's first step lr * g / (|g| + eps): lr * sign(g), up to eps."""
    opt = fnnet.Adam(lr=0.125, decay=0.5, eps=1e-12)
    params = {"w": jnp.zeros(3)}
    new, state = opt.step(params, {"w": jnp.asarray([2.0, -3.0, 0.5])}, opt.init(params))
    np.testing.assert_allclose(np.asarray(new["w"]), [-0.125, 0.125, -0.125], rtol=1e-10)
    new, _ = opt.step(new, {"w": jnp.asarray([2.0, -3.0, 0.5])}, state)  # same g: step lr * decay
    np.testing.assert_allclose(np.asarray(new["w"]), [-0.1875, 0.1875, -0.1875], rtol=1e-10)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_schedule_lr_scaled_by_state_lr_and_decay(kind):
    schedule = schedules.exponential(0.3, 0.9)
    params = make_params(6)
    noises = make_noise(7, params, n_steps=20)
    opt = OPTIMIZERS[kind](lr=schedule, decay=0.95)

    got, _ = run(opt, params, noises)
    want = reference(kind, params, noises, lr=1.0, schedule=lambda t: 0.3 * 0.9**t, decay=0.95)
    assert_trees_close(got, want, rtol=1e-11, atol=1e-13, same_dtypes=False)

    # The state's lr scales the schedule.
    got, _ = run(opt, params, noises, state=opt.init(params, lr=2.0))
    want = reference(kind, params, noises, lr=2.0, schedule=lambda t: 0.3 * 0.9**t, decay=0.95)
    assert_trees_close(got, want, rtol=1e-11, atol=1e-13, same_dtypes=False)


def test_step_schedule_changes_at_its_boundary():
    opt = fnnet.SGD(lr=schedules.step(0.5, 0.1, 2))
    params, grads = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
    state, moves = opt.init(params), []
    for _ in range(4):
        new, state = opt.step(params, grads, state)
        moves.append(float(params["w"] - new["w"]))
        params = new
    np.testing.assert_allclose(moves, [0.5, 0.5, 0.05, 0.05], rtol=1e-15)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(lr=0.03, decay=0.9),
        dict(lr=jnp.asarray(0.03), decay=np.float64(0.9), momentum=jnp.asarray(0.5)),
        dict(lr=np.asarray(0.07, np.float32), weight_decay=0.2, momentum=0.7),
    ],
)
def test_init_overrides_hyperparameters(overrides):
    opt = fnnet.SGD(lr=1.0, decay=0.5, momentum=0.1, nesterov=True)
    params = make_params(8)
    noises = make_noise(9, params, n_steps=20)
    state = opt.init(params, **overrides)
    for name, value in {"lr": 1.0, "decay": 0.5, "momentum": 0.1, "weight_decay": 0.0, **overrides}.items():
        assert state.hyperparams[name].shape == ()
        assert state.hyperparams[name].dtype == jnp.float64
        assert float(state.hyperparams[name]) == float(value), name
    got, _ = run(opt, params, noises, state=state)
    want = reference(
        "SGD", params, noises, **{"lr": 1.0, "decay": 0.5, "momentum": 0.1, "nesterov": True, **overrides}
    )
    assert_trees_close(got, want, rtol=1e-11, atol=1e-13, same_dtypes=False)


def test_adam_init_overrides():
    opt = fnnet.Adam(lr=1.0)
    params = make_params(10)
    noises = make_noise(11, params, n_steps=20)
    overrides = dict(lr=jnp.asarray(0.01), b1=0.5, b2=jnp.asarray(0.9), eps=1e-4, decay=0.97)
    got, _ = run(opt, params, noises, state=opt.init(params, **overrides))
    assert_trees_close(
        got, reference("Adam", params, noises, **overrides), rtol=1e-11, atol=1e-13, same_dtypes=False
    )


def test_sgd_without_momentum_keeps_no_velocity():
    """momentum=None: no params-sized buffer and no momentum in the state; the default
    (momentum 0) keeps both, so momentum stays sweepable; both take the same steps."""
    params = make_params(14)
    plain = fnnet.SGD(lr=0.1, decay=0.9, momentum=None).init(params)
    assert plain.slots == {} and sorted(plain.hyperparams) == ["decay", "lr", "weight_decay"]
    default = fnnet.SGD(lr=0.1, decay=0.9).init(params)
    assert jax.tree.structure(default.slots["velocity"]) == jax.tree.structure(params)
    assert float(default.hyperparams["momentum"]) == 0.0
    noises = make_noise(15, params)
    got, _ = run(fnnet.SGD(lr=0.1, decay=0.9, momentum=None), params, noises)
    want, _ = run(fnnet.SGD(lr=0.1, decay=0.9), params, noises)
    assert_trees_close(got, want, rtol=1e-12, atol=1e-14, same_dtypes=False)
    assert_trees_close(
        got, reference("SGD", params, noises, lr=0.1, decay=0.9), rtol=1e-11, atol=1e-13, same_dtypes=False
    )


def test_hyperparameters_are_data_no_recompilation():
    """Another lr, decay or momentum, from a new optimizer or an override, reuses the program."""
    params = make_params(12)
    grads = gradient(params, make_noise(13, params, n_steps=1)[0])
    first = fnnet.SGD(lr=0.1)  # alive: jit's cache holds a function by a weak reference
    jax.jit(first.step)(params, grads, first.init(params))
    opt = fnnet.SGD(lr=0.2, decay=0.9, momentum=0.5, weight_decay=0.1)
    states = [opt.init(params), opt.init(params, lr=jnp.asarray(0.7), momentum=0.0)]
    with count_compilations() as compiled:
        for state in states:
            jax.jit(opt.step)(params, grads, state)
    assert compiled == []


def test_sgd_without_momentum_shares_one_program():
    """SGD(momentum=None) with other lr, decay or weight decay reuses the program too."""
    params = make_params(16)
    grads = gradient(params, make_noise(17, params, n_steps=1)[0])
    first = fnnet.SGD(lr=0.1, momentum=None)
    jax.jit(first.step)(params, grads, first.init(params))
    other = fnnet.SGD(lr=0.3, decay=0.9, weight_decay=0.1, momentum=None)
    states = other.init(params), first.init(params, lr=jnp.asarray(0.7))  # eager casts compile
    with count_compilations() as compiled:
        jax.jit(other.step)(params, grads, states[0])
        jax.jit(first.step)(params, grads, states[1])
    assert compiled == []


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_vmap_over_hyperparameters(kind):
    """vmap(init) over a sweep of lrs; the vmapped step equals each member's own steps."""
    opt = fnnet.SGD(lr=0.1, momentum=0.9) if kind == "SGD" else fnnet.Adam(lr=0.1)
    members = [make_params(20 + i) for i in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    lrs = jnp.asarray([0.01, 0.05, 0.2])
    decays = jnp.asarray([1.0, 0.9, 0.5])
    states = jax.vmap(lambda p, lr, decay: opt.init(p, lr=lr, decay=decay))(stacked, lrs, decays)
    assert states.hyperparams["lr"].shape == (3,) and states.count.shape == (3,)
    np.testing.assert_array_equal(np.asarray(states.hyperparams["lr"]), np.asarray(lrs))

    noises = make_noise(30, stacked, n_steps=5)
    vmapped_step = jax.jit(jax.vmap(opt.step))
    params = stacked
    for noise in noises:
        params, states = vmapped_step(params, jax.vmap(gradient)(params, noise), states)

    for i, member in enumerate(members):
        own_noises = [jax.tree.map(lambda a: a[i], noise) for noise in noises]
        want, _ = run(
            opt, member, own_noises, state=opt.init(member, lr=float(lrs[i]), decay=float(decays[i]))
        )
        got = jax.tree.map(lambda a: a[i], params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-13, atol=1e-14)
        assert_trees_close(
            got,
            reference(
                kind,
                member,
                own_noises,
                lr=float(lrs[i]),
                decay=float(decays[i]),
                **({"momentum": 0.9} if kind == "SGD" else {}),
            ),
            rtol=1e-11,
            atol=1e-13,
        )


def test_float64_grads_keep_float32_params_and_slots():
    """A step never changes the dtype of params or state (a jitted loop's carry must not)."""
    params = make_params(40, np.float32)
    grads = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float64), params)
    for opt in (fnnet.SGD(lr=0.1, momentum=0.5), fnnet.Adam(lr=0.1)):
        new, state = jax.jit(opt.step)(params, grads, opt.init(params))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((new, state.slots)))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fnnet.SGD(lr=0.0), ValueError, r"SGD: lr must be > 0, got 0\.0"),
        (lambda: fnnet.SGD(lr=-0.1), ValueError, r"SGD: lr must be > 0, got -0\.1"),
        (lambda: fnnet.SGD(lr=float("nan")), ValueError, r"SGD: lr must be > 0, got nan"),
        (lambda: fnnet.SGD(lr=float("inf")), ValueError, r"SGD: lr must be > 0, got inf"),
        (lambda: fnnet.SGD(lr="0.1x"), TypeError, r"SGD: lr must be a number, got '0\.1x'"),
        (lambda: fnnet.SGD(lr=True), TypeError, r"SGD: lr must be a number, got True"),
        (lambda: fnnet.SGD(lr=None), TypeError, r"SGD: lr must be a number, got None"),
        (lambda: fnnet.SGD(lr=0.1, decay=0.0), ValueError, r"SGD: decay must be in \(0, 1\]"),
        (lambda: fnnet.SGD(lr=0.1, decay=1.01), ValueError, r"SGD: decay must be in \(0, 1\]"),
        (lambda: fnnet.SGD(lr=0.1, momentum=1.0), ValueError, r"SGD: momentum must be in \[0, 1\)"),
        (lambda: fnnet.SGD(lr=0.1, momentum=-0.1), ValueError, r"SGD: momentum must be in \[0, 1\)"),
        (
            lambda: fnnet.SGD(lr=0.1, nesterov=True),
            ValueError,
            r"SGD: nesterov=True needs momentum > 0, got momentum=0",
        ),
        (
            lambda: fnnet.SGD(lr=0.1, momentum=0.0, nesterov=True),
            ValueError,
            r"nesterov=True needs momentum > 0",
        ),
        (
            lambda: fnnet.SGD(lr=0.1, momentum=None, nesterov=True),
            ValueError,
            r"nesterov=True needs momentum > 0, got momentum=None",
        ),
        (lambda: fnnet.SGD(lr=0.1, weight_decay=-0.1), ValueError, r"SGD: weight_decay must be >= 0"),
        (lambda: fnnet.Adam(lr=0.0), ValueError, r"Adam: lr must be > 0"),
        (lambda: fnnet.Adam(lr=0.1, b1=1.0), ValueError, r"Adam: b1 must be in \[0, 1\)"),
        (lambda: fnnet.Adam(lr=0.1, b2=-0.5), ValueError, r"Adam: b2 must be in \[0, 1\)"),
        (lambda: fnnet.Adam(lr=0.1, b2=float("nan")), ValueError, r"Adam: b2 must be in \[0, 1\)"),
        (lambda: fnnet.Adam(lr=0.1, eps=0.0), ValueError, r"Adam: eps must be > 0"),
        (lambda: fnnet.Adam(lr=0.1, decay=2.0), ValueError, r"Adam: decay must be in \(0, 1\]"),
        (lambda: fnnet.SGD(lr=lambda t: 0.0 * t), ValueError, r"SGD: the lr schedule must .*> 0"),
        (lambda: fnnet.SGD(lr=lambda t: jnp.ones(2)), ValueError, r"SGD: the lr schedule must "),
    ],
)
def test_bad_hyperparameters_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "opt, overrides, error, match",
    [
        (
            fnnet.SGD(lr=0.1),
            dict(lrr=0.1),
            TypeError,
            r"SGD\.init: unknown hyperparameter\(s\) \['lrr'\]; expected some of "
            r"\['decay', 'lr', 'momentum', 'weight_decay'\]",
        ),
        (
            fnnet.SGD(lr=0.1, momentum=None),
            dict(momentum=0.5),
            TypeError,
            r"SGD\.init: unknown hyperparameter\(s\) \['momentum'\]; .* an SGD built with "
            r"momentum=None keeps no velocity: build it with a momentum \(0 included\) to set it here",
        ),
        (
            fnnet.Adam(lr=0.1),
            dict(momentum=0.9),
            TypeError,
            r"Adam\.init: unknown hyperparameter\(s\) \['momentum'\]",
        ),
        (fnnet.SGD(lr=0.1), dict(lr=0.0), ValueError, r"SGD: lr must be > 0"),
        (fnnet.SGD(lr=0.1), dict(lr=jnp.asarray(-0.5)), ValueError, r"SGD: lr must be > 0"),
        (
            fnnet.SGD(lr=0.1),
            dict(decay=jnp.asarray([0.5, 1.5])),
            ValueError,
            r"SGD: decay must be a scalar .*got an array of shape \(2,\)",
        ),
        (
            fnnet.SGD(lr=0.1),
            dict(lr=jnp.full((8,), 0.1)),
            ValueError,
            r"SGD: lr must be a scalar .*got an array of shape \(8,\)",
        ),
        (fnnet.SGD(lr=0.1), dict(momentum=1.0), ValueError, r"SGD: momentum must be in \[0, 1\)"),
        (fnnet.Adam(lr=0.1), dict(b2=1.0), ValueError, r"Adam: b2 must be in \[0, 1\)"),
    ],
)
def test_bad_init_overrides_raise(opt, overrides, error, match):
    with pytest.raises(error, match=match):
        opt.init(make_params(0), **overrides)


@pytest.mark.parametrize(
    "owner, opt",
    [("SGD", fnnet.SGD(lr=0.1, momentum=0.5)), ("Adam", fnnet.Adam(lr=0.1))],
    ids=["SGD", "Adam"],
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_grads_of_another_structure_raise(owner, opt, jit):
    params = make_params(0)
    state = opt.init(params)
    step = jax.jit(opt.step) if jit else opt.step
    wrong = [
        {"dense": params["dense"], "stack": list(params["stack"])},  # a list for a tuple
        {"dense": params["dense"]},  # a missing entry
        jax.tree.leaves(params),  # flat
    ]
    for grads in wrong:
        with pytest.raises(
            ValueError,
            match=rf"{owner}\.step: grads must have the structure "
            r"of params",
        ):
            step(params, grads, state)


# --- what slipped past the hyperparameter checks (issue #12) ---------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: fnnet.SGD(lr=np.array([0.1, 0.2])),
            ValueError,
            (
                r"SGD: lr must be a scalar \(one value per run; vmap over opt\.init for a sweep\), "
                r"got an array of shape \(2,\)"
            ),
        ),
        (
            lambda: fnnet.Adam(lr=0.1, b1=jnp.full((3,), 0.9)),
            ValueError,
            r"Adam: b1 must be a scalar .*shape \(3,\)",
        ),
        (
            lambda: fnnet.SGD(lr=0.1, nesterov="yes"),
            TypeError,
            r"SGD: nesterov must be True or False, got 'yes'",
        ),
        (
            lambda: fnnet.SGD(lr=0.1, momentum=0.5, nesterov=1),
            TypeError,
            r"SGD: nesterov must be True or False, got 1",
        ),
    ],
)
def test_constructor_refuses_non_scalar_hyperparameters_and_a_non_bool_nesterov(make, error, match):
    with pytest.raises(error, match=match):
        make()


F32 = make_params(0, np.float32)


@pytest.mark.parametrize(
    "opt, overrides, error, match",
    [
        (
            fnnet.SGD(lr=0.1),
            {"lr": jnp.full((8,), 0.1)},
            ValueError,
            r"SGD: lr must be a scalar .*got an array of shape \(8,\)",
        ),
        (
            fnnet.SGD(lr=0.1),
            {"lr": np.full((1,), 0.1)},
            ValueError,
            r"SGD: lr must be a scalar .*got an array of shape \(1,\)",
        ),
        (fnnet.SGD(lr=0.1), {"lr": jnp.asarray(np.nan)}, ValueError, r"SGD: lr must be > 0, got .*nan"),
        (fnnet.SGD(lr=0.1), {"lr": np.float32(np.nan)}, ValueError, r"SGD: lr must be > 0, got .*nan"),
        (fnnet.SGD(lr=0.1), {"lr": jnp.asarray(np.inf)}, ValueError, r"SGD: lr must be > 0, got .*inf"),
        # Valid as Python floats, but 0, 1 or inf in the params' float32: frozen params or NaN.
        (
            fnnet.SGD(lr=0.1),
            {"lr": 1e-50},
            ValueError,
            r"SGD: lr must be > 0 in the params' dtype float32, got 1e-50, which is 0\.0 there",
        ),
        (fnnet.SGD(lr=1e-46), {}, ValueError, r"SGD: lr must be > 0 in the params' dtype float32"),
        (
            fnnet.SGD(lr=0.1),
            {"lr": 1e300},
            ValueError,
            r"SGD: lr must be > 0 in the params' dtype float32, got 1e\+300, which is inf there",
        ),
        (
            fnnet.Adam(lr=0.1),
            {"b2": 1 - 1e-9},
            ValueError,
            r"Adam: b2 must be in \[0, 1\) in the params' dtype float32, got 0\.999999999, which is 1\.0",
        ),
        (fnnet.Adam(lr=0.1), {"eps": 1e-60}, ValueError, r"Adam: eps must be > 0 in the params' dtype"),
        (
            fnnet.SGD(lr=0.1),
            {"momentum": 1 - 1e-10},
            ValueError,
            r"SGD: momentum must be in \[0, 1\) in the params' dtype float32",
        ),
        # Valid there too, but as if not given: no decay, no weight decay.
        (
            fnnet.SGD(lr=0.1, decay=1 - 1e-10),
            {},
            ValueError,
            r"SGD: decay=0\.9999999999 is 1\.0 in float32, where it acts not at all",
        ),
        (
            fnnet.SGD(lr=2**70),
            {"lr": 10**400},
            ValueError,
            r"SGD: lr must be > 0, got an int too large for a float",
        ),
        (
            fnnet.SGD(lr=0.1, decay=0.99999997),  # float32's 0.99999994: twice the decay given
            {},
            ValueError,
            r"SGD: decay=0\.99999997 is 0\.9999999403953552 in float32, where it acts 1\.99x as fast",
        ),
    ],
)
def test_init_refuses_what_used_to_slip_through(opt, overrides, error, match):
    with pytest.raises(error, match=match):
        opt.init(F32, **overrides)


@pytest.mark.parametrize(
    "opt, overrides",
    [
        (fnnet.SGD(lr=0.1 * 3 / 0.3), {}),  # 1.0000000000000002: an lr of 1 is an lr
        (fnnet.SGD(lr=0.1), {"lr": 0.9999999999}),
        (fnnet.Adam(0.1, clip_norm=1 + 1e-12), {}),
        (fnnet.SGD(lr=0.1, momentum=1e-50), {}),  # 0 in float32: no momentum, as good as 1e-50
        (fnnet.AdamW(lr=0.1, weight_decay=1e-50), {}),
    ],
)
def test_values_that_round_to_an_equivalent_are_accepted(opt, overrides):
    """Only a decay that rounds to 1 (no decay at all) is refused: other numbers that round
    to 0 or 1 keep what they do (or do nothing measurable, as a weight decay of 1e-50)."""
    opt.init(F32, **overrides)


def test_init_checks_in_float64_params_dtype_too():
    assert float(fnnet.SGD(lr=1e-50).init(make_params(0)).hyperparams["lr"]) == 1e-50


@pytest.mark.parametrize(
    "params, got",
    [
        ({"w": jnp.arange(3)}, r"params\['w'\] of dtype int"),
        ({"w": jnp.ones(2), "n": 3.0}, r"params\['n'\] of float"),
        ((jnp.ones(2), jnp.array([True])), r"params\[1\] of dtype bool"),
    ],
)
def test_init_refuses_params_that_are_not_float_arrays(params, got):
    with pytest.raises(
        TypeError,
        match=r"SGD\.init: params must be floating-point arrays "
        r"\(the optimizer moves them\), got " + got,
    ):
        fnnet.SGD(lr=0.1).init(params)


def test_integer_state_leaves_are_fine():
    params = {"w": jnp.ones(2), "seen": fnnet.State(count=jnp.zeros((), jnp.int32))}
    assert fnnet.SGD(lr=0.1).init(params).count == 0


def test_traced_hyperparameters_are_checked_by_shape_and_flagged_by_the_optimizer():
    params = jax.tree.map(lambda a: jnp.stack([a] * 4), F32)
    lrs = jnp.asarray([0.1, np.nan, -0.1, 0.0], jnp.float32)
    opt = fnnet.SGD(lr=0.1, momentum=0.5)
    states = jax.vmap(lambda p, lr: opt.init(p, lr=lr))(params, lrs)  # traced: no host check
    valid = opt.valid(states.hyperparams)
    np.testing.assert_array_equal(valid, [True, False, False, False])
    np.testing.assert_array_equal(opt.valid(states.hyperparams, numpy=np), valid)
    with pytest.raises(ValueError, match=r"SGD: lr must be a scalar .*shape \(2,\)"):
        jax.vmap(lambda p, lr: opt.init(p, lr=lr))(params, jnp.ones((4, 2)))


# Optimizers are values ---------------------------------------------------------------------


def rmsprop(lr, rho=0.9):
    return fnnet.optimizer("RMSProp", _rmsprop_rule, lr, ["ms"], rho=fnnet.fraction(rho))


def _rmsprop_rule(p, g, slots, h, lr, t):
    ms = h["rho"] * slots["ms"] + (1 - h["rho"]) * g * g
    return p - lr * g / (jnp.sqrt(ms) + 1e-8), {"ms": ms}


@pytest.mark.parametrize(
    "make",
    [
        lambda: fnnet.SGD(0.5, decay=0.9995),
        lambda: fnnet.SGD(0.1, momentum=None),
        lambda: fnnet.SGD(schedules.cosine(0.1, 1000), momentum=0.9, nesterov=True),
        lambda: fnnet.Adam(3e-3, b2=0.99),
        lambda: rmsprop(0.01),
    ],
    ids=["sgd", "plain", "cosine", "adam", "custom"],
)
def test_equal_settings_make_equal_optimizers_and_steps(make):
    a, b = make(), make()
    assert a is not b and a == b and hash(a) == hash(b)
    assert a.step == b.step and hash(a.step) == hash(b.step)


@pytest.mark.parametrize(
    "a, b",
    [
        (fnnet.SGD(0.1), fnnet.SGD(0.5)),
        (fnnet.SGD(0.1), fnnet.SGD(0.1, decay=0.9)),
        (fnnet.SGD(0.1, momentum=0.5), fnnet.SGD(0.1, momentum=0.9)),
        (fnnet.Adam(0.1), fnnet.Adam(0.1, eps=1e-6)),
        (fnnet.SGD(schedules.cosine(0.1, 1000)), fnnet.SGD(schedules.cosine(0.1, 1000), weight_decay=0.1)),
        (rmsprop(0.01), rmsprop(0.01, rho=0.5)),
    ],
)
def test_other_hyperparameters_make_other_optimizers_with_the_same_step(a, b):
    assert a != b
    assert a.step == b.step and hash(a.step) == hash(b.step)


@pytest.mark.parametrize(
    "a, b",
    [
        (fnnet.SGD(0.1), fnnet.SGD(0.1, momentum=None)),  # another rule and state layout
        (fnnet.SGD(0.1, momentum=0.9), fnnet.SGD(0.1, momentum=0.9, nesterov=True)),  # another rule
        (fnnet.SGD(0.1), fnnet.Adam(0.1)),
        (fnnet.SGD(schedules.cosine(0.1, 1000)), fnnet.SGD(schedules.cosine(0.1, 500))),  # another schedule
        (fnnet.SGD(schedules.cosine(0.1, 1000)), fnnet.SGD(0.1)),
    ],
)
def test_optimizers_that_step_otherwise_have_other_steps(a, b):
    assert a != b and a.step != b.step


@pytest.mark.parametrize(
    "opt, text",
    [
        (fnnet.SGD(0.5, decay=0.9995), "SGD(lr=0.5, decay=0.9995)"),
        (fnnet.SGD(lr=0.1), "SGD(lr=0.1)"),
        (fnnet.SGD(0.1, momentum=None), "SGD(lr=0.1, momentum=None)"),
        (fnnet.SGD(0.1, momentum=0.9, nesterov=True), "SGD(lr=0.1, momentum=0.9, nesterov=True)"),
        (fnnet.Adam(0.003), "Adam(lr=0.003)"),
        (fnnet.Adam(0.003, b1=0.8, decay=0.99), "Adam(lr=0.003, b1=0.8, decay=0.99)"),
        (fnnet.SGD(schedules.cosine(0.1, 1000)), "SGD(lr=schedules.cosine(lr=0.1, total_steps=1000))"),
        (rmsprop(0.01), "RMSProp(lr=0.01, rho=0.9)"),
    ],
)
def test_an_optimizer_prints_as_the_code_that_builds_it(opt, text):
    assert repr(opt) == text


def test_the_attributes_keep_their_meaning():
    opt = fnnet.SGD(schedules.cosine(0.1, 1000), decay=0.9)
    assert isinstance(opt, fnnet.Optimizer) and opt.name == "SGD"
    assert opt.schedule == schedules.cosine(0.1, 1000)
    assert {name: h.value for name, h in opt.hyperparameters.items()} == {
        "lr": 1.0,
        "momentum": 0.0,
        "decay": 0.9,
        "weight_decay": 0.0,
    }
    assert fnnet.SGD(0.1).schedule is None
    assert rmsprop(0.01).name == "RMSProp" and rmsprop(0.01).step.slot_names == ("ms",)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: fnnet.SGD(0.1, 0.9), r"SGD\.__init__\(\) takes 2 positional arguments but 3 were given"),
        (lambda: fnnet.Adam(0.1, 0.9), r"Adam\.__init__\(\) takes 2 positional arguments but 3 were given"),
    ],
)
def test_every_argument_after_lr_is_keyword_only(make, match):
    """A PyTorch user's SGD(0.1, 0.9) means momentum 0.9: an error, not a decay of 0.9."""
    with pytest.raises(TypeError, match=match):
        make()
    assert fnnet.SGD(0.1, decay=0.9).hyperparameters["decay"].value == 0.9


def test_a_static_step_compiles_once_for_every_lr():
    """How training compiles: `opt.step` a static argument. Another lr, decay or weight
    decay (another optimizer, equal step) reuses the program; another rule does not."""
    params = make_params(30)
    grads = gradient(params, make_noise(31, params, n_steps=1)[0])

    def stepped(step, params, grads, state):
        return step(params, grads, state)

    stepped_jit = jax.jit(stepped, static_argnums=0)  # a fresh jit: its cache is this test's
    first = fnnet.SGD(0.1)
    others = [fnnet.SGD(0.5), fnnet.SGD(0.2, decay=0.9, weight_decay=0.1, momentum=0.5)]
    states = [opt.init(params) for opt in [first, *others]]  # eager casts compile
    with count_compilations() as compiled:
        stepped_jit(first.step, params, grads, states[0])
    assert len(compiled) == 1, compiled  # the counter sees this compile
    with count_compilations() as compiled:
        for opt, state in zip(others, states[1:]):
            stepped_jit(opt.step, params, grads, state)
    assert compiled == []
    nesterov = fnnet.SGD(0.1, momentum=0.5, nesterov=True)
    state = nesterov.init(params)
    with count_compilations() as compiled:
        stepped_jit(nesterov.step, params, grads, state)
    assert len(compiled) == 1, compiled


def test_array_settings_become_numbers_a_donating_step_cannot_delete():
    opt = fnnet.SGD(jnp.float32(0.5), decay=np.array(0.99))
    assert opt == fnnet.SGD(0.5, decay=0.99) and hash(opt) == hash(fnnet.SGD(0.5, decay=0.99))
    model = fnnet.Linear(2, 1)
    params = model.init(jax.random.key(0), (4, 2))[1]
    fnnet.train_step(model, fnnet.LossMSE(), opt)(
        params, opt.init(params), jnp.ones((4, 2)), jnp.ones((4, 1))
    )
    assert repr(opt) == "SGD(lr=0.5, decay=0.99)" and float(opt.init(params).hyperparams["lr"]) == 0.5


def test_an_optimizer_with_a_schedule_prints_as_the_code_that_builds_it():
    opt = fnnet.SGD(fnnet.schedules.cosine(0.1, 100), momentum=0.9)
    assert repr(opt) == "SGD(lr=schedules.cosine(lr=0.1, total_steps=100), momentum=0.9)"
    assert eval(repr(opt), {"SGD": fnnet.SGD, "schedules": fnnet.schedules}) == opt


def test_a_rule_reading_a_hyperparameter_it_was_not_given_is_named():
    def rule(p, g, slots, h, lr, t):
        return p - lr * h["rho"] * g, slots

    opt = fnnet.optimizer("Mine", rule, 0.1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(
        ValueError,
        match=r"Mine: the update rule reads 'rho', which this optimizer does not have: "
        r"its hyperparameters are \['lr'\], its slots \[\]",
    ):
        opt.step(params, params, opt.init(params))


# --- float16 and bfloat16 params: moments kept and updates computed in float32 -------------


@functools.partial(jax.jit, static_argnums=0)
def run_steps(step, params, grads, state, n_steps):
    """`n_steps` steps on the same grads: one program per step and dtype (shapes are shared)."""
    return jax.lax.fori_loop(0, n_steps, lambda _, carry: step(carry[0], grads, carry[1]), (params, state))


def half_params(rng):
    return {"w": rng.normal(size=2), "b": rng.normal(size=3)}


def assert_half_steps_match_float32(opt, params64, grads64, dtype, n_steps):
    """After `n_steps` steps on half-precision params and grads, one more step from the
    same params moves them as the float32 step does (on the same values cast up), within
    a rounding; the slots match the float32 run's, and are float32."""
    params, grads = (jax.tree.map(lambda a: jnp.asarray(a, dtype), tree) for tree in (params64, grads64))
    wide = functools.partial(jax.tree.map, lambda a: a.astype(jnp.float32))
    state = run_steps(opt.step, params, grads, opt.init(params), n_steps)[1]
    state32 = run_steps(opt.step, wide(params), wide(grads), opt.init(wide(params)), n_steps)[1]
    new = run_steps(opt.step, params, grads, state, 1)[0]
    new32 = run_steps(opt.step, wide(params), wide(grads), state32, 1)[0]
    for p, p32 in zip(jax.tree.leaves(new), jax.tree.leaves(new32)):
        assert_half_close(p, p32, dtype)
    for slot, slot32 in zip(jax.tree.leaves(state.slots), jax.tree.leaves(state32.slots)):
        assert slot.dtype == jnp.float32  # a float16 nu of 3e5 would be inf
        np.testing.assert_allclose(slot, slot32, rtol=HALF_RTOL[np.dtype(dtype)])


HALF_OPTIMIZERS = pytest.mark.parametrize(
    "opt",
    [fnnet.SGD(0.1, momentum=0.9, weight_decay=0.01), fnnet.Adam(0.1)],
    ids=["SGD-momentum", "Adam"],
)


@HALF_OPTIMIZERS
@HALF_DTYPES
def test_half_precision_matches_float32(opt, dtype):
    rng = np.random.default_rng(50)
    assert_half_steps_match_float32(opt, half_params(rng), half_params(rng), dtype, 3)


@pytest.mark.parametrize(
    "opt, dtype, g, n_steps",
    [
        (fnnet.Adam(1e-3), jnp.float16, 1e-4, 10),  # nu ~ 1e-10 underflows float16 to 0
        (fnnet.Adam(1e-3), jnp.float16, 1e4, 3),  # nu ~ 1e5 overflows float16 to inf
        (fnnet.Adam(1e-3), jnp.float16, 1.0, 1000),  # b2 nu rounds to nu: nu stalls
        (fnnet.Adam(1e-3), jnp.bfloat16, 1.0, 1000),
        (fnnet.SGD(1e-3, momentum=0.99), jnp.float16, 5e3, 20),  # the velocity overflows
        (fnnet.SGD(1e-3, momentum=0.999), jnp.bfloat16, 1.0, 1000),  # it stalls at 256
    ],
    ids=[
        "Adam-f16-tiny",
        "Adam-f16-huge",
        "Adam-f16-stalls",
        "Adam-bf16-stalls",
        "SGD-f16-huge",
        "SGD-bf16-stalls",
    ],
)
def test_half_precision_hazards(opt, dtype, g, n_steps):
    params = {"w": np.zeros(2), "b": np.ones(3)}  # the shapes of half_params
    assert_half_steps_match_float32(
        opt, params, jax.tree.map(lambda p: np.full(p.shape, g), params), dtype, n_steps
    )


# --- AdamW and clip_norm -----------------------------------------------------------------------


def numpy_adamw(params, grads_seq, lr, b1, b2, eps, weight_decay, clip_norm=None):
    """Decoupled AdamW (PyTorch's and optax's formula), with optional global-norm clipping."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
        if clip_norm is not None:
            norm = np.sqrt(sum(np.sum(v**2) for v in g.values()))
            g = {k: v * min(1.0, clip_norm / norm) for k, v in g.items()}
        for k in p:
            mu[k] = b1 * mu[k] + (1 - b1) * g[k]
            nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
            step = (mu[k] / (1 - b1**t)) / (np.sqrt(nu[k] / (1 - b2**t)) + eps)
            p[k] = p[k] - lr * step - lr * weight_decay * p[k]
    return p


def _flat_params(seed):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=(4,)))}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_adamw_matches_the_reference(seed, clip_norm):
    params = _flat_params(seed)
    grads = make_noise(seed + 10, params, n_steps=20)
    opt = fnnet.AdamW(1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1, clip_norm=clip_norm)
    state, p = opt.init(params), params
    for g in grads:
        p, state = opt.step(p, g, state)
    want = numpy_adamw(params, grads, 1e-2, 0.8, 0.99, 1e-6, 0.1, clip_norm)
    for k in want:
        np.testing.assert_allclose(p[k], want[k], rtol=1e-10, atol=1e-12)


def test_adamw_without_weight_decay_is_adam_and_decays_params_alone():
    params, grads = _flat_params(0), make_noise(1, _flat_params(0), n_steps=5)
    adam, adamw = fnnet.Adam(1e-2), fnnet.AdamW(1e-2, weight_decay=0.0)
    pa, sa, pw, sw = params, adam.init(params), params, adamw.init(params)
    for g in grads:
        pa, sa = adam.step(pa, g, sa)
        pw, sw = adamw.step(pw, g, sw)
    assert_trees_close(pa, pw, rtol=0, atol=0)
    # with zero gradients Adam does not move; AdamW shrinks every param by (1 - lr wd) a step
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = fnnet.AdamW(0.1, weight_decay=0.5)
    moved, _ = opt.step(params, zeros, opt.init(params))
    for k in params:
        np.testing.assert_allclose(moved[k], params[k] * (1 - 0.1 * 0.5), rtol=1e-12)
    assert repr(fnnet.AdamW(1e-3)) == "AdamW(lr=0.001)"
    assert (
        repr(fnnet.AdamW(1e-3, weight_decay=0.05, clip_norm=1.0))
        == "AdamW(lr=0.001, weight_decay=0.05, clip_norm=1.0)"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda c: fnnet.SGD(0.1, clip_norm=c),
        lambda c: fnnet.SGD(0.1, momentum=None, clip_norm=c),
        lambda c: fnnet.Adam(0.1, clip_norm=c),
        lambda c: fnnet.AdamW(0.1, clip_norm=c),
    ],
    ids=["sgd", "plain_sgd", "adam", "adamw"],
)
def test_clip_norm_scales_the_global_norm_and_is_data(make):
    """Each optimizer with clip_norm steps as the unclipped one on the gradients scaled by
    min(1, c / global norm); a norm below c changes nothing (bitwise); running statistics
    under a State are not counted; another clip_norm compiles nothing."""
    params = {**_flat_params(3), "running": fnnet.State(mean=jnp.full((4,), 1e6))}
    rng = np.random.default_rng(4)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    norm = float(np.sqrt(sum(np.sum(np.asarray(grads[k]) ** 2) for k in ("w", "b"))))
    clipped_opt, plain = make(norm / 4), make(None)
    scaled = {**grads, "w": grads["w"] / 4, "b": grads["b"] / 4}
    got, _ = clipped_opt.step(params, grads, clipped_opt.init(params))
    want, _ = plain.step(params, scaled, plain.init(params))
    assert_trees_close(got, want, rtol=1e-12, atol=1e-15)
    loose = make(norm * 2)
    got, _ = loose.step(params, grads, loose.init(params))
    assert_trees_close(got, plain.step(params, grads, plain.init(params))[0], rtol=0, atol=0)
    step = jax.jit(clipped_opt.step)
    step(params, grads, clipped_opt.init(params))
    with count_compilations() as compiled:
        step(params, grads, clipped_opt.init(params, clip_norm=0.1))
    assert compiled == []


@pytest.mark.parametrize("largest", [1e30, 1e37, 1e38, 3e38])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_clip_norm_clips_gradients_near_float32s_largest(largest, jit):
    """Entries of 1e38 (finite in float32; their norm not): clipped to the global norm like
    any other, eager and jitted (1 / 1e38 is below float32's normal numbers, flushed to 0
    where XLA divides by a scalar through its reciprocal)."""
    params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    grads = {"w": jnp.full((2, 2), largest, jnp.float32), "b": jnp.ones(2, jnp.float32)}
    opt = fnnet.SGD(1.0, momentum=None, clip_norm=1.0)
    step = jax.jit(opt.step) if jit else opt.step
    new, _ = step(params, grads, opt.init(params))
    # the norm is 2 * largest (b's 1s vanish beside it): w's entries become 0.5
    np.testing.assert_allclose(np.asarray(new["w"]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["b"]), -1 / (2 * largest), rtol=1e-5, atol=1e-38)


@pytest.mark.parametrize(
    "bad, error", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_bad_clip_norm_and_adamw_settings_are_refused_by_name(bad, error):
    with pytest.raises(error, match="clip_norm"):
        fnnet.Adam(1e-3, clip_norm=bad)
    with pytest.raises(ValueError, match=r"AdamW: weight_decay must be >= 0, got -0.1"):
        fnnet.AdamW(1e-3, weight_decay=-0.1)
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['clip_norm'\]"):
        fnnet.Adam(1e-3).init(_flat_params(0), clip_norm=1.0)


def test_clip_norm_of_a_huge_gradient_still_steps():
    """A float32 gradient of 1e20 squared overflows: the norm is taken of the grads over their
    largest magnitude, so the step is clip_norm long, not zero."""
    params = {"w": jnp.zeros(2, jnp.float32)}
    opt = fnnet.SGD(1.0, clip_norm=1.0, momentum=None)
    moved, _ = opt.step(params, {"w": jnp.array([1e20, 1.0], jnp.float32)}, opt.init(params))
    np.testing.assert_allclose(moved["w"], [-1.0, -1e-20], rtol=1e-6)
