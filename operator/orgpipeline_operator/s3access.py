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
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection
from typing import Any

from orgpipeline_operator import kube, metrics
from orgpipeline_operator.operator_settings import Settings as S3Settings

ACCOUNT_PREFIX = "orgpipeline-org-"
LABEL_ORG_ID = "orgpipeline.io/org-id"
MODES = ("versitygw", "none")
REGION = "us-east-1"


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
    settings: S3Settings,
    client: kube.Kube,
    spec: Any,
    known: tuple[str, str] | None = None,
    wait: bool = True,
) -> tuple[str, str]:
    """The org's S3 keys: from its labelled credentialsSecret, else its own versitygw account
    (`known`: the keys its Secret holds now; `wait`: see ensure_account)."""
    ref = spec.source.credentials_secret
    if ref:
        return _secret_keys(settings, client, spec.org_id, ref)
    if settings.s3_accounts != "versitygw":
        raise SourceAccessError(
            "SourceCredentialsRequired",
            "ORGPIPELINE_S3_ACCOUNTS=none: the org needs spec.source.credentialsSecret, a Secret in "
            f"{settings.namespace} with its own keys, labelled {LABEL_ORG_ID}={spec.org_id}",
        )
    return ensure_account(settings, spec.org_id, spec.source.bucket, spec.source.prefix, known, wait)


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
    settings: S3Settings,
    org_id: str,
    bucket: str,
    prefix: str,
    known: tuple[str, str] | None = None,
    wait: bool = True,
) -> tuple[str, str]:
    """The org's account (made on first use) and its policy statement on the source bucket (and on
    no other bucket). `known`: the keys the org's Secret holds, re-used when versitygw takes them
    (one request, where reading the account list back costs a list of every org). `wait=False`:
    returns once the statement is queued; `granted` tells when it is written (a reconcile does not
    hold its worker through the policy writer's pause)."""
    access = account_name(org_id)
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def grant() -> None:  # after the account exists: a policy may name existing accounts only
        for name, ours in _buckets(settings).items():
            _want(settings, name, access, folder if name == bucket and ours else None, wait)

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


def _want(settings: S3Settings, bucket: str, access: str, folder: str | None, wait: bool = True) -> None:
    """Puts the account's statement in the bucket's policy (None: takes it out) and returns once a
    write holding it succeeded (or the policy already held it; `wait=False`: once it is queued).
    The bucket's one writer thread takes along every change asked for meanwhile."""
    writer = _writer(settings, bucket)
    done = writer.ask(access, folder)
    if done is None or not wait:
        return
    try:
        done.result(timeout=WRITE_WAIT)
    except concurrent.futures.TimeoutError:
        raise SourceAccessError(
            "S3AccountsUnavailable", f"the policy of bucket {bucket} not written in {WRITE_WAIT:.0f} s"
        ) from None


def granted(settings: S3Settings, spec: Any, on_granted: Callable[[], None]) -> bool:
    """Whether the org's statement is in its source bucket's policy as far as this process knows
    (no request): False while a write of it is queued, under way or to be retried, and then
    `on_granted` is called once it is written. Also records the statement: the bucket's writer puts
    it in again if another writer (or a hand) took it out, at its next write or check. A reconcile
    calls it for each org after its keys (so an operator restarted watches every org's statement)."""
    if spec.source.credentials_secret or settings.s3_accounts != "versitygw":
        return True
    prefix = spec.source.prefix
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    return _writer(settings, spec.source.bucket).granted(account_name(spec.org_id), folder, on_granted)


def statement(bucket: str, access: str, folder: str) -> dict[str, Any]:
    """The org's one statement: list the bucket (and ask its region, as S3 clients do first), read
    the objects under its folder."""
    return {
        "Effect": "Allow",
        "Principal": {"AWS": [access]},
        "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{folder}*"],
    }


