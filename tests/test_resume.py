"""fit's checkpoints and resume: bits that do not depend on chunking, checkpoints that keep
coming after a resume, and a resume that refuses another run's checkpoint."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

from fnnet import _resume
from fnnet import fitting as fit_module
from resume_objects import OBJECT_MODELS, Power, Slotted, _jitted, _logged, _scaled, _twice

# Dropout: a resumed run must redraw the masks of the uninterrupted one.
MODEL = fnnet.serial(
    fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Dropout(0.25), fnnet.Linear(8, 1), fnnet.Sigmoid()
)
LOSS = fnnet.LossBCE()
OPT = fnnet.SGD(lr=0.3, momentum=0.5)
KEY = jax.random.key(4)
N, BATCH = 48, 20  # 3 batches an epoch, the last of 8


def data(n=N, seed=1):
    return fnnet.data.disk(n, jax.random.key(seed))


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
    loaded, _, _ = fnnet.load(path, like=(params, None))
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
        (_other_data, r"it is another run's: the data \(x, y\) differs\. Resume with the same"),
        (lambda: {"loss": fnnet.LossMSE()}, r"it is another run's: the loss differs"),
        (lambda: {"model": SAME_SHAPES}, r"the model \(its layers or their settings\) differs"),
        (lambda: {"model": OTHER_RATE}, r"the model \(its layers or their settings\) differs"),
        (
            lambda: {"opt": fnnet.SGD(lr=0.3, momentum=0.5, nesterov=True)},
            r"the optimizer \(its kind, update rule or lr schedule\) differs",
        ),
        (lambda: {"validation": None}, r"validation data given in the checkpoint's run, none now"),
        (lambda: {"validation": data(16, seed=4)}, r"the validation data differs"),
        (
            lambda: {"params": MODEL.init(jax.random.key(1), (1, 2))[1]},
            r"it is another run's: the initial params differ from the run's in the checkpoint\. ",
        ),
        (
            lambda: {"opt_state": _moving(OPT.init(PARAMS))},
            r"the initial optimizer state \(its step count or buffers\) differs from the run's in",
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
    initial_params = r"another run's: the initial params differ from the run's in the checkpoint"
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
    params, state, metadata = fnnet.load(path, like=(PARAMS, state))
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
    metadata = fnnet.load(resumable, like=(PARAMS, None))[2]
    assert metadata["epochs_done"] == 3 and len(metadata["losses"]) == 3
    run = metadata["run"]
    assert (run["n"], run["batch_size"], run["key"], run["start_count"]) == (
        N,
        BATCH,
        ["threefry2x32", [0, 4]],
        0,
    )
    assert json.loads(json.dumps(run)) == run


# Checkpoints written before fnnet's modules were renamed -----------------------------------

# What fnnet 0.1.0 before the renaming (commit 7430545) recorded as the digests of these
# three, computed by that version: its checkpoints name functions by their old modules.
LEGACY_MLP = fnnet.serial(fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Linear(8, 1), fnnet.Sigmoid())
LEGACY_DIGESTS = {
    "model": (LEGACY_MLP, "be4afff07a2b737b317d0eb6039749ac"),
    "loss": (fnnet.LossBCE(), "3873d51a135e070042ce6877aa611e06"),
    "optimizer": (fnnet.SGD(0.1, decay=0.99), "137cfab622186742c44f4476f62a4e21"),
}


def test_the_legacy_digests_are_those_the_version_before_the_renaming_wrote():
    for field, (value, before) in LEGACY_DIGESTS.items():
        assert _resume.digest(value, legacy=True) == before, field
        assert _resume.digest(value) != before, field  # today's text names no module inside fnnet


def test_a_checkpoint_written_before_the_renaming_resumes(tmp_path, checkpoint):
    """The reference checkpoint, its run's digests rewritten as the version before the
    renaming recorded them (with no starting params or optimizer state): it resumes,
    bitwise as the uninterrupted run; another model's digest is still refused."""
    path = tmp_path / "run.npz"
    path.write_bytes(checkpoint)
    parts = {"model": MODEL, "loss": LOSS, "optimizer": OPT}

    def as_before(metadata):
        metadata["run"].update({f: _resume.digest(p, legacy=True) for f, p in parts.items()})
        del metadata["run"]["start_params"], metadata["run"]["start_opt_state"]

    _rewrite_metadata(path, as_before)
    assert_same_run(fit(6, path, 3, resume=True), fit(6))
    path.write_bytes(checkpoint)
    other = fnnet.serial(fnnet.Linear(2, 1), fnnet.Sigmoid())
    _rewrite_metadata(path, lambda m: m["run"].update(model=_resume.digest(other, legacy=True)))
    with pytest.raises(
        ValueError, match=r"another run's: the model \(its layers or their settings\) differs"
    ):
        fit(6, path, 3, resume=True)


