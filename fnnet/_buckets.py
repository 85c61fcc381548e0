"""Buckets: the samples of a run padded to one of few sizes, so one compiled program
serves every data size in a bucket (each fold of a cross-validation, say).

With minibatches, n samples are padded to the next size of the form m * 2**k with
8 <= m < 16 (sizes up to 16 exactly): at most 1/8 of padding, 8 buckets per doubling,
then rounded up to whole batches (every step has one shape). Only the shuffle and the
skipped steps of padding alone see that size: a step costs the same in any bucket. A
full batch computes on every padded row, so its buckets are finer, m * 2**k with
32 <= m < 64 (at most 1/32 of padding, 1000 samples run as 1008), on a mesh rounded up
to whole shards. The training sets of a cross-validation's folds (sizes one apart) fall
in one bucket unless the smaller is a bucket's size itself. Validation data is padded
to the next power of two (`validation_size`). Padded rows repeat the first sample (so they are finite wherever the data is)
and weigh 0: they take no part in a loss, a gradient, a batch statistic
(`Layer.uses_mask`) or a shuffle (sorted last), and the samples' results do not depend
on them.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._precision import at_least_float32


def bucket(n: int, multiple: int = 1, per_doubling: int = 8) -> int:
    """The padded size for n samples: `m * 2**k >= n` with `per_doubling` <= m <
    2 * `per_doubling` (a power of two; n itself up to 2 * per_doubling), rounded up to a
    multiple of `multiple`."""
    step = 1 << max(0, n.bit_length() - per_doubling.bit_length())
    size = -(-n // step) * step
    return -(-size // multiple) * multiple


def _padded(a, size: int):
    """`a`'s rows, then copies of its first row up to `size` rows: on the host (NumPy)
    for concrete arrays, by JAX inside `jit` or `vmap` and for an array other processes
    hold parts of."""
    extra = size - a.shape[0]
    if not extra:  # as it is: an array on the device stays there
        return a
    if isinstance(a, jax.core.Tracer) or (isinstance(a, jax.Array) and not a.is_fully_addressable):
        return jnp.concatenate([a, jnp.broadcast_to(a[:1], (extra,) + a.shape[1:])])
    a = np.asarray(a)
    return np.concatenate([a, np.broadcast_to(a[:1], (extra,) + a.shape[1:])])


def padded_samples(x, y, size: int, sample_weight=None):
    """`(x, y, weights)` padded to `size` rows; weights `(size,)` are the samples'
    `sample_weight` (1 by default) and 0 for the padding, in x's dtype (at least float32)."""
    n, dtype = x.shape[0], at_least_float32(x.dtype)
    weights = (np.arange(size) < n).astype(dtype)
    if isinstance(sample_weight, jax.core.Tracer):  # a sweep's member's
        weights = jnp.concatenate([sample_weight.astype(dtype), jnp.zeros(size - n, dtype)])
    elif sample_weight is not None:
        weights[:n] = np.asarray(sample_weight, dtype)
    return _padded(x, size), _padded(y, size), weights


def validation_size(n: int) -> int:
    """The padded size of a validation set of n samples: the next power of two (n itself
    when it is one). Its one forward pass an epoch costs little beside the epoch's
    training, so its buckets are coarse: the validation splits of a cross-validation's
    folds (sizes one apart) share a program unless they straddle a power of two."""
    return bucket(n, per_doubling=1)


def run_size(n: int, batch_size, shards: int = 1) -> int:
    """The padded size of a run's n samples: the bucket's, in whole batches of
    `batch_size` (None for full batch) and whole shards."""
    if batch_size is not None:
        return -(-bucket(n) // batch_size) * batch_size
    return bucket(n, shards, per_doubling=32)
