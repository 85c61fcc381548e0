"""fnnet.data.disk: labels follow the geometric definition; classes are about balanced; a
concrete key's points drawn on the host, compiling nothing."""

import math

import jax
import numpy as np
import pytest

from helpers import count_compilations

import fnnet


def test_disk_labels_match_the_geometry_and_are_balanced():
    x, y = fnnet.data.disk(jax.random.key(0), 20_000)
    assert x.shape == (20_000, 2) and y.shape == (20_000, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    x, y = np.asarray(x, np.float64), np.asarray(y)
    assert x.min() >= 0 and x.max() <= 1
    inside = np.hypot(x[:, 0] - 0.5, x[:, 1] - 0.5) < 1 / math.sqrt(2 * math.pi)
    near_edge = np.abs(np.hypot(x[:, 0] - 0.5, x[:, 1] - 0.5) - 1 / math.sqrt(2 * math.pi)) < 1e-6
    assert np.array_equal(y[~near_edge, 0] == 1, inside[~near_edge])
    assert set(np.unique(y)) == {0.0, 1.0}
    # area 1/2: the fraction inside is 1/2 within 4 standard errors
    assert abs(y.mean() - 0.5) < 4 * math.sqrt(0.25 / 20_000)


def test_disk_draws_differ_by_key_and_repeat_by_key():
    a, _ = fnnet.data.disk(jax.random.key(1), 100)
    b, _ = fnnet.data.disk(jax.random.key(1), 100)
    c, _ = fnnet.data.disk(jax.random.key(2), 100)
    assert np.array_equal(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_disk_rejects_bad_sizes(n):
    with pytest.raises(ValueError, match="disk: n must be an int >= 1"):
        fnnet.data.disk(jax.random.key(0), n)


def test_disk_of_a_concrete_key_compiles_nothing_and_equals_the_traced_draw():
    key = jax.random.fold_in(jax.random.key(int(np.random.SeedSequence().entropy % 2**31)), 3)
    n = int(np.random.default_rng().integers(1, 5000))
    with count_compilations() as compiled:
        x, y = fnnet.data.disk(key, n)
    assert compiled == [], compiled
    traced_x, traced_y = jax.jit(fnnet.data.disk, static_argnums=1)(key, n)
    assert np.array_equal(np.asarray(x), np.asarray(jax.random.uniform(key, (n, 2), np.float32)))
    assert np.array_equal(np.asarray(x), np.asarray(traced_x))
    assert y.shape == traced_y.shape and y.dtype == traced_y.dtype
    # labelled in float64 (x64 is on here), as the traced labels and the geometry, but for
    # points within a float64 rounding of the circle
    distance = np.hypot(*(np.asarray(x, np.float64) - 0.5).T) - 1 / math.sqrt(2 * math.pi)
    far = np.abs(distance) > 1e-12
    assert np.array_equal(np.asarray(y)[far], np.asarray(traced_y)[far])
    assert np.array_equal(np.asarray(y)[far, 0], (distance < 0)[far].astype(np.float32))


def test_a_disk_jax_draws_is_labelled_by_jax(monkeypatch):
    key = jax.random.key(4)
    host = fnnet.data.disk(key, 40)
    monkeypatch.setattr(fnnet._draws, "_HOST_DRAWS", 10)  # more than that: JAX draws
    jaxs = fnnet.data.disk(key, 40)
    for a, b in zip(host, jaxs):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.dtype == b.dtype


def test_disk_follows_a_committed_key():
    key = jax.device_put(jax.random.key(5), jax.devices()[-1])
    x, y = fnnet.data.disk(key, 10)
    assert x.committed and y.committed and x.devices() == y.devices() == {jax.devices()[-1]}
