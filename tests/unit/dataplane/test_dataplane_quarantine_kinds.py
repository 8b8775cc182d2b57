"""Which store errors quarantine a file (its content, the same at every retry) and which fail the
run to be retried (store trouble); neither names the refused value."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from orgpipeline_jobs.ingest import content_refusal
from orgpipeline_jobs.landing.exceptions import LandingError
from orgpipeline_jobs.pipeline import error_kind

VALUE = "4111-1111-1111-1111"


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.InvalidTextRepresentation(f'invalid input syntax for type integer: "{VALUE}"'),
        psycopg.errors.StringDataRightTruncation("value too long for type character varying(3)"),
        psycopg.errors.CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8": 0x00'),
        psycopg.errors.ProgramLimitExceeded("index row size 3016 exceeds btree version 4 maximum 2704"),
        LandingError(f'MongoDB refused 1 documents: invalid key: "{VALUE}"'),
    ],
)
def test_content_refusals_quarantine_without_the_value(error: Exception) -> None:
    reason = content_refusal(error)
    assert reason is not None and VALUE not in reason


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("connection to server lost"),
        psycopg.errors.InsufficientPrivilege('permission denied for table "raw_orders"'),
        psycopg.errors.DeadlockDetected("deadlock detected"),
    ],
)
def test_store_trouble_is_no_quarantine(error: Exception) -> None:
    assert content_refusal(error) is None


def test_the_jobs_error_line_names_the_kind_not_the_value() -> None:
    error = psycopg.errors.InvalidDatetimeFormat(
        f'invalid input syntax for type date: "{VALUE}"\nLINE 1: ...'
    )
    line = error_kind(error)
    assert VALUE not in line
    assert line.startswith("InvalidDatetimeFormat (22007): invalid input syntax for type date")
