"""Test settings: float64 available, implicit rank promotion an error, and float32
products in full float32 precision (GPUs otherwise use TF32, ~1e-3 relative error,
which the oracle comparisons would read as wrong gradients)."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")
