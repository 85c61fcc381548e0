"""Constructors that return the same object for the same arguments, in a bounded cache.

fnnet's layers, losses and optimizer steps are pure closures, so two calls of a
constructor with equal arguments build interchangeable objects. Returning the
very same object lets `jax.jit` (which caches by function identity) reuse its
compiled programs: `fit(model, LossBCE(), SGD(lr=0.1), ...)` twice compiles once.

Each cache keeps the `MAX_ENTRIES` most recently used configurations: a
process that builds ever new configurations never grows it without bound (an
evicted configuration is built, and compiled, again when it comes back).
An unhashable argument (a closure that is not a module-level function, an
array) makes a new object each call; the constructors keep such arguments out
of what a compiled program depends on (see `Layer`'s equality).
"""

import collections
import functools

MAX_ENTRIES = 256


def interned(constructor):
    """Decorate `constructor` so equal hashable arguments give the same object."""
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(constructor)
    def make(*args, **kwargs):
        # Types are part of the key: LeakyReLU(1) and LeakyReLU(True) differ.
        key = (
            tuple((type(a), a) for a in args),
            tuple(sorted((k, type(v), v) for k, v in kwargs.items())),
        )
        try:
            made = cache[key]
        except KeyError:
            made = cache[key] = constructor(*args, **kwargs)
            if len(cache) > MAX_ENTRIES:
                cache.popitem(last=False)  # the least recently used
            return made
        except TypeError:  # an unhashable argument: nothing to share
            return constructor(*args, **kwargs)
        cache.move_to_end(key)
        return made

    make.cache = cache  # type: ignore[attr-defined]  # for tests: its size is bounded
    return make
