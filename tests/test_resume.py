"""fit's checkpoints and resume: bits that do not depend on chunking, checkpoints that keep
coming after a resume, and a resume that refuses another run's checkpoint."""

import functools
import json

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

from fnnet import _resume
from fnnet import fitting as fit_module

# Dropout: a resumed run must redraw the masks of the uninterrupted one.
MODEL = fnnet.serial(
    fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Dropout(0.25), fnnet.Linear(8, 1), fnnet.Sigmoid()
)
LOSS = fnnet.LossBCE()
OPT = fnnet.SGD(lr=0.3, momentum=0.5)
KEY = jax.random.key(4)
N, BATCH = 48, 20  # 3 batches an epoch, the last of 8


def data(n=N, seed=1):
    return fnnet.data.disk(jax.random.key(seed), n)


X, Y = data()
VALIDATION = data(16, seed=3)
PARAMS = MODEL.init(jax.random.key(0), (1, 2))[1]


def fit(epochs, path=None, every=None, resume=False, **kwargs):
    settings = {
        "model": MODEL,
        "loss": LOSS,
        "opt": OPT,
        "params": PARAMS,
        "x": X,
        "y": Y,
        "batch_size": BATCH,
        "key": KEY,
        "progress": False,
        "validation": VALIDATION,
    }
    settings.update(kwargs)
    return fnnet.fit(
        settings.pop("model"),
        settings.pop("loss"),
        settings.pop("opt"),
        settings.pop("params"),
        settings.pop("x"),
        settings.pop("y"),
        epochs=epochs,
        checkpoint=path,
        checkpoint_every=every,
        resume=resume,
        **settings,
    )


def assert_same_run(got, want):
    """Bitwise: params, optimizer state, losses, validation losses."""
    for g, w in zip(
        jax.tree.leaves((got.params, got.opt_state)), jax.tree.leaves((want.params, want.opt_state))
    ):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    np.testing.assert_array_equal(got.losses, want.losses)
    if want.val_losses is not None:
        np.testing.assert_array_equal(got.val_losses, want.val_losses)


# Checkpoints after a resume (item 1) -------------------------------------------------------


def test_checkpoints_keep_coming_after_a_resume(tmp_path, saves):
    """Saved at most `checkpoint_every` epochs apart after the resume point, whatever its
    alignment and whatever `checkpoint_every` the resumed call passes."""
    path = tmp_path / "run.npz"
    fit(5, path, every=2)
    assert saves == [2, 4, 5]
    saves.clear()
    fit(11, path, every=2, resume=True)
    assert saves == [7, 9, 11]
    saves.clear()
    fit(15, path, every=3, resume=True)
    assert saves == [14, 15]


# Bits that do not depend on chunking (item 5) ----------------------------------------------

FULL_BATCH = {"batch_size": None, "validation": None}


def test_checkpoints_and_progress_do_not_change_a_bit(tmp_path):
    """No checkpoint, a checkpoint every 1, 3, 7 or 10 epochs, the progress bar on: the
    same program runs every epoch, so the results are bitwise equal. (Before, full-batch
    loops of one epoch compiled without a loop and rounded differently: 3e-8 apart.)"""
    plain = fit(20, **FULL_BATCH)
    for every in (1, 3, 7, 10):
        assert_same_run(fit(20, tmp_path / f"every-{every}.npz", every, **FULL_BATCH), plain)
    assert_same_run(fit(20, progress=True, **FULL_BATCH), plain)


@pytest.mark.parametrize("settings", [FULL_BATCH, {}], ids=["full-batch", "minibatch-validation"])
@pytest.mark.parametrize("stop, every, then", [(1, 1, 4), (5, 2, None), (7, 3, 10), (13, None, 1)])
def test_a_resumed_run_is_bitwise_an_uninterrupted_one(tmp_path, settings, stop, every, then):
    """Stopped after `stop` epochs (checkpoints every `every`), resumed with checkpoints every
    `then`: equal to a run without any checkpoint, Dropout masks and shuffles included."""
    path = tmp_path / "run.npz"
    fit(stop, path, every, **settings)
    assert_same_run(fit(20, path, then, resume=True, **settings), fit(20, **settings))


