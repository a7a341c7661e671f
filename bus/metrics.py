"""Prometheus metrics of a PoolClient: admission outcomes and submit latency.

The MCP proxy serves these on its /metrics endpoint. Each client has its own
registry, so several clients in one process keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# An admission decision takes a few round trips on a healthy pool
# (milliseconds) and up to request_timeout on a failing one.
SUBMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ADMISSION_OUTCOMES = ("admitted", "POOL_BUSY", "POOL_UNREACHABLE")


class ClientMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.admissions = Counter(
            "superpool_admissions_total",
            "Admission decisions by outcome: admitted, POOL_BUSY or POOL_UNREACHABLE.",
            ["outcome"],
            registry=self.registry,
        )
        self.submit_duration = Histogram(
            "superpool_submit_duration_seconds",
            "Time from a run's submission to its admission decision.",
            ["outcome"],
            buckets=SUBMIT_BUCKETS_S,
            registry=self.registry,
        )
        for outcome in ADMISSION_OUTCOMES:
            self.admissions.labels(outcome)
            self.submit_duration.labels(outcome)

    def observe_admission(self, outcome: str, seconds: float) -> None:
        self.admissions.labels(outcome).inc()
        self.submit_duration.labels(outcome).observe(seconds)
