"""fnnet.schedules against their closed forms, on arrays of steps, eagerly and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import schedules

STEPS = np.arange(0, 1001)  # t = 0 .. 1000

# name -> (schedule, closed form in NumPy float64)
CASES = {
    "constant": (lambda: schedules.constant(0.3), lambda t: np.full(t.shape, 0.3)),
    "exponential": (lambda: schedules.exponential(0.5, 0.995), lambda t: 0.5 * 0.995**t),
    "exponential_no_decay": (lambda: schedules.exponential(0.5, 1.0), lambda t: np.full(t.shape, 0.5)),
    "inverse_time": (lambda: schedules.inverse_time(0.2, 0.03), lambda t: 0.2 / (1 + 0.03 * t)),
    "step": (lambda: schedules.step(0.4, 0.5, 100), lambda t: 0.4 * 0.5 ** np.floor(t / 100)),
    "step_growing": (lambda: schedules.step(0.01, 3.0, 250), lambda t: 0.01 * 3.0 ** np.floor(t / 250)),
    "cosine": (
        lambda: schedules.cosine(0.1, 600),
        # (1 + cos(pi f)) / 2 as cos(pi f / 2)**2, whose float64 keeps the last steps' digits
        lambda t: 0.1 * np.cos(np.pi / 2 * np.minimum(t, 600) / 600) ** 2 * (np.minimum(t, 600) < 600),
    ),
    "cosine_final": (
        lambda: schedules.cosine(0.1, 600, final_lr=0.02),
        lambda t: (
            0.02 + 0.08 * np.cos(np.pi / 2 * np.minimum(t, 600) / 600) ** 2 * (np.minimum(t, 600) < 600)
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_closed_form_on_an_array_of_steps(name):
    make, closed_form = CASES[name]
    got = make()(jnp.asarray(STEPS))
    assert got.shape == STEPS.shape
    assert got.dtype == jnp.float64  # conftest enables x64: schedules compute in the float dtype
    np.testing.assert_allclose(np.asarray(got), closed_form(STEPS.astype(np.float64)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_scalar_int32_step_under_jit(name):
    """How an optimizer calls it: a 0-d int32 count inside a jitted step."""
    make, closed_form = CASES[name]
    schedule = jax.jit(make())
    for t in (0, 1, 99, 100, 599, 600, 601, 1000):
        got = schedule(jnp.asarray(t, jnp.int32))
        assert got.shape == ()
        np.testing.assert_allclose(float(got), closed_form(np.float64(t)), rtol=1e-12)


def test_landmarks():
    """The values a reader checks by hand, exactly."""
    step = schedules.step(0.4, 0.5, 100)
    assert [float(step(t)) for t in (0, 99, 100, 199, 200)] == [0.4, 0.4, 0.2, 0.2, 0.1]
    cosine = schedules.cosine(0.1, 600, final_lr=0.02)
    assert float(cosine(0)) == pytest.approx(0.1, rel=1e-15)
    assert float(cosine(300)) == pytest.approx(0.06, rel=1e-14)
    assert float(cosine(600)) == pytest.approx(0.02, rel=1e-15)
    assert float(cosine(10_000)) == pytest.approx(0.02, rel=1e-15)  # constant after the end
    assert float(schedules.inverse_time(0.2, 0.5)(2)) == pytest.approx(0.1, rel=1e-15)
    assert float(schedules.exponential(0.5, 0.5)(3)) == pytest.approx(0.0625, rel=1e-15)


def test_numpy_scalars_are_accepted():
    """Hyperparameters from a NumPy sweep are numbers too (np.float32(0.1) is > 0)."""
    got = schedules.exponential(np.float32(0.5), np.float64(0.5))(jnp.asarray(STEPS[:4]))
    np.testing.assert_allclose(np.asarray(got), 0.5 * 0.5 ** STEPS[:4], rtol=1e-12)
    assert float(schedules.cosine(0.1, np.int64(600))(600)) == pytest.approx(0.0, abs=1e-15)
    assert float(schedules.step(0.4, 0.5, np.int32(100))(100)) == 0.2


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: schedules.constant(0.0), r"lr must be a finite number > 0, got 0\.0"),
        (lambda: schedules.constant(-0.1), r"lr must be a finite number > 0, got -0\.1"),
        (lambda: schedules.constant(float("nan")), r"lr must be a finite number > 0, got nan"),
        (lambda: schedules.constant(float("inf")), r"lr must be a finite number > 0, got inf"),
        (lambda: schedules.constant(True), r"lr must be a finite number > 0, got True"),
        (lambda: schedules.constant("0.1"), r"lr must be a finite number > 0, got '0\.1'"),
        (lambda: schedules.exponential(0.1, 1.5), r"exponential: decay must be in \(0, 1\], got 1\.5"),
        (lambda: schedules.exponential(0.1, 0.0), r"decay must be a finite number > 0, got 0\.0"),
        (lambda: schedules.exponential(-1.0, 0.9), r"lr must be a finite number > 0, got -1\.0"),
        (lambda: schedules.inverse_time(0.1, 0.0), r"k must be a finite number > 0, got 0\.0"),
        (lambda: schedules.inverse_time(0.1, -2), r"k must be a finite number > 0, got -2"),
        (lambda: schedules.step(0.1, 0.0, 10), r"factor must be a finite number > 0, got 0\.0"),
        (lambda: schedules.step(0.1, 0.5, 0), r"step: every must be an int >= 1, got 0"),
        (lambda: schedules.step(0.1, 0.5, 2.5), r"step: every must be an int >= 1, got 2\.5"),
        (lambda: schedules.step(0.1, 0.5, True), r"step: every must be an int >= 1, got True"),
        (lambda: schedules.cosine(0.1, 0), r"cosine: total_steps must be an int >= 1, got 0"),
        (lambda: schedules.cosine(0.1, 100.0), r"cosine: total_steps must be an int >= 1, got 100\.0"),
        (
            lambda: schedules.cosine(0.1, 100, final_lr=-0.01),
            r"cosine: final_lr must be in \[0, lr=0\.1\], got -0\.01",
        ),
        (
            lambda: schedules.cosine(0.1, 100, final_lr=0.2),
            r"cosine: final_lr must be in \[0, lr=0\.1\], got 0\.2",
        ),
        (lambda: schedules.cosine(0.1, 100, final_lr=float("nan")), r"final_lr must be in"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# Schedules are values ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_equal_settings_make_equal_schedules(name):
    make, _ = CASES[name]
    a, b = make(), make()
    assert a is not b and a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "a, b",
    [
        (schedules.constant(0.3), schedules.constant(0.2)),
        (schedules.exponential(0.5, 0.9), schedules.exponential(0.5, 0.99)),
        (schedules.inverse_time(0.2, 0.03), schedules.inverse_time(0.2, 0.3)),
        (schedules.step(0.4, 0.5, 100), schedules.step(0.4, 0.5, 10)),
        (schedules.cosine(0.1, 600), schedules.cosine(0.1, 600, final_lr=0.02)),
        (schedules.constant(0.3), schedules.exponential(0.3, 1.0)),  # another kind
    ],
)
def test_other_settings_make_other_schedules(a, b):
    assert a != b


@pytest.mark.parametrize(
    "schedule, text",
    [
        (schedules.constant(0.3), "schedules.constant(lr=0.3)"),
        (schedules.exponential(0.5, 0.995), "schedules.exponential(lr=0.5, decay=0.995)"),
        (schedules.inverse_time(0.2, 0.03), "schedules.inverse_time(lr=0.2, k=0.03)"),
        (schedules.step(0.4, 0.5, 100), "schedules.step(lr=0.4, factor=0.5, every=100)"),
        (schedules.cosine(0.1, 1000), "schedules.cosine(lr=0.1, total_steps=1000)"),
        (
            schedules.cosine(0.1, 1000, final_lr=0.01),
            "schedules.cosine(lr=0.1, total_steps=1000, final_lr=0.01)",
        ),
        (
            schedules.step(0.4, 0.5, np.int32(100)),
            "schedules.step(lr=0.4, factor=0.5, every=100)",
        ),  # settings checked
    ],
)
def test_a_schedule_prints_as_the_code_that_builds_it(schedule, text):
    assert repr(schedule) == text
    assert eval(text, {"schedules": schedules}) == schedule


def test_optimizers_on_equal_schedules_are_equal_and_share_their_step():
    a, b = fnnet.SGD(schedules.cosine(0.1, 1000)), fnnet.SGD(schedules.cosine(0.1, 1000))
    assert a == b and hash(a) == hash(b) and a.step == b.step
    assert fnnet.SGD(schedules.cosine(0.1, 1000)).step != fnnet.SGD(schedules.cosine(0.1, 999)).step


def test_a_plain_function_is_a_schedule_too():
    def halving(t):
        return 0.5 ** (jnp.asarray(t) // 10).astype(jnp.result_type(float))

    opt = fnnet.SGD(halving)
    assert opt.schedule is halving and opt == fnnet.SGD(halving)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    for _ in range(10):
        params, state = opt.step(params, {"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(np.asarray(params["w"]), 1 - 10 * 1.0, rtol=1e-12)
    params, state = opt.step(params, {"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(np.asarray(params["w"]), -9 - 0.5, rtol=1e-12)


def test_dir_lists_only_the_schedules():
    public = [name for name in dir(schedules) if not name.startswith("_")]
    assert public == sorted(schedules.__all__)


def test_a_long_cosine_keeps_its_last_steps_above_zero_in_float32():
    """(1 + cos) / 2 cancels to 0 in float32 over the last steps of a long schedule (a run of
    exactly total_steps was refused as reaching lr 0): computed as cos**2, it keeps them."""
    with jax.enable_x64(False):
        lrs = np.asarray(schedules.cosine(0.1, 20_000)(jnp.arange(19_990, 20_000)))
    exact = 0.1 * np.cos(np.pi / 2 * np.arange(19_990, 20_000) / 20_000) ** 2
    assert (lrs > 0).all()
    np.testing.assert_allclose(lrs, exact, rtol=1e-3)


@pytest.mark.parametrize(
    "make", [lambda: schedules.exponential(0.1, 0.99999999), lambda: schedules.step(0.1, 0.99999999, 1)]
)
def test_a_decay_the_schedules_float_cannot_keep_is_refused(make):
    """Computed in float32 (x64 off), a decay of 0.99999999 is 1: the lr would never fall."""
    with (
        jax.enable_x64(False),
        pytest.raises(ValueError, match=r"=0\.99999999 is 1\.0 in float32, where it acts not at all"),
    ):
        make()
    make()  # float64 under x64 keeps it
