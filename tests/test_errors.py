"""Bad input, one catalogue: every case raises a clear error through the public API.

Each case checks the error's type and message, and where training was under way that
nothing was lost: `fit` raises before any training (its compiled runner is never even
built, and no checkpoint is written), a jitted `train_step` raises while tracing so the
buffers it would donate stay alive, and a checkpoint that cannot be resumed is left as it
was. Some cases are also tested, more thoroughly, next to their module (noted per
section); here each is kept cheap so that the catalogue is complete in one place.

A run that diverges is not bad input: `TrainingDiverged` and the finite params it carries
are tested in test_fit.py (`test_divergence_raises_with_the_last_finite_state`).
"""

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

from fnnet import fitting as fit_module

N = 16
MODEL = fnnet.serial(fnnet.Linear(2, 4), fnnet.Tanh(), fnnet.Linear(4, 1), fnnet.Sigmoid())
OTHER = fnnet.serial(fnnet.Linear(2, 5), fnnet.Tanh(), fnnet.Linear(5, 1), fnnet.Sigmoid())
CLASSIFIER = fnnet.serial(fnnet.Linear(2, 3))  # logits of 3 classes
LOSS = fnnet.LossBCE()
OPT = fnnet.SGD(lr=0.1)
PLAIN = fnnet.SGD(lr=0.1, momentum=None)  # no velocity buffer
LINEAR = r"serial layer 0: Linear\(n_in=2, n_out=4\): "


def data():
    x, y = fnnet.data.disk(jax.random.key(1), N)
    return np.asarray(x), np.asarray(y)


def init(model=MODEL):
    return model.init(jax.random.key(0), (1, 2))[1]


def labels():
    return np.arange(N, dtype=np.int32) % 3


def leaves_alive(tree):
    return all(not leaf.is_deleted() for leaf in jax.tree.leaves(tree))


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """`fit` must raise before it builds its compiled runner; yields a checkpoint path that
    must still not exist afterwards."""

    def runner(*args):
        raise AssertionError("fit started training before raising")

    monkeypatch.setattr(fit_module, "_runner", runner)
    path = tmp_path / "run.npz"
    yield path
    assert not path.exists(), "fit wrote a checkpoint before raising"


def fit(x, y, model=MODEL, loss=LOSS, opt=OPT, params=None, **kwargs):
    kwargs = {"epochs": 4, "progress": False, **kwargs}
    return fnnet.fit(model, loss, opt, init(model) if params is None else params, x, y, **kwargs)


def fit_raises(error, match, x, y, checkpoint, **kwargs):
    """fit with a checkpoint every epoch, so any epoch run would have written one."""
    with pytest.raises(error, match=match):
        fit(x, y, checkpoint=checkpoint, checkpoint_every=1, **kwargs)


# Every public way to push a batch through the model: `call(x, y)`.
def via_apply(x, y):
    return MODEL.apply(init(), x)


def via_vjp(x, y):
    return MODEL.vjp(init(), x, jnp.ones(jnp.shape(x)[:-1] + (1,), jnp.float32))


def via_value_and_grad(x, y):
    return jax.jit(fnnet.value_and_grad(MODEL, LOSS))(init(), x, y)


def via_as_jax(x, y):
    return jax.grad(lambda p: jnp.sum(fnnet.as_jax(MODEL)(p, x)))(init())


def via_train_step(x, y):
    params = init()
    state = OPT.init(params)
    try:
        return fnnet.train_step(MODEL, LOSS, OPT)(params, state, x, y)
    finally:  # raised while tracing: nothing was donated
        assert leaves_alive((params, state))


def via_train(x, y):
    params = init()
    return fnnet.train(MODEL, LOSS, OPT, epochs=2)(params, OPT.init(params), x, y)


ENTRY_POINTS = [via_apply, via_vjp, via_value_and_grad, via_as_jax, via_train_step, via_train]


# --- wrong input rank or feature count (also test_layers.py, test_serial.py) ---------------


@pytest.mark.parametrize("call", ENTRY_POINTS)
@pytest.mark.parametrize(
    "shape, got",
    [((N, 3), r"(\(16, 3\)|\(3, 16\))"), ((N,), r"\(16,\)"), ((), r"\(\)")],
    ids=["3-features", "rank-1", "rank-0"],
)
def test_wrong_rank_or_features(call, shape, got):
    match = LINEAR + r"expected input with 2 features on axis (-1|0), got shape " + got
    if call is via_train and shape == ():
        match = r"train: x must have a leading sample axis, got shape \(\)"
    with pytest.raises(ValueError, match=match):
        call(jnp.ones(shape, jnp.float32), jnp.ones(shape[:1] + (1,), jnp.float32))


def test_wrong_input_shape_at_init():
    with pytest.raises(
        ValueError,
        match=LINEAR + r"expected input_shape \(\.\.\., 2\), got "
        r"\(16, 3\)",
    ):
        MODEL.init(jax.random.key(0), (N, 3))


@pytest.mark.parametrize(
    "x, match",
    [
        (
            lambda x: x[:, :1],
            LINEAR + r"expected input with 2 features on axis -1, got shape "
            r"\(16, 1\)",
        ),
        (lambda x: x[:, 0], LINEAR + r"expected input .* got shape \(16,\)"),
        (lambda x: x[0, 0], r"fit: x must have a leading sample axis, got shape \(\)"),
    ],
    ids=["1-feature", "rank-1", "rank-0"],
)
def test_fit_wrong_rank_or_features(no_training, x, match):
    x0, y = data()
    fit_raises(ValueError, match, x(x0), y, no_training)


@pytest.mark.parametrize(
    "validation, match",
    [
        (
            lambda x, y: (x[:, :1], y),
            r"fit: the model on x_val: " + LINEAR + r"expected input with 2 features .*got shape \(16, 1\)",
        ),
        (
            lambda x, y: (x, y[:, 0]),
            r"fit: y_val does not fit the model's output on x_val: LossBCE: "
            r"prediction and target must have the same shape, got \(16, 1\) "
            r"and \(16,\)",
        ),
    ],
    ids=["x_val-features", "y_val-shape"],
)
def test_fit_bad_validation_shapes_raise_before_training(no_training, validation, match):
    x, y = data()
    fit_raises(ValueError, match, x, y, no_training, validation=validation(x, y))


def test_targets_of_the_wrong_shape(no_training):
    x, y = data()
    fit_raises(
        ValueError,
        r"fit: y does not fit the model's output on x: LossBCE: prediction "
        r"and target must have the same shape, got \(16, 1\) and \(16,\)",
        x,
        y[:, 0],
        no_training,
    )
    with pytest.raises(
        ValueError,
        match=r"LossBCE: prediction and target must have the same "
        r"shape, got \(16, 1\) and \(16,\)",
    ):
        via_train_step(jnp.asarray(x), jnp.asarray(y[:, 0]))


