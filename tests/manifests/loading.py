"""Paths and YAML loading for the manifest tests, with PyYAML only.

No kubectl or kustomize binary is needed: the base's resources are the
documents of the files its kustomization.yaml lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
KEDA = MANIFESTS / "overlays" / "keda"
MONITORING = MANIFESTS / "monitoring"
NATS = MANIFESTS / "nats"
# The Kubernetes version whose schemas (shipped by kubernetes-validate) the
# manifests must pass.
K8S_VERSION = "1.33.0"
NAMESPACE = "superpool"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Return the non-empty YAML documents of the file at `path`."""
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def load_yaml(path: Path) -> Any:
    """Return the single YAML document of the file at `path`."""
    with path.open() as file:
        return yaml.safe_load(file)


def kustomization(directory: Path) -> dict[str, Any]:
    """Return the kustomization.yaml of `directory`."""
    return load_yaml(directory / "kustomization.yaml")


def base_resources() -> list[dict[str, Any]]:
    """Return every document of the files that the base kustomization lists."""
    documents = []
    for name in kustomization(BASE)["resources"]:
        documents.extend(load_documents(BASE / name))
    return documents


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """Return the resource of `kind` named `name`, or fail the test."""
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"no {kind} named {name} in the base")


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the resources of `kind`."""
    return [resource for resource in resources if resource["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """Return the pod spec of a Deployment or Job."""
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """Return the only container of a Deployment or Job."""
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def environment(
    resources: list[dict[str, Any]], workload: dict[str, Any]
) -> dict[str, str]:
    """Return the container's environment: its ConfigMaps, then its own env."""
    spec = container(workload)
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        configmap = find(resources, "ConfigMap", source["configMapRef"]["name"])
        values.update(configmap["data"])
    for variable in spec.get("env", []):
        assert "value" in variable, f"{variable['name']} has no plain value"
        values[variable["name"]] = variable["value"]
    return values


def mounts(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the container's volume mounts by mount path, each with its volume."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
    result = {}
    for mount in container(workload)["volumeMounts"]:
        result[mount["mountPath"]] = {**mount, "volume": volumes[mount["name"]]}
    return result
