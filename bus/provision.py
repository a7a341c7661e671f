"""Create or update the pool's streams, consumer and registry bucket.

Provisioning is idempotent: a second run changes nothing, and a run with new
limits (say a larger `max_inflight`) updates the existing resources in place.
A difference that JetStream cannot change in place, such as a stream's
retention or storage, raises `ProvisioningError` with the way out.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue

from bus.errors import ProvisioningError
from bus.settings import Settings

logger = logging.getLogger(__name__)

# Publishes with the same Nats-Msg-Id inside this window are stored once.
DUPLICATE_WINDOW_S = 120.0
# Run records and results in the registry are kept this long.
REGISTRY_MAX_AGE_S = 7 * 24 * 3600
# The PURGE marker that a watcher sees when a heartbeat key expires lives this long.
LIMIT_MARKER_TTL_S = 5.0
KV_STREAM_PREFIX = "KV_"
_IMMUTABLE_FIELDS = ("retention", "storage")


def runs_stream_config(settings: Settings) -> api.StreamConfig:
    return api.StreamConfig(
        name=settings.runs_stream,
        description="superpool run requests; admitted runs stay here until acked",
        subjects=[settings.run_subjects],
        retention=api.RetentionPolicy.WORK_QUEUE,
        discard=api.DiscardPolicy.NEW,
        # The server's hard admission cap: a publish past it fails with 10077.
        max_msgs=settings.max_inflight,
        max_msg_size=settings.max_request_bytes,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
    )


def results_stream_config(settings: Settings) -> api.StreamConfig:
    return api.StreamConfig(
        name=settings.results_stream,
        description="superpool final results, one per run_id",
        subjects=[settings.result_subjects],
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        max_msgs_per_subject=1,
        max_age=settings.results_max_age_s,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
    )


def registry_stream_config(settings: Settings) -> api.StreamConfig:
    # The same stream that nats-py's create_key_value() makes, plus the limit
    # marker, so that watchers see a heartbeat key expire.
    bucket = settings.registry_bucket
    return api.StreamConfig(
        name=KV_STREAM_PREFIX + bucket,
        description="superpool registry: runner heartbeats and run records",
        subjects=[f"$KV.{bucket}.>"],
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW,
        max_msgs_per_subject=1,
        max_age=REGISTRY_MAX_AGE_S,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_msg_ttl=True,
        subject_delete_marker_ttl=LIMIT_MARKER_TTL_S,
    )


def consumer_config(settings: Settings) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=settings.consumer,
        description="superpool runners; every runner pulls from this one consumer",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        # The fleet-wide ceiling; each runner fetches only its free slots.
        max_ack_pending=settings.max_inflight,
        deliver_policy=api.DeliverPolicy.ALL,
    )


async def ensure_stream(
    js: JetStreamContext, config: api.StreamConfig
) -> api.StreamInfo:
    """Create the stream, or update it when it exists with another config."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        logger.info("stream created stream=%s", config.name)
        return await js.add_stream(config)
    for field in _IMMUTABLE_FIELDS:
        current, wanted = getattr(info.config, field), getattr(config, field)
        if current != wanted:
            raise ProvisioningError(
                config.name,
                f"stream {config.name} exists with {field} {_name(current)}, but "
                f"superpool needs {_name(wanted)}; JetStream cannot change {field} "
                f"in place, so delete the stream (nats stream rm {config.name}) "
                "or set another stream name",
            )
    try:
        return await js.update_stream(config)
    except APIError as exc:
        raise ProvisioningError(
            config.name,
            f"stream {config.name} could not be updated: {exc.description} "
            f"(error {exc.err_code})",
        ) from None


async def ensure_consumer(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig
) -> api.ConsumerInfo:
    try:
        return await js.add_consumer(stream, config)
    except APIError as exc:
        raise ProvisioningError(
            f"{stream}/{config.durable_name}",
            f"consumer {config.durable_name} on {stream} could not be created or "
            f"updated: {exc.description} (error {exc.err_code}); delete it with "
            f"nats consumer rm {stream} {config.durable_name}",
        ) from None


async def provision(js: JetStreamContext, settings: Settings) -> KeyValue:
    """Create or update every JetStream resource the pool uses; return the bucket."""
    await ensure_stream(js, runs_stream_config(settings))
    await ensure_consumer(js, settings.runs_stream, consumer_config(settings))
    await ensure_stream(js, results_stream_config(settings))
    await ensure_stream(js, registry_stream_config(settings))
    logger.info(
        "pool provisioned runs_stream=%s consumer=%s results_stream=%s bucket=%s "
        "max_inflight=%d replicas=%d",
        settings.runs_stream,
        settings.consumer,
        settings.results_stream,
        settings.registry_bucket,
        settings.max_inflight,
        settings.replicas,
    )
    return await js.key_value(settings.registry_bucket)


def _name(value: object) -> str:
    return str(getattr(value, "value", value))