POLICY_DUTY = 0.1
"""At most this fraction of wall time goes to writing one bucket's policy: after a write that took
t seconds the next waits t * (1/POLICY_DUTY - 1), 9 t. The document holds every org's statement (its
read, write and versitygw's check of every principal cost O(orgs)), so a write takes along the more
orgs the larger it is, and the policy's cost per org stays flat in the number of orgs."""
POLICY_PAUSE_MAX = 5.0
"""Seconds the pause lasts at most: at ~2,500 orgs (a busy machine) one write waited 20 s for
versitygw's answer, and nine times a slow write held every new org's Ready for over a minute."""
POLICY_CHECK = 60.0
"""Seconds between reads of a policy the writer holds statements in: a statement another writer (or
a hand) took out is put back."""
RETRY_WAIT = 5.0
"""Seconds at least between a failed write of a policy and the next try."""
WRITE_WAIT = 300.0
"""Seconds a reconcile waits for the write that takes its statement (then it fails and is retried)."""
log = logging.getLogger(__name__)
_OTHER = "\0"  # key prefix of statements that are not one account's (kept as they are)


class _PolicyWriter:
    """One bucket's policy, written by one thread. It holds the statements as JSON text (one each,
    by account): a write joins them (no dump of the whole document), and a read that returns the
    text it last wrote is not parsed again. Each write reads the policy first, so statements of
    another writer on the bucket (an operator of other label selectors) are kept."""

    def __init__(self, settings: S3Settings, bucket: str) -> None:
        self.settings, self.bucket = settings, bucket
        self.cond = threading.Condition()
        # account -> its statement as JSON text (None: no statement), and who waits for it
        self.asked: dict[str, tuple[str | None, list[concurrent.futures.Future[None]]]] = {}
        self.ours: dict[str, str | None] = {}  # account -> its statement (None: none)
        self.kept: dict[str, str] = {}  # granted()'s accounts, checked at the next read
        self.inflight: set[str] = set()  # the accounts of the write under way
        self.waiting: dict[str, list[Callable[[], None]]] = {}  # granted()'s callbacks
        self.known = False  # whether text and stmts are the policy as last read or written
        self.text: str | None = None  # its text (None: the bucket has no policy)
        self.stmts: dict[str, str] = {}  # key -> the statement's JSON text, in the policy's order
        self.checked = 0.0  # when the policy was last read or written
        self.resume = 0.0  # no write before this (the duty cycle)
        self.writes = 0  # PUTs and DELETEs of the policy (for tests and the benchmark)
        self.thread = threading.Thread(target=self._run, name=f"s3-policy-{bucket}", daemon=True)
        self.thread.start()

    def ask(self, access: str, folder: str | None) -> concurrent.futures.Future[None] | None:
        """Queues the account's statement; None when the policy holds it already (as read or written
        within POLICY_CHECK seconds)."""
        with self.cond:
            wanted = self._text(access, folder)
            fresh = self.known and time.monotonic() - self.checked < POLICY_CHECK
            if fresh and access not in self.asked and self.stmts.get(access) == wanted:
                self.ours[access] = wanted
                return None
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            self.asked[access] = (wanted, [*self.asked.get(access, (None, []))[1], done])
            self.cond.notify()
            return done

    def _text(self, access: str, folder: str | None) -> str | None:
        return None if folder is None else json.dumps(statement(self.bucket, access, folder))

    def granted(self, access: str, folder: str, on_granted: Callable[[], None]) -> bool:
        wanted = self._text(access, folder)
        assert wanted is not None
        with self.cond:
            if access in self.asked or access in self.inflight:
                self.waiting.setdefault(access, []).append(on_granted)
                return False
            current = self.ours.get(access, "")
            if current is None:
                return True  # taken out: its org is being deleted
            if current and current != wanted:
                # Another statement (a new prefix) is wanted: asked for, not only kept.
                self.asked[access] = (wanted, [])
                self.waiting.setdefault(access, []).append(on_granted)
                self.cond.notify()
                return False
        self._remember(access, wanted)
        return True

    def _remember(self, access: str, wanted: str) -> None:
        """Checks the account's statement at the next read: put back when missing (on a bucket the
        operator owns), then watched."""
        with self.cond:
            if access in self.asked or self.ours.get(access, "") is None:
                return  # a change under way, or the org's statement taken out (its org deleted)
            if access in self.ours:
                self.ours[access] = wanted
                return
            if not self.ours and not self.kept:
                self.cond.notify()  # a first check (after a restart)
            self.kept[access] = wanted

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.asked:
                    due = self.checked + POLICY_CHECK - time.monotonic()
                    watching = bool(self.ours or self.kept)
                    if watching and due <= 0:
                        break
                    self.cond.wait(due if watching else None)
            # Orgs asking meanwhile go into this write: the larger the policy, the more of them.
            time.sleep(max(0.0, self.resume - time.monotonic()))
            with self.cond:
                batch, self.asked = self.asked, {}
                for access, (wanted, _) in batch.items():
                    self.ours[access] = wanted
                self.inflight = set(batch)
            began = time.monotonic()
            failed = False
            try:
                self._sync(batch)
            except Exception as exc:  # each caller fails; asked again after RETRY_WAIT; read afresh
                failed = True
                log.warning("writing the policy of bucket %s failed (retried): %s", self.bucket, exc)
                with self.cond:
                    self.known, self.checked, self.inflight = False, time.monotonic(), set()
                    for access, (wanted, _) in batch.items():
                        self.asked.setdefault(access, (wanted, []))
                for _, waiters in batch.values():
                    for done in waiters:
                        done.set_exception(exc)
            else:
                called: list[Callable[[], None]] = []
                with self.cond:
                    self.inflight = set()
                    for access, (wanted, _) in batch.items():
                        if access in self.asked:
                            continue  # asked again meanwhile: its callbacks wait for that write
                        called += self.waiting.pop(access, [])
                        if wanted is None and self.ours.get(access, "") is None:
                            del self.ours[access]  # out of the policy: nothing more to watch
                for _, waiters in batch.values():
                    for done in waiters:
                        done.set_result(None)
                for call in called:
                    try:
                        call()
                    except Exception:  # one caller's hook must not stop the writer
                        log.exception("after writing the policy of bucket %s", self.bucket)
            took = time.monotonic() - began
            metrics.S3_POLICY_SECONDS.inc(took)
            pause = min(took * (1 / POLICY_DUTY - 1), POLICY_PAUSE_MAX)
            self.resume = time.monotonic() + max(pause, RETRY_WAIT if failed else 0)

    def _sync(self, batch: Collection[str]) -> None:
        """Reads the policy, puts in each of our accounts' statements (takes out those with None) and
        writes it if that changed anything."""
        text = _read_policy(self.settings, self.bucket)
        with self.cond:
            if not self.known or text != self.text:
                self.stmts = _by_account(text)
            self.known, self.text, self.checked = True, text, time.monotonic()
            for access, kept in self.kept.items():
                if access not in self.ours:
                    self.ours[access] = kept
            self.kept.clear()
            ours = dict(self.ours)
            stmts = dict(self.stmts)
        for access, wanted in ours.items():
            if wanted is None:
                stmts.pop(access, None)
            else:
                stmts[access] = wanted
        put_back = {a for a in set(stmts) - set(batch) if stmts[a] != self.stmts.get(a)}
        if put_back and not _buckets(self.settings).get(self.bucket, False):
            # Statements kept by keep() go back only on a bucket the operator owns (a policy takes
            # the ACLs' place: on another account's bucket it would lock its owner out).
            with self.cond:
                for access in put_back:
                    self.ours.pop(access, None)
            for access in put_back:
                if access in self.stmts:
                    stmts[access] = self.stmts[access]
                else:
                    del stmts[access]
        if stmts == self.stmts:
            metrics.S3_POLICY_SYNCS.labels(wrote="false").inc()
            return
        metrics.S3_POLICY_SYNCS.labels(wrote="true").inc()
        status, body, written = self._write(stmts)
        for _ in range(3):  # accounts may go on being deleted while the list is read
            if status < 300 or "MalformedPolicy" not in body:
                break
            # A statement names an account deleted meanwhile: another process wrote the policy it had
            # read before the account's org took its statement out (operators of other label
            # selectors on the same bucket). versitygw refuses every write until it goes: drop it.
            users = list_users(self.settings)
            valid = {
                key: one
                for key, one in stmts.items()
                if all(a in users for a in _principals(json.loads(one)))
            }
            with self.cond:
                for access in set(stmts) - set(valid):
                    if self.ours.get(access) is not None and access not in self.asked:
                        del self.ours[access]
            if valid == stmts:
                break  # malformed for another reason: the callers fail
            stmts = valid
            status, body, written = self._write(stmts)
        if status >= 300:
            raise SourceAccessError(
                "S3AccountsUnavailable", f"cannot write the policy of bucket {self.bucket}: {body[:300]}"
            )
        with self.cond:
            self.stmts, self.text, self.checked = stmts, written, time.monotonic()

    def _write(self, stmts: dict[str, str]) -> tuple[int, str, str | None]:
        """Puts the policy with these statements (none: deletes it): status, answer, the text."""
        self.writes += 1
        if not stmts:
            return *_s3(self.settings, "DELETE", f"/{self.bucket}", {"policy": ""}), None
        text = '{"Version": "2012-10-17", "Statement": [' + ", ".join(stmts.values()) + "]}"
        return *_s3(self.settings, "PUT", f"/{self.bucket}", {"policy": ""}, text.encode()), text