# --- the wrong thing in fit's place: arguments swapped, a key that is not one key ------------


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            {"model": LOSS},
            TypeError,
            r"fit: model must be a Layer \(e\.g\. fnnet\.serial\(\.\.\.\)\), got LossBCE\(\) \(LossBCE\)",
        ),
        (
            {"loss": OPT},
            TypeError,
            r"fit: loss must be a Loss \(e\.g\. fnnet\.LossMSE\(\)\), got SGD\(lr=0\.1\) \(SGD\)",
        ),
        (
            {"opt": LOSS},
            TypeError,
            r"fit: opt must be an Optimizer \(e\.g\. fnnet\.SGD\(lr=0\.1\)\), got LossBCE\(\) \(LossBCE\)",
        ),
        (
            {"model": MODEL.apply},
            TypeError,
            r"fit: model must be a Layer .*got the method Sequential\.apply of Sequential\(",
        ),
        (
            {"loss": LOSS.value},
            TypeError,
            r"fit: loss must be a Loss .*got the method _MeanLoss\.value of LossBCE\(\)",
        ),
        ({"key": 0}, TypeError, r"fit: key must be a PRNG key such as jax\.random\.key\(0\), got 0 \(int\)"),
        (
            {"key": np.uint32(7)},
            TypeError,
            r"fit: key must be a PRNG key .*got np\.uint32\(7\) \(uint32\)",
        ),
        (
            {"key": jax.random.split(jax.random.key(0), 3)},
            ValueError,
            r"fit: key must be one PRNG key, got an array of 3 keys \(shape \(3,\)\); pass one of them",
        ),
        (
            {"key": jax.random.split(jax.random.PRNGKey(0), 4)},
            ValueError,
            r"fit: key must be one PRNG key, got an array of 4 raw keys \(shape \(4, 2\)\)",
        ),
        (
            {"params": list(init())},
            TypeError,
            r"fit: params must have the structure model\.init gives \(a list where model\.init gives a tuple\), "
            r"PyTreeDef\(\(\{.*got PyTreeDef\(\[\{",
        ),
        (
            {"params": jax.tree.map(lambda p: p.astype(jnp.int32), init())},
            TypeError,
            r"fit: params\[0\]\['b'\] has dtype int32; trainable params must be floating point",
        ),
        (
            {"params": jax.tree.map(lambda p: p > 0, init())},
            TypeError,
            r"fit: params\[0\]\['b'\] has dtype bool; trainable params must be floating point",
        ),
        (
            {"params": jax.tree.map(lambda p: p.astype(jnp.complex64), init())},
            TypeError,
            r"fit: params\[0\]\['b'\] has dtype complex64; trainable params must be floating point",
        ),
        (
            {"checkpoint": 3},
            TypeError,
            r"fit: checkpoint must be a path \(a str or os\.PathLike\), got 3 \(int\)",
        ),
    ],
    ids=[
        "Loss-as-model",
        "Optimizer-as-loss",
        "Loss-as-opt",
        "function-as-model",
        "function-as-loss",
        "int-key",
        "numpy-int-key",
        "split-keys",
        "split-raw-keys",
        "list-params",
        "int-params",
        "bool-params",
        "complex-params",
        "int-checkpoint",
    ],
)
def test_fit_wrong_kind_of_argument(no_training, change, error, match):
    x, y = data()
    kwargs = {"params": init(), "checkpoint": no_training, "checkpoint_every": 1, **change}
    with pytest.raises(error, match=match):
        fit(x, y, **kwargs)


def test_fit_accepts_an_old_style_raw_key(monkeypatch):
    """`jax.random.PRNGKey(3)` is one key (two uint32 words): the same run as `key(3)`."""
    x, y = data()
    runs = [fit(x, y, key=key, batch_size=4) for key in (jax.random.PRNGKey(3), jax.random.key(3))]
    for got, want in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_fit_complex_targets(no_training):
    x, y = data()
    fit_raises(
        TypeError,
        r"fit: y must be real, got dtype complex64: the losses are defined on "
        r"real targets",
        x,
        y.astype(np.complex64),
        no_training,
        loss=fnnet.LossMSE(),
    )
    fit_raises(
        TypeError,
        r"fit: y_val must be real, got dtype complex64",
        x,
        y,
        no_training,
        loss=fnnet.LossMSE(),
        validation=(x, y.astype(np.complex64)),
    )


@pytest.mark.parametrize(
    "validation, match",
    [
        (lambda x, y: (x, 2 * y), r"fit: y_val: LossBCE: targets must be in \[0, 1\]"),
        (lambda x, y: (x[:, :1], y), r"fit: the model on x_val: serial layer 0"),
        (lambda x, y: (x.astype(np.int32), y), r"fit: x_val must be floating point"),
        (lambda x, y: (x, y[:5]), r"fit: x_val and y_val must have the same number of samples"),
    ],
    ids=["y_val-range", "x_val-features", "x_val-dtype", "lengths"],
)
def test_fit_validation_errors_name_the_validation_data(no_training, validation, match):
    x, y = data()
    fit_raises((TypeError, ValueError), match, x, y, no_training, validation=validation(x, y))


def test_fit_validation_labels_name_the_validation_data(no_training):
    x, _ = data()
    fit_raises(
        ValueError,
        r"fit: y_val: LossCrossEntropy: labels must be in \[0, 3\)",
        x,
        labels(),
        no_training,
        model=CLASSIFIER,
        loss=fnnet.LossCrossEntropy(),
        validation=(x, labels() + 1),
    )


# --- integer or bool inputs ----------------------------------------------------------------


@pytest.mark.parametrize("call", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_], ids=["int32", "bool"])
def test_integer_or_bool_inputs(call, dtype):
    x, y = data()
    # a run checks its data before any layer sees it (one preparation for train and fit)
    where = r"train: x " if call is via_train else LINEAR + r"input "
    with pytest.raises(
        TypeError,
        match=where + rf"must be floating point, got dtype {jnp.dtype(dtype)}; convert it",
    ):
        call(jnp.asarray(x > 0.5).astype(dtype), jnp.asarray(y))


@pytest.mark.parametrize("name", ["ReLU", "Sigmoid", "Identity"])
def test_integer_inputs_to_an_activation(name):
    layer = getattr(fnnet, name)()
    for call in (lambda x: layer.apply((), x), lambda x: layer.vjp((), x, x)):
        with pytest.raises(
            TypeError,
            match=rf"{name}: input must be floating point, got dtype "
            r"int32",
        ):
            call(jnp.arange(3, dtype=jnp.int32))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex64])
def test_fit_integer_bool_or_complex_x(no_training, dtype):
    x, y = data()
    fit_raises(
        TypeError,
        rf"fit: x must be floating point, got dtype {np.dtype(dtype)}; "
        r"convert it, e.g\. x\.astype\(jnp\.float32\)",
        x.astype(dtype),
        y,
        no_training,
    )


def test_fit_x_not_an_array(no_training):
    x, y = data()
    fit_raises(
        TypeError,
        r"fit: x must be an array of numbers \(or a list or frame np\.asarray turns into one\), got list",
        [["a", "b"]] * len(y),
        y,
        no_training,
    )


