"""Timing helpers for the benchmarks: medians over repeats after warm-up."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3, sync=lambda: None) -> dict[str, float]:
    """Median times of several functions measured alternately (fair on a noisy machine)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def training_step_flops(terms: list[tuple[tuple[int, int], bool]], B: int, T: int) -> int:
    """Flops of the products a training step needs: per dense term (W of shape
    (out, in), source free or not), the prediction x_source @ W.T in each of the T+1
    error sweeps (once when the source is clamped: it cannot change), h @ W in each
    of the T steps when the source is free, and the Hebbian h.T @ x_source once."""
    macs = 0
    for (a, b), source_free in terms:
        n = a * b
        macs += n * ((T + 1) if source_free else 1) + (n * T if source_free else 0) + n
    return 2 * B * macs
