"""Helpers shared by the test modules (import with `from helpers import ...`)."""

import contextlib
import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

# XLA's default CPU pipeline, for the tests that read a compiled program's fusions
# (tests/conftest.py compiles the suite's programs with another: see its docstring)
XLA_DEFAULT = {"xla_cpu_use_fusion_emitters": True}


def child_xla_flags(devices=None) -> str:
    """XLA_FLAGS for a child process: the suite's compile flags (tests/conftest.py) and
    `devices` host CPU devices (one, XLA's own count, for None)."""
    flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f
    ]
    return " ".join(flags + ([f"--xla_force_host_platform_device_count={devices}"] if devices else []))


# jax records this event around every XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT),
# and only then: a program served from jit's caches does not record it.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class _CompileLogHandler(logging.Handler):
    """Collects jax's "Compiling <name> ..." log records (emitted under `jax.log_compiles`)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


@contextlib.contextmanager
def count_compilations():
    """Count the XLA compilations that happen inside the block.

    Yields a list that, when the block ends, holds the name of each function
    compiled in the block (e.g. `'jit(step)'`); `len(...)` is the count. Two independent
    witnesses are used: jax.monitoring's backend-compile event and the
    "Compiling ..." records that `jax.log_compiles` turns on. The list gets
    the names from whichever saw more, so neither a renamed event nor a
    reworded log line can make a recompilation go unnoticed. (Tests that
    assert "no compilation" should also check, once, that this helper does see
    a fresh compilation: see `test_count_compilations_sees_a_compile`.)

    Example:
      >>> with count_compilations() as compiled:
      ...     f(x)
      >>> assert not compiled, compiled
    """
    from_events, names = [], []

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            from_events.append(kwargs.get("fun_name", "?"))

    handler = _CompileLogHandler()
    logger = logging.getLogger("jax")
    jax.monitoring.register_event_duration_secs_listener(listener)
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)
        jax.monitoring.unregister_event_duration_listener(listener)
        names.extend(from_events if len(from_events) >= len(handler.names) else handler.names)


@functools.cache
def jitted_value_and_grad(model, loss):
    """`jax.jit(fnnet.value_and_grad(model, loss))`, one per configuration, so that tests
    of one configuration share its compiled program."""
    return jax.jit(fnnet.value_and_grad(model, loss))


# The oracle comparisons' tolerances: float64 tight, float32 a few ulps of accumulated error.
TOLERANCES = {
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
}


# Half precision: a result computed in float32 and rounded once to float16 or bfloat16 is
# within half an ulp of the float32 one, 2**-11 or 2**-8 relative: these leave a margin.
HALF_RTOL = {np.dtype(jnp.float16): 2e-3, np.dtype(jnp.bfloat16): 1e-2}
HALF_DTYPES = pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])


def assert_half_close(got, want, dtype):
    """`got`, in the half-precision `dtype`, within a rounding of `want`, the float32 result
    on the same values cast up: rtol `HALF_RTOL`, atol the dtype's smallest normal number
    (results that round to subnormals) plus float32 noise on the result's scale."""
    assert got.dtype == dtype, (got.dtype, dtype)
    want = np.asarray(want, np.float32)
    atol = float(jnp.finfo(dtype).tiny) + 1e-6 * float(np.abs(want).max(initial=0))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=HALF_RTOL[np.dtype(dtype)], atol=atol)


@functools.cache
def parameterless_apply_and_vjp(layer):
    """Jitted `(x, dy) -> (y, dx)` of a layer without params, one program per dtype."""
    return jax.jit(lambda x, dy: (layer.apply((), x), layer.vjp((), x, dy)[1]))


def assert_half_matches_float32(layer, x, dy, dtype):
    """A parameterless layer's y and dx on host `x` and `dy` in the half-precision `dtype`
    against its float32 results on the same values cast up."""
    x, dy = device(x, dtype), device(dy, dtype)
    y, dx = parameterless_apply_and_vjp(layer)(x, dy)
    y32, dx32 = parameterless_apply_and_vjp(layer)(x.astype(jnp.float32), dy.astype(jnp.float32))
    assert_half_close(y, y32, dtype)
    assert_half_close(dx, dx32, dtype)


def device(a, dtype=None):
    """A jax array of host data, converted on the host (jnp.asarray compiles a program per
    new shape, and compiling is most of the oracle tests' run time)."""
    return jax.device_put(np.asarray(a, dtype))


def assert_trees_close(actual, expected, dtype=None, *, rtol=None, atol=None, scaled=False, same_dtypes=True):
    """Same structure and shapes (and dtypes, unless `same_dtypes=False`); values within
    `rtol`/`atol`, by default `TOLERANCES[dtype]`. `scaled`: atol relative to the expected
    leaf's largest magnitude (at least 1), for leaves whose values run large."""
    tolerance = dict(TOLERANCES[np.dtype(dtype)]) if dtype is not None else {}
    tolerance.update({k: v for k, v in dict(rtol=rtol, atol=atol).items() if v is not None})
    if "rtol" not in tolerance:
        raise TypeError("assert_trees_close needs a dtype or rtol")
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        assert a.dtype == e.dtype or not same_dtypes, (a.dtype, e.dtype)
        atol_here = tolerance.get("atol", 0.0) * (max(1.0, float(np.abs(e).max(initial=0))) if scaled else 1)
        np.testing.assert_allclose(a, e, rtol=tolerance["rtol"], atol=atol_here)


def assert_trees_equal(actual, expected):
    """Same structure, shapes, dtypes and bits."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        assert np.array_equal(np.asarray(a), np.asarray(e)), "values differ"


def png_size(path):
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    with open(path, "rb") as file:
        head = file.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def interrupt_on_checkpoint(monkeypatch, number):
    """Make fit's `number`-th checkpoint raise KeyboardInterrupt instead of writing."""
    from fnnet import fitting as fit_module

    real_save = fit_module.save_run
    calls = []

    def save(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(fit_module, "save_run", save)
