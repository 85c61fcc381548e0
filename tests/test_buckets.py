"""Runs padded to buckets (`fnnet._buckets`): one program for every data size in a bucket and
every layer number, and padding that changes nothing: not a loss, a gradient, a batch
statistic or a shuffle.

Oracles: JAX's autodiff of the unpadded forward (BatchNorm's masked VJP, the weighted
losses), and the same run on unpadded data (`run_size` bypassed).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, count_compilations, device

import fnnet
from fnnet._buckets import bucket, padded_samples, run_size
from fnnet.grad import shared_loss
from fnnet._loop import Watching, _runner


@pytest.mark.parametrize("per_doubling, exact", [(8, 16), (32, 64)])
def test_buckets_pad_by_at_most_a_fraction_and_grow_with_n(per_doubling, exact):
    sizes = [bucket(n, per_doubling=per_doubling) for n in range(1, 5000)]
    assert sizes[:exact] == list(range(1, exact + 1))  # small n exactly
    for n, size in enumerate(sizes, start=1):
        assert n <= size <= n * (1 + 1 / per_doubling), (n, size)
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert len(set(sizes[1024:2048])) == per_doubling  # buckets a doubling


def test_run_sizes_minibatch_full_batch_and_mesh():
    assert run_size(455, 32) == run_size(456, 32) == 480  # a 5-fold split of 569 (455, 456)
    assert run_size(455, None) == run_size(456, None) == 456  # full batch: finer buckets
    assert run_size(1000, None) == 1008 and run_size(1000, None, shards=3) == 1008
    assert run_size(1001, None, shards=5) == 1010


# --- one program ------------------------------------------------------------------------------

X, Y = (np.asarray(a) for a in fnnet.data.disk(jax.random.key(3), 569))


def _model(rate=0.2, momentum=0.9, eps=1e-5, slope=0.01, alpha=1.0):
    return fnnet.Sequential(
        fnnet.Linear(2, 16),
        fnnet.BatchNorm(momentum=momentum, eps=eps),
        fnnet.LeakyReLU(slope),
        fnnet.Dropout(rate),
        fnnet.Linear(16, 16),
        fnnet.ELU(alpha),
        fnnet.Linear(16, 1),
    )


PARAMS = _model().init(jax.random.key(0), (1, 2))[1]
LOSS = fnnet.LossBCEWithLogits()


def _fit(model, x, y, validation, batch_size=32, epochs=3, opt=None, **kwargs):
    return fnnet.fit(
        model,
        LOSS,
        opt or fnnet.Adam(lr=1e-3),
        PARAMS,
        x,
        y,
        epochs,
        batch_size=batch_size,
        validation=validation,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("batch_size", [32, None])
def test_a_cross_validation_and_its_settings_compile_one_program(batch_size, tmp_path):
    """Each fold of a 5-fold split (training sizes 455 and 456, held-out 113 and 114) with
    another Dropout rate, BatchNorm momentum and eps, LeakyReLU slope, ELU alpha, lr,
    epochs and checkpoint settings: nothing compiles after the first fit."""
    folds = np.array_split(np.random.default_rng(0).permutation(len(X)), 5)
    settings = [
        {},
        dict(rate=0.5, momentum=0.5),
        dict(eps=1e-3, slope=0.2),
        dict(alpha=0.5, rate=0.0),
        dict(rate=0.1),
    ]
    for i, (held, changes) in enumerate(zip(folds, settings)):
        kept = np.setdiff1d(np.arange(len(X)), held)
        extra = {} if i < 3 else dict(checkpoint=tmp_path / f"fold{i}.npz", checkpoint_every=2)
        with count_compilations() as compiled:
            result = _fit(
                _model(**changes),
                X[kept],
                Y[kept],
                (X[held], Y[held]),
                batch_size,
                epochs=3 + i,
                opt=fnnet.Adam(lr=1e-3 * (i + 1)),
                **extra,
            )
        assert np.all(np.isfinite(result.losses)) and len(result.losses) == 3 + i
        if i:
            assert compiled == [], (i, compiled)
        else:
            assert any("_run" in name for name in compiled), compiled  # the counter sees it


def test_another_bucket_or_architecture_compiles():
    _fit(_model(), X[:100], Y[:100], None)
    with count_compilations() as compiled:
        _fit(_model(), X[:200], Y[:200], None)  # 100 -> 104, 200 -> 208: another bucket
    assert compiled


# --- padding changes nothing ------------------------------------------------------------------


def _run_padded(model, x, y, size, batch_size, filler=None, epochs=3, opt=fnnet.Adam(lr=1e-2)):
    """fit's compiled run on (x, y) padded to `size` rows: copies of the first (as fit pads)
    or `filler` rows (anything: they weigh 0)."""
    px, py, weights = padded_samples(x, y, size)
    if filler is not None:
        px, py = px.copy(), py.copy()
        px[len(x) :], py[len(x) :] = filler, 1.0
    params = model.init(jax.random.key(0), (1, 2))[1]
    return _runner(None)(
        model,
        LOSS,
        opt.step,
        batch_size,
        True,
        epochs,
        Watching(),
        params,
        opt.init(params),
        tuple(device(a) for a in (px, py, weights)),
        jax.random.key(4),
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("batch_size", [32, 7])
def test_minibatch_runs_are_bitwise_the_same_whatever_the_padding(batch_size):
    """The samples' order, batches, draws and recorded losses do not depend on the padding:
    padded to its bucket, to more (past 4096 rows too, where the shuffle chooses its sort by
    where the samples lie), or with other values in the padding, the same bits."""
    x, y = X[:455], Y[:455]
    want = _run_padded(_model(), x, y, run_size(455, batch_size), batch_size)
    sizes = (run_size(455, batch_size) + 2 * batch_size, 1024, 4608)
    for size in (s // batch_size * batch_size for s in sizes):
        for filler in (None, 1e3):
            got = _run_padded(_model(), x, y, size, batch_size, filler)
            assert_trees_equal(
                (got.params, got.opt_state, got.losses), (want.params, want.opt_state, want.losses)
            )


@pytest.mark.parametrize("batch_size", [None, 32])
def test_padded_runs_match_the_unpadded_run(batch_size):
    """Against the same run on the samples alone (no padding at all): equal up to float
    rounding, BatchNorm's statistics and its running ones included. (SGD: Adam divides by
    the gradient's size, and the bias before a BatchNorm has a gradient of rounding noise
    alone, which it would turn into steps of lr.)"""
    x, y = X[:457], Y[:457]
    exact = 457 if batch_size is None else 457 + (-457 % batch_size)
    if batch_size is not None:  # the unpadded reference needs whole batches: 457 = 14 * 32 + 9
        x, y = X[: 14 * 32], Y[: 14 * 32]
        exact = 14 * 32
    opt = fnnet.SGD(lr=0.3)
    want = _run_padded(_model(), x, y, exact, batch_size, opt=opt)
    for filler in (None, -7.0):
        got = _run_padded(_model(), x, y, 512, batch_size, filler=filler, opt=opt)
        for a, b in zip(
            jax.tree.leaves((got.params, got.losses)), jax.tree.leaves((want.params, want.losses))
        ):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_the_last_smaller_batch_matches_its_unpadded_step():
    """A last batch of 9 real samples padded to 32: one step equals the step on the 9 alone
    (train_step, no padding), BatchNorm's batch statistics and Dropout's draws included."""
    model, opt, key = _model(), fnnet.SGD(lr=0.1), jax.random.key(2)
    params = model.init(jax.random.key(0), (1, 2))[1]
    x, y = X[:9], Y[:9]
    step = fnnet.train_step(model, LOSS, opt)
    got = _runner(None)(
        model,
        LOSS,
        opt.step,
        32,
        True,
        1,
        Watching(),
        params,
        opt.init(params),
        tuple(device(a) for a in padded_samples(x, y, 32)),
        key,
        None,
        None,
        None,
        None,
    )
    # the run shuffles the 9 first: the same step on them in its order
    order = np.argsort(
        np.where(
            np.arange(32) < 9,
            np.asarray(jax.random.bits(jax.random.fold_in(key, 0), (32,), jnp.uint32)) >> 1,
            2**32 - 1,
        ),
        kind="stable",
    )[:9]
    want, _, want_loss = step(
        jax.tree.map(jnp.copy, params), opt.init(params), device(x[order]), device(y[order]), key=key
    )
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.losses[0], want_loss, rtol=1e-5)


# --- BatchNorm's masked statistics against the oracle -----------------------------------------


@pytest.mark.parametrize("shape", [(11, 5), (6, 3, 3, 4)], ids=["dense", "images"])
@pytest.mark.parametrize("seed", range(3))
def test_batchnorm_with_a_mask_is_batchnorm_of_the_samples_that_count(shape, seed):
    """apply, vjp and update_state of padded x with a mask: the samples' rows equal those of
    the samples alone, the vjp against jax.vjp of the unpadded forward, the padding's dx 0."""
    rng = np.random.default_rng(seed)
    layer = fnnet.BatchNorm(momentum=0.7, eps=1e-3)
    params = layer.init(jax.random.key(seed), shape)[1]
    params = {
        **params,
        "scale": device(rng.normal(size=shape[-1:])),
        "shift": device(rng.normal(size=shape[-1:])),
    }
    n = shape[0]
    x = rng.normal(size=shape) * 3 + 1
    pad = rng.normal(size=(4,) + shape[1:]) * 100  # anything: it must not count
    mask = device(np.arange(n + 4) < n)
    padded = device(np.concatenate([x, pad]))
    dy = rng.normal(size=shape)
    dy_padded = device(np.concatenate([dy, np.zeros_like(pad)]))

    y = layer.apply(params, padded, train=True, mask=mask)
    want_y, vjp = jax.vjp(lambda p, x: layer.apply(p, x, train=True), params, device(x))
    np.testing.assert_allclose(y[:n], want_y, rtol=1e-10, atol=1e-10)
    dparams, dx = layer.vjp(params, padded, dy_padded, train=True, mask=mask)
    want_dparams, want_dx = vjp(device(dy))
    np.testing.assert_allclose(dx[:n], want_dx, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(dx[n:], 0)
    for a, b in zip(jax.tree.leaves(dparams), jax.tree.leaves(want_dparams)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    moved = layer.update_state(params, padded, mask=mask)
    want_moved = layer.update_state(params, device(x))
    for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(want_moved)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_model_passes_the_mask_to_its_batchnorm_alone():
    model = fnnet.Sequential(fnnet.Linear(2, 3), fnnet.Residual(fnnet.BatchNorm()), fnnet.ReLU())
    assert model.uses_mask and model.layers[1].uses_mask and not model.layers[0].uses_mask
    assert not fnnet.Sequential(fnnet.Linear(2, 3), fnnet.Dropout(0.1)).uses_mask
    with pytest.raises(ValueError, match=r"BatchNorm: mask must have shape \(5,\)"):
        fnnet.BatchNorm().apply(
            fnnet.BatchNorm().init(jax.random.key(0), (5, 2))[1],
            jnp.ones((5, 2)),
            train=True,
            mask=jnp.ones(4),
        )


# --- the losses weighted by sample ------------------------------------------------------------

LOSSES = {
    "mse": (fnnet.LossMSE(), lambda y, t: jnp.mean((y - t) ** 2, axis=-1)),
    "bce": (
        fnnet.LossBCE(),
        lambda p, t: -jnp.mean(t * jnp.log(p) + (1 - t) * jnp.log1p(-p), axis=-1),
    ),
    "bce_logits": (
        fnnet.LossBCEWithLogits(),
        lambda z, t: jnp.mean(jnp.logaddexp(0, z) - t * z, axis=-1),
    ),
    "cross_entropy": (
        fnnet.LossCrossEntropy(),
        lambda z, t: -jnp.take_along_axis(jax.nn.log_softmax(z), t[:, None], axis=-1)[:, 0],
    ),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("seed", range(3))
def test_shared_loss_is_the_weighted_mean_and_its_gradient(name, seed):
    """Against jax.value_and_grad of sum(share * per-sample loss), written out."""
    loss, per_sample = LOSSES[name]
    rng = np.random.default_rng(seed)
    n, k = 7, 3
    if name == "cross_entropy":
        y, t = rng.normal(size=(n, k)), rng.integers(0, k, n)
    elif name == "bce":
        y, t = rng.uniform(0.05, 0.95, (n, k)), rng.uniform(0, 1, (n, k))
    else:
        y, t = rng.normal(size=(n, k)), rng.uniform(0, 1, (n, k))
    weights = rng.uniform(0, 2, n) * (rng.uniform(size=n) > 0.3)
    share = device(weights / weights.sum())
    value, dy = shared_loss(loss, device(y), device(t), share)
    want, want_dy = jax.value_and_grad(lambda y: jnp.sum(share * per_sample(y, device(t))))(device(y))
    np.testing.assert_allclose(value, want, rtol=1e-10)
    np.testing.assert_allclose(dy, want_dy, rtol=1e-9, atol=1e-12)
    # equal shares: the loss itself
    value, dy = shared_loss(loss, device(y), device(t), device(np.full(n, 1 / n)))
    np.testing.assert_allclose(value, loss.value(device(y), device(t)), rtol=1e-12)
    np.testing.assert_allclose(dy, loss.grad(device(y), device(t)), rtol=1e-12, atol=1e-15)


# --- numbers are data: per member in a sweep, and in the input's dtype ------------------------


def test_a_sweep_gives_each_member_its_own_numbers_in_one_program():
    """Three members of one structure, each its own Dropout rate, LeakyReLU slope, BatchNorm
    momentum and ELU alpha: each equals its own run alone, bit for bit, and another set of
    numbers compiles nothing."""
    x, y = X[:200], Y[:200]
    numbers = [
        dict(rate=0.0, slope=0.01),
        dict(rate=0.3, slope=0.2, momentum=0.5),
        dict(rate=0.1, alpha=0.5, eps=1e-3),
    ]
    models = [_model(**n) for n in numbers]
    keys = jax.random.split(jax.random.key(0), 3)
    params = fnnet.init_many(keys, models[0], x.shape)
    opt = fnnet.Adam(lr=1e-2)
    run = fnnet.train(models[0], LOSS, opt, epochs=4, batch_size=32)
    states = jax.vmap(opt.init)(params)
    result = fnnet.sweep(run, params, states, x, y, keys=keys, models=models, devices=jax.devices()[:1])
    for m, model in enumerate(models):
        own = jax.tree.map(lambda a: a[m], params)
        alone = fnnet.train(model, LOSS, opt, epochs=4, batch_size=32)(own, opt.init(own), x, y, key=keys[m])
        assert_trees_equal(
            (jax.tree.map(lambda a: a[m], result.params), result.losses[m]), (alone[0], alone[2])
        )
    others = [_model(rate=0.2, slope=0.3), _model(rate=0.4), _model(momentum=0.1)]
    with count_compilations() as compiled:
        fnnet.sweep(run, params, states, x, y, keys=keys, models=others, devices=jax.devices()[:1])
    assert compiled == [], compiled


def test_sweep_models_are_checked_by_name():
    x, y = X[:64], Y[:64]
    keys = jax.random.split(jax.random.key(0), 2)
    params = fnnet.init_many(keys, _model(), x.shape)
    opt = fnnet.SGD(lr=0.1)
    run = fnnet.train(_model(), LOSS, opt, epochs=1)
    states = jax.vmap(opt.init)(params)
    with pytest.raises(
        ValueError,
        match=r"sweep: models must be a list of 2 models \(one per member, as the keys\), got a list of 1",
    ):
        fnnet.sweep(run, params, states, x, y, keys=keys, models=[_model()])
    other = fnnet.Sequential(*_model().layers[:-1], fnnet.Linear(16, 1, dtype=jnp.float64))
    wider = fnnet.Sequential(*_model().layers[:-1], fnnet.Linear(16, 2))
    with pytest.raises(TypeError, match=r"sweep: models\[1\]: train: model must be Sequential\(Linear"):
        fnnet.sweep(run, params, states, x, y, keys=keys, models=[_model(), wider])
    fnnet.sweep(run, params, states, x, y, keys=keys, models=[_model(), other])  # a dtype shapes init alone
    pairs = jax.tree.map(lambda v: np.array([v, v]), _model())
    with pytest.raises(TypeError, match=r"sweep: models\[1\]: each number of a layer .* must be one number"):
        fnnet.sweep(run, params, states, x, y, keys=keys, models=[_model(), pairs])
    with pytest.raises(TypeError, match=r"sweep: models needs a run from fnnet.train"):
        fnnet.sweep(lambda *a, **k: None, params, states, x, y, keys=keys, models=[_model(), _model()])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_stacked_numbers_keep_the_input_dtype(dtype):
    """A number stacked per member is a float64 array under x64; the layers meet the input in
    its own dtype, as a Python float does: the same output, in the input's dtype."""
    layers = [fnnet.LeakyReLU(0.2), fnnet.ELU(0.5), fnnet.Dropout(0.3), fnnet.LayerNorm(eps=1e-3)]
    x = device(np.random.default_rng(0).normal(size=(8, 5)), dtype)
    key = jax.random.key(1)
    for layer in layers:
        params = layer.init(jax.random.key(0), x.shape)[1]
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        stacked = jax.tree.map(lambda n: jnp.asarray([n, n], jnp.float64), layer)

        def apply(layer, x):
            return layer.apply(params, x, train=True, key=key)

        want = apply(layer, x)
        got = jax.vmap(apply, in_axes=(0, None))(stacked, x)
        assert got.dtype == want.dtype == dtype, (layer, got.dtype)
        np.testing.assert_array_equal(np.asarray(got[1], np.float32), np.asarray(want, np.float32))


# --- what a user's own code may do -------------------------------------------------------------


def _centring_layer(uses_mask):
    """x - the batch's mean (over the samples that count, given a mask): a layer of your
    own that mixes samples."""

    def init(key, shape):
        return tuple(shape), ()

    def apply(params, x, *, train=False, key=None, mask=None):
        if mask is None:
            return x - jnp.mean(x, axis=0, keepdims=True)
        weights = mask.astype(x.dtype)[:, None]
        return x - jnp.sum(weights * x, axis=0, keepdims=True) / jnp.sum(weights)

    def vjp(params, x, dy, *, train=False, key=None, mask=None):
        if mask is None:  # dx = dy - mean(dy)
            return (), dy - jnp.mean(dy, axis=0, keepdims=True)
        weights = mask.astype(x.dtype)[:, None]
        return (), weights * (dy - jnp.sum(weights * dy, axis=0, keepdims=True) / jnp.sum(weights))

    return fnnet.Layer(init, apply, vjp, uses_mask=uses_mask)


def test_a_layer_of_functions_that_declares_uses_mask_leaves_the_padding_out():
    """n=65 (padded to 66): a full-batch fit with a centring layer of your own
    equals train_step's steps on the samples alone when it declares uses_mask."""
    layer = _centring_layer(True)
    assert layer.uses_mask and "uses_mask=True" in repr(layer)
    model = fnnet.Sequential(fnnet.Linear(2, 4), layer, fnnet.Tanh(), fnnet.Linear(4, 1))
    x, y = X[:65], Y[:65]
    params = model.init(jax.random.key(0), x.shape)[1]
    opt = fnnet.SGD(lr=0.3)
    got = fnnet.fit(model, LOSS, opt, params, x, y, 3, progress=False)
    step, p, state = fnnet.train_step(model, LOSS, opt), jax.tree.map(jnp.copy, params), opt.init(params)
    for _ in range(3):
        p, state, _ = step(p, state, device(x), device(y))
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    undeclared = fnnet.Sequential(
        fnnet.Linear(2, 4), _centring_layer(False), fnnet.Tanh(), fnnet.Linear(4, 1)
    )
    mixed = fnnet.fit(undeclared, LOSS, opt, params, x, y, 3, progress=False)  # the padding counted
    assert not np.allclose(mixed.params[0]["w"], p[0]["w"], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"Layer: uses_mask must be True or False, got 'yes' \(str\)"):
        fnnet.Layer(layer.init, layer.apply, layer.vjp, uses_mask="yes")


def test_a_loss_that_is_not_a_mean_of_per_sample_terms_is_refused():
    def centred(y, t):
        return jnp.mean(((y - jnp.mean(y, 0, keepdims=True)) - (t - jnp.mean(t, 0, keepdims=True))) ** 2)

    def summed(y, t):
        return jnp.sum((y - t) ** 2)

    for value in (centred, summed):
        loss = fnnet.Loss(value, lambda y, t: 2 * (y - t))
        with pytest.raises(
            ValueError, match=r"fit: the loss must be a mean over samples of per-sample terms"
        ):
            fnnet.fit(_model(), loss, fnnet.SGD(lr=0.1), PARAMS, X[:20], Y[:20], 1, progress=False)


class _Poly(fnnet.Layer):
    """A layer class of your own, not a dataclass field of numbers: static as before."""

    def __init__(self, degree):
        self.degree, self._half = degree, degree / 2

    def __eq__(self, other):
        return type(other) is _Poly and other.degree == self.degree

    def __hash__(self):
        return hash(self.degree)

    def init(self, key, shape):
        return tuple(shape), ()

    def apply(self, params, x, *, train=False, key=None):
        return x * self._half if self.degree == 2 else x

    def vjp(self, params, x, dy, *, train=False, key=None):
        return (), dy * self._half if self.degree == 2 else dy


def test_layers_of_your_own_keep_their_settings_and_dropout_at_zero_needs_no_key():
    model = fnnet.Sequential(fnnet.Linear(2, 4), _Poly(2), fnnet.Dropout(0.0), fnnet.Linear(4, 1))
    params = model.init(jax.random.key(0), (1, 2))[1]
    opt = fnnet.SGD(lr=0.1)
    result = fnnet.fit(model, LOSS, opt, params, X[:20], Y[:20], 2, progress=False)
    assert np.all(np.isfinite(result.losses))
    step = fnnet.train_step(model, LOSS, opt)
    _, _, value = step(jax.tree.map(jnp.copy, params), opt.init(params), device(X[:20]), device(Y[:20]))
    assert np.isfinite(value)
    dropping = fnnet.Sequential(fnnet.Linear(2, 4), fnnet.Dropout(0.5), fnnet.Linear(4, 1))
    params = dropping.init(jax.random.key(0), (1, 2))[1]
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.5\): training mode draws a mask and needs a key"):
        fnnet.train_step(dropping, LOSS, opt)(params, opt.init(params), device(X[:20]), device(Y[:20]))


def test_checks_of_params_follow_a_layers_own_init():
    """Two layers of the same apply and vjp whose inits draw other widths: each fit checks
    params against its own model's init (a check kept by structure alone would not)."""

    def apply(params, x, *, train=False, key=None):
        return x @ params["w"] + params["b"][None, :]

    def vjp(params, x, dy, *, train=False, key=None):
        return {"w": x.T @ dy, "b": jnp.sum(dy, axis=0)}, dy @ params["w"].T

    def dense(width):
        def init(key, shape):
            return tuple(shape[:-1]) + (width,), {"w": jnp.zeros((shape[-1], width)), "b": jnp.zeros(width)}

        return fnnet.Layer(init, apply, vjp)

    for width in (4, 8):  # the two models are equal: init is not compared
        model = fnnet.Sequential(dense(width), fnnet.Tanh())
        params = model.init(jax.random.key(0), (1, 2))[1]
        targets = np.zeros((20, width), np.float32)
        result = fnnet.fit(
            model, fnnet.LossMSE(), fnnet.SGD(lr=0.1), params, X[:20], targets, 1, progress=False
        )
        assert np.isfinite(result.losses).all()


def test_a_model_rebuilt_with_plain_numbers_is_checked_again():
    """jax.tree.map over a model's numbers builds each layer anew: out-of-range numbers are
    refused by the layer's own check (a stacked sweep's arrays and traced numbers are not)."""
    doubled = jax.tree.map(lambda v: v * 2, _model(rate=0.2, momentum=0.4))
    assert doubled.layers[3].rate == 0.4 and doubled.layers[1].momentum == 0.8
    with pytest.raises(
        ValueError, match=r"Dropout: rate \(the probability of dropping a unit\) must be in \[0, 1\), got 2.0"
    ):
        jax.tree.map(lambda v: v * 10, fnnet.Sequential(fnnet.Linear(2, 3), fnnet.Dropout(0.2)))


@pytest.mark.parametrize("n", [4000, 4500])
def test_data_near_4096_rows_trains_alike_alone_and_inside_more_rows(n):
    """n samples alone (buckets 4096 and 4608) and as the first n of 5000 rows weighted 1 and
    0 (bucket 5120): the same params and recorded losses, bit for bit (the shuffle's sort is
    chosen by where the samples lie, and the epoch's loss is summed step by step, so neither
    depends on the rows after the samples)."""
    x, y = (np.asarray(a) for a in fnnet.data.disk(jax.random.key(3), 5000))
    model = fnnet.Sequential(fnnet.Linear(2, 16), fnnet.ReLU(), fnnet.Dropout(0.2), fnnet.Linear(16, 1))
    loss, opt = fnnet.LossBCEWithLogits(), fnnet.Adam(lr=1e-2)
    params = model.init(jax.random.key(0), (1, 2))[1]
    kwargs = dict(batch_size=32, key=jax.random.key(5), progress=False)
    alone = fnnet.fit(model, loss, opt, params, x[:n], y[:n], 3, **kwargs)
    weights = (np.arange(5000) < n).astype(np.float32)
    inside = fnnet.fit(model, loss, opt, params, x, y, 3, sample_weight=weights, **kwargs)
    assert_trees_equal((alone.params, alone.losses), (inside.params, inside.losses))


def test_validation_sets_one_sample_apart_share_a_program():
    """Validation data is padded to the next power of two: the validation splits of the folds
    of a cross-validation (24 and 25 samples here) run in one program, and the loss on it is
    the same as on the unpadded set up to rounding."""
    x, y = X[:64], Y[:64]
    model = _model()
    params = model.init(jax.random.key(0), x.shape)[1]

    def run(n_val):
        return fnnet.fit(
            model,
            LOSS,
            fnnet.Adam(1e-2),
            params,
            x,
            y,
            2,
            batch_size=16,
            validation=(X[100 : 100 + n_val], Y[100 : 100 + n_val]),
            progress=False,
        )

    run(24)
    with count_compilations() as compiled:
        result = run(25)
    assert [c for c in compiled if "run" in c] == []
    want = LOSS.value(model.apply(result.params, X[100:125]), Y[100:125])
    np.testing.assert_allclose(result.val_losses[-1], want, rtol=1e-5)
