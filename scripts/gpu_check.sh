#!/usr/bin/env bash
# The GPU checks, in one run of about 5 minutes on a machine with an NVIDIA GPU
# and JAX's CUDA build (plus pytest, hypothesis, tqdm, matplotlib):
#   1. the test suite, unchanged;
#   2. scripts/bench.py: W1, sweeps and the scaling table against the card's
#      measured float32 matmul rate, with jax.grad as the baseline.
# Writes devices.txt, tests.txt and bench.md to $OUT (default ./gpu-results).
#   bash scripts/gpu_check.sh
set -uo pipefail
out="${OUT:-gpu-results}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
$python -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$out/devices.txt"
timeout "${TEST_SECONDS:-240}" $python -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
timeout "${BENCH_SECONDS:-200}" $python scripts/bench.py --no-torch --markdown "$out/bench.md"
bench=$?
echo "tests exit $tests, bench exit $bench"
exit $(( tests || bench ))