def test_module_moves_inside_fnnet_change_no_digest():
    apply = LEGACY_MLP.apply
    assert apply.__module__ == "fnnet.combinators"
    assert _resume.describe(apply).startswith("fnnet._compose.<locals>.apply(")  # no module inside fnnet
    assert _resume.describe(apply, legacy=True).startswith("fnnet.serial._compose.<locals>.apply(")


# Checkpoints written by the version before this one --------------------------------------

# Every built-in layer, loss and optimizer in some run. A digest covers the values that
# fnnet's functions close over, so a change inside fnnet that adds one to a layer's
# functions would refuse every earlier checkpoint of a run using it ("the model differs").
DIGEST_MODELS = {
    "mlp": fnnet.serial(
        fnnet.Linear(2, 8),
        fnnet.ReLU(),
        fnnet.Linear(8, 8),
        fnnet.Tanh(),
        fnnet.Linear(8, 1),
        fnnet.Sigmoid(),
    ),
    "activations": fnnet.serial(
        fnnet.LeakyReLU(),
        fnnet.ELU(),
        fnnet.Softplus(),
        fnnet.Identity(),
        fnnet.Softmax(),
        fnnet.LogSoftmax(),
    ),
    "regularized": fnnet.serial(
        fnnet.Linear(2, 16),
        fnnet.BatchNorm(),
        fnnet.ReLU(),
        fnnet.Dropout(0.1),
        fnnet.LayerNorm(),
        fnnet.Residual(fnnet.serial(fnnet.Linear(16, 16), fnnet.Tanh())),
        fnnet.Linear(16, 1),
    ),
    "cnn": fnnet.serial(
        fnnet.Conv2D(1, 4, 3),
        fnnet.ReLU(),
        fnnet.MaxPool2D(2),
        fnnet.Conv2D(4, 8, 3, stride=2, padding=1),
        fnnet.AvgPool2D(2),
        fnnet.Flatten(),
        fnnet.Linear(8, 10),
    ),
    "decoder": fnnet.serial(
        fnnet.ConvTranspose2D(4, 2, 2, 2),
        fnnet.Upsample2D(2),
        fnnet.Conv2D(2, 1, 3, padding="VALID"),
        fnnet.Sigmoid(),
    ),
    "float64": fnnet.serial(fnnet.Linear(2, 3, dtype=jnp.float64)),
}
DIGEST_LOSSES = {
    "mse": fnnet.LossMSE(),
    "bce": fnnet.LossBCE(),
    "bce_eps": fnnet.LossBCE(1e-5),
    "logits": fnnet.LossBCEWithLogits(),
    "ce": fnnet.LossCrossEntropy(),
}
DIGEST_OPTS = {
    "sgd": fnnet.SGD(0.1, decay=0.99),
    "momentum": fnnet.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "plain": fnnet.SGD(0.1, momentum=None),
    "adam": fnnet.Adam(1e-3),
    "cosine": fnnet.Adam(fnnet.schedules.cosine(1e-3, 1000)),
}

# As recorded by the version before (commit 23feaf8), computed by running it.
RECORDED_DIGESTS = {
    "mlp": "c155d84f2bf720aaee79fcd324e4fea9",
    "activations": "52a459ddcba449bfd8a880328f657938",
    "regularized": "31bec09dcb03b490e8741b67c94fc28a",
    "cnn": "a104b5da076dee58e862ecc3e64a02b8",
    "decoder": "91ecc9f3091b38070d130a79d85238ed",
    "float64": "4b0e9ff34235e96b15fcee991879f0d6",
    "mse": "bce83d7caab55a515898ebd6d582bdef",
    "bce": "1d9333f986ee5a00a82d8a0456467986",
    "bce_eps": "c9f18ce35aa9937c68e03dbdfaff733f",
    "logits": "7236bf7d2ba85ccfd1bd4e8f78957015",
    "ce": "82ea18da1e1ad3dbe0750fde2e6501d5",
    "sgd": "07e7fa170163f4b49c507e3eda70ecc3",
    "momentum": "b65d5c6643bcf6c4cd6a268a6527e095",
    "plain": "8644a47289cc4dd5dbf616ae6a1719f8",
    "adam": "9b9ca23e96ed1cb7d0768a82ea6f8e43",
    "cosine": "4eaa346a935755bd398896dfd0d5e6ab",
}


