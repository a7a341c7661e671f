"""The Dockerfile, read as text: Docker cannot run where these tests run.

The checks cover what a build would show. They check the stages, the wheel
built in the builder and installed in the final stage, and that the final
image has no build tools. They also check the non-root user that the pod
security contexts name, and the entry point. `test_wheel_declares_imports`
checks that the wheel's declared dependencies cover every module the
packages import, because the final stage installs nothing else.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.manifests.loading import ROOT
from tests.manifests.test_workloads import APP_ID

DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = [
    name.rstrip("*")
    for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
]
# Packages that compile code; none may be installed in the final stage.
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "libc6-dev")

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into (KEYWORD, arguments), continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
    return result


def stages(text: str) -> list[list[Instruction]]:
    """Return the instructions of each build stage, FROM first."""
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    return [args for name, args in stage if name == keyword]


BUILDER, FINAL = stages(DOCKERFILE)


def test_dockerfile_two_stages() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert base is not None
    assert base.group(1) == "python:3.11-slim"
    assert arguments(BUILDER, "FROM") == ["${PYTHON_IMAGE} AS builder"]
    assert arguments(FINAL, "FROM") == ["${PYTHON_IMAGE}"]
    assert DOCKERFILE.startswith("# syntax=docker/dockerfile:1\n")


def test_dockerfile_builder_builds_wheel() -> None:
    copied = [args.split()[0] for args in arguments(BUILDER, "COPY")]
    runs = arguments(BUILDER, "RUN")
    assert copied == ["pyproject.toml", *PACKAGES]
    assert arguments(BUILDER, "COPY")[0] == "pyproject.toml README.md ./"
    assert runs == ["pip wheel --wheel-dir /wheels ."]


def test_dockerfile_final_installs_wheel() -> None:
    install = arguments(FINAL, "RUN")[1]
    assert install.startswith(
        "--mount=type=bind,from=builder,source=/wheels,target=/wheels "
    )
    assert "pip install --no-index --find-links=/wheels superagent-pool" in install
    assert install.endswith("pip uninstall --yes pip setuptools wheel")
    assert PYPROJECT["project"]["name"] == "superagent-pool"


def test_dockerfile_final_no_build_tools() -> None:
    text = " ".join(args for _, args in FINAL)
    assert arguments(FINAL, "COPY") == []
    assert "apt-get" not in text
    assert "apt " not in text
    for tool in BUILD_TOOLS:
        assert tool not in text.split(), tool


def test_dockerfile_non_root_user() -> None:
    create = arguments(FINAL, "RUN")[0]
    assert f"groupadd --system --gid {APP_ID} appuser" in create
    assert f"useradd --system --uid {APP_ID} --gid {APP_ID}" in create
    assert create.endswith("appuser")
    assert arguments(FINAL, "USER") == [f"{APP_ID}:{APP_ID}"]
    assert FINAL.index(("USER", f"{APP_ID}:{APP_ID}")) > FINAL.index(
        ("RUN", arguments(FINAL, "RUN")[-1])
    )


def test_dockerfile_entry_point() -> None:
    entrypoint = json.loads(arguments(FINAL, "ENTRYPOINT")[0])
    command = json.loads(arguments(FINAL, "CMD")[0])
    assert entrypoint + command == ["superpool", "runner"]
    assert PYPROJECT["project"]["scripts"]["superpool"] == "superpool.cli:main"
    assert FINAL[-1] == ("CMD", '["runner"]')


def test_dockerignore_keeps_sources() -> None:
    for excluded in (".git", "tests", "docs", "manifests", "**/__pycache__", ".venv"):
        assert excluded in DOCKERIGNORE, excluded
    for needed in ("pyproject.toml", "README.md", *PACKAGES):
        assert needed not in DOCKERIGNORE, needed


def _imported_modules() -> set[str]:
    modules = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif (
                    isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                ):
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}


def _required_distributions() -> set[str]:
    """Return the runtime requirements and everything they require in turn."""
    pending = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    expanded: set[tuple[str, str]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        for extra in requirement.extras or {""}:
            if (name, extra) in expanded:
                continue
            expanded.add((name, extra))
            for text in metadata.requires(name) or []:
                nested = Requirement(text)
                if nested.marker is None or nested.marker.evaluate({"extra": extra}):
                    pending.append(nested)
    return {name for name, _ in expanded}


def test_wheel_declares_imports() -> None:
    owners = metadata.packages_distributions()
    required = _required_distributions()
    missing = []
    for module in sorted(_imported_modules()):
        distributions = {canonicalize_name(name) for name in owners.get(module, [])}
        if not distributions & required:
            missing.append(module)
    assert missing == []
