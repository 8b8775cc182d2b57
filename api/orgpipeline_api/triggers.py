"""Who started a run and why: the names the operator, the Jobs, the data plane and the CLI share.

Every Job the operator makes carries its trigger in three environment variables; the data plane
reads them once and records them with the run (pipeline_runs, each version's audit trail, the change
log, the run report). A run-now request carries its requester and reason in annotations beside
`orgpipeline.io/run-now`; `orgpipeline run-now` sets them, a plain `kubectl annotate` leaves the
requester empty (unknown). A run started by hand (`orgpipeline run`, no variables) is `manual`.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Trigger(StrEnum):
    schedule = "schedule"
    """The table's CronJob."""
    run_now = "run-now"
    """A run-now request on the OrgPipeline (annotation)."""
    file_arrival = "file-arrival"
    """A new object in the table's source (the S3 event webhook)."""
    manual = "manual"
    """`orgpipeline run` / `ingest` started by hand."""


ENV_TRIGGER = "ORGPIPELINE_TRIGGER"
ENV_TRIGGERED_BY = "ORGPIPELINE_TRIGGERED_BY"
ENV_TRIGGER_REASON = "ORGPIPELINE_TRIGGER_REASON"
ENV_TRIGGER_UPLOADERS = "ORGPIPELINE_TRIGGER_UPLOADERS"
"""File arrivals: a JSON object {object key: uploader} (the S3 events' principals), so that each
file's versions name the one who uploaded it; files it does not name get the run's user."""

SYSTEM_SCHEDULE = "system:schedule"
"""The user of a scheduled run: `system:schedule:<cronjob>` (the CronJob's name in the org's
namespace), or this alone when a Job made by an older operator does not say which."""
SYSTEM_FILE_ARRIVAL = "system:file-arrival"
"""The user of a file arrival whose S3 event named no principal (EventBridge without `requester`)."""
UNKNOWN_RUN_NOW = "unknown:run-now"
"""The user of a run-now request without a requester (a plain `kubectl annotate`): the API server
does not say who wrote an annotation; the field manager that wrote it follows when known
(`unknown:run-now:kubectl-annotate`)."""

ANNOTATION_RUN_NOW = "orgpipeline.io/run-now"
"""The table(s) to run now: `orders`, `orders,customers` or `*`."""
ANNOTATION_RUN_NOW_REQUESTER = "orgpipeline.io/run-now-requester"
"""Who asked (the user name the API server knows); empty or absent: unknown."""
ANNOTATION_RUN_NOW_REASON = "orgpipeline.io/run-now-reason"
"""Why, in the requester's words; optional."""

MAX_USER = 256
MAX_REASON = 1024
MAX_UPLOADERS_BYTES = 32 * 1024
"""Bound on ORGPIPELINE_TRIGGER_UPLOADERS (100 keys of up to 1,024 bytes would make a Job of 128 KiB)."""
"""Characters kept of a user name and of a reason (an annotation can be much longer)."""


class TriggerError(ValueError):
    """An ORGPIPELINE_TRIGGER value that is not one of the triggers."""


@dataclass(frozen=True)
class RunTrigger:
    """What started one run: the trigger, the user (None: unknown) and the reason (None: not given)."""

    trigger: Trigger
    user: str | None = None
    reason: str | None = None
    uploaders: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """File arrivals: (object key, uploader) of the files the S3 events named."""

    @classmethod
    def of(cls, trigger: Trigger, user: str | None, reason: str | None) -> RunTrigger:
        """Blank values become None; long ones are cut to MAX_USER / MAX_REASON."""
        user = (user or "").strip()[:MAX_USER] or None
        reason = " ".join((reason or "").split())[:MAX_REASON] or None
        return cls(trigger, user, reason)

    def job_env(self) -> list[dict[str, str]]:
        """The container env entries of a Job started this way."""
        env = [
            {"name": ENV_TRIGGER, "value": self.trigger.value},
            {"name": ENV_TRIGGERED_BY, "value": self.user or ""},
            {"name": ENV_TRIGGER_REASON, "value": self.reason or ""},
        ]
        if self.uploaders:
            env.append({"name": ENV_TRIGGER_UPLOADERS, "value": json.dumps(dict(self.uploaders))})
        return env

    def uploader(self, key: str) -> str | None:
        """Who uploaded the object `key`, as its S3 event said (None: no event named it)."""
        return dict(self.uploaders).get(key)

    def for_file(self, key: str) -> RunTrigger:
        """The trigger as recorded with one file's versions: its uploader, when an event named one."""
        who = self.uploader(key)
        if who is None or who == self.user:
            return self
        return RunTrigger(self.trigger, who, self.reason)

    def as_document(self) -> dict[str, str | None]:
        """The form recorded with the run and with each version: {"type", "user", "reason"}."""
        return {"type": self.trigger.value, "user": self.user, "reason": self.reason}


