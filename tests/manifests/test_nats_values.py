"""manifests/nats/values.yaml against the NATS config that tests/security runs.

tests/security starts nats-server with manifests/nats/auth.conf. The Helm
values must give the cluster the same account, users and permissions, so
the tests parse and compare both. auth.conf is read with
tests/manifests/natsconf.py. The values' `config.merge` block is read with
the chart's rule that a string between `<<` and `>>` goes into nats.conf
without quotes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from bus.settings import Settings
from tests.manifests import natsconf
from tests.manifests.loading import (
    KEDA,
    NATS,
    base_resources,
    environment,
    find,
    load_documents,
    load_yaml,
)
from tests.security.conftest import AUTH_CONFIG

VALUES = load_yaml(NATS / "values.yaml")
SECURITY = natsconf.load(AUTH_CONFIG)
SERVER = natsconf.load(NATS / "nats-server.conf")
RESOURCES = base_resources()
SCALED_OBJECT = load_documents(KEDA / "scaledobject.yaml")[0]
UNQUOTED = re.compile(r"^<<\s*(.*?)\s*>>$")
# The Secret in the NATS namespace that contains the passwords.
PASSWORD_SECRET = "nats-users"
# Value keys of the nats chart that values.yaml may set, from
# helm/charts/nats/values.yaml of nats-io/k8s (commit 0cdf8b84, default
# image nats 2.11.1). config.merge and container.env take any content.
CHART_KEYS = {
    "config.cluster.enabled",
    "config.cluster.replicas",
    "config.jetstream.enabled",
    "config.jetstream.fileStore.enabled",
    "config.jetstream.fileStore.dir",
    "config.jetstream.fileStore.pvc.enabled",
    "config.jetstream.fileStore.pvc.size",
    "config.jetstream.fileStore.pvc.storageClassName",
    "config.jetstream.memoryStore.enabled",
    "config.monitor.enabled",
    "config.monitor.port",
    "promExporter.enabled",
    "natsBox.enabled",
    "podDisruptionBudget.enabled",
}
FREE_FORM = {"config.merge", "container.env"}
WORKLOADS = [
    find(RESOURCES, "Deployment", "superpool-runner"),
    find(RESOURCES, "Deployment", "superpool-proxy"),
    find(RESOURCES, "Job", "superpool-provision"),
]


def as_nats_config(value: Any) -> Any:
    """Return chart `merge` values as nats-server reads the generated config."""
    if isinstance(value, dict):
        return {key: as_nats_config(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_nats_config(item) for item in value]
    if isinstance(value, str) and (match := UNQUOTED.match(value)):
        return natsconf.parse_value(match.group(1))
    return value


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    """Return the dotted paths of the values, stopping at free-form keys."""
    if prefix in FREE_FORM or not isinstance(value, dict):
        return [prefix]
    paths = []
    for key, item in value.items():
        paths.extend(leaf_paths(item, f"{prefix}.{key}" if prefix else key))
    return paths


VALUES_ACCOUNTS = as_nats_config(VALUES["config"]["merge"]["accounts"])
SECURITY_USERS = {
    user["user"]: user for user in SECURITY["accounts"]["SUPERPOOL"]["users"]
}
VALUES_USERS = {user["user"]: user for user in VALUES_ACCOUNTS["SUPERPOOL"]["users"]}


def test_values_keys_in_chart() -> None:
    unknown = [
        path for path in leaf_paths(VALUES) if path not in CHART_KEYS | FREE_FORM
    ]
    assert unknown == []


def test_values_accounts_match() -> None:
    assert sorted(VALUES_ACCOUNTS) == sorted(SECURITY["accounts"])
    assert VALUES_ACCOUNTS["SUPERPOOL"]["jetstream"] == "enabled"
    assert list(VALUES_USERS) == list(SECURITY_USERS)


@pytest.mark.parametrize("user", sorted(SECURITY_USERS))
def test_values_user_matches(user: str) -> None:
    assert VALUES_USERS[user]["permissions"] == SECURITY_USERS[user]["permissions"]
    assert VALUES_USERS[user]["password"] == SECURITY_USERS[user]["password"]
    assert VALUES_USERS[user] == SECURITY_USERS[user]


def test_values_passwords_from_secret() -> None:
    env = VALUES["container"]["env"]
    variables = sorted(user["password"].name for user in VALUES_USERS.values())
    assert sorted(env) == variables
    for name in variables:
        assert env[name] == {
            "valueFrom": {"secretKeyRef": {"name": PASSWORD_SECRET, "key": name}}
        }


def test_values_max_payload() -> None:
    merged = as_nats_config(VALUES["config"]["merge"])
    assert merged["max_payload"] == SERVER["max_payload"]
    assert merged["max_payload"] == "1MB"


def test_values_cluster_jetstream() -> None:
    config = VALUES["config"]
    replicas = Settings.from_env(environment(RESOURCES, WORKLOADS[0])).replicas
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == replicas
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert config["jetstream"]["memoryStore"]["enabled"] is False


def test_values_monitoring_on() -> None:
    endpoint = SCALED_OBJECT["spec"]["triggers"][0]["metadata"]
    monitor = VALUES["config"]["monitor"]
    assert monitor["enabled"] is True
    assert VALUES["promExporter"]["enabled"] is True
    assert (
        urlsplit("//" + endpoint["natsServerMonitoringEndpoint"]).port
        == monitor["port"]
    )


def test_keda_account_matches() -> None:
    trigger = SCALED_OBJECT["spec"]["triggers"][0]["metadata"]
    assert trigger["account"] == next(iter(SECURITY["accounts"]))
    assert len(SECURITY["accounts"]) == 1


@pytest.mark.parametrize(
    "workload", WORKLOADS, ids=lambda item: item["metadata"]["name"]
)
def test_workload_user_exists(workload: dict[str, Any]) -> None:
    settings = Settings.from_env(environment(RESOURCES, workload))
    permissions = SECURITY_USERS[settings.nats_user]["permissions"]["subscribe"]
    allowed = permissions["allow"] if isinstance(permissions, dict) else [permissions]
    assert f"{settings.inbox_prefix}.>" in allowed
