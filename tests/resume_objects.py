"""Models made of user objects, for tests/test_resume.py: layers written as classes (bound
methods), callable objects, slots, jax-wrapped closures. Their own module, so that the
digests an earlier fnnet recorded for them can be computed by importing it there."""

import logging

import jax

import fnnet


class Scale:
    """A layer written as a class, its setting on self: y = s * x."""

    def __init__(self, s):
        self.s = s

    def init(self, key, input_shape):
        return tuple(input_shape), ()

    def apply(self, params, x, *, train=False, key=None):
        return x * self.s

    def vjp(self, params, x, dy, *, train=False, key=None):
        return (), dy * self.s  # dx = dy * s


class Power:
    """A callable object: x -> x ** k."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return x**self.k


class Slotted:
    """Settings in __slots__, one of them (mangled) private, and a reference to itself."""

    __slots__ = ("__s", "me")

    def __init__(self, s):
        self.__s, self.me = s, self

    def apply(self, params, x, *, train=False, key=None):
        return x * self.__s


def _twice(x, y):
    return 2 * x


def _scaled(s):
    scale = Scale(s)
    return fnnet.Layer(scale.init, scale.apply, scale.vjp)


def _jitted(s):
    return fnnet.elementwise("Jitted", jax.jit(lambda x: x * s), _twice)


class Logged:
    """A layer object holding a logger: what the logger holds is not the layer's setting."""

    def __init__(self, s):
        self.s, self.log = s, logging.getLogger("resume_objects")

    def apply(self, params, x, *, train=False, key=None):
        return x * self.s


def _logged(s):
    return fnnet.Layer(None, Logged(s).apply, None)


OBJECT_MODELS = {
    "bound-methods": lambda: fnnet.serial(fnnet.Linear(2, 4), _scaled(2.0), fnnet.Linear(4, 1)),
    "callable-object": lambda: fnnet.serial(fnnet.elementwise("Power", Power(3), _twice)),
    "jit-wrapped-closure": lambda: fnnet.serial(_jitted(2.0)),
}
