"""The runner, proxy and provisioning workloads against the code's settings."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bus.settings import Settings
from mcp_proxy.http import HEALTH_PATH
from mcp_proxy.security import allowed_host_entries
from runner.metrics import SLOTS_BUSY_METRIC
from tests.manifests.loading import (
    BASE,
    KEDA,
    MONITORING,
    ROOT,
    base_resources,
    container,
    environment,
    find,
    load_documents,
    load_yaml,
    mounts,
    pod_spec,
)

RESOURCES = base_resources()
RUNNER = find(RESOURCES, "Deployment", "superpool-runner")
PROXY = find(RESOURCES, "Deployment", "superpool-proxy")
PROVISION = find(RESOURCES, "Job", "superpool-provision")
WORKLOADS = {"runner": RUNNER, "proxy": PROXY, "provision": PROVISION}
HPA = find(RESOURCES, "HorizontalPodAutoscaler", "superpool-runner")
SCALED_OBJECT = load_documents(KEDA / "scaledobject.yaml")[0]
# Time past the drain timeout for the nak of unfinished runs, the heartbeat
# removal and closing the NATS connection, before Kubernetes sends SIGKILL.
DRAIN_MARGIN_S = 15
# The UID and GID of appuser in the Dockerfile.
APP_ID = 10001


def settings_of(workload: dict[str, Any]) -> Settings:
    """Build the settings that the workload's container gets from its env."""
    return Settings.from_env(environment(RESOURCES, workload))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_settings_valid(name: str) -> None:
    settings = settings_of(WORKLOADS[name])
    assert settings.replicas == 3
    assert settings.nats_password_file.startswith("/var/run/secrets/superpool/")


def test_runner_grace_covers_drain() -> None:
    grace = pod_spec(RUNNER)["terminationGracePeriodSeconds"]
    assert settings_of(RUNNER).drain_timeout_s == Settings().drain_timeout_s
    assert grace >= Settings().drain_timeout_s + DRAIN_MARGIN_S


def test_runner_command() -> None:
    spec = container(RUNNER)
    assert spec["command"] == ["superpool"]
    assert spec["args"][-1] == "runner"
    assert "replicas" not in RUNNER["spec"]


def test_runner_slots_match_code() -> None:
    settings = settings_of(RUNNER)
    assert settings.slots == Settings().slots
    assert settings.max_inflight == Settings().max_inflight


def test_hpa_busy_slots_metric() -> None:
    metric = HPA["spec"]["metrics"][0]
    target = metric["pods"]["target"]
    slots = settings_of(RUNNER).slots
    average = float(target["averageValue"])
    assert len(HPA["spec"]["metrics"]) == 1
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == SLOTS_BUSY_METRIC
    assert target["type"] == "AverageValue"
    assert average < slots
    # One pod with every slot busy makes the autoscaler add a second pod.
    assert math.ceil(slots / average) >= 2


def test_hpa_bounds() -> None:
    spec = HPA["spec"]
    settings = settings_of(RUNNER)
    assert spec["scaleTargetRef"]["name"] == RUNNER["metadata"]["name"]
    assert spec["minReplicas"] == 1
    assert spec["maxReplicas"] == 3
    assert spec["maxReplicas"] * settings.slots == settings.max_inflight


def test_keda_lag_threshold() -> None:
    spec = SCALED_OBJECT["spec"]
    trigger = spec["triggers"][0]["metadata"]
    settings = settings_of(RUNNER)
    assert trigger["stream"] == settings.runs_stream
    assert trigger["consumer"] == settings.consumer
    assert int(trigger["lagThreshold"]) < settings.slots
    assert math.ceil(settings.slots / int(trigger["lagThreshold"])) >= 2
    assert spec["minReplicaCount"] == HPA["spec"]["minReplicas"]
    assert spec["maxReplicaCount"] == HPA["spec"]["maxReplicas"]


def test_adapter_rule_serves_metric() -> None:
    values = load_yaml(MONITORING / "prometheus-adapter-values.yaml")
    rules = values["rules"]["custom"]
    overrides = rules[0]["resources"]["overrides"]
    assert len(rules) == 1
    assert rules[0]["seriesQuery"].startswith(SLOTS_BUSY_METRIC + "{")
    assert rules[0]["name"]["as"] == SLOTS_BUSY_METRIC
    assert overrides == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }


def test_runner_probes() -> None:
    spec = container(RUNNER)
    port = spec["ports"][0]
    settings = settings_of(RUNNER)
    assert settings.probe_host == "0.0.0.0"
    assert port["containerPort"] == settings.probe_port
    assert spec["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": port["name"],
    }
    assert spec["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": port["name"],
    }
    assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert RUNNER["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(settings.probe_port),
        "prometheus.io/path": "/metrics",
    }


