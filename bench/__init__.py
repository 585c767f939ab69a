"""Benchmarks: ``python -m bench [NAME…]`` runs them (see ``bench/__main__.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best(fn: Callable[[], Any], n: int = 3) -> float:
    """The fastest of ``n`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