def caller() -> str:
    """Who runs this process, for a run started by hand without `--user-id`: `<os user>@<host>`
    (`uid:<n>` when the user has no name, as in a container without a passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def default_user(trigger: Trigger) -> str:
    """The user of a run whose starter named none: never unknown in the records (issue 26)."""
    if trigger == Trigger.schedule:
        return SYSTEM_SCHEDULE
    if trigger == Trigger.file_arrival:
        return SYSTEM_FILE_ARRIVAL
    if trigger == Trigger.run_now:
        return UNKNOWN_RUN_NOW
    return caller()


def from_env(env: Mapping[str, str], user_id: str | None = None) -> RunTrigger:
    """The trigger of a data-plane command: from the Job's variables, or `manual` without them.

    `user_id` (`--user-id`) names the user when given, else ORGPIPELINE_TRIGGERED_BY does, else
    `default_user` (the caller for a manual run, a system identity otherwise): never None.
    Raises TriggerError for an ORGPIPELINE_TRIGGER that is not a trigger.
    """
    value = env.get(ENV_TRIGGER, "").strip()
    if not value:
        trigger = Trigger.manual
    else:
        try:
            trigger = Trigger(value)
        except ValueError:
            known = ", ".join(t.value for t in Trigger)
            raise TriggerError(f"{ENV_TRIGGER}={value!r} is not a trigger (one of {known})") from None
    found = RunTrigger.of(trigger, user_id or env.get(ENV_TRIGGERED_BY), env.get(ENV_TRIGGER_REASON))
    if found.user is None:
        found = RunTrigger.of(trigger, default_user(trigger), found.reason)
    return RunTrigger(found.trigger, found.user, found.reason, _uploaders(env.get(ENV_TRIGGER_UPLOADERS)))


def _uploaders(value: str | None) -> tuple[tuple[str, str], ...]:
    """ORGPIPELINE_TRIGGER_UPLOADERS as (key, uploader) pairs; anything malformed is ignored (the
    run's user then stands for every file)."""
    try:
        doc = json.loads(value or "{}")
    except ValueError:
        return ()
    if not isinstance(doc, dict):
        return ()
    return tuple(
        (k, v.strip()[:MAX_USER])
        for k, v in doc.items()
        if isinstance(k, str) and isinstance(v, str) and v.strip()
    )


def run_now_request(annotations: Mapping[str, str], manager: str | None = None) -> RunTrigger:
    """The trigger of a run-now Job, from the OrgPipeline's annotations; without a requester the
    user is `unknown:run-now`, with the annotation's field manager when known."""
    found = RunTrigger.of(
        Trigger.run_now,
        annotations.get(ANNOTATION_RUN_NOW_REQUESTER),
        annotations.get(ANNOTATION_RUN_NOW_REASON),
    )
    if found.user is None:
        who = f"{UNKNOWN_RUN_NOW}:{manager.strip()}" if manager and manager.strip() else UNKNOWN_RUN_NOW
        found = RunTrigger.of(Trigger.run_now, who, found.reason)
    return found


def scheduled(cronjob: str) -> RunTrigger:
    """The trigger of a CronJob's runs: the user `system:schedule:<cronjob>`."""
    return RunTrigger(Trigger.schedule, f"{SYSTEM_SCHEDULE}:{cronjob}")


def file_arrival(
    uploaders: Mapping[str, str], reason: str | None, principals: list[str] | None = None
) -> RunTrigger:
    """The trigger of a file-arrival Job: the user is the uploader when the events name one, the
    uploaders in order (`, `-joined, cut to MAX_USER) when several, `system:file-arrival` when none.
    `principals`: every uploader of the batch (also of keys `uploaders` does not list)."""
    names = list(dict.fromkeys([*(principals or []), *(v for v in uploaders.values() if v)]))
    user = ", ".join(names) if names else SYSTEM_FILE_ARRIVAL
    found = RunTrigger.of(Trigger.file_arrival, user, reason)
    pairs: list[tuple[str, str]] = []
    size = 0
    for key, who in uploaders.items():
        size += len(json.dumps(key)) + len(json.dumps(who[:MAX_USER])) + 4  # as job_env writes it
        if who and size <= MAX_UPLOADERS_BYTES:  # keys past the bound: the run's user stands for them
            pairs.append((key, who[:MAX_USER]))
    return RunTrigger(found.trigger, found.user, found.reason, tuple(pairs))


SCHEDULE = RunTrigger(Trigger.schedule, SYSTEM_SCHEDULE)
"""The trigger of a scheduled run whose CronJob is not known."""
MANUAL = RunTrigger(Trigger.manual)
"""A run started by hand, by an unknown user (a default only: the commands name the caller)."""