def test_bfloat16_params_checkpoint_and_resume(tmp_path):
    model = fnnet.serial(
        fnnet.Linear(2, 8, dtype=jnp.bfloat16),
        fnnet.Tanh(),
        fnnet.Linear(8, 1, dtype=jnp.bfloat16),
        fnnet.Sigmoid(),
    )
    params = model.init(jax.random.key(0), (1, 2))[1]
    path = tmp_path / "run.npz"
    settings = {"model": model, "params": params, "x": X.astype(jnp.bfloat16), "validation": None}
    fit(4, path, 3, **settings)
    resumed = fit(9, path, 3, resume=True, **settings)
    assert jax.tree.leaves(resumed.params)[0].dtype == jnp.bfloat16
    assert_same_run(resumed, fit(9, **settings))


def test_batchnorm_state_round_trips_and_resumes(tmp_path):
    """The running statistics (a State node in params) are saved, loaded and resumed."""
    model = fnnet.serial(
        fnnet.Linear(2, 6), fnnet.BatchNorm(), fnnet.Tanh(), fnnet.Linear(6, 1), fnnet.Sigmoid()
    )
    params = model.init(jax.random.key(0), (1, 2))[1]
    path = tmp_path / "run.npz"
    settings = {"model": model, "params": params, "validation": None}
    first = fit(4, path, 2, **settings)
    loaded, _, _ = fnnet.load(path, params)
    assert isinstance(loaded[1]["running"], fnnet.State)
    assert not np.array_equal(
        np.asarray(loaded[1]["running"]["mean"]), np.asarray(params[1]["running"]["mean"])
    )  # it moved
    for g, w in zip(jax.tree.leaves(loaded), jax.tree.leaves(first.params)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert_same_run(fit(7, path, 2, resume=True, **settings), fit(7, **settings))


# Another run's checkpoint (item 4) ---------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of 3 epochs of the reference run, as bytes to write afresh per test."""
    path = tmp_path_factory.mktemp("reference") / "run.npz"
    fit(3, path, 3)
    return path.read_bytes()


@pytest.fixture
def resumable(tmp_path, checkpoint, monkeypatch):
    """A fresh copy of the reference checkpoint; training fails the test if it starts."""
    path = tmp_path / "run.npz"
    path.write_bytes(checkpoint)
    monkeypatch.setattr(
        fit_module, "_runner", lambda *args: pytest.fail("fit started training before refusing")
    )
    return path


def _other_data():
    x, y = data(seed=9)
    return {"x": x, "y": y}


SAME_SHAPES = fnnet.serial(
    fnnet.Linear(2, 8), fnnet.ReLU(), fnnet.Dropout(0.25), fnnet.Linear(8, 1), fnnet.Sigmoid()
)
OTHER_RATE = fnnet.serial(
    fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Dropout(0.5), fnnet.Linear(8, 1), fnnet.Sigmoid()
)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda: {"opt": fnnet.SGD(lr=0.1, momentum=0.5)}, r"lr is 0\.1 now, 0\.3 in the checkpoint's run"),
        (lambda: {"opt_state": OPT.init(PARAMS, momentum=0.9)}, r"momentum is 0\.9 now, 0\.5 in"),
        (lambda: {"batch_size": 16}, r"batch_size is 16 now, 20 in the checkpoint's run"),
        (
            lambda: {"key": jax.random.key(5)},
            (
                r"key is \['threefry2x32', \[0, 5\]\] now, \['threefry2x32', \[0, 4\]\] in the "
                r"checkpoint's run"
            ),
        ),
        (
            lambda: {"x": X[:40], "y": Y[:40]},
            r"the number of samples \(n\) is 40 now, 48 in the checkpoint's run; the data \(x, y\) differs",
        ),
        (
            _other_data,
            r"it is another run's: the data \(x, y\) differs from the checkpoint's run\. Resume with the same",
        ),
        (
            lambda: {"loss": fnnet.LossMSE()},
            r"it is another run's: the loss is LossMSE.* now, LossBCE.* in the checkpoint's run",
        ),
        (
            lambda: {"model": SAME_SHAPES},
            r"the model is Sequential\(.*\) now, Sequential\(.*\) in the checkpoint's run",
        ),
        (
            lambda: {"model": OTHER_RATE},
            r"the model is Sequential\(.*\) now, Sequential\(.*\) in the checkpoint's run",
        ),
        (
            lambda: {"opt": fnnet.SGD(lr=0.3, momentum=0.5, nesterov=True)},
            r"the optimizer \(its kind, update rule or lr schedule\) is .* now, .* in the checkpoint's run",
        ),
        (lambda: {"validation": None}, r"validation data none now, given in the checkpoint's run"),
        (lambda: {"validation": data(16, seed=4)}, r"the validation data differs from the checkpoint's run"),
        (
            lambda: {"params": MODEL.init(jax.random.key(1), (1, 2))[1]},
            r"it is another run's: the initial params differ from the checkpoint's run\. ",
        ),
        (
            lambda: {"opt_state": _moving(OPT.init(PARAMS))},
            r"the initial optimizer state \(its step count or buffers\) differs from the checkpoint's run",
        ),
    ],
    ids=[
        "lr",
        "momentum",
        "batch_size",
        "key",
        "n",
        "data",
        "loss",
        "model-same-shapes",
        "dropout-rate",
        "nesterov",
        "validation-dropped",
        "validation-other",
        "initial-params",
        "initial-opt-state",
    ],
)
@pytest.mark.filterwarnings("ignore::fnnet.HyperparameterMismatch")  # a state of other values, on purpose
def test_resume_refuses_another_runs_checkpoint(resumable, change, match):
    before = resumable.read_bytes()
    with pytest.raises(ValueError, match=r"fit: cannot resume from '[^']*run\.npz': .*" + match):
        fit(6, resumable, 3, resume=True, **change())
    assert resumable.read_bytes() == before


