"""The Celery peer: a Redis broker and result backend, and one no-op task.

The worker runs as `celery -A bench.peers.celery_app worker -P threads -c 9`.
Tuning: results travel over the Redis backend's pub/sub, so `get()` does not
poll. Gossip, mingle and worker heartbeats are off, because they add broker
traffic that a one-queue benchmark does not need.
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> str:
    return "ok"