# --- NaN or inf in the data: checked once at fit entry, on the host (also test_fit.py) -----


def _spoil(a, value, count=1):
    a = np.array(a)
    a.flat[:count] = value
    return a


@pytest.mark.parametrize(
    "which, value, count",
    [
        ("x", np.nan, 1),
        ("x", np.inf, 2),
        ("x", -np.inf, 1),
        ("y", np.nan, 3),
        ("x_val", np.inf, 1),
        ("y_val", np.nan, 1),
    ],
)
def test_non_finite_data(no_training, which, value, count):
    x, y = data()
    arrays = {"x": x, "y": y, "x_val": x, "y_val": y}
    arrays[which] = _spoil(arrays[which], value, count)
    fit_raises(
        ValueError,
        rf"fit: {which} holds {count} NaN or infinite value\(s\)",
        arrays["x"],
        arrays["y"],
        no_training,
        validation=(arrays["x_val"], arrays["y_val"]),
    )


def test_non_finite_data_as_jax_arrays(no_training):
    x, y = data()
    fit_raises(
        ValueError,
        r"fit: x holds 1 NaN or infinite value\(s\)",
        jnp.asarray(_spoil(x, np.nan)),
        jnp.asarray(y),
        no_training,
    )


# --- BCE targets outside [0, 1] (also test_losses.py) --------------------------------------


@pytest.mark.parametrize(
    "loss, name", [(fnnet.LossBCE(), "LossBCE"), (fnnet.LossBCEWithLogits(), "LossBCEWithLogits")]
)
@pytest.mark.parametrize(
    "spoil, values",
    [
        (lambda y: 2 * y, r"\[0\.0, 2\.0\]"),
        (lambda y: y - 1, r"\[-1\.0, 0\.0\]"),
        (lambda y: _spoil(y, 1 + 1e-6), r"\[0\.0, 1\.00000"),
    ],
    ids=["twice", "minus-one", "just-above-1"],
)
@pytest.mark.parametrize("where", ["y", "y_val"])
def test_bce_targets_outside_unit_interval(no_training, loss, name, spoil, values, where):
    x, y = data()
    bad = spoil(y)
    y_train, y_val = (bad, y) if where == "y" else (y, bad)
    fit_raises(
        ValueError,
        name + r": targets must be in \[0, 1\], got values in " + values,
        x,
        y_train,
        no_training,
        loss=loss,
        validation=(x, y_val),
    )


# --- labels out of range for cross-entropy (also test_losses.py) ----------------------------
# Checked by fit on the host; inside jit a label cannot be checked, so fit is the guard.


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda t: t + 1, r"labels must be in \[0, 3\) for 3 classes, got values in \[1, 3\]"),
        (lambda t: t - 1, r"labels must be in \[0, 3\) for 3 classes, got values in \[-1, 1\]"),
        (
            lambda t: -np.eye(3)[t],
            r"target rows \(probabilities or weights\) must be >= 0, "
            r"got values in \[-1\.0, -?0\.0\]",
        ),
        (
            lambda t: t.astype(np.float32),
            r"fit: y does not fit the model's output on x: "
            r"LossCrossEntropy: prediction and target must have the "
            r"same shape, got \(16, 3\) and \(16,\)",
        ),
    ],
    ids=["too-high", "negative", "negative-one-hot", "float-labels"],
)
def test_cross_entropy_labels_out_of_range(no_training, bad, match):
    x, _ = data()
    fit_raises(
        ValueError, match, x, bad(labels()), no_training, model=CLASSIFIER, loss=fnnet.LossCrossEntropy()
    )


def test_cross_entropy_validation_labels_out_of_range(no_training):
    x, _ = data()
    fit_raises(
        ValueError,
        r"LossCrossEntropy: labels must be in \[0, 3\) for 3 classes, "
        r"got values in \[0, 7\]",
        x,
        labels(),
        no_training,
        model=CLASSIFIER,
        loss=fnnet.LossCrossEntropy(),
        validation=(x, _spoil(labels(), 7)),
    )


# --- x and y of different lengths; an empty dataset -----------------------------------------


@pytest.mark.parametrize("batch_size", [None, 4])
def test_x_and_y_of_different_lengths(no_training, batch_size):
    x, y = data()
    for y_bad in (y[:-2], np.concatenate([y, y])):
        fit_raises(
            ValueError,
            rf"fit: x and y must have the same number of samples, "
            rf"got 16 and {len(y_bad)}",
            x,
            y_bad,
            no_training,
            batch_size=batch_size,
        )
        # A minibatch gather past the end of y would clamp, not fail: train checks first.
        run = fnnet.train(MODEL, LOSS, OPT, epochs=2, batch_size=batch_size)
        with pytest.raises(
            ValueError,
            match=rf"train: x and y must have the same number of "
            rf"samples, got 16 and {len(y_bad)}",
        ):
            run(init(), OPT.init(init()), x, y_bad, key=jax.random.key(0))
    fit_raises(
        ValueError,
        r"fit: x_val and y_val must have the same number of samples, got 5 "
        r"and 4",
        x,
        y,
        no_training,
        validation=(x[:5], y[:4]),
    )
    with pytest.raises(
        ValueError,
        match=r"LossBCE: prediction and target must have the same "
        r"shape, got \(16, 1\) and \(14, 1\)",
    ):
        via_train_step(jnp.asarray(x), jnp.asarray(y[:-2]))


def test_empty_dataset(no_training):
    x, y = data()
    fit_raises(ValueError, r"fit: x is empty \(0 samples\)", x[:0], y[:0], no_training)
    fit_raises(ValueError, r"fit: x_val is empty \(0 samples\)", x, y, no_training, validation=(x[:0], y[:0]))
    for batch_size in (None, 4):
        run = fnnet.train(MODEL, LOSS, OPT, epochs=2, batch_size=batch_size)
        with pytest.raises(ValueError, match=r"train: x is empty \(0 samples\)"):
            run(init(), OPT.init(init()), x[:0], y[:0], key=jax.random.key(0))
    empty = r"an empty batch: x of shape \(0, 2\) holds no values"
    for call in (via_train_step, via_value_and_grad):
        with pytest.raises(ValueError, match=empty):
            call(jnp.asarray(x[:0]), jnp.asarray(y[:0]))


# --- batch_size <= 0 or larger than the data (also test_train.py, test_fit.py) ---------------


@pytest.mark.parametrize(
    "batch_size, error, match",
    [
        (0, ValueError, r"batch_size must be in \[1, 16\] \(the number of samples\), got 0"),
        (-1, ValueError, r"batch_size must be in \[1, 16\] \(the number of samples\), got -1"),
        (17, ValueError, r"batch_size must be in \[1, 16\] \(the number of samples\), got 17"),
        (4.0, TypeError, r"batch_size must be an int or None, got 4\.0"),
        (True, TypeError, r"batch_size must be an int or None, got True"),
    ],
)
def test_bad_batch_size(no_training, batch_size, error, match):
    x, y = data()
    fit_raises(error, match, x, y, no_training, batch_size=batch_size)
    run = fnnet.train(MODEL, LOSS, OPT, epochs=2, batch_size=batch_size)
    with pytest.raises(error, match=match):
        run(init(), OPT.init(init()), x, y, key=jax.random.key(0))


