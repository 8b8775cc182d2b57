"""Per-org S3 access: the keys an org's jobs get, which can read only the org's own source.

Two ways, chosen by ORGPIPELINE_S3_ACCOUNTS:

- `versitygw` (the default; the local stack runs versitygw): the operator makes one versitygw
  account per org (`orgpipeline-org-<orgId>`, role user, a random secret) through versitygw's admin
  API, signed with the operator's root keys, and keeps one statement per org in the source bucket's
  policy: s3:ListBucket on the bucket and s3:GetObject on `<bucket>/<prefix>*`. versitygw 1.7 has no
  policy conditions, so ListBucket cannot be narrowed to the prefix: an org account can list the
  key names (and sizes, etags) of the whole source bucket, never read, write or delete another
  org's objects. A bucket per org (source.prefix empty, with a credentialsSecret) hides the names.
- `none`: the operator makes no accounts; each org must name a credentialsSecret (its own keys,
  e.g. an IAM user per org on AWS or MinIO whose policy allows only its prefix).

Either way a spec.source.credentialsSecret is used only when that Secret is labelled
`orgpipeline.io/org-id: <orgId>`: the platform's word that the keys are the org's.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

from orgpipeline_operator import kube
from orgpipeline_operator.operator_settings import Settings as S3Settings

ACCOUNT_PREFIX = "orgpipeline-org-"
LABEL_ORG_ID = "orgpipeline.io/org-id"
MODES = ("versitygw", "none")
REGION = "us-east-1"
_POLICY_LOCK = threading.Lock()  # one read-modify-write of a bucket policy at a time (one replica)


class SourceAccessError(Exception):
    """The org cannot be given S3 keys as its spec stands (or the S3 admin API failed); `reason`
    is the Ready condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def account_name(org_id: str) -> str:
    return ACCOUNT_PREFIX + org_id


def placeholder(settings: S3Settings, spec: Any) -> tuple[str, str]:
    """What stands for the org's S3 keys in the children's hash: it changes when the keys' source
    or the area they must reach changes (then the Secret and the bucket policy are written again)."""
    ref = spec.source.credentials_secret
    if ref:
        return f"secret:{ref}", ""
    if settings.s3_accounts == "versitygw":
        return f"account:{account_name(spec.org_id)}:{spec.source.bucket}/{spec.source.prefix}", ""
    return "none", ""


def refusal(settings: S3Settings, client: kube.Kube, spec: Any) -> tuple[str, str] | None:
    """(reason, message) when the spec names S3 keys the org may not have, or none at all: the
    reconcile refuses it (Ready False) until the spec or the Secret changes; else None."""
    if spec.source.credentials_secret or settings.s3_accounts == "none":
        try:
            org_keys(settings, client, spec)
        except SourceAccessError as exc:
            if exc.reason != "SourceCredentialsMissing":  # a Secret still to come: retried as before
                return exc.reason, str(exc)
    return None


def org_keys(
    settings: S3Settings, client: kube.Kube, spec: Any, known: tuple[str, str] | None = None
) -> tuple[str, str]:
    """The org's S3 keys: from its labelled credentialsSecret, else its own versitygw account
    (`known`: the keys its Secret holds now)."""
    ref = spec.source.credentials_secret
    if ref:
        return _secret_keys(settings, client, spec.org_id, ref)
    if settings.s3_accounts != "versitygw":
        raise SourceAccessError(
            "SourceCredentialsRequired",
            "ORGPIPELINE_S3_ACCOUNTS=none: the org needs spec.source.credentialsSecret, a Secret in "
            f"{settings.namespace} with its own keys, labelled {LABEL_ORG_ID}={spec.org_id}",
        )
    return ensure_account(settings, spec.org_id, spec.source.bucket, spec.source.prefix, known)


