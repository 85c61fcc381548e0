"""Benchmarks: fnnet against plain jax.grad, PyTorch eager and scikit-learn (when installed).

    python scripts/bench.py            # full run: ~15 minutes on an idle 2-core CPU
    python scripts/bench.py --quick    # a smoke run: few epochs, times include compilation
    python scripts/bench.py --profile  # XLA's per-operation times of fnnet's W1 epoch
    python scripts/bench.py --only fixed  # imports and compilation, in fresh processes
    python scripts/bench.py --only disk  # disk.py's programs' compilation against plain JAX's
    python scripts/bench.py --only search  # a grid search against scikit-learn's, fresh processes
    python scripts/bench.py --only sklearn  # fnnet.sklearn's MLPClassifier against scikit-learn's

Prints markdown tables (ready for BENCHMARKS.md; `--markdown FILE` also writes
them). The variants of a table take turns, A B C A B C ..., for `--rounds`
rounds after one warm-up call each (so without compilation); a table gives the
best and the median round (the fixed-cost and search tables: the median of
`--fresh-rounds` fresh processes, compilation included), and a ratio is the median over
rounds of the two variants' times in the same round. The search table times a whole
script's work, imports included: a 4-candidate x 3-fold grid search on scikit-learn's
breast-cancer data and a refit, fnnet's against scikit-learn's GridSearchCV, each in
a fresh process (it needs scikit-learn). The tables' code is in the package
scripts/benchmarks/, one module per kind (its docstring lists them). Unlike the
other scripts it leaves JAX's persistent compilation cache off (`compile_cache`):
it times compilation; only the "warm" fnnet rows of the search and sklearn tables turn
it on, each in a folder of its own. The sklearn tables (`sklearn_fit.py`; they need
scikit-learn): `fnnet.sklearn.MLPClassifier` against scikit-learn's on the digits, a later
fit in one process and a fresh process's first fit, and both sides' test scores on
scikit-learn's bundled data sets.
"""

import argparse
import os
import platform
import sys
import time

import host_devices

if __name__ == "__main__":
    # --profile: XLA's per-operation events in the profiler's trace
    host_devices.one_per_core(*(["--xla_cpu_enable_xprof_traceme=true"] if "--profile" in sys.argv else []))

import jax
from benchmarks.disk_compile import bench_disk_compile
from benchmarks.fixed import bench_fixed
from benchmarks.floor import bench_floor
from benchmarks.peers import installed
from benchmarks.profiling import profile_w1
from benchmarks.scaling import bench_compile_memory, bench_scaling, bench_sweep, sgemm_rate
from benchmarks.search import bench_search
from benchmarks.sklearn_fit import bench_sklearn
from benchmarks.workloads import bench_bn, bench_digits, bench_w1

TABLES = (
    "W1",
    "W4",
    "W5",
    "BN",
    "sweeps",
    "scaling",
    "memory",
    "floor",
    "fixed",
    "disk",
    "search",
    "sklearn",
)
TARGETS = (
    "W1: fnnet <= 0.5x batch-major jax.grad, no slower than feature-major jax.grad, "
    ">= 5x faster than PyTorch eager. W4: fnnet <= 0.7x plain jax.grad (nested scans), "
    "<= 1.0x the flat-scan jax.grad, >= 5x faster than PyTorch eager, >= 3x faster than "
    "MLPClassifier. W5: fnnet <= 1.0x plain jax.grad (nested and flat scans), >= 3x faster "
    "than PyTorch eager. BN: fnnet no slower than jax.grad. search: fnnet's grid search, a "
    "fresh process, <= 1.0x scikit-learn's wall with the compilation cache warm, <= 2.0x cold. "
    "sklearn: fnnet.sklearn.MLPClassifier's later fit on the digits >= 5x faster than "
    "scikit-learn's; a fresh process's first fit, the cache warm, <= 1.5x scikit-learn's wall; "
    "test scores within 1 point of accuracy (0.02 of R2) of scikit-learn's."
)


