"""The timing loop the benchmark scripts share: warm up, then time each call on its own.

Per-call durations (not one total) so that scripts can report medians and minima, which stay meaningful
when other processes take the shared cores for a moment. Imported by the scripts beside it
(``python benchmarks/NAME.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def call_durations(fn: Callable[[], object], steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return durations
