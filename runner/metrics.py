"""Prometheus metrics of one runner.

Each runner has its own registry, so several runners in one process (as in
`superpool up` and the tests) do not share counters. Names follow the
Prometheus conventions: `_total` for counters, base units (seconds, USD).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bus.wire import RunResult

# Run durations span echo runs (milliseconds) to long model runs (minutes).
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Busy slots per pod is the autoscaling signal; this gauge carries it.
SLOTS_BUSY_METRIC = "superpool_runner_slots_busy"


class RunnerMetrics:
    """Counters, gauges and histograms that a runner updates as runs finish."""

    def __init__(self, runner_id: str, slots: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.slots = Gauge(
            "superpool_runner_slots",
            "Slots of this runner: runs it may hold at once.",
            registry=self.registry,
        )
        self.slots_busy = Gauge(
            SLOTS_BUSY_METRIC,
            "Slots holding a delivered message right now.",
            registry=self.registry,
        )
        # NOTE: the task label comes from callers; a caller that sends many
        # distinct task labels makes many series.
        self.runs = Counter(
            "superpool_runs_total",
            "Finished runs by status, adapter, model and task.",
            ["status", "adapter", "model", "task"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "superpool_run_duration_seconds",
            "Time from the start of a run to its result.",
            ["adapter", "status"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.tokens = Counter(
            "superpool_tokens_total",
            "Model tokens by direction (input or output) and model.",
            ["direction", "model"],
            registry=self.registry,
        )
        self.cost = Counter(
            "superpool_cost_usd_total",
            "Model cost in US dollars, from the catalog prices.",
            ["model", "caller"],
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "superpool_redeliveries_total",
            "Messages this runner received on a second or later delivery.",
            registry=self.registry,
        )
        self.lost_leases = Counter(
            "superpool_lost_leases_total",
            "Runs whose lease another runner took over before this one finished.",
            registry=self.registry,
        )
        self.slots.set(slots)
        self.runner_id = runner_id

    def observe(self, result: RunResult, duration_s: float) -> None:
        model = result.model or "-"
        status = result.status.value
        self.runs.labels(status, result.adapter or "-", model, result.task or "-").inc()
        self.duration.labels(result.adapter or "-", status).observe(duration_s)
        self.tokens.labels("input", model).inc(result.usage.input_tokens)
        self.tokens.labels("output", model).inc(result.usage.output_tokens)
        if result.cost_usd:
            self.cost.labels(model, result.caller or "-").inc(result.cost_usd)