def _secret_keys(settings: S3Settings, client: kube.Kube, org_id: str, ref: str) -> tuple[str, str]:
    secret = client.get("v1", "Secret", ref, settings.namespace)
    data = (secret or {}).get("data") or {}
    if "accessKey" not in data or "secretKey" not in data:
        raise SourceAccessError(
            "SourceCredentialsMissing",
            f"Secret {settings.namespace}/{ref} (spec.source.credentialsSecret) is missing "
            "or lacks accessKey/secretKey",
        )
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_ORG_ID) != org_id:
        # Any org could name any Secret of the operator's namespace: only the label says the keys
        # are this org's, so an unlabelled (or another org's) Secret is never handed out.
        raise SourceAccessError(
            "SourceCredentialsNotForOrg",
            f"Secret {settings.namespace}/{ref} (spec.source.credentialsSecret) is not labelled "
            f"{LABEL_ORG_ID}={org_id}; its keys are not given to this org",
        )
    return base64.b64decode(data["accessKey"]).decode(), base64.b64decode(data["secretKey"]).decode()


# --- versitygw: accounts and the bucket policy ---------------------------------------------------


def ensure_account(
    settings: S3Settings, org_id: str, bucket: str, prefix: str, known: tuple[str, str] | None = None
) -> tuple[str, str]:
    """The org's account (made on first use) and its policy statement on the source bucket (and on
    no other bucket). `known`: the keys the org's Secret holds, re-used when versitygw takes them
    (one request, where reading the account list back costs a list of every org)."""
    access = account_name(org_id)
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def grant() -> None:  # after the account exists: a policy may name existing accounts only
        for name, ours in _buckets(settings).items():
            _want(settings, name, access, folder if name == bucket and ours else None)

    if known is not None and known[0] == access:
        try:
            grant()
            if _valid(settings, bucket, known):
                return known
        except SourceAccessError:
            pass  # the account is gone (a policy naming it is refused): made again below
    # Made first, read back only when it exists already (an org made again, or a reconcile of it
    # beside this one): the account list is every org's, O(orgs) to fetch and parse for each new one.
    secret = secrets.token_hex(20)
    body = (
        f"<Account><Access>{access}</Access><Secret>{secret}</Secret><Role>user</Role>"
        "<UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>"
    ).encode()
    status, text = _admin(settings, "create-user", body=body)
    if status >= 400 and "exists" not in text.lower():
        raise SourceAccessError("S3AccountsUnavailable", f"cannot create S3 account {access}: {text}")
    if status >= 400:  # it exists: use its secret
        found = list_users(settings).get(access)
        if found is None:  # deleted in between: the next reconcile makes it
            raise SourceAccessError("S3AccountsUnavailable", f"S3 account {access} changed meanwhile")
        secret = found
    grant()
    return access, secret


def remove_account(settings: S3Settings, org_id: str) -> None:
    """Deletion of the org: its statements go from every bucket's policy, then its account."""
    if settings.s3_accounts != "versitygw":
        return
    access = account_name(org_id)
    for name in _buckets(settings):
        _want(settings, name, access, None)
    # Deleted without a look at the account list first (every org's): versitygw answers 200 for an
    # account that is not there.
    status, text = _admin(settings, "delete-user", {"access": access})
    if status >= 400 and status != 404:
        raise SourceAccessError("S3AccountsUnavailable", f"cannot delete S3 account {access}: {text}")


def _valid(settings: S3Settings, bucket: str, keys: tuple[str, str]) -> bool:
    """Whether versitygw takes these keys (a wrong key or secret is a 403 before any bucket lookup)."""
    as_org = dataclasses.replace(settings, s3_access_key=keys[0], s3_secret_key=keys[1])
    status, _ = _s3(as_org, "GET", f"/{bucket}", {"location": ""})
    return status != 403


_PENDING: dict[str, dict[str, str | None]] = {}  # bucket -> account -> its folder (None: no statement)
_PENDING_LOCK = threading.Lock()


def _want(settings: S3Settings, bucket: str, access: str, folder: str | None) -> None:
    """Puts the account's statement in the bucket's policy (None: takes it out). Concurrent calls
    share one policy write (a thousand orgs made at once write the policy far fewer times)."""
    with _PENDING_LOCK:
        _PENDING.setdefault(bucket, {})[access] = folder
    with _POLICY_LOCK:
        with _PENDING_LOCK:
            todo = _PENDING.pop(bucket, {})
        if not todo:
            return  # a write by another thread took this one along
        try:
            _set_statements(settings, bucket, todo)
        except Exception:
            with _PENDING_LOCK:  # left for the next caller (each caller writes at least once)
                _PENDING[bucket] = {**todo, **_PENDING.get(bucket, {})}
            raise


