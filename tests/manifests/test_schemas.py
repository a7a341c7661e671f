"""Every manifest against the Kubernetes schema, and the kustomizations' file lists.

Core kinds are checked with kubernetes-validate's strict schemas, which it
ships for each Kubernetes version, so no cluster or network is needed.
Custom resources (KEDA's ScaledObject, the Prometheus Operator's
PodMonitor) are not in those schemas; their fields are checked against
hand-written JSON schemas of the documented shape.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.manifests.loading import (
    BASE,
    K8S_VERSION,
    KEDA,
    MONITORING,
    NAMESPACE,
    base_resources,
    find,
    kustomization,
    load_documents,
)

BASE_DOCUMENTS = [
    pytest.param(document, id=f"{path.name}:{document['metadata']['name']}")
    for path in sorted(BASE.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for document in load_documents(path)
]
SCALED_OBJECT = load_documents(KEDA / "scaledobject.yaml")[0]
POD_MONITOR = load_documents(MONITORING / "podmonitor.yaml")[0]

# The ScaledObject fields used here, as the KEDA 2.x "ScaledObject
# specification" and "NATS JetStream" scaler pages describe them. Trigger
# metadata values are strings, as in KEDA's examples.
_STRING = {"type": "string", "minLength": 1}
_BEHAVIOR_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0},
        "policies": {"type": "array"},
    },
}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": _STRING,
                        "kind": _STRING,
                        "name": _STRING,
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "behavior": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "scaleUp": _BEHAVIOR_RULES,
                                        "scaleDown": _BEHAVIOR_RULES,
                                    },
                                }
                            },
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "nats-jetstream"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": [
                                    "natsServerMonitoringEndpoint",
                                    "account",
                                    "stream",
                                    "consumer",
                                    "lagThreshold",
                                ],
                                "properties": {
                                    "natsServerMonitoringEndpoint": _STRING,
                                    "account": _STRING,
                                    "stream": _STRING,
                                    "consumer": _STRING,
                                    "lagThreshold": {
                                        "type": "string",
                                        "pattern": "^[0-9]+$",
                                    },
                                    "activationLagThreshold": {
                                        "type": "string",
                                        "pattern": "^[0-9]+$",
                                    },
                                    "useHttps": {"enum": ["true", "false"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
# The PodMonitor fields used here (monitoring.coreos.com/v1).
POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object"}},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": _STRING,
                            "path": _STRING,
                            "interval": {"type": "string", "pattern": "^[0-9]+s$"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("document", BASE_DOCUMENTS)
def test_base_document_valid(document: dict[str, Any]) -> None:
    version = kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    assert version == "1.33"


def test_validator_rejects_unknown_field() -> None:
    deployment = copy.deepcopy(find(base_resources(), "Deployment", "superpool-runner"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_base_namespace_everywhere() -> None:
    resources = base_resources()
    namespaced = [item for item in resources if item["kind"] != "Namespace"]
    assert kustomization(BASE)["namespace"] == NAMESPACE
    assert find(resources, "Namespace", NAMESPACE)["kind"] == "Namespace"
    for resource in namespaced:
        assert resource["metadata"]["namespace"] == NAMESPACE, resource["metadata"]


def test_base_kustomization_lists_files() -> None:
    listed = kustomization(BASE)["resources"]
    present = sorted(path.name for path in BASE.iterdir())
    assert len(listed) == len(set(listed))
    assert sorted([*listed, "kustomization.yaml"]) == present


def test_keda_kustomization_lists_files() -> None:
    listed = kustomization(KEDA)["resources"]
    present = sorted(path.name for path in KEDA.iterdir())
    assert listed == ["../../base", "scaledobject.yaml"]
    assert present == ["kustomization.yaml", "scaledobject.yaml"]
    assert (KEDA / listed[0]).resolve() == BASE


def test_keda_patch_deletes_hpa() -> None:
    patches = kustomization(KEDA)["patches"]
    deleted = yaml.safe_load(patches[0]["patch"])
    hpa = find(base_resources(), "HorizontalPodAutoscaler", deleted["metadata"]["name"])
    assert len(patches) == 1
    assert deleted["$patch"] == "delete"
    assert deleted["apiVersion"] == hpa["apiVersion"]
    assert deleted["kind"] == "HorizontalPodAutoscaler"
    assert deleted["metadata"]["namespace"] == hpa["metadata"]["namespace"]


def test_scaledobject_shape() -> None:
    jsonschema.validate(SCALED_OBJECT, SCALED_OBJECT_SCHEMA)
    assert SCALED_OBJECT["metadata"]["namespace"] == NAMESPACE


def test_scaledobject_schema_rejects_unknown_key() -> None:
    changed = copy.deepcopy(SCALED_OBJECT)
    changed["spec"]["triggers"][0]["metadata"]["lagThresold"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(changed, SCALED_OBJECT_SCHEMA)


def test_scaledobject_targets_runner() -> None:
    hpa = find(base_resources(), "HorizontalPodAutoscaler", "superpool-runner")
    assert SCALED_OBJECT["spec"]["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]


def test_podmonitor_shape() -> None:
    runner = find(base_resources(), "Deployment", "superpool-runner")
    ports = runner["spec"]["template"]["spec"]["containers"][0]["ports"]
    endpoint = POD_MONITOR["spec"]["podMetricsEndpoints"][0]
    jsonschema.validate(POD_MONITOR, POD_MONITOR_SCHEMA)
    assert POD_MONITOR["metadata"]["namespace"] == NAMESPACE
    assert POD_MONITOR["spec"]["selector"] == runner["spec"]["selector"]
    assert endpoint["port"] == ports[0]["name"]
    assert endpoint["path"] == "/metrics"


def test_monitoring_files_known() -> None:
    present = sorted(path.name for path in MONITORING.iterdir())
    assert present == ["podmonitor.yaml", "prometheus-adapter-values.yaml"]


def test_no_secret_values() -> None:
    manifests = [*BASE.glob("*.yaml"), *KEDA.glob("*.yaml"), *MONITORING.glob("*.yaml")]
    kinds = {doc.get("kind") for path in manifests for doc in load_documents(path)}
    assert "Secret" not in kinds
