"""scripts/benchmarks/floor.py: its floor programs compute what a step must (the MLP's true
gradients, a permutation), so the floor it reports is not a floor of less work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from benchmarks import floor
from benchmarks.workloads import W4_SIZES
from helpers import assert_trees_close


def half_squared_error(params, x, labels):
    """What `products_grads` differentiates: the MLP's (z - onehot)^2 / 2, mean over examples."""
    (w0, b0), (w1, b1), (w2, b2) = params
    z = jax.nn.relu(jax.nn.relu(x @ w0 + b0[None, :]) @ w1 + b1[None, :]) @ w2 + b2[None, :]
    return 0.5 * jnp.sum((z - jax.nn.one_hot(labels, z.shape[1])) ** 2) / x.shape[0]


products_grads, oracle = jax.jit(floor.products_grads), jax.jit(jax.grad(half_squared_error))


@pytest.mark.parametrize("seed", range(3))
def test_products_grads_are_the_gradients_of_half_the_squared_error(seed):
    keys = jax.random.split(jax.random.key(seed), 8)
    sizes = W4_SIZES
    params = [
        (jax.random.normal(keys[2 * i], (a, b)) / np.sqrt(a), jax.random.normal(keys[2 * i + 1], (b,)))
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    x = jax.random.normal(keys[6], (32, sizes[0]))
    labels = jax.random.randint(keys[7], (32,), 0, sizes[-1])
    _, grads = products_grads(params, x, labels)
    assert_trees_close(grads, oracle(params, x, labels), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 31, 1024, 1025, 1437])
def test_one_sort_permutation_is_a_permutation(n):
    orders = [np.asarray(floor.one_sort_permutation(jax.random.key(k), n)) for k in range(3)]
    for order in orders:
        assert order.dtype == np.int32 and sorted(order.tolist()) == list(range(n))
    if n > 30:
        assert not np.array_equal(orders[0], orders[1])