def header(args, skipped):
    device = jax.devices()[0]
    flags = "".join(
        f" {flag}"
        for flag, on in (
            ("--quick", args.quick),
            ("--no-torch", args.no_torch),
            ("--no-sklearn", args.no_sklearn),
        )
        if on
    )
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{device.platform} ({getattr(device, 'device_kind', '')}), {len(jax.devices())} device(s); "
        f"jax {jax.__version__}; float32 products at precision "
        f"{jax.config.jax_default_matmul_precision or 'default'} (TF32 on recent NVIDIA GPUs); "
        f"{time.strftime('%Y-%m-%d')}; command: python scripts/bench.py{flags}"
        + (
            f"; rounds: {args.rounds}"
            if not args.quick
            else "; --quick: one call per variant, times include compilation"
        )
        + (f"; no {' or '.join(skipped)} rows (not installed or switched off)" if skipped else "")
        + f"\n\nTargets: {TARGETS}\n"
    )


def main(argv=None):
    """Run the benchmarks; returns {workload: {variant: Row(seconds, accuracy)}} for W1, W4, W5, BN."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: small sizes, few epochs, times include compilation",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument(
        "--no-sklearn",
        action="store_true",
        help="skip scikit-learn's MLPClassifier, the search table (scikit-learn's "
        "GridSearchCV is its reference) and the sklearn tables even if installed (W4 and W5 still need "
        "scikit-learn for the digits)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument(
        "--fresh-rounds",
        type=int,
        default=3,
        help="fresh processes per cell of the fixed-cost, search and sklearn tables (--quick: 1)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=TABLES,
        default=TABLES,
        metavar="TABLE",
        help=f"run only these tables, of {', '.join(TABLES)}",
    )
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    parser.add_argument(
        "--profile", action="store_true", help="only print XLA's per-operation times of one W1 epoch"
    )
    args = parser.parse_args(argv)
    if args.profile:
        return profile_w1()
    rounds = 0 if args.quick else args.rounds
    peers, skipped = set(), []
    for name, package, off in (
        ("PyTorch", "torch", args.no_torch),
        ("scikit-learn", "sklearn", args.no_sklearn),
    ):
        if off or not installed(package):
            skipped.append(name)
        else:
            peers.add(package)
    texts, results = [header(args, skipped)], {}
    print(texts[0])
    if "W1" in args.only:
        text, results["W1"] = bench_w1(3_000 if args.quick else 10_000, rounds, peers)
        texts.append(text)
    for workload, epochs in (
        ("W4", 3 if args.quick else 100),
        ("W5", 3 if args.quick else 20),
        ("floor", 3 if args.quick else 100),
    ):
        if workload not in args.only:
            continue
        if not installed("sklearn"):
            print(
                f"({workload} skipped: scikit-learn, whose bundled digits it trains on, is not installed)\n"
            )
            continue
        if workload == "floor":
            texts.append(bench_floor(epochs, rounds))
            continue
        text, results[workload] = bench_digits(workload, epochs, rounds, peers)
        texts.append(text)
    if "BN" in args.only:
        text, results["BN"] = bench_bn(300 if args.quick else 2_000, rounds)
        texts.append(text)
    if "sweeps" in args.only:
        texts.append(bench_sweep(100 if args.quick else 2_000, (2,) if args.quick else (1, 8, 64), rounds))
    if "scaling" in args.only:
        # the CPU's or the card's float32 product rate: an accelerator needs a large product
        size = 512 if args.quick else 1024 if jax.devices()[0].platform == "cpu" else 8192
        rate, numpy_rate = sgemm_rate(size)
        print(f"sgemm: XLA {rate:.0f} GFLOP/s, NumPy {numpy_rate:.0f} GFLOP/s\n")
        texts.append(bench_scaling(args.quick, rounds, rate, size))
    if "memory" in args.only:
        texts.append(bench_compile_memory(3_000 if args.quick else 10_000))
    if "fixed" in args.only:
        texts.append(bench_fixed(args.quick, 1 if args.quick else args.fresh_rounds))
    if "disk" in args.only:
        texts.append(bench_disk_compile(1 if args.quick else args.rounds))
    if "search" in args.only:
        if "sklearn" in peers:
            texts.append(bench_search(1 if args.quick else args.fresh_rounds))
        else:
            print(
                "(search skipped: its data and its reference, GridSearchCV, need scikit-learn: "
                "not installed or --no-sklearn)\n"
            )
    if "sklearn" in args.only:
        if "sklearn" in peers:
            texts.append(
                bench_sklearn(
                    1 if args.quick else args.rounds,
                    1 if args.quick else args.fresh_rounds,
                    1 if args.quick else 5,
                )
            )
        else:
            print(
                "(sklearn skipped: scikit-learn, its reference and data, is not installed or --no-sklearn)\n"
            )
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write("\n".join(texts))
    return results


if __name__ == "__main__":
    main()
