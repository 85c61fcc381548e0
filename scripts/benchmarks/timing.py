"""How the benchmarks time and report: interleaved rounds, ratios within a round, tables.

On a shared machine the load drifts while a benchmark runs, so the variants of
one table take turns (A B C, A B C, ...) after one warm-up call each, and a
ratio is the median over rounds of the two variants' times in the same round.
"""

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax


class Measured(NamedTuple):
    """What a variant that times itself returns (a peer timed in its own process)."""

    seconds: float
    result: object


class Timing(NamedTuple):
    """One variant's times in seconds: `times` holds one per round, or only the first
    call's (compilation included) when there were no rounds (`--quick`)."""

    best: float
    median: float
    first: float
    times: list[float]
    result: object  # the last call's


def _timed(fn: Callable):
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    if isinstance(result, Measured):
        return result.seconds, result.result
    return time.perf_counter() - start, result


def interleaved(variants: dict[str, Callable], rounds: int) -> dict[str, Timing]:
    """Time every `fn()` of `variants` in `rounds` interleaved rounds, each after one warm-up
    call; with `rounds=0` the warm-up call, compilation included, is all there is."""
    first, results = {}, {}
    for name, fn in variants.items():
        first[name], results[name] = _timed(fn)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds, results[name] = _timed(fn)
            times[name].append(seconds)
    timings = {}
    for name in variants:
        ts = times[name] or [first[name]]
        timings[name] = Timing(min(ts), statistics.median(ts), first[name], ts, results[name])
    return timings


def ratio(timings: dict[str, Timing], name: str, reference: str) -> float:
    """`name`'s time over `reference`'s: the median over rounds of the ratio within a round."""
    return statistics.median(a / b for a, b in zip(timings[name].times, timings[reference].times))


def target(value: float, limit: float, what: str) -> str:
    """A table cell: whether `value` <= `limit`, e.g. 'fnnet <= 0.7x this: yes (0.62x)'."""
    return f"{what}: {'yes' if value <= limit else 'no'} ({value:.2f}x)"


def table(title: str, header: list[str], rows: list[list], notes: str = "") -> str:
    """Print a markdown table (with `notes` under its title) and return its text."""
    lines = [f"### {title}", ""] + ([notes, ""] if notes else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text
