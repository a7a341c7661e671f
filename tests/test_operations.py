"""Every nats command in docs/operations.md, sent as the same request with nats-py.

Each test names the `nats` command it stands for.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import nats
import pytest

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import Status, decode_record, decode_result
from runner.runner import Runner
from tests.pool import running_pool, wait_until

# A $SRV.PING gathers answers from every runner for this long.
GATHER_S = 0.5


async def gather_replies(nc: nats.NATS, subject: str) -> list[dict[str, object]]:
    """Send one request and collect every reply, as `nats micro ls` does."""
    inbox = nc.new_inbox()
    replies: list[dict[str, object]] = []
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    try:
        while True:
            msg = await sub.next_msg(timeout=GATHER_S)
            replies.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return replies


async def test_micro_ls_lists_every_runner(settings: Settings, nc: nats.NATS) -> None:
    # nats micro ls
    async with running_pool(settings, runners=3):
        pings = await gather_replies(nc, f"$SRV.PING.{settings.service_name}")
    runner_ids = sorted(str(ping["metadata"]["runner_id"]) for ping in pings)  # type: ignore[index]
    assert runner_ids == ["runner-0", "runner-1", "runner-2"]
    assert {ping["name"] for ping in pings} == {settings.service_name}
    assert {ping["version"] for ping in pings} == {"0.1.0"}


async def test_micro_info_lists_endpoints(settings: Settings, nc: nats.NATS) -> None:
    # nats micro info superpool
    async with running_pool(settings, runners=1):
        reply = await nc.request(f"$SRV.INFO.{settings.service_name}", b"", timeout=2)
    info = json.loads(reply.data)
    names = sorted(endpoint["name"] for endpoint in info["endpoints"])
    assert names == ["drain", "runner", "runs", "status"]
    assert info["metadata"]["slots"] == "3"


async def test_micro_stats_counts_requests(settings: Settings, nc: nats.NATS) -> None:
    # nats micro stats superpool
    async with running_pool(settings, runners=1):
        await nc.request(f"{settings.subject_prefix}.svc.status", b"", timeout=2)
        reply = await nc.request(f"$SRV.STATS.{settings.service_name}", b"", timeout=2)
    stats = {
        endpoint["name"]: endpoint for endpoint in json.loads(reply.data)["endpoints"]
    }
    assert stats["status"]["num_requests"] == 1
    assert stats["status"]["num_errors"] == 0


async def test_status_endpoint_shows_slots(settings: Settings, nc: nats.NATS) -> None:
    # nats req pool.svc.status ''  and  nats req pool.svc.runs ''
    async with (
        running_pool(settings, runners=2) as runners,
        PoolClient(settings) as client,
    ):
        running = asyncio.create_task(
            client.run("shown", prompt_text="x", adapter="echo", model_hint="delay=3")
        )
        await wait_until(
            lambda: sum(len(runner.running) for runner in runners), lambda n: n == 1
        )
        await wait_until(client.status, lambda status: status.slots_busy == 1)
        status = json.loads(
            (
                await nc.request(
                    f"{settings.subject_prefix}.svc.status", b"", timeout=2
                )
            ).data
        )
        runs = json.loads(
            (
                await nc.request(f"{settings.subject_prefix}.svc.runs", b"", timeout=2)
            ).data
        )
        await running
    assert status["slots_total"] == 6
    assert status["slots_busy"] == 1
    assert len(runs) == 1
    assert runs[0]["task"] == "shown"
    assert runs[0]["adapter"] == "echo"
    assert runs[0]["model"] == "echo"
    assert runs[0]["started_at"] > 0


async def test_kv_and_results_direct_get(settings: Settings, nc: nats.NATS) -> None:
    # nats kv get pool-registry run.<id>  and  nats stream get POOL_RESULTS
    #   --last-for pool.result.<id>
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        done = await client.run("lookup", prompt_text="x", adapter="echo")
    bucket = settings.registry_bucket
    record_msg = await nc.request(
        f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.run.{done.run_id}", b"", timeout=2
    )
    result_msg = await nc.request(
        f"$JS.API.DIRECT.GET.{settings.results_stream}."
        f"{settings.subject_prefix}.result.{done.run_id}",
        b"",
        timeout=2,
    )
    record = decode_record(record_msg.data)
    assert record.state == "final"
    assert record.runner_id == "runner-0"
    assert record.result is not None and record.result.status == Status.OK
    assert decode_result(result_msg.data).output == done.output


async def test_consumer_info_shows_pending(settings: Settings, nc: nats.NATS) -> None:
    # nats consumer info POOL_RUNS runners
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        running = asyncio.create_task(
            client.run("pending", prompt_text="x", adapter="echo", model_hint="delay=2")
        )
        await wait_until(client.status, lambda status: status.slots_busy == 1)
        reply = await nc.request(
            f"$JS.API.CONSUMER.INFO.{settings.runs_stream}.{settings.consumer}",
            b"",
            timeout=2,
        )
        await running
    info = json.loads(reply.data)
    assert info["num_ack_pending"] == 1
    assert info["config"]["max_ack_pending"] == 9


async def test_stuck_message_removed_by_sequence(
    settings: Settings, nc: nats.NATS
) -> None:
    # nats stream rmm POOL_RUNS <seq>
    js = nc.jetstream()
    ack = await js.publish(f"{settings.subject_prefix}.run.stuck", b'{"task": "stuck"}')
    reply = await nc.request(
        f"$JS.API.STREAM.MSG.DELETE.{settings.runs_stream}",
        json.dumps({"seq": ack.seq}).encode(),
        timeout=2,
    )
    info = await js.stream_info(settings.runs_stream)
    assert json.loads(reply.data) == {
        "type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
        "success": True,
    }
    assert info.state.messages == 0


async def test_drain_request_stops_runner(settings: Settings, nc: nats.NATS) -> None:
    # nats req pool.svc.drain.<runner_id> ''
    async with (
        running_pool(settings, runners=2) as runners,
        PoolClient(settings) as client,
    ):
        running = asyncio.create_task(
            client.run("drained", prompt_text="x", adapter="echo", model_hint="delay=1")
        )
        await wait_until(
            lambda: sum(len(runner.running) for runner in runners), lambda n: n == 1
        )
        busy = next(runner for runner in runners if runner.running)
        reply = await nc.request(
            f"{settings.subject_prefix}.svc.drain.{busy.runner_id}", b"", timeout=2
        )
        await asyncio.wait_for(busy.wait_stopped(), 10)
        result = await running
        remaining = await client.status()
    assert json.loads(reply.data) == {"draining": True}
    assert result.status == Status.OK
    assert result.runner_id == busy.runner_id
    assert [state.runner_id for state in remaining.runners] != [busy.runner_id]
    assert len(remaining.runners) == 1


def scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.timeout(60)
async def test_runner_metrics_and_probes(settings: Settings, nc: nats.NATS) -> None:
    probed = settings.replace(probe_port=0)
    async with Runner(probed, runner_id="probed", slots=3) as runner:
        await asyncio.wait_for(runner.probes_started.wait(), 10)
        async with PoolClient(probed) as client:
            await wait_until(client.registry.live_capacity, lambda n: n == 3)
            for _ in range(3):
                await client.run("metered", prompt_text="one two", adapter="echo")
            await client.run(
                "metered", prompt_text="x", adapter="echo", model_hint="fail"
            )
            health = await asyncio.to_thread(scrape, runner.probe_url + "/healthz")
            ready = await asyncio.to_thread(scrape, runner.probe_url + "/readyz")
            code, metrics = await asyncio.to_thread(
                scrape, runner.probe_url + "/metrics"
            )
            last = asyncio.create_task(
                client.run(
                    "metered", prompt_text="x", adapter="echo", model_hint="delay=2"
                )
            )
            await wait_until(lambda: len(runner.running), lambda n: n == 1)
            runner.request_drain()
            draining_ready = await asyncio.to_thread(
                scrape, runner.probe_url + "/readyz"
            )
            draining_health = await asyncio.to_thread(
                scrape, runner.probe_url + "/healthz"
            )
            await asyncio.wait_for(runner.wait_stopped(), 10)
            finished = await last
    assert health == (200, "ok\n")
    assert ready == (200, "ok\n")
    assert draining_ready == (503, "unavailable\n")
    assert draining_health == (200, "ok\n")
    assert finished.status == Status.OK
    assert code == 200
    echo_runs = (
        'superpool_runs_total{adapter="echo",model="echo",status="%s",task="metered"}'
    )
    assert f"{echo_runs % 'OK'} 3.0" in metrics
    assert f"{echo_runs % 'RUN_FAILED'} 1.0" in metrics
    assert 'superpool_tokens_total{direction="input",model="echo"} 6.0' in metrics
    assert "superpool_runner_slots 3.0" in metrics
    assert "superpool_runner_slots_busy 0.0" in metrics
    assert (
        'superpool_run_duration_seconds_count{adapter="echo",status="OK"} 3.0'
        in metrics
    )


async def test_client_counts_admissions(settings: Settings, nc: nats.NATS) -> None:
    from prometheus_client import generate_latest

    async with PoolClient(settings) as client:
        unreachable = await client.run("counted", prompt_text="x", adapter="echo")
        async with running_pool(settings, runners=1, slots=1):
            holder = asyncio.create_task(
                client.run(
                    "counted", prompt_text="x", adapter="echo", model_hint="delay=2"
                )
            )
            await wait_until(client.status, lambda status: status.in_stream == 1)
            busy = await client.run("counted", prompt_text="x", adapter="echo")
            await holder
        text = generate_latest(client.metrics.registry).decode()
    assert unreachable.status == Status.POOL_UNREACHABLE
    assert busy.status == Status.POOL_BUSY
    assert 'superpool_admissions_total{outcome="admitted"} 1.0' in text
    assert 'superpool_admissions_total{outcome="POOL_BUSY"} 1.0' in text
    assert 'superpool_admissions_total{outcome="POOL_UNREACHABLE"} 1.0' in text
    assert 'superpool_submit_duration_seconds_count{outcome="admitted"} 1.0' in text


@pytest.mark.timeout(60)
async def test_proxy_metrics_and_probes(settings: Settings, nc: nats.NATS) -> None:
    from mcp import Client

    from mcp_proxy.server import serve
    from tests.cluster import free_port

    probes = f"http://127.0.0.1:{free_port()}"
    probed = settings.replace(proxy_probe_port=int(probes.rsplit(":", 1)[1]))
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with running_pool(settings, runners=1):
        proxy = asyncio.create_task(
            serve(probed, "http", port=0, on_listening=listening.set_result)
        )
        url = await asyncio.wait_for(listening, 15)
        async with Client(url) as client:
            await client.call_tool(
                "super_agent_run",
                {"task": "probe", "prompt_text": "x", "adapter": "echo"},
            )
        await wait_until(
            lambda: asyncio.to_thread(scrape, probes + "/readyz"), lambda r: r[0] == 200
        )
        health = await asyncio.to_thread(scrape, probes + "/healthz")
        code, metrics = await asyncio.to_thread(scrape, probes + "/metrics")
        proxy.cancel()
        await asyncio.gather(proxy, return_exceptions=True)
    assert health == (200, "ok\n")
    assert code == 200
    assert 'superpool_admissions_total{outcome="admitted"} 1.0' in metrics
    assert 'superpool_submit_duration_seconds_count{outcome="admitted"} 1.0' in metrics


@pytest.mark.parametrize(("ack_wait_s", "warned"), [(2.0, True), (5.0, False)])
async def test_short_ack_wait_warned_at_start(
    settings: Settings,
    nc: nats.NATS,
    caplog: pytest.LogCaptureFixture,
    ack_wait_s: float,
    warned: bool,
) -> None:
    # heartbeat_ttl_s is 2 in the test settings.
    async with Runner(settings.replace(ack_wait_s=ack_wait_s), runner_id="warn-1"):
        pass
    warnings = [
        record.getMessage()
        for record in caplog.records
        if "is not above heartbeat_ttl_s" in record.getMessage()
    ]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert warnings[0].startswith("ack_wait_s (2) is not above heartbeat_ttl_s (2)")
        assert warnings[0].endswith("raise SUPERPOOL_ACK_WAIT_S")
