"""JAX's persistent compilation cache for the scripts: a program compiles once per machine.

A script calls `enable()` in its main, before it compiles anything; the next run
of the same program (same jax, XLA flags and devices) loads every executable
from the folder instead of compiling it. The folder is $FNNET_CACHE_DIR, else
$XDG_CACHE_HOME/fnnet/jax, else ~/.cache/fnnet/jax; FNNET_NO_CACHE=1 (or a
script's --no-cache) turns the cache off. The fnnet library itself never
changes JAX's configuration: this is the scripts' choice.

    import compile_cache

    compile_cache.enable()
    with compile_cache.Compiles() as compiles:
        ...                        # compile and run
    print(compiles.summary())      # "cached" when no program was compiled
"""

import os
import tempfile
import warnings

import jax
from jax import monitoring

# One per executable JAX asks XLA for: compiled, or loaded from the persistent cache.
PROGRAM_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def folder():
    """The cache's folder: $FNNET_CACHE_DIR, else $XDG_CACHE_HOME/fnnet/jax, else ~/.cache/fnnet/jax."""
    if os.environ.get("FNNET_CACHE_DIR"):
        return os.environ["FNNET_CACHE_DIR"]
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "fnnet", "jax")


def enable(no_cache=False):
    """Turn JAX's persistent compilation cache on in `folder()`, for every program however small.

    Args:
      no_cache: True leaves the cache off, as FNNET_NO_CACHE=1 (anything but "" or "0") does.

    Returns:
      The folder, or None when the cache stays off: turned off, or the folder
      cannot be created or written (then a RuntimeWarning says so, once, and
      the run goes on compiling as usual).
    """
    if no_cache or os.environ.get("FNNET_NO_CACHE", "") not in ("", "0"):
        return None
    path = folder()
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as error:
        warnings.warn(
            f"compilation cache off for this run: cannot write to {path} ({error}); "
            "set FNNET_CACHE_DIR to a writable folder, or FNNET_NO_CACHE=1",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # default 1 s: none of ours
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size limit either
    return path


class Compiles:
    """Counts, while open, the programs JAX got from XLA and those of them loaded from the cache."""

    def __init__(self):
        self.programs = self.cached = 0

    def _program(self, event, duration, **kwargs):
        self.programs += event == PROGRAM_EVENT

    def _cache_hit(self, event, **kwargs):
        self.cached += event == CACHE_HIT_EVENT

    def __enter__(self):
        monitoring.register_event_duration_secs_listener(self._program)
        monitoring.register_event_listener(self._cache_hit)
        return self

    def __exit__(self, *exc_info):
        monitoring.unregister_event_duration_listener(self._program)
        monitoring.unregister_event_listener(self._cache_hit)

    def summary(self):
        """ "cached" when every program came from the cache, "k of n programs cached" when some
        did, "" when none did (the cache off, or a first run)."""
        if self.cached and self.cached == self.programs:
            return "cached"
        return f"{self.cached} of {self.programs} programs cached" if self.cached else ""