def _moving(opt_state):
    """`opt_state` with momentum already built up: a state another run might have reached."""
    return opt_state._replace(slots=jax.tree.map(lambda v: v + 0.5, opt_state.slots))


def test_resume_refuses_a_run_started_from_other_params(tmp_path):
    """A seed loop sharing one checkpoint: the finished run, resumed as it started, returns
    its result; resumed from another draw's params, or from its own result (params or
    optimizer state), it is another run, refused."""
    path = tmp_path / "run.npz"
    first = fit(3, path, **FULL_BATCH)
    assert_same_run(fit(3, path, resume=True, **FULL_BATCH), first)
    initial_params = r"another run's: the initial params differ from the checkpoint's run"
    for params in (MODEL.init(jax.random.key(7), (1, 2))[1], first.params):
        with pytest.raises(ValueError, match=initial_params):
            fit(3, path, resume=True, params=params, **FULL_BATCH)
    with pytest.raises(ValueError, match=r"another run's: the initial optimizer state \(its step"):
        fit(3, path, resume=True, opt_state=first.opt_state, **FULL_BATCH)


def test_resume_refuses_to_add_validation(tmp_path):
    """Else the resumed run's val_losses would be shorter than its losses."""
    path = tmp_path / "run.npz"
    fit(3, path, 3, **FULL_BATCH)
    with pytest.raises(ValueError, match=r"validation data given now, none in the checkpoint's"):
        fit(6, path, 3, resume=True, batch_size=None, progress=False)


def _rewrite_metadata(path, change):
    state = OPT.init(PARAMS)
    params, state, metadata = fnnet.load(path, PARAMS, state)
    change(metadata)
    fnnet.save(path, params, state, metadata)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.update(epochs_done=-5), r"corrupt metadata: epochs_done is -5, not an int >= 0"),
        (lambda m: m.update(epochs_done="3"), r"corrupt metadata: epochs_done is '3'"),
        (lambda m: m.update(epochs_done=2), r"corrupt metadata: losses must be a list of 2 numbers"),
        (lambda m: m.update(losses=m["losses"][:-1]), r"corrupt metadata: losses must be a list of 3"),
        (lambda m: m.update(losses=["a"] * 3), r"corrupt metadata: losses must be a list of 3 "),
        (lambda m: m.update(val_losses=[]), r"corrupt metadata: val_losses must be a list of 3"),
        (
            lambda m: m["run"].update(start_count=1),
            r"corrupt metadata: the optimizer took 9 steps, not the 3 epochs x 3 steps",
        ),
        (lambda m: m.pop("run"), r"it holds no fit metadata \(a file written by save, not by fit"),
    ],
)
def test_resume_refuses_corrupt_metadata(resumable, change, match):
    _rewrite_metadata(resumable, change)
    with pytest.raises(ValueError, match=r"fit: cannot resume from '[^']*': " + match):
        fit(6, resumable, 3, resume=True)