def statement(bucket: str, access: str, folder: str) -> dict[str, Any]:
    """The org's one statement: list the bucket (and ask its region, as S3 clients do first), read
    the objects under its folder."""
    return {
        "Effect": "Allow",
        "Principal": {"AWS": [access]},
        "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{folder}*"],
    }


_POLICIES: dict[str, tuple[float, dict[str, Any] | None]] = {}  # bucket -> (read at, policy)
POLICY_TTL = 60.0
"""Seconds a policy read is trusted for "nothing to change" (a reconcile of an org whose statement
is in place then costs no request); any write reads the policy afresh."""


def _merge(bucket: str, current: dict[str, Any] | None, todo: dict[str, str | None]) -> list[Any]:
    """The policy's statements with each account's replaced in place (so an unchanged one compares
    equal), dropped (folder None) or appended (new)."""
    out, placed = [], set()
    for stmt in (current or {}).get("Statement", []):
        # By the statement's own principals (one each), not by every account to do (a write takes
        # along those of all the orgs made meanwhile: O(statements x orgs) was most of its cost).
        mine = next((a for a in _principals(stmt) if a in todo), None)
        if mine is None:
            out.append(stmt)
        elif todo[mine] is not None and mine not in placed:
            out.append(statement(bucket, mine, str(todo[mine])))
            placed.add(mine)
    out += [statement(bucket, a, f) for a, f in sorted(todo.items()) if f is not None and a not in placed]
    return out


def _set_statements(settings: S3Settings, bucket: str, todo: dict[str, str | None]) -> None:
    """Makes each account's statement in the bucket's policy the one for its folder (None: none)."""
    seen = _POLICIES.get(bucket)
    fresh = seen is not None and time.monotonic() - seen[0] < POLICY_TTL
    if seen is not None and fresh and _merge(bucket, seen[1], todo) == (seen[1] or {}).get("Statement", []):
        return
    current = get_policy(settings, bucket)
    _POLICIES[bucket] = (time.monotonic(), current)
    wanted = _merge(bucket, current, todo)
    if wanted == (current or {}).get("Statement", []):
        return
    _POLICIES.pop(bucket, None)
    doc, status, text = _write_policy(settings, bucket, wanted)
    if status >= 300 and "MalformedPolicy" in text:
        # A statement names an account deleted meanwhile: another process wrote the policy it had
        # read before the account's org took its statement out (operators of other label selectors
        # on the same bucket). versitygw refuses every write until it goes: drop it, once.
        users = list_users(settings)
        kept = [stmt for stmt in wanted if all(a in users for a in _principals(stmt))]
        if kept != wanted:
            doc, status, text = _write_policy(settings, bucket, kept)
    if status >= 300:
        raise SourceAccessError(
            "S3AccountsUnavailable", f"cannot write the policy of bucket {bucket}: {text[:300]}"
        )
    _POLICIES[bucket] = (time.monotonic(), doc)


def _write_policy(
    settings: S3Settings, bucket: str, statements: list[Any]
) -> tuple[dict[str, Any] | None, int, str]:
    """Puts the policy with these statements (none: deletes it): the document, status and text."""
    if not statements:
        return None, *_s3(settings, "DELETE", f"/{bucket}", {"policy": ""})
    doc = {"Version": "2012-10-17", "Statement": statements}
    return doc, *_s3(settings, "PUT", f"/{bucket}", {"policy": ""}, json.dumps(doc).encode())


def _principals(stmt: dict[str, Any]) -> list[str]:
    principal = (stmt.get("Principal") or {}).get("AWS") if isinstance(stmt.get("Principal"), dict) else None
    return [str(p) for p in (principal if isinstance(principal, list) else [principal]) if p]


