"""Test settings: float64 available, implicit rank promotion an error, and float32
products in full float32 precision (GPUs otherwise use TF32, ~1e-3 relative error,
which the oracle comparisons would read as wrong gradients).

On a CPU-only JAX (no accelerator plugin installed), the suite, which compiles hundreds
of small XLA programs and runs most of them once or a few times, compiles them at LLVM's
level 0 (the HLO passes, fusion included, are unchanged): it takes about a quarter less
time. Processes the tests start inherit it. Every comparison in the suite is against an
oracle with a tolerance, or between programs compiled alike.
"""

import importlib.util
import os

cpu_only = importlib.util.find_spec("jax_plugins") is None  # CUDA, ROCm and TPU plugins live there
if cpu_only and "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
# The scripts' persistent compilation cache (scripts/compile_cache.py) stays off here and in the
# processes the tests start: no test writes to the user's cache or loads what another run left.
os.environ["FNNET_NO_CACHE"] = "1"

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads it once, when the backend starts)
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def saves(monkeypatch):
    """The epochs_done of every checkpoint `fit` writes, in order (it still writes them)."""
    from fnnet import fitting

    written = []
    real_save = fitting.save_run

    def recording_save(path, params, opt_state=None, metadata=None, best_params=None):
        written.append(metadata["epochs_done"])
        real_save(path, params, opt_state, metadata, best_params)

    monkeypatch.setattr(fitting, "save_run", recording_save)
    return written