def test_resume_from_a_file_written_by_save(resumable):
    fnnet.save(resumable, PARAMS, OPT.init(PARAMS))
    with pytest.raises(ValueError, match=r"it holds no fit metadata \(a file written by save"):
        fit(6, resumable, 3, resume=True)


def test_the_metadata_describes_the_run(resumable):
    metadata = fnnet.load(resumable, PARAMS)[2]
    assert metadata["epochs_done"] == 3 and len(metadata["losses"]) == 3
    run = metadata["run"]
    assert (run["n"], run["batch_size"], run["key"], run["start_count"]) == (
        N,
        BATCH,
        ["threefry2x32", [0, 4]],
        0,
    )
    assert json.loads(json.dumps(run)) == run


# The run record: settings, not code ------------------------------------------------------


def test_a_checkpoint_of_an_earlier_version_is_refused_with_a_way_forward(resumable):
    """Checkpoints written before the run record (no "record" field) still load, and
    resuming one says to start again rather than guess."""
    _rewrite_metadata(resumable, lambda m: m["run"].pop("record"))
    assert fnnet.load(resumable, PARAMS)[2]["epochs_done"] == 3
    with pytest.raises(ValueError, match=r"written by an earlier version of fnnet.*start the run again"):
        fit(6, resumable, 3, resume=True)


def test_the_run_id_is_recorded_and_compared(tmp_path):
    path = tmp_path / "run.npz"
    first = fit(3, path, run_id="seed-0", **FULL_BATCH)
    assert fnnet.load(path, PARAMS)[2]["run"]["run_id"] == "seed-0"
    assert_same_run(fit(3, path, resume=True, run_id="seed-0", **FULL_BATCH), first)
    with pytest.raises(ValueError, match=r"run_id is seed-1 now, seed-0 in the checkpoint's run"):
        fit(3, path, resume=True, run_id="seed-1", **FULL_BATCH)
    with pytest.raises(TypeError, match=r"fit: run_id must be None or a str naming the run, got 3 \(int\)"):
        fit(3, path, run_id=3, **FULL_BATCH)


def _cube(x):
    return x**3


def _cube_derivative(x, y):
    return 3 * x * x


def _other_cube(x):
    return x**3


def test_user_functions_are_named_by_their_qualified_names(tmp_path):
    """A model of module-level functions, rebuilt, is the same run; one of another function
    is another run, whatever its body (no code is read)."""
    path = tmp_path / "run.npz"

    def model(f):
        return fnnet.Sequential(
            fnnet.Linear(2, 8), fnnet.elementwise("Cube", f, _cube_derivative), fnnet.Linear(8, 1)
        )

    params = model(_cube).init(jax.random.key(0), (1, 2))[1]
    settings = dict(params=params, loss=fnnet.LossMSE(), **FULL_BATCH)
    first = fit(3, path, model=model(_cube), **settings)
    assert_same_run(fit(3, path, resume=True, model=model(_cube), **settings), first)
    with pytest.raises(
        ValueError, match=r"the model is .*_other_cube.* now, .*\._cube, .* in the checkpoint"
    ):
        fit(3, path, resume=True, model=model(_other_cube), **settings)