def get_policy(settings: S3Settings, bucket: str) -> dict[str, Any] | None:
    status, text = _s3(settings, "GET", f"/{bucket}", {"policy": ""})
    if status == 404:
        if "NoSuchBucketPolicy" in text or "NoSuchBucket" not in text:
            return None
        raise SourceAccessError("SourceBucketMissing", f"S3 bucket {bucket} does not exist")
    if status >= 300:
        raise SourceAccessError("S3AccountsUnavailable", f"cannot read the policy of bucket {bucket}: {text}")
    policy: dict[str, Any] = json.loads(text)
    return policy


def _buckets(settings: S3Settings) -> dict[str, bool]:
    """Every bucket -> whether the operator's own account owns it (no owner recorded: the same).
    Statements go only on those: a policy on someone else's bucket would take the ACLs' place and
    lock its owner out (versitygw checks a bucket's policy instead of its ACL), so an org naming
    another account's bucket gets nothing there."""
    status, text = _admin(settings, "list-buckets")
    if status >= 300:
        raise SourceAccessError("S3AccountsUnavailable", f"cannot list the S3 buckets: {text[:300]}")
    owned = {}
    for entry in ET.fromstring(text).iter():
        fields = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in entry}
        if "Name" in fields:
            owned[fields["Name"]] = fields.get("Owner", "") in ("", settings.s3_access_key)
    return owned


def list_users(settings: S3Settings) -> dict[str, str]:
    """versitygw's accounts: access key -> secret (the admin API answers the root keys only)."""
    status, text = _admin(settings, "list-users")
    if status >= 300:
        raise SourceAccessError(
            "S3AccountsUnavailable",
            f"cannot list the S3 accounts (is ORGPIPELINE_S3_ENDPOINT a versitygw with --iam-dir? "
            f"else set ORGPIPELINE_S3_ACCOUNTS=none): {text[:300]}",
        )
    users = {}
    for acc in ET.fromstring(text).iter():
        if acc.tag.endswith("Accounts"):
            fields = {c.tag.rsplit("}", 1)[-1].lower(): c.text or "" for c in acc}
            if "access" in fields:
                users[fields["access"]] = fields.get("secret", "")
    return users


def _admin(
    settings: S3Settings, op: str, query: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, str]:
    return _s3(settings, "PATCH", f"/{op}", query or {}, body)


def _s3(
    settings: S3Settings, method: str, path: str, query: dict[str, str], body: bytes = b""
) -> tuple[int, str]:
    """One request signed (SigV4) with the operator's root keys; (status, body)."""
    import urllib3
    from minio.credentials import Credentials
    from minio.signer import sign_v4_s3

    url = urllib.parse.urlsplit(settings.s3_endpoint.rstrip("/") + path)
    qs = urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
    url = url._replace(query=qs)
    date = datetime.datetime.now(datetime.UTC)
    sha = hashlib.sha256(body).hexdigest()
    headers: dict[str, str | list[str] | tuple[str]] = {
        "Host": url.netloc,
        "x-amz-date": date.strftime("%Y%m%dT%H%M%SZ"),
        "x-amz-content-sha256": sha,
    }
    if body:
        headers["Content-Length"] = str(len(body))
    creds = Credentials(settings.s3_access_key, settings.s3_secret_key)
    signed = sign_v4_s3(
        method=method,
        url=url,
        region=REGION,
        headers=headers,
        credentials=creds,
        content_sha256=sha,
        date=date,
    )
    try:
        resp = _HTTP.request(method, urllib.parse.urlunsplit(url), body=body or None, headers=signed)
    except urllib3.exceptions.HTTPError as exc:
        raise SourceAccessError("S3AccountsUnavailable", f"S3 unreachable: {exc}") from None
    return resp.status, resp.data.decode(errors="replace")


def _pool() -> Any:
    import urllib3

    # Reconciles call from the apply pool's threads at once: one kept connection (urllib3's
    # default) was discarded and made again for nearly every call at onboarding.
    return urllib3.PoolManager(
        maxsize=16, block=False, timeout=urllib3.Timeout(connect=5, read=30), retries=False
    )


_HTTP = _pool()
