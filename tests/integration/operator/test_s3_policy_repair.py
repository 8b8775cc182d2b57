"""The source bucket's policy names every org's account. Two operators on the same bucket (other label
selectors, or a benchmark beside the cluster's own) can leave it naming an account deleted meanwhile:
one writes back the policy it read just before the other took an org's statement out and deleted
its account. versitygw then refuses every write of the policy, so no org could be made or deleted
any more: the next write drops that statement."""

from __future__ import annotations

import uuid

from orgpipeline_operator import runtime, s3access

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
        s3access._POLICIES.clear()

        access, _secret = s3access.ensure_account(settings, new, BUCKET, f"org-{new}/")

        policy = str(s3access.get_policy(settings, BUCKET))
        assert access in policy
        assert s3access.account_name(gone) not in policy
    finally:
        for org in (gone, new):
            s3access.remove_account(settings, org)
