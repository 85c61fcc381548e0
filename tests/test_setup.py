"""One preparation for `fit` and `train`'s run: the same arguments get the same error, word
for word after the owner's name, before any work."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_compilations

import fnnet

MODEL = fnnet.serial(fnnet.Linear(2, 8), fnnet.Tanh(), fnnet.Linear(8, 1), fnnet.Sigmoid())
LOSS, OPT, EPOCHS = fnnet.LossBCE(), fnnet.SGD(lr=0.5), 3


def arguments():
    x, y = fnnet.data.disk(jax.random.key(1), 12)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    return dict(params=params, opt_state=OPT.init(params), x=x, y=y, key=jax.random.key(2))


def via_fit(params, opt_state, x, y, key, batch_size=None):
    return fnnet.fit(
        MODEL,
        LOSS,
        OPT,
        params,
        x,
        y,
        EPOCHS,
        batch_size=batch_size,
        key=key,
        progress=False,
        opt_state=opt_state,
    )


def via_train(params, opt_state, x, y, key, batch_size=None):
    return fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS, batch_size=batch_size)(
        params, opt_state, x, y, key=key
    )


def nan_at(a, index):
    a = np.array(a)
    a[index] = np.nan
    return jnp.asarray(a)


BAD = {  # name: (how the arguments change, the error, its message: OWNER is fit or train)
    "integer-x": (dict(x=lambda a: a["x"].astype(jnp.int32)), TypeError, "OWNER: x must be floating point"),
    "complex-y": (dict(y=lambda a: a["y"].astype(jnp.complex64)), TypeError, "OWNER: y must be real"),
    "list-x": (
        dict(x=lambda a: [["a", "b"]] * len(a["x"])),
        TypeError,
        "OWNER: x must be an array of numbers",
    ),
    "fewer-targets": (dict(y=lambda a: a["y"][:-1]), ValueError, "OWNER: x and y must have the same number"),
    "nan-x": (dict(x=lambda a: nan_at(a["x"], (0, 0))), ValueError, r"OWNER: x holds 1 NaN"),
    "bad-targets": (
        dict(y=lambda a: a["y"] * 3),
        ValueError,
        r"OWNER: y: LossBCE: targets must be in \[0, 1\]",
    ),
    "params-list": (
        dict(params=lambda a: list(a["params"])),
        TypeError,
        "OWNER: params must have the structure",
    ),
    "params-shape": (
        dict(params=lambda a: (a["params"][0], (), dict(a["params"][2], b=jnp.zeros(2)), ())),
        ValueError,
        r"serial layer 2: Linear\(n_in=8, n_out=1\): params must have w \(8, 1\) and b \(1,\), got w \(8, 1\) and b \(2,\)",
    ),
    "nan-params": (
        dict(params=lambda a: (dict(a["params"][0], b=nan_at(a["params"][0]["b"], 3)),) + a["params"][1:]),
        ValueError,
        r"OWNER: params\[0\]\['b'\] holds 1 NaN",
    ),
    "integer-params": (
        dict(params=lambda a: (dict(a["params"][0], b=jnp.zeros(8, jnp.int32)),) + a["params"][1:]),
        TypeError,
        r"OWNER: params\[0\]\['b'\] has dtype int32; trainable params must be floating point",
    ),
    "int-key": (
        dict(key=lambda a: 7),
        TypeError,
        r"OWNER: key must be a PRNG key such as jax\.random\.key\(0\)",
    ),
    "split-keys": (
        dict(key=lambda a: jax.random.split(a["key"], 2)),
        ValueError,
        "OWNER: key must be one PRNG key, got an array of 2 keys",
    ),
    "batch-too-big": (dict(batch_size=lambda a: 13), ValueError, r"OWNER: batch_size must be in \[1, 12\]"),
    "batch-float": (dict(batch_size=lambda a: 4.0), TypeError, "OWNER: batch_size must be an int or None"),
    "negative-lr-state": (
        dict(
            opt_state=lambda a: a["opt_state"]._replace(
                hyperparams=dict(a["opt_state"].hyperparams, lr=jnp.float32(-1.0))
            )
        ),
        ValueError,
        "OWNER: opt_state: lr must be > 0",
    ),
    "foreign-state": (
        dict(opt_state=lambda a: fnnet.Adam(1e-3).init(a["params"])),
        ValueError,
        r"OWNER: opt_state: SGD.step: opt_state was made by another optimizer",
    ),
    "int-state": (
        dict(opt_state=lambda a: 3),
        TypeError,
        r"OWNER: opt_state must be an OptState, .*got 3 \(int\)",
    ),
    "raw-key-of-another-prng": (
        dict(key=lambda a: jnp.zeros(4, jnp.uint32)),
        ValueError,
        r"OWNER: key is a raw key of shape \(4,\), the default PRNG's are \(2,\)",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_fit_and_train_refuse_the_same_arguments_with_the_same_words(name):
    changes, error, says = BAD[name]
    messages = []
    for owner, call in (("fit", via_fit), ("train", via_train)):
        args = arguments()
        args.update({key: change(args) for key, change in changes.items()})
        with (
            count_compilations() as compiled,
            pytest.raises(error, match="^" + says.replace("OWNER", owner)) as caught,
        ):
            call(**args)
        assert not [c for c in compiled if "run" in c], f"{owner} compiled its loop before refusing"
        messages.append(re.sub(rf"^{owner}\b", "OWNER", str(caught.value)))
    assert messages[0] == messages[1], messages


def test_train_inside_vmap_passes_what_it_cannot_see_yet():
    """Traced values (a sweep) are not judged on the host; everything with a shape still is."""
    args = arguments()
    keys = jax.random.split(jax.random.key(0), 2)
    stacked = fnnet.init_many(keys, MODEL, args["x"].shape)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS)
    params, _, losses = jax.vmap(run, in_axes=(0, 0, None, None))(
        stacked, jax.vmap(OPT.init)(stacked), args["x"], args["y"], key=keys
    )
    assert losses.shape == (2, EPOCHS) and bool(jnp.all(jnp.isfinite(losses)))
    with pytest.raises(TypeError, match=r"^train: x must be floating point"):
        jax.vmap(run, in_axes=(0, 0, None, None))(
            stacked, jax.vmap(OPT.init)(stacked), args["x"].astype(jnp.int32), args["y"], key=keys
        )


def test_numpy_integers_count_as_ints():
    args = arguments()
    result = via_fit(**dict(args, batch_size=np.int64(4)))
    assert len(result.losses) == EPOCHS
    run = fnnet.train(MODEL, LOSS, OPT, epochs=np.int64(EPOCHS), batch_size=np.int32(4))
    assert run(**args)[2].shape == (EPOCHS,)


@pytest.mark.parametrize(
    "call",
    [
        lambda key: MODEL.init(key, (4, 2)),
        lambda key: fnnet.train_step(MODEL, LOSS, OPT)(*step_arguments(), key=key),
    ],
    ids=["init", "train_step"],
)
def test_raw_keys_of_another_shape_are_refused_by_name(call):
    with pytest.raises(ValueError, match=r"key is a raw key of shape \(4,\), the default PRNG's are \(2,\)"):
        call(jnp.zeros(4, jnp.uint32))


def step_arguments():
    args = arguments()
    return args["params"], args["opt_state"], args["x"], args["y"]


def test_train_step_refuses_what_is_not_a_key():
    with pytest.raises(TypeError, match=r"^train_step: key must be a PRNG key such as jax\.random\.key\(0\)"):
        fnnet.train_step(MODEL, LOSS, OPT)(*step_arguments(), key=0)


def test_sweep_refuses_targets_the_loss_cannot_take():
    args = arguments()
    keys = jax.random.split(jax.random.key(0), 2)
    params = fnnet.init_many(keys, MODEL, args["x"].shape)
    states = jax.vmap(OPT.init)(params)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=EPOCHS)
    with pytest.raises(ValueError, match=r"^sweep: y: LossBCE: targets must be in \[0, 1\]"):
        fnnet.sweep(run, params, states, args["x"], args["y"] * 5, keys=keys)
    xs, ys = jnp.stack([args["x"]] * 2), jnp.stack([args["y"], args["y"] * 5])
    with pytest.raises(ValueError, match=r"^sweep: y of member\(s\) \[1\]: LossBCE: targets must be in"):
        fnnet.sweep(run, params, states, xs, ys, keys=keys, per_member_data=True)


BN_MODEL = fnnet.serial(
    fnnet.Linear(2, 4), fnnet.BatchNorm(), fnnet.ReLU(), fnnet.Linear(4, 1), fnnet.Sigmoid()
)


@pytest.mark.parametrize(
    "n, batch_size, which",
    [(1, None, "the batch"), (6, 1, "each batch"), (9, 4, "the last batch of each epoch")],
)
def test_a_step_on_one_sample_is_refused_before_any_work_where_batchnorm_trains(n, batch_size, which):
    x, y = fnnet.data.disk(jax.random.key(1), n)
    params = BN_MODEL.init(jax.random.key(0), x.shape)[1]
    says = (
        rf"^OWNER: {which} is 1 sample \(n={n}, batch_size={batch_size}\), and the model needs at "
        r"least 2 samples per batch to train: serial layer 1: BatchNorm\(momentum=0.9, eps=1e-05\): "
        r"training normalizes by the batch"
    )
    messages = []
    for owner, call in (
        (
            "fit",
            lambda: fnnet.fit(BN_MODEL, LOSS, OPT, params, x, y, 2, batch_size=batch_size, progress=False),
        ),
        (
            "train",
            lambda: fnnet.train(BN_MODEL, LOSS, OPT, 2, batch_size=batch_size)(
                params, OPT.init(params), x, y
            ),
        ),
    ):
        with (
            count_compilations() as compiled,
            pytest.raises(ValueError, match=says.replace("OWNER", owner)) as caught,
        ):
            call()
        assert not [c for c in compiled if "run" in c], f"{owner} compiled its loop before refusing"
        messages.append(re.sub(rf"^{owner}\b", "OWNER", str(caught.value)))
    assert messages[0] == messages[1], messages


def test_one_sample_steps_train_where_the_model_can():
    """BatchNorm on images normalizes over height and width too: one image is enough; a
    model without BatchNorm trains on one sample."""
    x, y = fnnet.data.disk(jax.random.key(1), 9)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    assert np.isfinite(via_fit(params, None, x, y, None, batch_size=4).losses).all()
    model = fnnet.serial(fnnet.Conv2D(1, 2, 3), fnnet.BatchNorm(), fnnet.Flatten(), fnnet.Linear(32, 1))
    images = jax.random.normal(jax.random.key(3), (1, 4, 4, 1))
    params = model.init(jax.random.key(0), images.shape)[1]
    _, _, losses = fnnet.train(model, fnnet.LossMSE(), OPT, 2)(
        params, OPT.init(params), images, jnp.ones((1, 1))
    )
    assert np.isfinite(losses).all()


def test_the_one_sample_check_counts_the_samples_that_weigh():
    """Samples of weight 0 are sorted last with the padding: the batches are made of those
    that weigh. 33 samples, one of weight 0, in batches of 16: two full batches, trained;
    34 with one of weight 0 leave a last batch of one, refused; a full batch of which one
    sample weighs, refused like a batch of one."""
    x, y = fnnet.data.disk(jax.random.key(1), 40)
    params = BN_MODEL.init(jax.random.key(0), x.shape)[1]

    def run(n, weights, batch_size):
        return fnnet.fit(
            BN_MODEL,
            LOSS,
            OPT,
            params,
            x[:n],
            y[:n],
            1,
            batch_size=batch_size,
            sample_weight=weights,
            progress=False,
        )

    w = np.ones(33)
    w[7] = 0
    assert np.isfinite(run(33, w, 16).losses).all()
    w = np.ones(34)
    w[7] = 0
    says = r"fit: the last batch of each epoch is 1 sample \(33 of x's 34 samples weigh > 0, batch_size=16\)"
    with pytest.raises(ValueError, match=says):
        run(34, w, 16)
    w = np.zeros(40)
    w[3] = 1
    with pytest.raises(ValueError, match=r"fit: the batch is 1 sample \(1 of x's 40 samples weigh > 0"):
        run(40, w, None)


def test_a_weight_too_small_for_float32_is_zero_on_the_host_as_on_the_device():
    """A weight below 2**-126 of the largest is flushed to 0 on the device: the host counts
    it as 0 too, so the steps per epoch it records agree with the steps taken, and a
    checkpointed run resumes."""
    x, y = fnnet.data.disk(jax.random.key(1), 33)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    w = np.ones(33)
    w[5] = 1e-40
    checked = fnnet._setup.check_sample_weight("fit", w, 33)
    assert checked[5] == 0 and np.count_nonzero(checked) == 32
    path = str(pytest.importorskip("pathlib").Path(__import__("tempfile").mkdtemp()) / "run.npz")
    kw = dict(batch_size=16, sample_weight=w, progress=False, key=jax.random.key(2))
    first = fnnet.fit(MODEL, LOSS, fnnet.Adam(1e-2), params, x, y, 3, checkpoint=path, **kw)
    assert int(first.opt_state.count) == 3 * 2  # 32 samples that weigh: 2 steps an epoch
    resumed = fnnet.fit(MODEL, LOSS, fnnet.Adam(1e-2), params, x, y, 5, checkpoint=path, resume=True, **kw)
    whole = fnnet.fit(MODEL, LOSS, fnnet.Adam(1e-2), params, x, y, 5, **kw)
    np.testing.assert_array_equal(resumed.losses, whole.losses)


def test_bfloat16_sample_weights_are_numbers():
    x, y = fnnet.data.disk(jax.random.key(1), 12)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    half = fnnet.fit(
        MODEL, LOSS, OPT, params, x, y, 2, sample_weight=jnp.full(12, 2, jnp.bfloat16), progress=False
    )
    plain = fnnet.fit(MODEL, LOSS, OPT, params, x, y, 2, progress=False)
    np.testing.assert_array_equal(half.losses, plain.losses)  # weights alike: the plain mean


@pytest.mark.parametrize("epochs, batch_size", [(2**31, None), (2**40, None), (2**30, 4)])
def test_a_run_past_the_int32_step_count_is_refused_at_once(epochs, batch_size):
    """The steps and epochs are counted in int32 on the device: 2**31 epochs, or 2**30
    epochs of 3 steps, are refused before any work (no plan of 2**31 chunks is built)."""
    args = arguments()
    with pytest.raises(
        ValueError,
        match=rf"fit: epochs={epochs} \(\d step\(s\) each, from step 0\) would count past step 2\*\*31 - 1",
    ):
        fnnet.fit(
            MODEL,
            LOSS,
            OPT,
            args["params"],
            args["x"],
            args["y"],
            epochs,
            batch_size=batch_size,
            progress=False,
        )


@pytest.mark.parametrize("where", ["x", "y", "x_val"])
def test_float64_data_beyond_float32_is_refused_where_jax_holds_it_as_float32(where):
    """Without x64, JAX holds float64 data as float32: a finite 1e39 would turn infinite on
    the device (and be blamed on the learning rate, or make the validation loss inf)."""
    x, y = fnnet.data.disk(jax.random.key(1), 12)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    x_val = x.copy()
    {"x": x, "y": y, "x_val": x_val}[where][0, 0] = 1e39
    says = rf"fit: {where} holds 1 value\(s\) beyond float32's range, in which JAX holds float64 data"
    with jax.enable_x64(False), pytest.raises(ValueError, match=says):
        fnnet.fit(MODEL, LOSS, OPT, params, x, y, 1, validation=(x_val, y), progress=False)
    fnnet._setup.check_data("fit", "x", "y", x, y)  # with x64 on, held as float64: in range
    fnnet._setup.check_data("fit", "x_val", "y_val", x_val, y)


def test_a_run_that_stops_early_may_have_epochs_past_the_int32_step_count():
    """With early stopping, epochs is a bound the run does not reach: 10**9 of them train
    until the rule stops the run (scikit-learn's habit of a huge max_iter and tol)."""
    args = arguments()
    run = fnnet.fit(
        MODEL,
        LOSS,
        fnnet.Adam(1e-2),
        args["params"],
        args["x"],
        args["y"],
        10**9,
        batch_size=4,
        early_stopping=fnnet.EarlyStopping("loss", patience=2, min_delta=1e-1),
        progress=False,
    )
    assert run.stopped_epoch is not None and run.stopped_epoch < 100


def test_huge_epochs_with_early_stopping_and_a_decay_or_schedule_train_at_once():
    """The lr checks of a run stopped early look at its steps without an array of them: a
    decaying lr found by bisection, a schedule on its first 2**22 steps."""
    args = arguments()
    rule = fnnet.EarlyStopping("loss", patience=2, min_delta=1e-1)
    for opt in (fnnet.SGD(0.5, decay=0.999), fnnet.SGD(fnnet.schedules.cosine(0.5, 2**31 - 1))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fnnet.LearningRateUnderflow)
            run = fnnet.fit(
                MODEL,
                LOSS,
                opt,
                args["params"],
                args["x"],
                args["y"],
                3 * 10**9,
                batch_size=4,
                early_stopping=rule,
                progress=False,
            )
        assert run.stopped_epoch is not None
    with pytest.raises(ValueError, match=r"train: epochs=3000000000 .* would count past step 2\*\*31 - 1"):
        fnnet.train(MODEL, LOSS, OPT, 3 * 10**9, early_stopping=rule)(
            args["params"], args["opt_state"], args["x"], args["y"]
        )


def test_the_decayed_lr_reaches_zero_at_the_step_bisection_finds():
    """0.5 * 0.5**t is 0 in float32 from the step the warning names, as the arange found it."""
    args = arguments()
    with pytest.warns(fnnet.LearningRateUnderflow, match=r"at step (\d+)") as caught:
        fnnet.fit(
            MODEL, LOSS, fnnet.SGD(0.5, decay=0.5), args["params"], args["x"], args["y"], 300, progress=False
        )
    step = int(re.search(r"at step (\d+)", str(caught[0].message)).group(1))
    lrs = fnnet.optim.learning_rate(
        fnnet.SGD(0.5, decay=0.5).init(args["params"]).hyperparams, None, jnp.arange(300)
    )
    assert step == int(np.flatnonzero(np.asarray(lrs) == 0)[0])


def test_integer_targets_beyond_int32_are_refused_where_jax_holds_them_as_int32():
    x, _ = fnnet.data.disk(jax.random.key(1), 12)
    model = fnnet.Linear(2, 1)
    params = model.init(jax.random.key(0), x.shape)[1]
    y = np.full((12, 1), 2**32 + 1, np.int64)
    says = r"fit: y holds 12 value\(s\) beyond int32's range, in which JAX holds int64 data .* wrapped around"
    with jax.enable_x64(False), pytest.raises(ValueError, match=says):
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(1e-3), params, x, y, 1, progress=False)


def test_another_epochs_count_with_a_schedule_compiles_nothing():
    """The schedule's check evaluates it on a power of two of steps: its small programs
    compile once, not for every run length."""
    args = arguments()
    opt = fnnet.SGD(fnnet.schedules.cosine(0.1, 1000))

    def run(epochs):
        fnnet.fit(
            MODEL, LOSS, opt, args["params"], args["x"], args["y"], epochs, batch_size=4, progress=False
        )

    run(5)
    with count_compilations() as compiled:
        run(6)
        run(7)
    assert compiled == []


def test_bfloat16_sample_weights_are_numbers_inside_vmap_too():
    x, y = fnnet.data.disk(jax.random.key(1), 12)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    run = fnnet.train(MODEL, LOSS, OPT, 2)
    losses = jax.vmap(lambda w: run(params, OPT.init(params), x, y, sample_weight=w)[2])(
        jnp.full((2, 12), 2, jnp.bfloat16)
    )
    plain = run(params, OPT.init(params), x, y)[2]
    np.testing.assert_allclose(np.asarray(losses), np.stack([np.asarray(plain)] * 2), rtol=1e-6)