DIGESTED = {**DIGEST_MODELS, **DIGEST_LOSSES, **DIGEST_OPTS}


def test_the_digests_are_those_the_version_before_recorded():
    """Its checkpoints recorded no start, so they are compared in its description."""
    assert {name: _resume.digest(value, earlier=True) for name, value in DIGESTED.items()} == RECORDED_DIGESTS


# This version's: the models' and losses' as before; an optimizer is described as its
# equality compares it, without its hyperparameters' defaults (the state's hyperparameters
# are compared by name). A change inside fnnet that moves one refuses this version's checkpoints.
NOW_OPTIMIZER_DIGESTS = {
    "sgd": "5432849c0328cbfb982740ff12b9f183",
    "momentum": "899e5d20f0c040b4d8b3af40258c13dc",
    "plain": "9a121fe8de82921fa8f35473caa3486f",
    "adam": "c05518e29c895fe4d82f810a327a6a66",
    "cosine": "274a22082f63f0ebd87f1e0480e7caaa",
}


def test_this_versions_digests_are_pinned():
    now = {**{k: v for k, v in RECORDED_DIGESTS.items() if k not in DIGEST_OPTS}, **NOW_OPTIMIZER_DIGESTS}
    assert {name: _resume.digest(value) for name, value in DIGESTED.items()} == now


def test_the_same_optimizer_set_up_two_ways_resumes(tmp_path):
    """SGD(0.1) with init(lr=0.3) is SGD(0.3): the same run (it was refused as another
    optimizer); another momentum is still refused, by name."""
    path = tmp_path / "run.npz"
    first = fnnet.SGD(0.3, momentum=0.5)
    fit(3, path, opt=first, opt_state=first.init(PARAMS), **FULL_BATCH)
    other = fnnet.SGD(0.1, momentum=0.5)
    resumed = fit(6, path, resume=True, opt=other, opt_state=other.init(PARAMS, lr=0.3), **FULL_BATCH)
    assert_same_run(resumed, fit(6, opt=first, opt_state=first.init(PARAMS), **FULL_BATCH))
    with pytest.raises(ValueError, match=r"momentum is 0.9 now, 0.5 in"):
        fit(6, path, resume=True, opt=fnnet.SGD(0.3, momentum=0.9), **FULL_BATCH)


def test_a_checkpoint_without_its_start_resumes_from_any_params(tmp_path, checkpoint):
    """A checkpoint written before runs recorded their starting params and optimizer state
    cannot tell another start from its own: it resumes, as it did."""
    path = tmp_path / "run.npz"
    path.write_bytes(checkpoint)
    _rewrite_metadata(path, lambda m: [m["run"].pop(f) for f in ("start_params", "start_opt_state")])
    assert_same_run(fit(6, path, 3, resume=True, params=MODEL.init(jax.random.key(7), (1, 2))[1]), fit(6))


# Layers written as classes: settings on self ----------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        _scaled,
        lambda k: fnnet.elementwise("Power", Power(k), _twice),
        lambda s: fnnet.Layer(None, Slotted(s).apply, None),
        _jitted,
    ],
    ids=["bound-methods", "callable-object", "slots-and-a-cycle", "jit-wrapped-closure"],
)
def test_a_model_is_described_by_the_settings_its_objects_hold(make):
    """A bound method is its function and its object, a callable object its type and
    attributes, a jax-wrapped function the one it wraps: equal settings read the same
    (from other objects), other settings differ."""
    assert _resume.digest(make(2.0)) == _resume.digest(make(2.0))
    assert _resume.digest(make(2.0)) != _resume.digest(make(3.0))


def test_resume_refuses_a_layer_object_with_other_settings(tmp_path):
    """Equal settings on another object resume; another scale is another model."""

    def model(s):
        return fnnet.serial(fnnet.Linear(2, 4), fnnet.Tanh(), _scaled(s), fnnet.Linear(4, 1), fnnet.Sigmoid())

    path = tmp_path / "run.npz"
    params = model(1.0).init(jax.random.key(2), (1, 2))[1]
    settings = {"params": params, **FULL_BATCH}
    first = fit(3, path, model=model(1.0), **settings)
    assert_same_run(fit(3, path, resume=True, model=model(1.0), **settings), first)
    with pytest.raises(ValueError, match=r"another run's: the model \(its layers or their settings\)"):
        fit(3, path, resume=True, model=model(3.0), **settings)


