"""The arq peer: one no-op job and worker settings tuned for short jobs.

arq polls Redis for new jobs every `poll_delay` (0.5 s by default), and
`Job.result()` polls for the result every `poll_delay` too. Both are set to
1 ms here, as arq's documentation allows, because the polling would dominate
otherwise.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from arq.connections import RedisSettings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POLL_DELAY_S = 0.001


def redis_settings() -> RedisSettings:
    parts = urlsplit(REDIS_URL)
    return RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)


async def noop(ctx: dict[str, Any]) -> str:
    return "ok"


class WorkerSettings:
    functions = [noop]
    redis_settings = redis_settings()
    max_jobs = 9
    poll_delay = POLL_DELAY_S
    keep_result = 600
    handle_signals = True


if __name__ == "__main__":
    # run_worker without arq's command line keeps logging at WARNING; the
    # arq command logs one INFO line per job.
    from arq import run_worker

    run_worker(WorkerSettings)  # type: ignore[arg-type]
