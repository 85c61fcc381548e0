"""`init`'s draws on the host (fnnet._draws) against JAX's: the same bits, whichever ran."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import monitoring

import fnnet
from fnnet import _draws

RNG = np.random.default_rng()  # fresh keys, shapes and bounds every run


def _fresh_key():
    return jax.random.fold_in(jax.random.key(int(RNG.integers(2**31))), int(RNG.integers(2**31)))


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.reshape(-1).view(np.uint8).tobytes()


def test_split_gives_jaxs_keys():
    for _ in range(20):
        key, num = _fresh_key(), int(RNG.integers(1, 9))
        mine = _draws.split(key, num)
        assert [np.asarray(jax.random.key_data(k)).tolist() for k in mine] == np.asarray(
            jax.random.key_data(jax.random.split(key, num))
        ).tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_on_the_host_equals_uniform_traced(dtype):
    traced = jax.jit(_draws.uniform, static_argnums=(1, 2, 3))
    for _ in range(15):
        key = _fresh_key()
        shape = tuple(int(d) for d in RNG.integers(0, 9, size=RNG.integers(0, 4)))
        bound = float(RNG.uniform(1e-3, 3.0))
        host = _draws.uniform(key, shape, dtype, bound)
        assert _bits(host) == _bits(traced(key, shape, dtype, bound))
        # jax.random.uniform's numbers, but for its rounding of u * 2 bound before adding -bound
        reference = np.asarray(jax.random.uniform(key, shape, dtype, -bound, bound))
        limit = dtype(bound)
        np.testing.assert_allclose(np.asarray(host), reference, rtol=0, atol=2 * np.spacing(limit))
        assert np.all((-limit <= np.asarray(host)) & (np.asarray(host) < limit))


def test_uniform_past_the_host_limit_is_jaxs_draw(monkeypatch):
    key, shape = _fresh_key(), (17, 5)
    host = _draws.uniform(key, shape, np.float32, 0.3)
    monkeypatch.setattr(_draws, "_HOST_DRAWS", 16)
    assert _bits(_draws.uniform(key, shape, np.float32, 0.3)) == _bits(host)


def test_keys_jax_must_draw_with_fall_back_to_jax():
    raw = jax.random.PRNGKey(int(RNG.integers(2**31)))
    assert _draws._words(raw) is None
    np.testing.assert_array_equal(np.stack(_draws.split(raw, 3)), jax.random.split(raw, 3))
    rbg = jax.random.key(0, impl="rbg")
    assert _draws._words(rbg) is None
    assert _bits(_draws.uniform(rbg, (3, 2), np.float32, 1.0)) == _bits(
        jax.jit(_draws.uniform, static_argnums=(1, 2, 3))(rbg, (3, 2), np.float32, 1.0)
    )
    # a concrete key inside a trace: JAX draws (the host cannot read it there)
    key = _fresh_key()
    inside = jax.jit(lambda: _draws.uniform(key, (4,), np.float32, 0.5))()
    assert _bits(inside) == _bits(_draws.uniform(key, (4,), np.float32, 0.5))
    half = _draws.uniform(key, (4,), jnp.bfloat16, 0.5)  # not float32/64: jax.random.uniform
    assert _bits(half) == _bits(jax.random.uniform(key, (4,), jnp.bfloat16, -0.5, 0.5))


def test_without_partitionable_threefry_jax_draws():
    key = _fresh_key()
    jax.config.update("jax_threefry_partitionable", False)
    try:
        assert _draws._words(key) is None
        assert [np.asarray(jax.random.key_data(k)).tolist() for k in _draws.split(key, 3)] == np.asarray(
            jax.random.key_data(jax.random.split(key, 3))
        ).tolist()
    finally:
        jax.config.update("jax_threefry_partitionable", True)


def test_a_draw_stays_with_a_committed_key():
    key = _fresh_key()
    committed = jax.device_put(key, jax.devices()[0])
    assert _draws.uniform(committed, (3,), np.float32, 1.0).committed
    assert all(k.committed for k in _draws.split(committed, 2))
    assert not _draws.uniform(key, (3,), np.float32, 1.0).committed


MODEL = fnnet.Sequential(
    fnnet.Linear(3, 7),
    fnnet.BatchNorm(),
    fnnet.ReLU(),
    fnnet.Linear(7, 2),
    fnnet.Linear(2, 2, dtype=np.float64),
)


def test_init_is_the_same_eager_jitted_and_vmapped():
    keys = jax.random.split(_fresh_key(), 3)
    eager = [MODEL.init(k, (5, 3))[1] for k in keys]
    jitted = jax.jit(lambda k: MODEL.init(k, (5, 3))[1])(keys[1])
    assert jax.tree.map(_bits, jitted) == jax.tree.map(_bits, eager[1])
    many = fnnet.init_many(keys, MODEL, (5, 3))
    for i, alone in enumerate(eager):
        assert jax.tree.map(lambda a: _bits(a[i]), many) == jax.tree.map(_bits, alone)


def test_a_first_init_compiles_nothing():
    """A model of shapes no other test uses: its init draws without a compiled program."""
    n_in, hidden = int(RNG.integers(300, 600)), int(RNG.integers(300, 600))
    model = fnnet.Sequential(fnnet.Linear(n_in, hidden), fnnet.Tanh(), fnnet.Linear(hidden, 1))
    key = _fresh_key()
    compiled = []

    def listen(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiled.append(kwargs.get("fun_name"))

    monitoring.register_event_duration_secs_listener(listen)
    try:
        params = model.init(key, (8, n_in))[1]
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    assert jax.tree.map(_bits, params) == jax.tree.map(
        _bits, jax.jit(lambda k: model.init(k, (8, n_in))[1])(key)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_draws_equal_jaxs_traced_and_vmapped(dtype):
    """fold_in, bits and bernoulli (the shuffle's and each step's keys, Dropout's masks)."""
    keys = jax.random.split(_fresh_key(), 4)
    counts = jnp.asarray(RNG.integers(0, 2**31, size=4), jnp.int32)
    shape = tuple(int(d) for d in RNG.integers(1, 9, size=RNG.integers(1, 4)))
    p = dtype(RNG.uniform(0.05, 0.95))

    def ours(key, count):
        key = _draws.fold_in(key, count)
        return jax.random.key_data(key), _draws.bits(key, shape), _draws.bernoulli(key, p, shape)

    def jaxs(key, count):
        key = jax.random.fold_in(key, count)
        return (
            jax.random.key_data(key),
            jax.random.bits(key, shape, jnp.uint32),
            jax.random.bernoulli(key, p, shape),
        )

    for run in (jax.jit, lambda f: jax.jit(jax.vmap(f))):
        args = (keys[0], counts[0]) if run is jax.jit else (keys, counts)
        assert jax.tree.map(_bits, run(ours)(*args)) == jax.tree.map(_bits, run(jaxs)(*args))