# --- a params pytree or optimizer state from another model ----------------------------------

FOREIGN = (
    r"serial of 4 layers: params must be a tuple of 4 entries \(one per layer\), got "
    r"tuple of length 3"
)
SHAPES = (
    r"serial layer 0: Linear\(n_in=2, n_out=4\): params must have w \(2, 4\) and b "
    r"\(4,\), got w \(2, 5\) and b \(5,\)"
)


@pytest.mark.parametrize(
    "params, match",
    [
        (
            lambda: fnnet.serial(fnnet.Linear(2, 5), fnnet.Tanh(), fnnet.Linear(5, 1)).init(
                jax.random.key(0), (1, 2)
            )[1],
            FOREIGN,
        ),
        (lambda: init(OTHER), SHAPES),
        (
            lambda: ({**init()[0], "scale": jnp.ones(4)},) + init()[1:],
            r"serial layer 0: Linear\(n_in=2, n_out=4\): params must be a dict with keys 'w' and 'b'",
        ),
    ],
    ids=["3-layers", "other-sizes", "extra-key"],
)
def test_params_of_another_model(no_training, params, match):
    x, y = data()
    foreign = params()
    with pytest.raises(ValueError, match=match):
        MODEL.apply(foreign, x)
    with pytest.raises(ValueError, match=match):
        jax.jit(fnnet.value_and_grad(MODEL, LOSS))(foreign, x, y)
    state = OPT.init(foreign)
    with pytest.raises(ValueError, match=match):
        fnnet.train_step(MODEL, LOSS, OPT)(foreign, state, x, y)
    assert leaves_alive((foreign, state))  # raised while tracing: nothing was donated
    with pytest.raises(ValueError, match=match):
        fnnet.train(MODEL, LOSS, OPT, epochs=2)(foreign, state, x, y)
    fit_raises(ValueError, match, x, y, no_training, params=foreign)


@pytest.mark.parametrize(
    "opt, state, error, match",
    [
        (
            OPT,
            lambda: OPT.init(init(OTHER)),
            ValueError,
            r"SGD\.step: opt_state was made for other params \(another model\): slots\['velocity'\]",
        ),
        (
            OPT,
            lambda: fnnet.Adam(lr=0.1).init(init()),
            ValueError,
            r"SGD\.step: opt_state was made by another optimizer: it has hyperparams \['b1', 'b2', "
            r"'decay', 'eps', 'lr'\] and slots \['mu', 'nu'\], expected \['decay', 'lr', 'momentum', "
            r"'weight_decay'\] and \['velocity'\]",
        ),
        (
            fnnet.Adam(lr=0.1),
            lambda: OPT.init(init()),
            ValueError,
            r"Adam\.step: opt_state was made by another optimizer",
        ),
        (
            OPT,
            lambda: PLAIN.init(init()),
            ValueError,
            r"SGD\.step: opt_state was made by another optimizer: it has hyperparams \['decay', 'lr', "
            r"'weight_decay'\] and slots \[\], expected \['decay', 'lr', 'momentum', 'weight_decay'\] "
            r"and \['velocity'\]",
        ),
        (
            PLAIN,
            lambda: OPT.init(init()),
            ValueError,
            r"SGD\.step: opt_state was made by another optimizer: .* expected \['decay', 'lr', "
            r"'weight_decay'\] and \[\]",
        ),
        (
            OPT,
            lambda: tuple(OPT.init(init())),
            TypeError,
            {  # the step says where states come from; train_step and fit, before it, name opt.init
                "step": r"^SGD\.step: opt_state must be an OptState \(from SGD\.init\), got tuple",
                "train_step": r"^train_step: opt_state must be an OptState, from opt\.init\(params\) \(SGD\), "
                r"got tuple",
                "fit": r"^fit: opt_state must be an OptState, from opt\.init\(params\), got tuple",
            },
        ),
    ],
    ids=[
        "other-model",
        "Adam-state-to-SGD",
        "SGD-state-to-Adam",
        "plain-SGD-state-to-SGD",
        "SGD-state-to-plain-SGD",
        "not-an-OptState",
    ],
)
def test_optimizer_state_of_another_model_or_optimizer(no_training, opt, state, error, match):
    """`match`: one message for every owner, or each owner's."""
    x, y = data()
    params, foreign = init(), state()
    of = (lambda owner: match[owner]) if isinstance(match, dict) else (lambda owner: match)
    with pytest.raises(error, match=of("step")):
        opt.step(params, params, foreign)
    with pytest.raises(error, match=of("step")):
        jax.jit(opt.step)(params, params, foreign)
    with pytest.raises(error, match=of("train_step")):
        fnnet.train_step(MODEL, LOSS, opt)(params, foreign, x, y)
    assert leaves_alive((params, foreign))  # raised while tracing: nothing was donated
    fit_raises(error, of("fit"), x, y, no_training, opt=opt, opt_state=foreign)


# --- grads and params of different structure (also test_optim.py) ---------------------------


@pytest.mark.parametrize(
    "owner, opt",
    [("SGD", fnnet.SGD(lr=0.1, momentum=0.5)), ("Adam", fnnet.Adam(lr=0.1))],
    ids=["SGD", "Adam"],
)
def test_grads_of_another_structure_or_shape(owner, opt):
    params = init()
    state = opt.init(params)
    structure = rf"{owner}\.step: grads must have the structure of params"
    # Same structure, other shapes: p - lr * g would broadcast (1, 4) against (2, 4) silently.
    shapes = (
        rf"{owner}\.step: grads must have the shapes of params; params\[0\]\['w'\] is "
        r"\(2, 4\), its grad \(1, 4\)"
    )
    narrow = jax.tree.map(lambda a: a[:1] if a.ndim == 2 else a, params)
    for grads, match in (
        (list(params), structure),
        (params[:2], structure),
        (jax.tree.leaves(params), structure),
        (narrow, shapes),
    ):
        for step in (opt.step, jax.jit(opt.step)):
            with pytest.raises(ValueError, match=match):
                step(params, grads, state)


# --- bad hyperparameters: pinned next to their modules (test_optim.py, test_layers.py,
# test_losses.py, test_schedules.py, test_train.py) ----------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), r"fit: epochs must be an int >= 1, got 0"),
        (dict(epochs=2.0), r"fit: epochs must be an int >= 1, got 2\.0"),
        (dict(checkpoint_every=0), r"fit: checkpoint_every must be an int >= 1, got 0"),
    ],
)
def test_fit_bad_settings(no_training, kwargs, match):
    x, y = data()
    with pytest.raises(ValueError, match=match):
        fit(x, y, checkpoint=no_training, **{"checkpoint_every": 1, **kwargs})


