"""Subjects, registry keys and the headers that travel with a run."""

from __future__ import annotations

import re

from bus.errors import InvalidRequestError
from bus.settings import Settings

TASK_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_TASK_RE = re.compile(TASK_PATTERN)
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)

# The reply inbox travels in a header, because a stream does not keep a core
# NATS reply subject.
REPLY_HEADER = "Pool-Reply-To"
MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_LAST_SEQ_HEADER = "Nats-Expected-Last-Sequence"

RUNNER_KEY_PREFIX = "runner."
RUN_KEY_PREFIX = "run."


def check_task(task: str) -> str:
    if not isinstance(task, str) or not _TASK_RE.match(task):
        raise InvalidRequestError(
            f"task {task!r} is invalid: use 1 to 64 letters, digits, '_' or '-'",
            field="task",
        )
    return task


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidRequestError(
            f"run_id {run_id!r} is invalid: use 1 to 128 letters, digits, '_' or '-'",
            field="run_id",
        )
    return run_id


# Replies go only to inbox subjects. A request could otherwise name a subject
# such as pool.result.<other run>, and the runner, which may publish there,
# would overwrite another run's stored result.
INBOX_ROOT = "_INBOX"


def reply_subject(header: str | None) -> str | None:
    """Return the `Pool-Reply-To` subject when it is a plain inbox, else None."""
    if not header or not header.split(".", 1)[0].startswith(INBOX_ROOT):
        return None
    if any(char in header for char in "*> \t\r\n"):
        return None
    return header


def run_subject(settings: Settings, task: str) -> str:
    return f"{settings.subject_prefix}.run.{check_task(task)}"


def result_subject(settings: Settings, run_id: str) -> str:
    return f"{settings.subject_prefix}.result.{check_run_id(run_id)}"


def cancel_subject(settings: Settings, runner_id: str, run_id: str) -> str:
    """Return the subject on which runner `runner_id` takes cancel requests."""
    return f"{settings.subject_prefix}.cancel.{runner_id}.{check_run_id(run_id)}"


def cancel_subjects(settings: Settings, runner_id: str) -> str:
    return f"{settings.subject_prefix}.cancel.{runner_id}.*"


def task_of_subject(settings: Settings, subject: str) -> str:
    """Return the task label of a run subject, or "" when it has none."""
    prefix = f"{settings.subject_prefix}.run."
    return subject[len(prefix) :] if subject.startswith(prefix) else ""


def runner_key(runner_id: str) -> str:
    return RUNNER_KEY_PREFIX + runner_id


def run_key(run_id: str) -> str:
    return RUN_KEY_PREFIX + run_id