def _by_account(text: str | None) -> dict[str, str]:
    """The policy's statements as JSON text, by their one account (others by position)."""
    out = {}
    for i, stmt in enumerate(json.loads(text).get("Statement", []) if text else []):
        principals = _principals(stmt)
        key = principals[0] if len(principals) == 1 else f"{_OTHER}{i}"
        out[key if key not in out else f"{_OTHER}{i}"] = json.dumps(stmt)
    return out


_WRITERS: dict[tuple[str, str, str], _PolicyWriter] = {}
_WRITERS_LOCK = threading.Lock()


def _writer(settings: S3Settings, bucket: str) -> _PolicyWriter:
    key = (settings.s3_endpoint, settings.s3_access_key, bucket)
    with _WRITERS_LOCK:
        if key not in _WRITERS:
            _WRITERS[key] = _PolicyWriter(settings, bucket)
        return _WRITERS[key]


def _principals(stmt: dict[str, Any]) -> list[str]:
    principal = (stmt.get("Principal") or {}).get("AWS") if isinstance(stmt.get("Principal"), dict) else None
    return [str(p) for p in (principal if isinstance(principal, list) else [principal]) if p]


def get_policy(settings: S3Settings, bucket: str) -> dict[str, Any] | None:
    text = _read_policy(settings, bucket)
    policy: dict[str, Any] | None = json.loads(text) if text is not None else None
    return policy


def _read_policy(settings: S3Settings, bucket: str) -> str | None:
    """The policy's text as versitygw holds it (the text last put); None when there is none."""
    status, text = _s3(settings, "GET", f"/{bucket}", {"policy": ""})
    if status == 404:
        if "NoSuchBucketPolicy" in text or "NoSuchBucket" not in text:
            return None
        raise SourceAccessError("SourceBucketMissing", f"S3 bucket {bucket} does not exist")
    if status >= 300:
        raise SourceAccessError("S3AccountsUnavailable", f"cannot read the policy of bucket {bucket}: {text}")
    return text


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
