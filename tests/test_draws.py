"""fnnet._draws against jax.random: the same bits, on the host, traced, vmapped or eager.

Keys, shapes and bounds are fresh every run; a failure names the run's SEED."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_compilations

import fnnet
from fnnet import _draws

SEED = int(np.random.SeedSequence().entropy % 2**63)
RNG = np.random.default_rng(SEED)  # fresh keys, shapes and bounds every run


@pytest.fixture(autouse=True)
def _name_the_seed():
    yield
    print(f"test_draws: SEED = {SEED}")  # captured: pytest shows it with a failure only


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_is_jaxs_uniform_drawn_on_the_host(dtype):
    for _ in range(10):
        key = _fresh_key()
        shape = tuple(int(d) for d in RNG.integers(0, 9, size=RNG.integers(0, 4)))
        host = _draws.unit(key, shape, dtype)
        assert isinstance(host, np.ndarray)
        assert _bits(host) == _bits(jax.random.uniform(key, shape, dtype))
        assert _bits(host) == _bits(jax.jit(jax.random.uniform, static_argnums=(1, 2))(key, shape, dtype))
    # where JAX must draw: None
    traced = []
    jax.jit(lambda k: traced.append(_draws.unit(k, (3,), dtype)) or k)(key)
    assert traced == [None]
    assert _draws.unit(jax.random.PRNGKey(1), (3,), dtype) is None  # a raw key
    assert _draws.unit(key, (3,), jnp.bfloat16) is None
    assert _draws.unit(key, (_draws._HOST_DRAWS + 1,), dtype) is None


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

    def draws_alike():
        assert _draws._words(key) is None
        assert [np.asarray(jax.random.key_data(k)).tolist() for k in _draws.split(key, 3)] == np.asarray(
            jax.random.key_data(jax.random.split(key, 3))
        ).tolist()
        traced = jax.jit(
            lambda k: (_draws.bits(_draws.fold_in(k, 7), (5,)), _draws.uniform(k, (3,), np.float32, 0.5))
        )
        expected = jax.jit(
            lambda k: (
                jax.random.bits(jax.random.fold_in(k, 7), (5,), jnp.uint32),
                jax.random.uniform(k, (3,), np.float32, -0.5, 0.5),
            )
        )
        assert jax.tree.map(_bits, traced(key)) == jax.tree.map(_bits, expected(key))

    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        draws_alike()
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    with jax.threefry_partitionable(False):
        draws_alike()


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
    """A model of shapes no other test uses: its init draws (and fills BatchNorm's and
    LayerNorm's params) without a compiled program."""
    n_in, hidden = int(RNG.integers(100, 500)), int(RNG.integers(100, 500))
    assert n_in * hidden <= _draws._HOST_DRAWS  # drawn on the host
    model = fnnet.Sequential(
        fnnet.Linear(n_in, hidden),
        fnnet.BatchNorm(),
        fnnet.Tanh(),
        fnnet.LayerNorm(),
        fnnet.Linear(hidden, 1),
    )
    key = _fresh_key()
    with count_compilations() as compiled:
        params = model.init(key, (8, n_in))[1]
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

    for run in (jax.jit, lambda f: jax.jit(jax.vmap(f)), _eager):
        args = (keys, counts) if run not in (jax.jit, _eager) else (keys[0], counts[0])
        assert jax.tree.map(_bits, run(ours)(*args)) == jax.tree.map(_bits, run(jaxs)(*args))


def _eager(f):
    return f


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,)])
@pytest.mark.parametrize("p", [0.0, 1.0, 0.5])
def test_training_draws_at_the_edges(shape, p):
    key = _fresh_key()
    ours = jax.jit(lambda k: (_draws.bits(k, shape), _draws.bernoulli(k, np.float32(p), shape)))(key)
    jaxs = jax.jit(
        lambda k: (jax.random.bits(k, shape, jnp.uint32), jax.random.bernoulli(k, np.float32(p), shape))
    )(key)
    assert jax.tree.map(_bits, ours) == jax.tree.map(_bits, jaxs)


def test_draws_jax_would_refuse_or_broadcast_are_jaxs():
    key = jax.jit(lambda k: k)(_fresh_key())
    with pytest.raises(TypeError, match="scalar"):
        jax.jit(lambda k: _draws.fold_in(k, jnp.arange(2)))(key)
    with pytest.raises(ValueError, match="broadcast"):
        jax.jit(lambda k: _draws.bernoulli(k, jnp.full((2, 1), 0.5), (1000,)))(key)


@pytest.mark.parametrize("bound", [1e-33, 1e-38, 3e38, float("inf"), float("nan"), -0.5])
def test_bounds_the_host_cannot_draw_alike_are_jaxs(bound):
    key = _fresh_key()
    with np.errstate(all="ignore"):
        host = _draws.uniform(key, (4, 3), np.float32, bound)
    traced = jax.jit(_draws.uniform, static_argnums=(1, 2, 3))(key, (4, 3), np.float32, bound)
    assert _bits(host) == _bits(traced) == _bits(jax.random.uniform(key, (4, 3), np.float32, -bound, bound))


def test_x64_off_draws_alike():
    """The suite runs with x64 on; a process with it off (JAX's default)."""
    code = (
        "import jax, numpy as np\n"
        "from fnnet import _draws\n"
        f"key = jax.random.fold_in(jax.random.key({int(RNG.integers(2**31))}), 5)\n"
        "host = np.asarray(_draws.uniform(key, (7, 5), np.float32, 0.3))\n"
        "traced = np.asarray(jax.jit(_draws.uniform, static_argnums=(1, 2, 3))(key, (7, 5), np.float32, 0.3))\n"
        "assert host.dtype == np.float32 and host.tobytes() == traced.tobytes()\n"
        "m = jax.jit(lambda k: _draws.bernoulli(_draws.fold_in(k, 3), 0.7, (9,)))(key)\n"
        "assert (m == jax.random.bernoulli(jax.random.fold_in(key, 3), 0.7, (9,))).all()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env_without_x64()
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _env_without_x64():
    import os

    return {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
