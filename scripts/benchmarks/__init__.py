"""The benchmark tables that `scripts/bench.py` prints, one module per kind:

- workloads: W1, W4, W5 and BN, fnnet against plain jax.grad and the peers;
- floor: what a W4 step cannot beat on this machine;
- scaling: sweeps of many models, scaling against the matmul rate, compile
  time and memory;
- fixed: the fixed costs (imports, first and second calls' compilation), each cell
  in a fresh process that runs fresh;
- disk_compile: the programs of `scripts/disk.py` against the plain jax.grad
  programs of the same work, compile and run;
- search: a grid search with cross-validation and a refit, fnnet's (the compilation
  cache cold and warm) against scikit-learn's GridSearchCV, each a fresh process that
  runs `search_fresh`;
- later_plain: the sklearn table's later fit against the plain jax.grad program of the
  same training, milliseconds an epoch;
- jaxgrad: the plain jax.grad baselines;
- peers: PyTorch and scikit-learn, each in its own process;
- timing: interleaved rounds, ratios and tables;
- profiling: XLA's per-operation times of fnnet's W1 epoch (`--profile`);
- forward: a program of its own, how often a training step runs each layer's
  forward (`python scripts/benchmarks/forward.py`).
"""