def test_the_record_is_settings_text_the_same_for_equal_values():
    assert _resume.settings(MODEL) == _resume.settings(
        fnnet.Sequential(
            fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Dropout(0.25), fnnet.Linear(8, 1), fnnet.Sigmoid()
        )
    )
    assert _resume.settings(fnnet.Dropout(0.25)) != _resume.settings(fnnet.Dropout(0.5))
    assert _resume.settings(fnnet.SGD(0.1).step) == _resume.settings(fnnet.SGD(0.3).step)  # lr is data
    # Initializers shape init only: the starting params' digest covers them.
    assert _resume.settings(fnnet.Linear(2, 3)) == _resume.settings(
        fnnet.Linear(2, 3, w_init=jax.nn.initializers.zeros)
    )
    assert "0x" not in _resume.settings(fnnet.Sequential(fnnet.elementwise("Cube", _cube, _cube_derivative)))


def test_the_same_optimizer_set_up_two_ways_resumes(tmp_path):
    """SGD(0.1) with its state made at lr 0.3 is the run SGD(0.3) makes: the hyperparameters
    are compared from the optimizer state."""
    path = tmp_path / "run.npz"
    first = fit(3, path, opt=fnnet.SGD(0.3, momentum=0.5), **FULL_BATCH)
    other = fnnet.SGD(0.1, momentum=0.5)
    state = other.init(PARAMS, lr=0.3)
    with pytest.warns(
        fnnet.HyperparameterMismatch, match=r"lr 0\.3\d* in opt_state, 0\.1\d* in SGD\(lr=0\.1"
    ):
        assert_same_run(fit(3, path, resume=True, opt=other, opt_state=state, **FULL_BATCH), first)


def test_a_resume_with_another_x64_setting_is_refused(tmp_path):
    """jax_enable_x64 changes what a key draws (Dropout's masks) and the losses' dtype: a
    run checkpointed with it on does not continue with it off (the suite runs with x64 on)."""
    path = tmp_path / "run.npz"
    fit(3, path, **FULL_BATCH)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match=r"jax_enable_x64 is False now, True in the checkpoint's run"):
            fit(6, path, resume=True, **FULL_BATCH)


def test_numpy_scalar_settings_are_recorded_by_value(tmp_path):
    """np.float32(1e-3) and np.float32(0.2) are other settings; 0 and 0.0 the same one."""
    path = tmp_path / "run.npz"
    fit(3, path, loss=fnnet.LossBCE(eps=np.float32(1e-3)), **FULL_BATCH)
    with pytest.raises(ValueError, match=r"the loss is LossBCE\(eps=0\.2.* now, LossBCE\(eps=0\.001"):
        fit(3, path, resume=True, loss=fnnet.LossBCE(eps=np.float32(0.2)), **FULL_BATCH)
    zero, zero_float = (
        fnnet.schedules.cosine(0.1, 1000, final_lr=0),
        fnnet.schedules.cosine(0.1, 1000, final_lr=0.0),
    )
    assert _resume.settings(zero) == _resume.settings(zero_float)


def test_another_kind_of_optimizer_is_named_before_its_state_is_read(tmp_path):
    path = tmp_path / "run.npz"
    fit(3, path, **FULL_BATCH)
    adam = fnnet.Adam(0.01)
    with pytest.raises(
        ValueError, match=r"another run's: the optimizer \(its kind, update rule or lr schedule\) is"
    ):
        fit(3, path, resume=True, opt=adam, opt_state=adam.init(PARAMS), **FULL_BATCH)


def test_a_new_run_never_writes_over_finished_epochs(tmp_path):
    """resume=False on a path that holds a run's epochs: refused, the file untouched, unless
    overwrite=True."""
    path = tmp_path / "run.npz"
    fit(3, path, **FULL_BATCH)
    before = path.read_bytes()
    with pytest.raises(
        FileExistsError, match=r"holds a run with 3 epochs done; pass resume=True .* overwrite=True"
    ):
        fit(2, path, **FULL_BATCH)
    assert path.read_bytes() == before
    fit(2, path, overwrite=True, **FULL_BATCH)
    assert fnnet.load(path, PARAMS)[2]["epochs_done"] == 2


