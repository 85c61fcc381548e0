"""Helpers shared by the test modules (import with `from helpers import ...`)."""

import contextlib
import logging

import jax

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
