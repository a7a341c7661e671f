"""The taskiq peer: taskiq-nats' pull-based JetStream broker, results in a NATS KV.

The worker runs as `taskiq worker bench.peers.taskiq_app:broker --workers 1
--max-async-tasks 9`. Tuning: callers wait with `check_interval` 1 ms, where
taskiq's default of 0.2 s would dominate. taskiq-nats 0.7 ships only an
object store result backend, whose readiness check creates a JetStream
consumer on every poll; 50 callers polling every 1 ms reach the server's
consumer limit (error 10026). So results go to a key-value bucket through
`KVResultBackend` below, one direct get per poll, the same kind of read that
superpool's clients make.
"""

from __future__ import annotations

import os
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from taskiq import AsyncResultBackend, TaskiqResult
from taskiq.exceptions import ResultGetError
from taskiq_nats import PullBasedJetStreamBroker

NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
CHECK_INTERVAL_S = 0.001
RESULTS_BUCKET = "bench-taskiq-results"


class KVResultBackend(AsyncResultBackend[Any]):
    """taskiq results as JSON values in a JetStream key-value bucket."""

    def __init__(self, servers: str, bucket: str) -> None:
        self.servers = servers
        self.bucket = bucket
        self._nc: NATS | None = None
        self._kv: KeyValue | None = None

    async def startup(self) -> None:
        self._nc = await nats.connect(self.servers)
        js = self._nc.jetstream()
        self._kv = await js.create_key_value(
            KeyValueConfig(bucket=self.bucket, history=1, direct=True)
        )

    async def shutdown(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "result backend not started"
        return self._kv

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        await self.kv.put(task_id, result.model_dump_json().encode())

    async def is_result_ready(self, task_id: str) -> bool:
        try:
            await self.kv.get(task_id)
        except KeyNotFoundError:
            return False
        return True

    async def get_result(
        self, task_id: str, with_logs: bool = False
    ) -> TaskiqResult[Any]:
        try:
            entry = await self.kv.get(task_id)
        except KeyNotFoundError as exc:
            raise ResultGetError from exc
        result: TaskiqResult[Any] = TaskiqResult.model_validate_json(entry.value or b"")
        if not with_logs:
            result.log = None
        return result


broker = PullBasedJetStreamBroker(
    servers=NATS_URL,
    subject="benchtaskiq.tasks",
    stream_name="BENCH_TASKIQ",
    durable="bench-taskiq",
).with_result_backend(KVResultBackend(NATS_URL, RESULTS_BUCKET))


@broker.task(task_name="bench.noop")
async def noop() -> str:
    return "ok"
