"""Data-parallel training over 4 host devices, in a subprocess (XLA_FLAGS is read at start-up)."""

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import child_xla_flags

pytestmark = pytest.mark.slow  # two devices in a child process, each compiling its sharded programs

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import Mesh, PartitionSpec
    import fnnet
    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    model = fnnet.serial(fnnet.Linear(2, 16), fnnet.ReLU(), fnnet.Linear(16, 1), fnnet.Sigmoid())
    loss, opt = fnnet.LossBCE(), fnnet.SGD(lr=0.5)
    x, y = fnnet.data.disk(jax.random.key(1), 64)
    params = model.init(jax.random.key(0), x.shape)[1]
    # full batch, minibatches, a last smaller minibatch (64 = 24 + 24 + 16), other optimizers
    for batch_size, opt in ((None, opt), (16, opt), (None, fnnet.SGD(lr=0.3, momentum=0.5)),
                            (24, fnnet.Adam(lr=0.05)), (None, fnnet.SGD(lr=0.5, momentum=None))):
        alone = fnnet.fit(model, loss, opt, params, x, y, epochs=40, batch_size=batch_size, progress=False)
        shared = fnnet.fit(model, loss, opt, params, x, y, epochs=40, batch_size=batch_size,
                           progress=False, mesh=mesh)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(shared.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.losses, shared.losses, rtol=1e-5)
        for leaf in jax.tree.leaves(shared.params):
            assert leaf.sharding.is_fully_replicated, leaf.sharding
    opt = fnnet.SGD(lr=0.5)
    # the data really is split: each device holds a quarter of x
    from fnnet._setup import place
    xs, ys, weights = place("test", mesh, x, y, None)
    assert xs.sharding.spec == PartitionSpec("data"), xs.sharding
    assert {s.data.shape for s in xs.addressable_shards} == {(16, 2)}
    # so is every batch inside the compiled run
    run = fnnet.train(model, loss, opt, epochs=2, batch_size=16, mesh=mesh)
    # compiled by XLA's default CPU pipeline (this process has tests/conftest.py's flags)
    default = {"xla_cpu_use_fusion_emitters": True}
    text = jax.jit(run).lower(params, opt.init(params), x, y, key=jax.random.key(0)).compile(compiler_options=default).as_text()
    assert "all-reduce" in text, "no cross-device gradient reduction in the program"
    assert "f32[4,2]" in text, "no per-device batch of 16 / 4 = 4 rows"
    # full batch: each device works on its 16 samples (feature-major, 2 x 16), and one
    # all-reduce per step carries the loss and every grad together
    run = fnnet.train(model, loss, opt, epochs=2, mesh=mesh)
    text = jax.jit(run).lower(params, opt.init(params), x, y).compile(compiler_options=default).as_text()
    assert text.count(" all-reduce(") == 1, text.count(" all-reduce(")
    assert "f32[2,16]" in text, "no per-device shard of 64 / 4 = 16 samples"
    # a batch_size the device count does not divide: a clear error, not a wrong result
    try:
        fnnet.fit(model, loss, opt, params, x[:62], y[:62], epochs=2, progress=False, mesh=mesh, batch_size=10)
    except ValueError as error:
        assert "divisible by 4" in str(error), error
    else:
        raise AssertionError("no error for an indivisible batch")
    # n the device count does not divide, full batch or a last smaller batch: padded (to 64),
    # the padding weighing nothing on any device
    for batch_size in (None, 16):
        alone = fnnet.fit(model, loss, opt, params, x[:62], y[:62], epochs=5, batch_size=batch_size,
                          progress=False)
        shared = fnnet.fit(model, loss, opt, params, x[:62], y[:62], epochs=5, batch_size=batch_size,
                           progress=False, mesh=mesh)
        np.testing.assert_allclose(alone.losses, shared.losses, rtol=1e-5)
    # a sweep of 3 members over 4 devices: padded to 4, one member per device, padding dropped
    keys = jax.random.split(jax.random.key(2), 3)
    stacked = fnnet.init_many(keys, model, x.shape)
    run = fnnet.train(model, loss, opt, epochs=20)
    swept = fnnet.sweep(run, stacked, jax.vmap(opt.init)(stacked), x, y, keys=keys)
    assert swept[2].shape == (3, 20)
    for i in range(3):
        p_i = jax.tree.map(lambda a: a[i], stacked)
        np.testing.assert_allclose(swept[2][i], run(p_i, opt.init(p_i), x, y, key=keys[i])[2], rtol=1e-6)
    # each device runs its member unbatched (shard_map), as one device runs them all: the same
    # bits, minibatches or not, Adam's bias corrections included (each member's run's alone)
    for batch_size, other in ((None, opt), (16, fnnet.Adam(lr=0.05)), (None, fnnet.AdamW(lr=0.05))):
        other_run = fnnet.train(model, loss, other, epochs=5, batch_size=batch_size)
        states = jax.vmap(other.init)(stacked)
        spread_out = fnnet.sweep(other_run, stacked, states, x, y, keys=keys)
        one = fnnet.sweep(other_run, stacked, states, x, y, keys=keys, devices=jax.devices()[:1])
        p_2 = jax.tree.map(lambda a: a[2], stacked)
        alone = other_run(p_2, other.init(p_2), x, y, key=keys[2])
        for a, b, c in zip(jax.tree.leaves(spread_out[:3]), jax.tree.leaves(one[:3]), jax.tree.leaves(alone)):
            assert (np.asarray(a) == np.asarray(b)).all() and (np.asarray(a[2]) == np.asarray(c)).all(), other
    spread = fnnet.spread((stacked, jax.vmap(opt.init)(stacked), keys))
    lowered = fnnet.vmapped(run, groups=4).lower(spread[0], spread[1], x, y, spread[2])
    assert "manual_computation" in lowered.as_text() and "batching_dims" not in lowered.as_text()
    # a sweep of a data-parallel run: its devices' groups vmapped around the run's own shard_map
    pair = jax.devices()[:2]
    parallel = fnnet.train(model, loss, opt, epochs=5, mesh=Mesh(np.array(pair), ("data",)))
    swept = fnnet.sweep(parallel, stacked, jax.vmap(opt.init)(stacked), x, y, keys=keys, devices=pair)
    p_0 = jax.tree.map(lambda a: a[0], stacked)
    np.testing.assert_allclose(swept[2][0], parallel(p_0, opt.init(p_0), x, y, key=keys[0])[2], rtol=1e-6)
    wrapped = lambda p, s, x, y, key=None: parallel(p, s, x, y, key=key)  # no .mesh to read
    again = fnnet.sweep(wrapped, stacked, jax.vmap(opt.init)(stacked), x, y, keys=keys, devices=pair)
    assert (np.asarray(again[2]) == np.asarray(swept[2])).all()
    print("OK")