# --- a schedule that returns a negative or non-finite lr -------------------------------------
# At step 0 the optimizer refuses it when built; later steps are checked, before any work, by
# fit and train, which know how many steps they will take.


@pytest.mark.parametrize("bad", [-0.1, 0.0, np.nan, np.inf], ids=["negative", "zero", "nan", "inf"])
@pytest.mark.parametrize("make", [fnnet.SGD, fnnet.Adam], ids=["SGD", "Adam"])
def test_schedule_with_a_bad_lr(no_training, bad, make):
    owner = make.__name__
    message = (
        rf"{owner}: the lr schedule must give a finite lr > 0 at every step, "
        rf"got {bad} at step {{}}"
    )
    with pytest.raises(ValueError, match=message.format(0)):
        make(lr=lambda t: jnp.full(jnp.shape(t), bad))
    opt = make(lr=lambda t: jnp.where(t < 10, 0.1, bad))  # fine for 10 steps
    x, y = data()
    # 4 epochs of 4 batches: steps 0..15
    fit_raises(ValueError, message.format(10), x, y, no_training, opt=opt, batch_size=4)
    run = fnnet.train(MODEL, LOSS, opt, epochs=4, batch_size=4)
    with pytest.raises(ValueError, match=message.format(10)):
        run(init(), opt.init(init()), x, y, key=jax.random.key(0))


def test_schedule_that_is_not_a_scalar():
    with pytest.raises(ValueError, match=r"SGD: the lr schedule must map a step to a scalar"):
        fnnet.SGD(lr=lambda t: 0.1)


