"""Test settings: float64 available, implicit rank promotion an error, and float32
products in full float32 precision (GPUs otherwise use TF32, ~1e-3 relative error,
which the oracle comparisons would read as wrong gradients).

On a CPU-only JAX (no accelerator plugin installed), the suite, which compiles thousands
of small XLA programs and runs most of them once or a few times, compiles them for a
short compile rather than a fast run: LLVM's level 0 (about a quarter less time), XLA's
CPU elemental emitters for the fused loops instead of its MLIR fusion emitters (most of
these programs' compile time: the suite in about half the CPU time with the older ones),
and each program compiled in one piece (the pytest-xdist workers keep the cores busy;
splitting a small module over threads costs more than it saves). The program fnnet
builds is the same; XLA fuses it a little differently for the older emitters, so the
tests that assert on a compiled program's fusions (test_conv, test_mesh, test_train) compile
it with XLA's default `xla_cpu_use_fusion_emitters`, through `compiler_options`
(helpers.XLA_DEFAULT; test_forward_once counts products, the same under either).
Processes the tests start inherit the flags (helpers.child_xla_flags adds a child's
device count to them), but the one that checks disk.py picks its own device count with
XLA_FLAGS unset. Every comparison in the suite is against an oracle with a tolerance, or
between programs compiled alike.
"""

import importlib.metadata
import importlib.util
import os

cpu_only = importlib.util.find_spec("jax_plugins") is None  # CUDA, ROCm and TPU plugins live there
# Each unless XLA_FLAGS already sets it. XLA refuses to start on a flag it does not know: the
# two CPU flags are given to the jaxlib versions they were tried with (0.10), not to later
# ones, which may have dropped them (the suite then runs slower, not broken).
QUICK_COMPILE = {"--xla_backend_optimization_level": "0"}
if tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
    QUICK_COMPILE.update(
        {"--xla_cpu_use_fusion_emitters": "false", "--xla_cpu_parallel_codegen_split_count": "1"}
    )
if cpu_only:
    for flag, value in QUICK_COMPILE.items():
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {flag}={value}").strip()
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

    def recording_save(path, params, opt_state=None, metadata=None, best_params=None, exclusive=False):
        written.append(metadata["epochs_done"])
        real_save(path, params, opt_state, metadata, best_params, exclusive)

    monkeypatch.setattr(fitting, "save_run", recording_save)
    return written
