"""Constructors that return the same object for the same arguments.

fnnet's layers, losses and optimizer steps are pure closures, so two calls of a
constructor with equal arguments build interchangeable objects. Returning the
very same object lets `jax.jit` (which caches by function identity) reuse its
compiled programs: `fit(model, LossBCE(), SGD(lr=0.1), ...)` twice compiles once.
"""

import functools


def shared(constructor):
    """Decorate `constructor` so equal hashable arguments give the same object."""
    cache = {}

    @functools.wraps(constructor)
    def make(*args, **kwargs):
        # Types are part of the key: LeakyReLU(1) and LeakyReLU(True) differ.
        key = (
            tuple((type(a), a) for a in args),
            tuple(sorted((k, type(v), v) for k, v in kwargs.items())),
        )
        try:
            return cache[key]
        except KeyError:
            made = cache[key] = constructor(*args, **kwargs)
            return made
        except TypeError:  # an unhashable argument: nothing to share
            return constructor(*args, **kwargs)

    return make