# --- checkpoints: truncated, corrupt, from another model, not an npz (also test_checkpoint.py)


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint of MODEL and SGD: (path, params, opt_state)."""
    params = init()
    state = OPT.init(params)
    path = tmp_path / "run.npz"
    fnnet.save(
        path, params, state, metadata={"epochs_done": 2, "epochs": 4, "losses": [0.7, 0.6], "val_losses": []}
    )
    return path, params, state


UNREADABLE = r"is not a readable fnnet checkpoint \(truncated, corrupt or not an \.npz\)"


def _flip_compression_method(data):
    data = bytearray(data)
    data[data.index(b"PK\x01\x02") + 10] = 99  # first central-directory entry: unsupported method
    return bytes(data)


def _write(path, save, **arrays):
    with open(path, "wb") as file:
        save(file, **arrays)


def _replace_header(path, header):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["__fnnet__"] = header
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "spoil, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), UNREADABLE),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), UNREADABLE),
        (lambda p: p.write_bytes(b""), UNREADABLE),
        (lambda p: p.write_bytes(_flip_compression_method(p.read_bytes())), UNREADABLE),
        (lambda p: p.write_text("epoch 3, loss 0.25\n"), UNREADABLE),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2048)), UNREADABLE),
        (lambda p: _write(p, np.save, arr=np.zeros(3)), UNREADABLE + r": it holds one float64\[3\]"),
        (
            lambda p: _write(p, np.savez, w=np.zeros(3)),
            r"is an \.npz file but not an fnnet "
            r"checkpoint \(no '__fnnet__' entry\)",
        ),
        (lambda p: _replace_header(p, np.array("{not json")), r"has a corrupt header"),
        (lambda p: _replace_header(p, np.array(json.dumps({"format": 9}))), r"has format 9, expected 1"),
        (lambda p: _replace_header(p, np.array([{"format": 1}], dtype=object)), UNREADABLE),
    ],
    ids=[
        "half",
        "last-byte",
        "empty",
        "zip-field",
        "text",
        "noise",
        "npy",
        "plain-npz",
        "header-json",
        "header-format",
        "pickled-header",
    ],
)
def test_unreadable_checkpoint(checkpoint, spoil, match):
    path, params, state = checkpoint
    spoil(path)
    with pytest.raises(ValueError, match=match):
        fnnet.load(path, params, state)


def test_checkpoint_of_another_model_or_optimizer(checkpoint):
    path, params, state = checkpoint
    other = init(OTHER)
    with pytest.raises(
        ValueError,
        match=r"entry \"params\[0\]\['b'\]\" is float32\[4\], "
        r"expected float32\[5\]",
    ):
        fnnet.load(path, other, OPT.init(other))
    with pytest.raises(
        ValueError,
        match=r"has no entry \"opt_state\.hyperparams\['b1'\]\": it "
        r"was saved from another model or optimizer",
    ):
        fnnet.load(path, params, fnnet.Adam(lr=0.1).init(params))
    with pytest.raises(
        ValueError,
        match=r"has entries \[\"params\[2\]\['b'\]\", "
        r"\"params\[2\]\['w'\]\"\] that the templates do not",
    ):
        fnnet.load(path, params[:1])


# A pickled header is never unpickled: test_checkpoint.py (test_pickled_objects_are_never_unpickled).


@pytest.mark.parametrize(
    "spoil, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), UNREADABLE),
        (lambda p: fnnet.save(p, init(OTHER), OPT.init(init(OTHER))), r"it holds no fit metadata"),
    ],
    ids=["truncated", "other-model"],
)
def test_resume_from_a_bad_checkpoint_leaves_it_intact(checkpoint, monkeypatch, spoil, match):
    path, params, _ = checkpoint
    spoil(path)
    before = path.read_bytes()
    monkeypatch.setattr(fit_module, "_runner", lambda *a: pytest.fail("training started"))
    x, y = data()
    with pytest.raises(ValueError, match=match):
        fit(x, y, params=params, checkpoint=path, checkpoint_every=1, resume=True)
    assert path.read_bytes() == before


def test_bad_input_leaves_an_existing_checkpoint_intact(checkpoint, monkeypatch):
    """A later fit that fails on its input does not touch the checkpoint of an earlier run."""
    path, params, state = checkpoint
    before = path.read_bytes()
    monkeypatch.setattr(fit_module, "_runner", lambda *a: pytest.fail("training started"))
    x, y = data()
    with pytest.raises(ValueError, match=r"fit: x_val holds 1 NaN"):
        fit(
            x,
            y,
            params=params,
            checkpoint=path,
            checkpoint_every=1,
            resume=True,
            validation=(_spoil(x, np.nan), y),
        )
    assert path.read_bytes() == before
    assert fnnet.load(path, params, state)[2]["epochs_done"] == 2


# --- NumPy scalars are numbers too --------------------------------------------------------

# (build with Python numbers, build with NumPy scalars): sizes from array shapes and
# settings from float32 arrays arrive as NumPy scalars.
NUMPY_SCALARS = {
    "Linear": (lambda: fnnet.Linear(3, 2), lambda: fnnet.Linear(np.int64(3), np.int32(2))),
    "Conv2D": (
        lambda: fnnet.Conv2D(2, 4, 3, stride=2, padding=1),
        lambda: fnnet.Conv2D(
            np.int64(2), np.int64(4), (np.int32(3), 3), stride=np.int64(2), padding=np.int64(1)
        ),
    ),
    "ConvTranspose2D": (
        lambda: fnnet.ConvTranspose2D(2, 3, 2, 2),
        lambda: fnnet.ConvTranspose2D(np.int64(2), np.int64(3), np.int64(2), np.int64(2)),
    ),
    "MaxPool2D": (lambda: fnnet.MaxPool2D(2, 1), lambda: fnnet.MaxPool2D(np.int64(2), np.int16(1))),
    "AvgPool2D": (lambda: fnnet.AvgPool2D(2), lambda: fnnet.AvgPool2D(np.uint8(2))),
    "Upsample2D": (lambda: fnnet.Upsample2D(2), lambda: fnnet.Upsample2D(np.int64(2))),
    "BatchNorm": (
        lambda: fnnet.BatchNorm(0.8, 1e-3),
        lambda: fnnet.BatchNorm(np.float32(0.8), np.float64(1e-3)),
    ),
    "Linear-jax": (lambda: fnnet.Linear(3, 2), lambda: fnnet.Linear(jnp.int32(3), jnp.asarray(2))),
    "Conv2D-jax": (
        lambda: fnnet.Conv2D(2, 4, 3, stride=2),
        lambda: fnnet.Conv2D(jnp.int32(2), 4, (jnp.int32(3), 3), stride=jnp.int32(2)),
    ),
    "BatchNorm-jax": (lambda: fnnet.BatchNorm(0.8), lambda: fnnet.BatchNorm(jnp.float32(0.8))),
}


@pytest.mark.parametrize("name", sorted(NUMPY_SCALARS))
def test_layers_take_numpy_scalars_as_python_numbers(name):
    python, numpy = (make() for make in NUMPY_SCALARS[name])
    shape = (2, 3) if name.startswith("Linear") else (2, 6, 6, 2)
    key = jax.random.key(0)
    out_python, params_python = python.init(key, shape)
    out_numpy, params_numpy = numpy.init(key, shape)
    assert out_numpy == out_python and all(isinstance(d, int) for d in out_numpy)
    x = jax.random.normal(jax.random.key(1), shape)
    np.testing.assert_array_equal(
        numpy.apply(params_numpy, x, train=True), python.apply(params_python, x, train=True)
    )


def test_other_settings_take_numpy_scalars():
    assert fnnet.Dropout(np.float32(0.25)) == fnnet.Dropout(0.25)  # the same layer, shared
    p, t = jnp.array([0.0, 0.3, 1.0]), jnp.array([1.0, 0.0, 1.0])
    assert fnnet.LossBCE(eps=np.float64(1e-6)).value(p, t) == fnnet.LossBCE(eps=1e-6).value(p, t)
    assert float(fnnet.schedules.step(np.float32(0.4), np.float32(0.5), np.int64(10))(10)) == pytest.approx(
        0.2
    )
    x, y = fnnet.data.disk(jax.random.key(0), np.int64(5))
    assert x.shape == (5, 2) and y.shape == (5, 1)
    numpy_sgd = fnnet.SGD(lr=np.float32(0.1), momentum=np.float32(0.5), nesterov=True)
    python_sgd = fnnet.SGD(lr=0.1, momentum=0.5, nesterov=True)
    params = init()
    assert numpy_sgd.step == python_sgd.step  # one update rule, one program
    assert jax.tree.map(float, numpy_sgd.init(params).hyperparams) == jax.tree.map(
        float, python_sgd.init(params).hyperparams
    )
    # 0-d JAX arrays, as they come out of jnp arithmetic
    assert fnnet.Dropout(jnp.float32(0.25)) == fnnet.Dropout(0.25)
    assert float(fnnet.schedules.exponential(jnp.float32(0.1), 0.5)(2)) == pytest.approx(0.025)
    cosine = fnnet.schedules.cosine(0.1, jnp.int32(10), final_lr=jnp.float32(0.01))
    assert float(cosine(10)) == pytest.approx(0.01)
    bce = fnnet.LossBCE(eps=jnp.float32(1e-6))
    assert float(bce.value(jnp.zeros(1), jnp.ones(1))) == pytest.approx(-np.log(1e-6), rel=1e-5)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fnnet.Linear(np.bool_(True), 2), TypeError, "n_in must be an int, got np.True_"),
        (
            lambda: fnnet.Conv2D(1, 2, np.float64(3)),
            TypeError,
            "kernel_size must be an int or a pair of ints",
        ),
        (lambda: fnnet.MaxPool2D(np.bool_(True)), TypeError, "must be an int"),
        (lambda: fnnet.Dropout(np.bool_(False)), TypeError, "rate must be a float"),
        (lambda: fnnet.data.disk(jax.random.key(0), np.float64(5)), ValueError, "n must be an int >= 1"),
        (
            lambda: fnnet.Linear(jnp.float32(2), 3),
            TypeError,
            r"n_in must be an int, got an array of dtype float32 and shape \(\)",
        ),
        (
            lambda: fnnet.Linear(jnp.array([2]), 3),
            TypeError,
            r"n_in must be an int, got an array of dtype int(32|64) and shape \(1,\)",
        ),
        (
            lambda: jax.jit(lambda n: fnnet.Linear(n, 3))(2),
            TypeError,
            r"n_in must be an int, got a traced array of dtype int(32|64)",
        ),
        (lambda: fnnet.Dropout(jnp.bool_(True)), TypeError, "rate must be a float"),
    ],
)
def test_numpy_bools_and_floats_are_not_sizes(make, error, match):
    with pytest.raises(error, match=match):
        make()


class _LongRepr:
    def __repr__(self):
        return "x" * 500


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: fnnet.Linear(np.zeros((3, 3)), 2),
            r"n_in must be an int, got an array of dtype float64 and shape \(3, 3\)$",
        ),
        (
            lambda: fnnet.serial(fnnet.Linear(2, 2), _LongRepr()),
            r"argument 1 must be a Layer, got _LongRepr$",
        ),
        (lambda: fnnet.Dropout("0.5"), r"rate must be a float in \[0, 1\), got '0.5' \(str\)$"),
        (lambda: fnnet.Residual(len), r"layer must be a Layer, got the function len$"),
    ],
)
def test_errors_name_what_came_by_dtype_and_shape_name_or_short_repr(make, match):
    with pytest.raises(TypeError, match=match):
        make()


# --- keys where a layer draws -------------------------------------------------------------

_DROPPING = fnnet.serial(fnnet.Linear(4, 3), fnnet.Dropout(0.5))


@functools.cache
def _dropping_params():
    return _DROPPING.init(jax.random.key(0), (2, 4))[1]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda key: fnnet.Dropout(0.5).apply((), jnp.ones((2, 3)), train=True, key=key),
            TypeError,
            r"Dropout\(rate=0.5\): key must be a PRNG key such as jax.random.key\(0\), got 0 \(int\)",
        ),
        (
            lambda key: fnnet.Dropout(0.5).vjp((), jnp.ones((2, 3)), jnp.ones((2, 3)), train=True, key=key),
            TypeError,
            r"Dropout\(rate=0.5\): key must be a PRNG key",
        ),
        (
            lambda key: _DROPPING.apply(_dropping_params(), jnp.ones((2, 4)), train=True, key=key),
            TypeError,
            r"serial: key must be a PRNG key such as jax.random.key\(0\), got 0 \(int\)",
        ),
        (lambda key: fnnet.data.disk(key, 10), TypeError, r"disk: key must be a PRNG key"),
    ],
)
def test_a_key_that_is_not_one_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call(0)


def test_value_and_grad_with_several_keys_says_one():
    with pytest.raises(ValueError, match=r"serial: key must be one PRNG key, got an array of 2 keys"):
        fnnet.value_and_grad(_DROPPING, fnnet.LossMSE())(
            _dropping_params(), jnp.ones((2, 4)), jnp.ones((2, 3)), key=jax.random.split(jax.random.key(0), 2)
        )


# --- a vjp's dy must have the output's shape ------------------------------------------------

# (layer, input shape, train): dy of a broadcastable but wrong shape would give a
# silently wrong gradient (or one of the wrong shape).
COTANGENT_CASES = {
    "Linear": (fnnet.Linear(3, 2), (4, 3), False),
    "ReLU": (fnnet.ReLU(), (4, 3), False),
    "LeakyReLU": (fnnet.LeakyReLU(), (4, 3), False),
    "Softmax": (fnnet.Softmax(), (4, 3), False),
    "LogSoftmax": (fnnet.LogSoftmax(), (4, 3), False),
    "BatchNorm-train": (fnnet.BatchNorm(), (4, 3), True),
    "BatchNorm-inference": (fnnet.BatchNorm(), (4, 3), False),
    "LayerNorm": (fnnet.LayerNorm(), (4, 3), False),
    "Dropout-train": (fnnet.Dropout(0.5), (4, 3), True),
    "Residual": (fnnet.Residual(fnnet.Tanh()), (4, 3), False),
    "serial": (fnnet.serial(fnnet.Linear(3, 2), fnnet.Sigmoid()), (4, 3), False),
    "Conv2D": (fnnet.Conv2D(2, 3, 3), (4, 5, 5, 2), False),
    "ConvTranspose2D": (fnnet.ConvTranspose2D(2, 3, 2, 2), (4, 3, 3, 2), False),
    "MaxPool2D": (fnnet.MaxPool2D(2), (4, 4, 4, 2), False),
    "AvgPool2D": (fnnet.AvgPool2D(2), (4, 4, 4, 2), False),
    "Upsample2D": (fnnet.Upsample2D(2), (4, 2, 2, 2), False),
    "Flatten": (fnnet.Flatten(), (4, 2, 2, 2), False),
}


@pytest.mark.parametrize("name", sorted(COTANGENT_CASES))
def test_vjp_refuses_dy_of_another_shape_than_the_output(name):
    layer, shape, train = COTANGENT_CASES[name]
    out_shape, params = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), shape)
    key = jax.random.key(2)
    dparams, dx = layer.vjp(params, x, jnp.ones(out_shape), train=train, key=key)  # the right shape
    assert dx.shape == shape
    for wrong in [(1,) + tuple(out_shape[1:]), tuple(out_shape[:-1]), tuple(out_shape[:-1]) + (1,)]:
        if wrong == tuple(out_shape):
            continue
        with pytest.raises(
            ValueError, match=r"expected dy of the output's shape " + re.escape(str(tuple(out_shape)))
        ):
            layer.vjp(params, x, jnp.ones(wrong), train=train, key=key)


# --- late errors made early: train_step, save, schedules, custom optimizers ----------------


def _rms_with(output):
    """An RMSProp-like optimizer whose rule returns `output(p, g, slots)`."""
    return fnnet.optimizer("R", lambda p, g, slots, h, lr, t: output(p, g, slots), 0.1, ["ms"])


def _step_of(opt):
    """A call of `opt`'s step on CLASSIFIER's params, drawn when it is called."""

    def call():
        params = init(CLASSIFIER)
        return opt.step(params, params, opt.init(params))

    return call


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: fnnet.train_step(MODEL, LOSS, OPT)(init(), None, jnp.ones((N, 2)), jnp.ones((N, 1))),
            TypeError,
            r"train_step: opt_state must be an OptState, from opt.init\(params\) \(SGD\), got None \(NoneType\)",
        ),
        (
            lambda: fnnet.train_step(MODEL, LOSS, OPT)(
                init(),
                OPT.init(init()),
                jnp.ones((N, 2)),
                [[0.0]] * N,
            ),
            TypeError,
            r"train_step: y must be an array \(jnp.asarray it\), got list",
        ),
        (
            lambda: fnnet.save("never-written.npz", {"k": jax.random.key(0)}),
            TypeError,
            r"save: params\['k'\] is a PRNG key array; save its raw words, jax.random.key_data\(key\)",
        ),
        (
            lambda: fnnet.schedules.cosine(0.1, 10, final_lr=None),
            TypeError,
            r"schedules.cosine: final_lr must be a number, got None \(NoneType\)",
        ),
        (
            lambda: fnnet.optimizer("R", lambda *a: a[0], 0.1, "ms"),
            TypeError,
            r"R: slots must be a list of names, such as \['ms'\], got 'ms' \(str\)",
        ),
        (
            _step_of(_rms_with(lambda p, g, s: (p - g, {}))),
            ValueError,
            r"R: the update rule must return new_slots with the slots \['ms'\], got \[\]",
        ),
        (
            _step_of(_rms_with(lambda p, g, s: p - g)),
            TypeError,
            r"R: the update rule must return \(new_p, new_slots\), got an array",
        ),
        (
            _step_of(_rms_with(lambda p, g, s: ((p - g)[..., None], s))),
            ValueError,
            r"R: the update rule returned new_p of shape \(3, 1\) for a param of shape \(3,\)",
        ),
        (
            _step_of(_rms_with(lambda p, g, s: (p - g, {"ms": s["ms"][None]}))),
            ValueError,
            r"R: the update rule returned slot 'ms' of shape \(1, 3\) for a param of shape \(3,\)",
        ),
    ],
)
def test_late_errors_are_raised_early_and_named(call, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # save, if it ever wrote, writes here
    with pytest.raises(error, match=match):
        call()
    assert not os.listdir(tmp_path)


def test_a_batch_of_one_is_named_in_the_users_shape_on_the_feature_major_path():
    """Full-batch training runs a BatchNorm model's feature-major twin on (features,
    batch): its error must still speak of the (batch, features) the user passed."""
    model = fnnet.serial(fnnet.Linear(2, 4), fnnet.BatchNorm(), fnnet.Linear(4, 1))
    x = jnp.ones((1, 2))
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(ValueError, match=r"got input of shape \(1, 4\) \(a batch of one"):
        fnnet.value_and_grad(model, fnnet.LossMSE())(params, x, jnp.ones((1, 1)))


# --- a second adversarial pass: more of each kind -------------------------------------------


def _linear_with_vjp(vjp):
    lin = fnnet.Linear(3, 2)
    return fnnet.Layer(
        lin.init, lin.apply, lambda params, x, dy, *, train=False, key=None: vjp(lin, params, x, dy)
    )


@pytest.mark.parametrize(
    "dparams, shown",
    [
        (lambda d: {}, r"PyTreeDef\(\{\}\)"),
        (lambda d: None, r"PyTreeDef\(None\)"),
        (lambda d: [d["b"], d["w"]], ""),
    ],
    ids=["empty", "None", "a list"],
)
def test_a_vjp_whose_dparams_do_not_mirror_the_params_is_named(dparams, shown):
    layer = _linear_with_vjp(lambda lin, p, x, dy: (dparams(lin.vjp(p, x, dy)[0]), lin.vjp(p, x, dy)[1]))
    model = fnnet.Sequential(fnnet.Tanh(), layer)
    x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(
        TypeError, match=rf"serial layer 1: .*vjp returned dparams of structure {shown}.*mirror params"
    ):
        fnnet.fit(model, fnnet.LossMSE(), fnnet.SGD(0.1), params, x, y, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"vjp returned dparams of structure .* mirror params"):
        fnnet.value_and_grad(layer, fnnet.LossMSE())(params[1], x, y)


def test_init_returning_params_then_shape_is_named():
    lin = fnnet.Linear(3, 3)
    swapped = fnnet.Layer(lambda key, shape: ((), tuple(shape)), lin.apply, lin.vjp)
    with pytest.raises(
        TypeError, match=r"serial layer 0: .*init returned params \(4, 3\), plain ints like a shape"
    ):
        fnnet.Sequential(swapped, fnnet.Linear(3, 1)).init(jax.random.key(0), (4, 3))


def test_a_layer_without_its_vjp_is_refused_when_built():
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'vjp'"):
        fnnet.Layer(fnnet.Tanh().init, fnnet.Tanh().apply)


def test_params_donated_to_a_step_and_applied_again_are_named():
    model = fnnet.Sequential(fnnet.Linear(3, 1))
    params = model.init(jax.random.key(0), (4, 3))[1]
    opt = fnnet.SGD(0.1)
    step = fnnet.train_step(model, fnnet.LossMSE(), opt)
    new_params, _, _ = step(params, opt.init(params), jnp.ones((4, 3)), jnp.ones((4, 1)))
    with pytest.raises(
        ValueError, match=r"params hold arrays that were donated .* jax.tree.map\(jnp.copy, params\)"
    ):
        model.apply(params, jnp.ones((4, 3)))
    assert model.apply(new_params, [[1.0, 2.0, 3.0]]).shape == (1, 1)  # a list is an array too


def test_update_state_takes_a_layer_and_array_likes():
    model = fnnet.Sequential(fnnet.Linear(3, 3), fnnet.BatchNorm())
    params = model.init(jax.random.key(0), (4, 3))[1]
    with pytest.raises(TypeError, match=r"update_state: model must be a Layer, got LossMSE\(\)"):
        fnnet.update_state(fnnet.LossMSE(), params, jnp.ones((4, 3)))
    x = np.random.default_rng(0).normal(size=(4, 3))
    moved = fnnet.update_state(model, params, x.tolist())
    expected = fnnet.update_state(model, params, jnp.asarray(x))  # the list as NumPy reads it: float64
    jax.tree.map(np.testing.assert_array_equal, moved, expected)


@pytest.mark.parametrize(
    "make", [fnnet.as_jax, lambda m, train: fnnet.value_and_grad(m, fnnet.LossMSE(), train=train)]
)
def test_train_must_be_a_bool(make):
    with pytest.raises(TypeError, match=r"train must be a Python bool .*got 'False' \(str\)"):
        make(fnnet.Sequential(fnnet.Dropout(0.5)), train="False")


@pytest.mark.parametrize(
    "make, error, says",
    [
        (
            lambda: fnnet.Linear(2, 3, dtype="foo"),
            TypeError,
            r"Linear: dtype must be a floating dtype, .*got 'foo'",
        ),
        (
            lambda: fnnet.LeakyReLU(10**400),
            ValueError,
            r"LeakyReLU: slope must be finite, got an int too large",
        ),
        (
            lambda: fnnet.ELU(10**400),
            ValueError,
            r"ELU: alpha must be finite, got an int too large for a float",
        ),
        (
            lambda: fnnet.BatchNorm(momentum=10**400),
            ValueError,
            r"momentum must be in \[0, 1\), got an int too",
        ),
        (
            lambda: fnnet.Adam(0.1, clip_norm=10**400),
            ValueError,
            r"Adam: clip_norm must be > 0, got an int too",
        ),
    ],
)
def test_settings_a_float_cannot_hold_are_named(make, error, says):
    with pytest.raises(error, match=says):
        make()


def test_params_a_train_step_donated_are_named_by_fit_train_and_evaluate():
    x, y = fnnet.data.disk(jax.random.key(1), N)
    params = MODEL.init(jax.random.key(0), x.shape)[1]
    fnnet.train_step(MODEL, LOSS, OPT)(params, OPT.init(params), x, y)  # donates params
    says = r"params hold arrays that were donated to a train_step and deleted"
    with pytest.raises(ValueError, match=rf"fit: {says}"):
        fnnet.fit(MODEL, LOSS, OPT, params, x, y, 1, progress=False)
    with pytest.raises(ValueError, match=rf"train: {says}"):
        fnnet.train(MODEL, LOSS, OPT, 1)(params, OPT.init(MODEL.init(jax.random.key(0), x.shape)[1]), x, y)
    with pytest.raises(ValueError, match=rf"evaluate: {says}"):
        fnnet.evaluate(MODEL, params, x, y, ["mse"])


def test_evaluate_names_nan_params_without_speaking_of_training():
    x, y = fnnet.data.disk(jax.random.key(1), N)
    params = jax.tree.map(lambda a: a * jnp.nan, MODEL.init(jax.random.key(0), x.shape)[1])
    with pytest.raises(
        ValueError, match=r"evaluate: params\[0\]\['b'\] holds 4 NaN .*outputs would not be finite"
    ):
        fnnet.evaluate(MODEL, params, x, y, ["mse"])


def test_spread_and_sweep_name_a_tree_without_arrays_and_repeated_devices():
    with pytest.raises(ValueError, match=r"spread: tree has no arrays"):
        fnnet.spread({})
    with pytest.raises(ValueError, match=r"spread: devices must be distinct"):
        fnnet.spread({"w": jnp.ones((2, 3))}, [jax.devices()[0]] * 2)


def test_a_layer_number_past_float32_is_refused():
    with pytest.raises(
        ValueError,
        match=r"LeakyReLU: slope must be finite in float32 \(at most 3\.4e38 in size\), got 1e\+39",
    ):
        fnnet.LeakyReLU(1e39)