""")


def run_on_devices(script, count):
    """Run `script` in a fresh Python with `count` CPU devices; it must end by printing OK."""
    env = dict(os.environ, XLA_FLAGS=child_xla_flags(count), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr


def test_sharded_fit_matches_single_device_fit():
    run_on_devices(SCRIPT, 4)


@pytest.mark.parametrize("bad", ["not a mesh"])
def test_mesh_must_be_a_mesh(bad):
    import jax
    import fnnet

    model = fnnet.serial(fnnet.Linear(2, 16), fnnet.ReLU(), fnnet.Linear(16, 1), fnnet.Sigmoid())
    x, y = fnnet.data.disk(jax.random.key(1), 8)
    params = model.init(jax.random.key(0), x.shape)[1]
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        fnnet.fit(model, fnnet.LossBCE(), fnnet.SGD(lr=0.5), params, x, y, epochs=1, progress=False, mesh=bad)


ONE_PER_DEVICE = textwrap.dedent("""
    import re
    import jax, numpy as np, pytest
    from jax.sharding import Mesh
    import fnnet
    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    model = fnnet.serial(fnnet.Linear(2, 4), fnnet.BatchNorm(), fnnet.ReLU(), fnnet.Linear(4, 1), fnnet.Sigmoid())
    loss, opt = fnnet.LossBCE(), fnnet.SGD(lr=0.5)
    x, y = fnnet.data.disk(jax.random.key(1), 10)
    params = model.init(jax.random.key(0), x.shape)[1]
    # full batch, every minibatch, only the last minibatch (padded to whole devices, the
    # padding last): a device holds one sample
    for n, batch_size, which, size, counts in (
            (2, None, "the batch", 2, "[1, 1]"), (8, 2, "each batch", 2, "[1, 1]"),
            (3, None, "the batch", 3, "[2, 1]"),
            (5, 4, "the last batch of each epoch", 1, "[1, 0]"),
            (7, 4, "the last batch of each epoch", 3, "[2, 1]")):
        says = (rf"^fit: {which} \\({size} samples; n={n}, batch_size={batch_size}\\) split over 2 "
                rf"devices \\(mesh axis 'data'\\) gives a device 1 sample \\({re.escape(counts)} each, the batch "
                r"padded to whole devices\\), and the model needs at least 2 samples per device to train: "
                r"serial layer 1: BatchNorm")
        with pytest.raises(ValueError, match=says):
            fnnet.fit(model, loss, opt, params, x[:n], y[:n], epochs=2, batch_size=batch_size,
                      progress=False, mesh=mesh)
        with pytest.raises(ValueError, match=says.replace("^fit", "^train")):
            fnnet.train(model, loss, opt, 2, batch_size=batch_size, mesh=mesh)(params, opt.init(params),
                                                                              x[:n], y[:n])
    # a device of padding alone counts for nothing in the running statistics: n=12, batch 8,
    # the last batch's 4 samples all on one device; as on one device (momentum 0: the last
    # batch's statistics)
    still = fnnet.serial(fnnet.Linear(2, 4), fnnet.BatchNorm(momentum=0.0), fnnet.ReLU(), fnnet.Linear(4, 1),
                         fnnet.Sigmoid())
    still_params = still.init(jax.random.key(0), x.shape)[1]
    for n in (12, 6):  # 6: each device's batch of 4 holds 2 and 2, the last one 2 and 0
        runs = [fnnet.fit(still, loss, fnnet.SGD(lr=1e-30), still_params, x[:n], y[:n], epochs=1, batch_size=4
                          if n == 6 else 8, progress=False, mesh=m).params[1]["running"] for m in (None, mesh)]
        for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # two samples per device train; so does one per device without BatchNorm
    assert np.isfinite(fnnet.fit(model, loss, opt, params, x[:8], y[:8], epochs=2, batch_size=4,
                                 progress=False, mesh=mesh).losses).all()
    plain = fnnet.serial(fnnet.Linear(2, 4), fnnet.ReLU(), fnnet.Linear(4, 1), fnnet.Sigmoid())
    plain_params = plain.init(jax.random.key(0), x.shape)[1]
    assert np.isfinite(fnnet.fit(plain, loss, opt, plain_params, x[:2], y[:2], epochs=2, progress=False,
                                 mesh=mesh).losses).all()
    print("OK")
""")


def test_batchnorm_refuses_one_sample_per_device_naming_the_split():
    run_on_devices(ONE_PER_DEVICE, 2)
