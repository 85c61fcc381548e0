#!/usr/bin/env bash
# The GPU checks, in one run of about 6 minutes on a machine with an NVIDIA GPU
# and JAX's CUDA build (plus pytest, hypothesis, tqdm, matplotlib; scikit-learn
# for W4 and W5, which train on its bundled digits and are skipped without it):
#   1. the test suite, unchanged (in parallel when pytest-xdist is installed);
#   2. scripts/bench.py (its tables in scripts/benchmarks/): W1, W4, W5, BN,
#      sweeps and the scaling table against the card's measured matmul rate,
#      with jax.grad as the baseline, 3 interleaved rounds per table.
# Writes devices.txt, tests.txt, bench.txt and bench.md to $OUT (default
# gpu-results/ in the repository).
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${OUT:-gpu-results}" && cd "${OUT:-gpu-results}" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several test processes share the card
python=${PYTHON:-python3}
$python -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$out/devices.txt"
parallel=()
if $python -c "import xdist" 2>/dev/null; then parallel=(-n 8); fi
# -p no:benchmark: pytest-benchmark, where installed, warns under xdist, and the
# suite turns warnings into errors
timeout "${TEST_SECONDS:-240}" $python -m pytest -q -p no:cacheprovider -p no:benchmark "${parallel[@]}" tests 2>&1 \
    | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
timeout "${BENCH_SECONDS:-300}" $python scripts/bench.py --no-torch --rounds 3 --only W1 W4 W5 BN sweeps scaling memory \
    --markdown "$out/bench.md" 2>&1 \
    | tee "$out/bench.txt"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
