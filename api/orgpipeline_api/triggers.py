"""Who started a run and why: the names the operator, the Jobs, the data plane and the CLI share.

Every Job the operator makes carries its trigger in three environment variables; the data plane
reads them once and records them with the run (pipeline_runs, each version's audit trail, the change
log, the run report). A run-now request carries its requester and reason in annotations beside
`orgpipeline.io/run-now`; `orgpipeline run-now` sets them, a plain `kubectl annotate` leaves the
requester empty (unknown). A run started by hand (`orgpipeline run`, no variables) is `manual`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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

ANNOTATION_RUN_NOW = "orgpipeline.io/run-now"
"""The table(s) to run now: `orders`, `orders,customers` or `*`."""
ANNOTATION_RUN_NOW_REQUESTER = "orgpipeline.io/run-now-requester"
"""Who asked (the user name the API server knows); empty or absent: unknown."""
ANNOTATION_RUN_NOW_REASON = "orgpipeline.io/run-now-reason"
"""Why, in the requester's words; optional."""

MAX_USER = 256
MAX_REASON = 1024
"""Characters kept of a user name and of a reason (an annotation can be much longer)."""


class TriggerError(ValueError):
    """An ORGPIPELINE_TRIGGER value that is not one of the triggers."""


@dataclass(frozen=True)
class RunTrigger:
    """What started one run: the trigger, the user (None: unknown) and the reason (None: not given)."""

    trigger: Trigger
    user: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, trigger: Trigger, user: str | None, reason: str | None) -> RunTrigger:
        """Blank values become None; long ones are cut to MAX_USER / MAX_REASON."""
        user = (user or "").strip()[:MAX_USER] or None
        reason = " ".join((reason or "").split())[:MAX_REASON] or None
        return cls(trigger, user, reason)

    def job_env(self) -> list[dict[str, str]]:
        """The container env entries of a Job started this way."""
        return [
            {"name": ENV_TRIGGER, "value": self.trigger.value},
            {"name": ENV_TRIGGERED_BY, "value": self.user or ""},
            {"name": ENV_TRIGGER_REASON, "value": self.reason or ""},
        ]

    def as_document(self) -> dict[str, str | None]:
        """The form recorded with the run and with each version: {"type", "user", "reason"}."""
        return {"type": self.trigger.value, "user": self.user, "reason": self.reason}


def from_env(env: Mapping[str, str], user_id: str | None = None) -> RunTrigger:
    """The trigger of a data-plane command: from the Job's variables, or `manual` without them.

    `user_id` (`--user-id`) names the user when given, else ORGPIPELINE_TRIGGERED_BY does.
    Raises TriggerError for an ORGPIPELINE_TRIGGER that is not a trigger.
    """
    value = env.get(ENV_TRIGGER, "").strip()
    if not value:
        return RunTrigger.of(Trigger.manual, user_id, env.get(ENV_TRIGGER_REASON))
    try:
        trigger = Trigger(value)
    except ValueError:
        known = ", ".join(t.value for t in Trigger)
        raise TriggerError(f"{ENV_TRIGGER}={value!r} is not a trigger (one of {known})") from None
    return RunTrigger.of(trigger, user_id or env.get(ENV_TRIGGERED_BY), env.get(ENV_TRIGGER_REASON))


def run_now_request(annotations: Mapping[str, str]) -> RunTrigger:
    """The trigger of a run-now Job, from the OrgPipeline's annotations (no requester: unknown)."""
    return RunTrigger.of(
        Trigger.run_now,
        annotations.get(ANNOTATION_RUN_NOW_REQUESTER),
        annotations.get(ANNOTATION_RUN_NOW_REASON),
    )


SCHEDULE = RunTrigger(Trigger.schedule)
"""The trigger of the CronJobs' runs."""
MANUAL = RunTrigger(Trigger.manual)
"""A run started by hand, by an unknown user."""