def test_runner_volumes() -> None:
    settings = settings_of(RUNNER)
    mounted = mounts(RUNNER)
    claim = find(RESOURCES, "PersistentVolumeClaim", "superpool-workspace")
    assert "emptyDir" in mounted[str(settings.work_root_path)]["volume"]
    assert "emptyDir" in mounted["/tmp"]["volume"]
    assert settings.workspace_roots == ("/workspace",)
    workspace = mounted["/workspace"]
    assert (
        workspace["volume"]["persistentVolumeClaim"]["claimName"]
        == "superpool-workspace"
    )
    assert workspace.get("readOnly", False) is False
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert mounted[settings.secrets_dir]["volume"]["secret"]["secretName"] == (
        "superpool-providers"
    )


def test_runner_catalog_mount() -> None:
    settings = settings_of(RUNNER)
    catalog = find(RESOURCES, "ConfigMap", "superpool-catalog")
    mount = mounts(RUNNER)["/etc/superpool"]
    assert settings.catalog_path == "/etc/superpool/catalog.toml"
    assert settings.routing_path == "/etc/superpool/routing.toml"
    assert mount["volume"]["configMap"]["name"] == "superpool-catalog"
    assert mount["readOnly"] is True
    assert catalog["data"]["catalog.toml"] == (ROOT / "runner/catalog.toml").read_text()
    assert catalog["data"]["routing.toml"] == (ROOT / "runner/routing.toml").read_text()


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_secret_files_mounted(name: str) -> None:
    workload = WORKLOADS[name]
    settings = settings_of(workload)
    files = [settings.nats_password_file, settings.proxy_token_file]
    for path in filter(None, files):
        directory = path.rsplit("/", 1)[0]
        mount = mounts(workload)[directory]
        assert mount["readOnly"] is True
        assert mount["volume"]["secret"]["defaultMode"] == 0o440


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_security_context(name: str) -> None:
    pod = pod_spec(WORKLOADS[name])
    context = container(WORKLOADS[name])["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "superpool"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == APP_ID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == APP_ID
    assert context["runAsGroup"] == APP_ID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_resources_set(name: str) -> None:
    resources = container(WORKLOADS[name])["resources"]
    assert sorted(resources["requests"]) == ["cpu", "memory"]
    assert sorted(resources["limits"]) == ["cpu", "memory"]


def test_service_account_no_token() -> None:
    account = find(RESOURCES, "ServiceAccount", "superpool")
    assert account["automountServiceAccountToken"] is False


def test_proxy_http_stateless() -> None:
    spec = container(PROXY)
    settings = settings_of(PROXY)
    assert spec["command"] == ["superpool"]
    assert spec["args"][-3:] == ["proxy", "--transport", "http"]
    assert settings.proxy_stateless_http is True
    assert settings.proxy_host == "0.0.0.0"
    assert PROXY["spec"]["replicas"] >= 2


def test_proxy_allowed_hosts_service() -> None:
    service = find(RESOURCES, "Service", "superpool-proxy")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    entries = allowed_host_entries(settings_of(PROXY))
    assert entries == [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    ]


def test_proxy_ports_and_probes() -> None:
    spec = container(PROXY)
    service = find(RESOURCES, "Service", "superpool-proxy")
    port = spec["ports"][0]
    settings = settings_of(PROXY)
    assert port["containerPort"] == settings.proxy_port
    assert settings.proxy_port == Settings().proxy_port
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["ports"][0]["port"] == settings.proxy_port
    assert service["spec"]["selector"] == PROXY["spec"]["selector"]["matchLabels"]
    assert spec["livenessProbe"]["httpGet"] == {
        "path": HEALTH_PATH,
        "port": port["name"],
    }
    assert spec["readinessProbe"]["httpGet"] == {
        "path": HEALTH_PATH,
        "port": port["name"],
    }


def test_proxy_token_and_workspace() -> None:
    settings = settings_of(PROXY)
    mounted = mounts(PROXY)
    token_dir = settings.proxy_token_file.rsplit("/", 1)[0]
    workspace = mounted["/workspace"]
    assert settings.proxy_token == ""
    assert (
        mounted[token_dir]["volume"]["secret"]["secretName"] == "superpool-proxy-token"
    )
    assert settings.workspace_roots == ("/workspace",)
    assert workspace["readOnly"] is True
    assert workspace["volume"]["persistentVolumeClaim"]["readOnly"] is True


def test_provision_job() -> None:
    spec = container(PROVISION)
    settings = settings_of(PROVISION)
    assert spec["args"][-1] == "provision"
    assert settings.nats_user == "admin"
    assert pod_spec(PROVISION)["restartPolicy"] == "OnFailure"


def test_pdbs_select_workloads() -> None:
    for workload in (RUNNER, PROXY):
        pdb = find(RESOURCES, "PodDisruptionBudget", workload["metadata"]["name"])
        assert pdb["spec"]["selector"] == workload["spec"]["selector"]


def test_checkov_skips_have_reasons() -> None:
    for path in sorted(BASE.glob("*.yaml")):
        for document in load_documents(path):
            annotations = document.get("metadata", {}).get("annotations", {})
            for key, value in annotations.items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert check.startswith("CKV"), value
                    assert len(reason.split()) >= 5, value