# Checkpoints of object models written before objects were described ------------------------


# What the version before (23feaf8) recorded for these models, computed by running it with
# tests/resume_objects.py: objects by type and name only.
RECORDED_OBJECT_DIGESTS = {
    "bound-methods": "d44b7029b6a7004dd35caa458292aee6",
    "callable-object": "d9bcdfe179694c8bc4f031865cc5c7ed",
    "jit-wrapped-closure": "e3b94e8a4467425fee494a34f60e2450",
}


def test_the_earlier_digests_of_object_models_are_those_the_version_before_recorded():
    for name, make in OBJECT_MODELS.items():
        assert _resume.digest(make(), earlier=True) == RECORDED_OBJECT_DIGESTS[name], name
        assert _resume.digest(make()) != RECORDED_OBJECT_DIGESTS[name], name  # settings now count


def test_a_checkpoint_of_an_object_model_from_before_still_resumes(tmp_path):
    """Written by the version before (no start recorded, the model's objects by name): it
    resumes, bitwise as the uninterrupted run; a checkpoint of this version is compared on
    the objects' settings."""
    model = OBJECT_MODELS["bound-methods"]()
    params = model.init(jax.random.key(2), (1, 2))[1]
    settings = {"model": model, "loss": fnnet.LossMSE(), "params": params, "opt": OPT, **FULL_BATCH}
    path = tmp_path / "run.npz"
    fit(3, path, **settings)
    state = OPT.init(params)
    stored_params, stored_state, metadata = fnnet.load(path, like=(params, state))
    for field in ("start_params", "start_opt_state"):
        metadata["run"].pop(field)
    metadata["run"]["model"] = RECORDED_OBJECT_DIGESTS["bound-methods"]
    fnnet.save(path, stored_params, stored_state, metadata)
    assert_same_run(fit(6, path, 3, resume=True, **settings), fit(6, **settings))


def test_what_an_object_holds_is_named_by_its_type():
    """One level of attributes: a logger the layer holds is a logger, whatever it has
    logged or whichever loggers exist; the layer's own setting still counts."""
    before = _resume.digest(_logged(2.0))
    logging.getLogger("resume_objects").warning("a message")
    logging.getLogger("resume_objects.other")
    assert _resume.digest(_logged(2.0)) == before
    assert _resume.digest(_logged(3.0)) != before


@pytest.mark.parametrize(
    "make",
    [
        lambda c: lambda x: x * jnp.array([0.5, c, 2.0])[1],  # a list of 3 numbers: one tuple constant
        lambda c: (lambda x: (lambda z: z * 1.5)(x)) if c == 1.0 else (lambda x: (lambda z: z * 2.5)(x)),
        lambda c: (lambda x: jnp.einsum("ij->ij", x)) if c == 1.0 else (lambda x: jnp.einsum("ij->ji", x)),
        lambda c: (
            (lambda x: sum(v * x for v in (1, 2))) if c == 1.0 else (lambda x: sum(v * x for v in (1, 3)))
        ),
    ],
    ids=["tuple-constant", "nested-lambda", "string-constant", "generator"],
)
def test_a_user_functions_constants_anywhere_in_its_body_count(make):
    """Numbers in a tuple constant, in a nested function or comprehension, and strings
    (an einsum's subscripts) are part of what a user function computes."""
    one, other = make(1.0), make(3.0)
    layer = lambda f: fnnet.elementwise("F", f, _twice)  # noqa: E731
    assert _resume.digest(layer(one)) != _resume.digest(layer(other))
    assert _resume.digest(layer(one)) == _resume.digest(layer(make(1.0)))


def test_a_resume_with_another_x64_setting_is_refused(tmp_path):
    """jax_enable_x64 changes what a key draws (Dropout's masks) and the losses' dtype: a
    run checkpointed with it on does not continue with it off (the suite runs with x64 on)."""
    path = tmp_path / "run.npz"
    fit(3, path, **FULL_BATCH)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match=r"jax_enable_x64 is False now, True in the checkpoint's run"):
            fit(6, path, resume=True, **FULL_BATCH)
