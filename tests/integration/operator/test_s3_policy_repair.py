"""The source bucket's policy names every org's account. Two operators on the same bucket (other label
selectors, or a benchmark beside the cluster's own) can leave it naming an account deleted meanwhile:
one writes back the policy it read just before the other took an org's statement out and deleted
its account. versitygw then refuses every write of the policy, so no org could be made or deleted
any more: the next write drops that statement."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import types
import uuid

import pytest
from operator_helpers import wait_for
from orgpipeline_operator import runtime, s3access
from orgpipeline_operator.operator_settings import Settings

BUCKET = "uploads"


def test_a_statement_of_an_account_deleted_meanwhile_does_not_block_the_next_org(
    direct_rt: runtime.Runtime,
) -> None:
    settings = direct_rt.settings
    gone, new = f"pol{uuid.uuid4().hex[:6]}", f"pol{uuid.uuid4().hex[:6]}"
    try:
        s3access.ensure_account(settings, gone, BUCKET, f"org-{gone}/")
        # The other process deletes the account; its statement stays (the stale write).
        status, text = s3access._admin(settings, "delete-user", {"access": s3access.account_name(gone)})
        assert status < 300, text
        assert s3access.account_name(gone) in str(s3access.get_policy(settings, BUCKET))

        access, _secret = s3access.ensure_account(settings, new, BUCKET, f"org-{new}/")

        policy = str(s3access.get_policy(settings, BUCKET))
        assert access in policy
        assert s3access.account_name(gone) not in policy
    finally:
        for org in (gone, new):
            s3access.remove_account(settings, org)


def _take_out(settings: Settings, access: str) -> None:
    """Another writer (or a hand) puts the policy back without the account's statement."""
    policy = s3access.get_policy(settings, BUCKET) or {}
    kept = [st for st in policy.get("Statement", []) if access not in s3access._principals(st)]
    if kept:
        doc = json.dumps({"Version": "2012-10-17", "Statement": kept}).encode()
        status, text = s3access._s3(settings, "PUT", f"/{BUCKET}", {"policy": ""}, doc)
    else:
        status, text = s3access._s3(settings, "DELETE", f"/{BUCKET}", {"policy": ""})
    assert status < 300, text
    assert access not in str(s3access.get_policy(settings, BUCKET))


def test_a_statement_taken_out_by_another_writer_is_put_back_at_the_next_write(
    direct_rt: runtime.Runtime,
) -> None:
    settings = direct_rt.settings
    first, second = f"pol{uuid.uuid4().hex[:6]}", f"pol{uuid.uuid4().hex[:6]}"
    try:
        access, _secret = s3access.ensure_account(settings, first, BUCKET, f"org-{first}/")
        _take_out(settings, access)

        s3access.ensure_account(settings, second, BUCKET, f"org-{second}/")

        policy = str(s3access.get_policy(settings, BUCKET))
        assert f"arn:aws:s3:::{BUCKET}/org-{first}/*" in policy  # the first org reads its files again
        assert f"arn:aws:s3:::{BUCKET}/org-{second}/*" in policy
    finally:
        for org in (first, second):
            s3access.remove_account(settings, org)


def test_a_statement_taken_out_is_put_back_without_a_new_org(
    direct_rt: runtime.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = direct_rt.settings
    org = f"pol{uuid.uuid4().hex[:6]}"
    try:
        access, _secret = s3access.ensure_account(settings, org, BUCKET, f"org-{org}/")
        _take_out(settings, access)
        monkeypatch.setattr(s3access, "POLICY_CHECK", 0.5)  # instead of a minute's wait
        writer = s3access._writer(settings, BUCKET)
        with writer.cond:
            writer.cond.notify()  # it waits for the minute it was told before

        wait_for(lambda: f"org-{org}/*" in str(s3access.get_policy(settings, BUCKET)), 30, "put back")
    finally:
        s3access.remove_account(settings, org)


def test_orgs_made_at_once_all_get_their_statement_in_few_policy_writes(
    direct_rt: runtime.Runtime,
) -> None:
    settings = direct_rt.settings
    orgs = [f"pol{uuid.uuid4().hex[:6]}" for _ in range(40)]
    writer = s3access._writer(settings, BUCKET)
    before = writer.writes
    try:
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            list(pool.map(lambda org: s3access.ensure_account(settings, org, BUCKET, f"org-{org}/"), orgs))

        policy = str(s3access.get_policy(settings, BUCKET))
        assert all(f"arn:aws:s3:::{BUCKET}/org-{org}/*" in policy for org in orgs)
        assert writer.writes - before <= 5  # each write takes along every org asking meanwhile
    finally:
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            list(pool.map(lambda org: s3access.remove_account(settings, org), orgs))


def test_an_org_is_granted_once_its_statement_is_written_and_the_reconcile_is_called_back(
    direct_rt: runtime.Runtime,
) -> None:
    settings = direct_rt.settings
    org = f"pol{uuid.uuid4().hex[:6]}"
    source = types.SimpleNamespace(credentials_secret=None, bucket=BUCKET, prefix=f"org-{org}/")
    spec = types.SimpleNamespace(org_id=org, source=source)
    called = threading.Event()
    writer = s3access._writer(settings, BUCKET)
    try:
        writer.resume = time.monotonic() + 2  # the writer pauses after a write: this org waits
        s3access.ensure_account(settings, org, BUCKET, f"org-{org}/", wait=False)

        assert not s3access.granted(settings, spec, called.set)  # the reconcile reports it pending
        assert f"org-{org}/*" not in str(s3access.get_policy(settings, BUCKET))
        wait_for(called.is_set, 30, "the writer's call back")
        assert f"org-{org}/*" in str(s3access.get_policy(settings, BUCKET))
        assert s3access.granted(settings, spec, lambda: None)  # then Ready
    finally:
        s3access.remove_account(settings, org)
