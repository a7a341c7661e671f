"""The NetworkPolicies against the ports that the settings use."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from bus.settings import Settings
from tests.manifests.loading import base_resources, environment, find, of_kind

RESOURCES = base_resources()
POLICIES = {
    item["metadata"]["name"]: item for item in of_kind(RESOURCES, "NetworkPolicy")
}
DEFAULTS = Settings()
# The NATS client port of the default URL, nats://127.0.0.1:4222.
NATS_PORT = urlsplit(DEFAULTS.nats_url).port
DNS = {("UDP", 53), ("TCP", 53)}
HTTPS = ("TCP", 443)
NATS_NAMESPACE = {"kubernetes.io/metadata.name": "nats"}
WORKLOADS = {
    "superpool-runner": find(RESOURCES, "Deployment", "superpool-runner"),
    "superpool-proxy": find(RESOURCES, "Deployment", "superpool-proxy"),
    "superpool-provision": find(RESOURCES, "Job", "superpool-provision"),
}


def ports(rules: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Return the (protocol, port) pairs that a list of rules allows."""
    return {
        (port["protocol"], port["port"]) for rule in rules for port in rule["ports"]
    }


def peers(rules: list[dict[str, Any]], port: tuple[str, int]) -> list[Any]:
    """Return the `from` or `to` peers of the rule that allows `port`."""
    for rule in rules:
        if port in ports([rule]):
            return rule.get("from", rule.get("to", []))
    raise AssertionError(f"no rule allows {port}")


def test_nats_port_default() -> None:
    configured = environment(RESOURCES, WORKLOADS["superpool-runner"])
    assert NATS_PORT == 4222
    assert urlsplit(configured["SUPERPOOL_NATS_URL"]).port == NATS_PORT


def test_default_deny_all() -> None:
    policy = POLICIES["default-deny"]["spec"]
    assert policy == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_policy_selects_workload(name: str) -> None:
    selector = POLICIES[name]["spec"]["podSelector"]["matchLabels"]
    labels = WORKLOADS[name]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert POLICIES[name]["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_runner_ingress_metrics_only() -> None:
    ingress = POLICIES["superpool-runner"]["spec"]["ingress"]
    source = peers(ingress, ("TCP", DEFAULTS.probe_port))
    assert ports(ingress) == {("TCP", DEFAULTS.probe_port)}
    assert source == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
            }
        }
    ]


def test_runner_egress_nats_dns_https() -> None:
    egress = POLICIES["superpool-runner"]["spec"]["egress"]
    assert ports(egress) == {("TCP", NATS_PORT), *DNS, HTTPS}
    assert peers(egress, ("TCP", NATS_PORT)) == [
        {"namespaceSelector": {"matchLabels": NATS_NAMESPACE}}
    ]


def test_proxy_ingress_agents_only() -> None:
    ingress = POLICIES["superpool-proxy"]["spec"]["ingress"]
    source = peers(ingress, ("TCP", DEFAULTS.proxy_port))
    assert ports(ingress) == {("TCP", DEFAULTS.proxy_port)}
    assert source == [
        {"namespaceSelector": {"matchLabels": {"superpool.io/agents": "true"}}}
    ]


def test_proxy_egress_nats_dns() -> None:
    egress = POLICIES["superpool-proxy"]["spec"]["egress"]
    assert ports(egress) == {("TCP", NATS_PORT), *DNS}
    assert peers(egress, ("TCP", NATS_PORT)) == [
        {"namespaceSelector": {"matchLabels": NATS_NAMESPACE}}
    ]


def test_provision_egress_nats_dns() -> None:
    spec = POLICIES["superpool-provision"]["spec"]
    assert spec["ingress"] == []
    assert ports(spec["egress"]) == {("TCP", NATS_PORT), *DNS}


def test_policies_known() -> None:
    assert sorted(POLICIES) == ["default-deny", *sorted(WORKLOADS)]
