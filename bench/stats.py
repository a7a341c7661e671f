"""Percentiles and timing loops shared by every measurement."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Latency percentiles of one measurement, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    def describe(self) -> str:
        """Return "p50 / p90 / p99" in milliseconds, as the report prints it."""
        return f"{ms(self.p50)} / {ms(self.p90)} / {ms(self.p99)}"


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile of sorted samples, interpolating linearly."""
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    return ordered[low] * (1 - weight) + ordered[high] * weight


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize latency samples given in seconds."""
    ordered = sorted(samples)
    count = len(ordered)
    return Summary(
        count=count,
        p50=percentile(ordered, 0.50),
        p90=percentile(ordered, 0.90),
        p99=percentile(ordered, 0.99),
        mean=sum(ordered) / count if count else math.nan,
        max=ordered[-1] if ordered else math.nan,
    )


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 0.5)


async def time_calls(
    call: Callable[[], Awaitable[object]], count: int, warmup: int
) -> list[float]:
    """Await `call` `warmup` times untimed, then `count` times; return each duration."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def ms(seconds: float) -> str:
    """Format seconds as milliseconds with a precision that suits the size."""
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def ratio(value: float, reference: float) -> str:
    """Format value / reference as "2.1x", or "n/a" without a reference."""
    if not reference or math.isnan(reference) or math.isnan(value):
        return "n/a"
    return (
        f"{value / reference:.2f}x"
        if value / reference < 10
        else (f"{value / reference:,.0f}x")
    )
