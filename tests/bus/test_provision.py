"""Provisioning creates, updates and refuses streams as JetStream allows."""

from __future__ import annotations

import nats
import pytest
from nats.js import api

from bus.errors import ProvisioningError
from bus.provision import provision
from bus.settings import Settings


async def test_provision_is_idempotent(settings: Settings, nc: nats.NATS) -> None:
    js = nc.jetstream()
    await provision(js, settings)
    runs = await js.stream_info(settings.runs_stream)
    consumer = await js.consumer_info(settings.runs_stream, settings.consumer)
    streams = [info.config.name for info in await js.streams_info()]
    assert runs.config.retention == api.RetentionPolicy.WORK_QUEUE
    assert runs.config.discard == api.DiscardPolicy.NEW
    assert runs.config.max_msgs == 9
    assert runs.config.subjects == [f"{settings.subject_prefix}.run.>"]
    assert consumer.config.max_ack_pending == 9
    assert consumer.config.ack_policy == api.AckPolicy.EXPLICIT
    assert consumer.config.max_deliver == settings.max_deliver
    assert streams.count(settings.runs_stream) == 1
    assert f"KV_{settings.registry_bucket}" in streams


async def test_provision_updates_max_inflight(
    settings: Settings, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    await provision(js, settings.replace(max_inflight=12))
    runs = await js.stream_info(settings.runs_stream)
    consumer = await js.consumer_info(settings.runs_stream, settings.consumer)
    assert runs.config.max_msgs == 12
    assert consumer.config.max_ack_pending == 12


async def test_provision_rejects_other_retention(
    settings: Settings, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    other = settings.replace(
        runs_stream=settings.runs_stream + "_OTHER",
        subject_prefix="other" + settings.subject_prefix,
    )
    await js.add_stream(
        name=other.runs_stream,
        subjects=[other.run_subjects],
        retention=api.RetentionPolicy.LIMITS,
    )
    with pytest.raises(ProvisioningError) as caught:
        await provision(js, other)
    assert caught.value.resource == other.runs_stream
    assert "exists with retention limits, but superpool needs workqueue" in str(
        caught.value
    )
    assert f"nats stream rm {other.runs_stream}" in str(caught.value)