@pytest.mark.parametrize("held", ["save", "text", "truncated"])
def test_a_new_run_never_writes_over_any_file(tmp_path, held):
    """A file of `save`'s, any other file, a truncated checkpoint of fit's: all refused
    unless overwrite=True, the file untouched."""
    path = tmp_path / "run.npz"
    if held == "save":
        fnnet.save(path, PARAMS, OPT.init(PARAMS))
    elif held == "text":
        path.write_text("notes")
    else:
        fit(3, path, **FULL_BATCH)
        path.write_bytes(path.read_bytes()[:100])
    before = path.read_bytes()
    what = {"save": "a checkpoint written by save", "text": "a file that is not a checkpoint of fit"}
    with pytest.raises(
        FileExistsError, match=re.escape(what.get(held, "a file that is not a checkpoint of fit"))
    ):
        fit(2, path, **FULL_BATCH)
    assert path.read_bytes() == before
    fit(2, path, overwrite=True, **FULL_BATCH)


@pytest.mark.parametrize("flag", ["overwrite", "resume"])
def test_resume_and_overwrite_must_be_bools(tmp_path, flag):
    with pytest.raises(TypeError, match=rf"fit: {flag} must be True or False, got 'no' \(str\)"):
        fit(2, tmp_path / "run.npz", **{flag: "no"}, **FULL_BATCH)


def _scaled(t, base=1.0):
    return base * jnp.ones_like(t, jnp.float32)


class _Constant:
    """A schedule as an object that calls."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, t):
        return self.factor * jnp.ones_like(t, jnp.float32)


@pytest.mark.parametrize(
    "first, other",
    [
        (functools.partial(_scaled, base=1.0), functools.partial(_scaled, base=0.5)),
        (_Constant(1.0), _Constant(0.5)),
    ],
    ids=["partial", "callable-object"],
)
def test_a_schedule_of_other_arguments_is_another_run(tmp_path, first, other):
    """A partial's or a callable object's schedule is recorded with its arguments, not its
    type alone: resuming with other ones is refused; with equal ones, it resumes."""
    path = tmp_path / "run.npz"
    opt = fnnet.Adam(first)
    fit(3, path, opt=opt, opt_state=opt.init(PARAMS), **FULL_BATCH)
    with pytest.raises(ValueError, match=r"the optimizer \(its kind, update rule or lr schedule\) is"):
        fit(
            6,
            path,
            resume=True,
            opt=fnnet.Adam(other),
            opt_state=fnnet.Adam(other).init(PARAMS),
            **FULL_BATCH,
        )
    fit(6, path, resume=True, opt=opt, opt_state=opt.init(PARAMS), **FULL_BATCH)


def test_a_new_runs_first_save_leaves_a_file_that_appeared_meanwhile(tmp_path, monkeypatch):
    """Two runs started at once on one path both find it free; the first to save claims it,
    and the other stops at its first save (its run carried by the error), the file left as
    the first wrote it, never replaced."""
    path = tmp_path / "run.npz"
    original = _resume.refuse_to_overwrite

    def another_run_saves_meanwhile(checkpoint):
        original(checkpoint)
        fnnet.save(checkpoint, PARAMS, metadata={"the other run": True})

    monkeypatch.setattr(_resume, "refuse_to_overwrite", another_run_saves_meanwhile)
    with pytest.raises(fnnet.CheckpointError, match="a file appeared there since this run started") as caught:
        fit(3, path, every=1, **FULL_BATCH)
    assert caught.value.params is not None
    assert fnnet.load(path, PARAMS)[2] == {"the other run": True}


class _Table:
    """A schedule object holding a big table, a mixed-key dict and itself."""

    def __init__(self, n):
        self.table = [0.01] * n
        self.marks = {None: 1.0, 100: 0.5}
        self.me = self

    def __call__(self, t):
        return 0.01 * jnp.ones_like(t, jnp.float32)


def test_a_schedule_objects_record_is_short_and_total():
    """Recorded by class and attributes: a table of 100,000 numbers by its digest, keys of
    several types in one order, an object that holds itself cut at a depth."""
    text = _resume.settings(_Table(10**5))
    assert len(text) <= 1000 and "blake2b" in text
    assert _resume.settings(_Table(10**5)) == text
    assert _resume.settings(_Table(10**5 - 1)) != text
