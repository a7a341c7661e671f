"""Each role of manifests/nats/auth.conf can do its work, and nothing else."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from nats.aio.msg import Msg

from bus.client import PoolClient
from bus.connection import connect
from bus.errors import PoolError
from bus.server import find_binary
from bus.subjects import MSG_ID_HEADER, REPLY_HEADER
from bus.wire import RunRequest, Status, encode
from registry.registry import RunRegistry
from runner.runner import Runner
from tests.pool import wait_until
from tests.security.conftest import AUTH_CONFIG, MANIFESTS, USERS, AuthServer

PULL_REQUEST = json.dumps({"batch": 1, "expires": 1_000_000_000}).encode()


async def _runner_ready(client: PoolClient, slots: int) -> None:
    await wait_until(lambda: client.registry.live_capacity(), lambda n: n == slots)


async def test_agent_run_ok(auth_server: AuthServer) -> None:
    runner_settings = auth_server.settings("runner")
    async with (
        Runner(runner_settings, runner_id="runner-1", slots=2),
        PoolClient(auth_server.settings("agent-a"), caller="agent-a") as client,
    ):
        await _runner_ready(client, 2)
        result = await client.run("hello", prompt_text="hi", adapter="echo")
        stored = await client.result(result.run_id)
        status = await client.status()
    assert result.status == Status.OK
    assert result.output == "echo (no model was called): hi"
    assert result.runner_id == "runner-1"
    assert stored == result
    assert status.slots_total == 2
    assert status.in_stream == 0
    assert auth_server.violations() == []


async def test_agent_cancel_ok(auth_server: AuthServer) -> None:
    async with (
        Runner(auth_server.settings("runner"), runner_id="runner-1") as runner,
        PoolClient(auth_server.settings("agent-a")) as client,
    ):
        await _runner_ready(client, 3)
        waiting = asyncio.create_task(
            client.run("long", prompt_text="x", adapter="echo", model_hint="delay=30")
        )
        await wait_until(lambda: list(runner.running), lambda runs: len(runs) == 1)
        cancelled = await client.cancel(next(iter(runner.running)))
        seen_by_caller = await waiting
        never_submitted = await client.cancel("never-submitted")
    assert cancelled.status == Status.CANCELLED
    assert cancelled.error is not None
    assert cancelled.error.message == "cancelled by request"
    assert seen_by_caller.status == Status.CANCELLED
    assert never_submitted.status == Status.CANCELLED
    assert auth_server.violations() == []


async def test_ops_reads_pool(auth_server: AuthServer) -> None:
    async with (
        Runner(auth_server.settings("runner"), runner_id="runner-1"),
        PoolClient(auth_server.settings("agent-a")) as agent,
    ):
        await _runner_ready(agent, 3)
        done = await agent.run("hello", prompt_text="hi", adapter="echo")
        ops = await auth_server.connect("ops")
        js = ops.jetstream(timeout=auth_server.base.request_timeout)
        runs = await js.stream_info("POOL_RUNS")
        consumer = await js.consumer_info("POOL_RUNS", "runners")
        registry = await RunRegistry.open(ops, auth_server.base)
        runners = await registry.runners()
        record = await registry.get_run(done.run_id)
        status = await registry.status()
        stored = await js.get_last_msg(
            "POOL_RESULTS", f"pool.result.{done.run_id}", direct=True
        )
        service_status = await ops.request("pool.svc.status", b"", timeout=2)
        ping = await ops.request("$SRV.PING.superpool", b"", timeout=2)
        await ops.close()
    assert runs.config.name == "POOL_RUNS"
    assert consumer.name == "runners"
    assert [state.runner_id for state in runners] == ["runner-1"]
    assert record is not None
    assert record.state == "final"
    assert status.slots_total == 3
    assert stored.data is not None
    assert json.loads(stored.data)["run_id"] == done.run_id
    assert json.loads(service_status.data)["slots_total"] == 3
    assert json.loads(ping.data)["name"] == "superpool"
    assert auth_server.violations() == []


# (user, what, subject): each must be denied. nats-py 2.16 lower-cases the
# whole server error, subject included.
DENIED = [
    ("agent-a", "publish", "$KV.pool-registry.runner.x"),
    # Run records are written by runners only, also for withdrawals.
    ("agent-a", "publish", "$KV.pool-registry.run.x"),
    ("agent-a", "publish", "$JS.API.STREAM.MSG.DELETE.POOL_RUNS"),
    ("agent-a", "publish", "$JS.API.CONSUMER.MSG.NEXT.POOL_RUNS.runners"),
    ("agent-a", "subscribe", "pool.result.>"),
    ("agent-a", "subscribe", "_INBOX.agent-b.>"),
    ("agent-a", "subscribe", "_INBOX.>"),
    # A forged event in another agent's inbox.
    ("agent-a", "publish", "_INBOX.agent-b.abc.run-1"),
    # Reading queued prompts, or removing the queue.
    ("agent-a", "publish", "$JS.API.DIRECT.GET.POOL_RUNS"),
    ("agent-a", "publish", "$JS.API.STREAM.MSG.GET.POOL_RUNS"),
    ("agent-a", "publish", "$JS.API.STREAM.DELETE.POOL_RUNS"),
    ("agent-a", "publish", "pool.result.run-1"),
    ("ops", "publish", "pool.run.hello"),
    ("ops", "publish", "$KV.pool-registry.run.x"),
    ("ops", "publish", "$JS.API.STREAM.PURGE.POOL_RUNS"),
    ("ops", "publish", "$JS.API.STREAM.DELETE.POOL_RESULTS"),
    ("ops", "publish", "$JS.API.CONSUMER.DELETE.POOL_RUNS.runners"),
    ("ops", "publish", "$JS.API.CONSUMER.CREATE.POOL_RUNS.spy"),
    ("ops", "publish", "pool.cancel.runner-1.run-1"),
    ("ops", "publish", "pool.svc.drain.runner-1"),
    ("agent-a", "publish", "pool.svc.status"),
    ("runner", "subscribe", "_INBOX.>"),
    ("runner", "subscribe", "pool.run.>"),
    ("runner", "publish", "pool.run.hello"),
    ("runner", "publish", "$JS.API.STREAM.DELETE.POOL_RUNS"),
    ("runner", "publish", "$JS.API.CONSUMER.CREATE.POOL_RUNS.spy"),
    ("admin", "subscribe", "pool.result.>"),
    ("admin", "publish", "pool.run.hello"),
]


@pytest.mark.parametrize(
    ("user", "what", "subject"),
    DENIED,
    ids=[f"{user}-{what}-{subject}" for user, what, subject in DENIED],
)
async def test_role_denied(
    auth_server: AuthServer, user: str, what: str, subject: str
) -> None:
    nc = await auth_server.connect(user)
    if what == "publish":
        await nc.publish(subject, b"{}", reply=nc.new_inbox())
        kind = "publish"
    else:
        await nc.subscribe(subject)
        kind = "subscription"
    await nc.flush()
    expected = f'nats: permissions violation for {kind} to "{subject.lower()}"'
    await auth_server.expect_error(user, expected)
    await nc.close()
    assert auth_server.errors[user] == [expected]


async def test_agent_registry_write_times_out(auth_server: AuthServer) -> None:
    nc = await auth_server.connect("agent-a")
    js = nc.jetstream(timeout=0.5)
    with pytest.raises(TimeoutError):
        await js.publish("$KV.pool-registry.runner.fake", b'{"slots": 99}')
    await nc.close()
    async with PoolClient(auth_server.settings("agent-b")) as reader:
        runners = await reader.registry.runners()
    assert runners == []
    assert auth_server.errors["agent-a"] == [
        'nats: permissions violation for publish to "$kv.pool-registry.runner.fake"'
    ]


async def test_agent_pull_gets_nothing(auth_server: AuthServer) -> None:
    other = await auth_server.connect("agent-b")
    await other.jetstream().publish("pool.run.secret", b'{"task": "secret"}')
    nc = await auth_server.connect("agent-a")
    inbox = nc.new_inbox()
    delivered = await nc.subscribe(inbox + ".*")
    await nc.publish(
        "$JS.API.CONSUMER.MSG.NEXT.POOL_RUNS.runners", PULL_REQUEST, reply=inbox + ".1"
    )
    await auth_server.expect_error(
        "agent-a",
        "nats: permissions violation for publish to "
        '"$js.api.consumer.msg.next.pool_runs.runners"',
    )
    admin = await auth_server.connect("admin")
    info = await admin.jetstream().consumer_info("POOL_RUNS", "runners")
    for connection in (nc, other, admin):
        await connection.close()
    assert delivered.pending_msgs == 0
    assert info.num_pending == 1
    assert info.num_ack_pending == 0


async def test_agent_inbox_isolated(auth_server: AuthServer) -> None:
    overheard: list[str] = []

    async def on_message(msg: Msg) -> None:
        overheard.append(msg.subject)

    spy = await auth_server.connect("agent-a")
    await spy.subscribe("_INBOX.agent-b.>", cb=on_message)
    await auth_server.expect_error(
        "agent-a", 'nats: permissions violation for subscription to "_inbox.agent-b.>"'
    )
    async with (
        Runner(auth_server.settings("runner"), runner_id="runner-1"),
        PoolClient(auth_server.settings("agent-b")) as victim,
    ):
        await _runner_ready(victim, 3)
        result = await victim.run("private", prompt_text="secret", adapter="echo")
    await spy.flush()
    await spy.close()
    assert result.status == Status.OK
    assert overheard == []


async def test_reply_header_cannot_overwrite_result(auth_server: AuthServer) -> None:
    async with (
        Runner(auth_server.settings("runner"), runner_id="runner-1"),
        PoolClient(auth_server.settings("agent-b")) as victim,
        PoolClient(auth_server.settings("agent-a")) as attacker,
    ):
        await _runner_ready(victim, 3)
        original = await victim.run("private", prompt_text="mine", adapter="echo")
        forged = RunRequest(
            task="evil", run_id="evil-1", prompt_text="x", adapter="echo"
        )
        nc = await auth_server.connect("agent-a")
        await nc.jetstream().publish(
            "pool.run.evil",
            encode(forged),
            headers={
                MSG_ID_HEADER: "evil-1",
                REPLY_HEADER: f"pool.result.{original.run_id}",
            },
        )
        await wait_until(lambda: attacker.result("evil-1"), lambda r: r is not None)
        await nc.close()
        stored = await victim.result(original.run_id)
    assert stored == original


async def test_reply_header_to_runner_inbox_denied(auth_server: AuthServer) -> None:
    overheard: list[str] = []

    async def on_message(msg: Msg) -> None:
        overheard.append(msg.subject)

    listener = await auth_server.connect("runner")
    await listener.subscribe("_INBOX_runner.victim.>", cb=on_message)
    async with (
        Runner(auth_server.settings("runner"), runner_id="runner-1"),
        PoolClient(auth_server.settings("agent-a")) as attacker,
    ):
        await _runner_ready(attacker, 3)
        request = RunRequest(
            task="evil", run_id="evil-2", prompt_text="x", adapter="echo"
        )
        nc = await auth_server.connect("agent-a")
        await nc.jetstream().publish(
            "pool.run.evil",
            encode(request),
            headers={MSG_ID_HEADER: "evil-2", REPLY_HEADER: "_INBOX_runner.victim.1"},
        )
        await wait_until(lambda: attacker.result("evil-2"), lambda r: r is not None)
        await nc.close()
    await listener.flush()
    await listener.close()
    # An echo run is claimed together with its result, so the result event
    # is the only one, and it is refused. The server's output is read by a
    # thread of its own, so wait for the line.
    denied = await wait_until(
        lambda: [line for line in auth_server.violations() if "_INBOX_runner" in line],
        lambda lines: len(lines) == 1,
    )
    assert overheard == []
    for line in denied:
        assert line.endswith(
            '"SUPERPOOL/user:runner" - Publish Violation - Subject '
            '"_INBOX_runner.victim.1"'
        )


async def test_unknown_user_rejected(auth_server: AuthServer) -> None:
    settings = auth_server.base.replace(
        nats_user="mallory", nats_password="guess", request_timeout=0.5
    )
    with pytest.raises(PoolError) as caught:
        await connect(settings, name="test-mallory")
    assert str(caught.value) == (
        f"NATS at {settings.nats_url} rejected the credentials of test-mallory "
        "(authorization violation); check SUPERPOOL_NATS_USER and its password, "
        "token, nkey seed or creds file"
    )


async def test_anonymous_rejected(auth_server: AuthServer) -> None:
    with pytest.raises(PoolError) as caught:
        await connect(
            auth_server.base.replace(request_timeout=0.5), name="test-anonymous"
        )
    assert "rejected the credentials of test-anonymous" in str(caught.value)


def test_config_files_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _ in USERS.values():
        monkeypatch.setenv(variable, "not-a-real-password")
    binary = str(find_binary())
    for config in (AUTH_CONFIG, MANIFESTS / "nats-server.conf"):
        checked = subprocess.run(
            [binary, "-t", "-c", str(config)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr
