"""Pure: S3 bucket notifications in, the tables whose runs they start out, batched per table.

Senders differ in the envelope, not in the record: MinIO, Ceph RGW and versitygw post the standard
S3 event JSON (`Records[].eventName`, `.s3.bucket.name`, `.s3.object.key`); AWS S3 sends the same
records through SNS (wrapped in a `Notification`'s `Message`) or SQS, and EventBridge sends
`detail-type: Object Created` with `detail.bucket.name` / `detail.object.key`. All four become
`ObjectCreated`s here; anything else (test events, deletions, tagging) is ignored.

An object belongs to the OrgPipeline whose `source.bucket` is its bucket and whose `source.prefix`
(a folder, see `orgpipeline_api.source_paths`) is the longest one the key starts with (a folder
nested in another org's is that org's alone); when two orgs claim the very same bucket and folder,
the object is ambiguous and starts nothing. Within the owning org, every table whose `filePattern`
matches the name relative to the folder (`source_paths.matches`, as the data plane matches it when
it lists the folder) and whose `trigger` allows file arrivals gets a run.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from orgpipeline_api import source_paths, triggers
from orgpipeline_api.v1alpha1 import TableTrigger

from orgpipeline_operator import backoff

MAX_KEYS_PER_BATCH = 100
"""Keys a batch remembers by name (for the Job's reason); beyond that it only counts them."""
MAX_KEY_BYTES = 1024
"""S3's own limit on an object key (UTF-8): a longer key names no object, and is refused."""
MAX_PRINCIPAL = 256
"""Characters kept of an event's principal (triggers.MAX_USER)."""
MAX_PRINCIPALS = 10
"""Distinct uploaders a batch remembers for the run's user (each file's own is kept with its key)."""
MAX_JSON_DEPTH = 32
"""Nesting a notification may have; S3, SNS and EventBridge bodies use fewer than ten levels."""


class BadNotification(ValueError):
    """A body that is not JSON or not an S3 notification; the message is one line for the sender."""


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    principal: str = ""
    """Who uploaded it, as the event says ("" when it does not): the S3 record's
    `userIdentity.principalId` (MinIO: the access key or user, versitygw: the account, which it
    spells `PrincipalId`; AWS: the IAM principal), EventBridge's `detail.requester`."""


@dataclass(frozen=True)
class Watch:
    """One table of one OrgPipeline that a file arrival may start."""

    pipeline: str
    org: str
    bucket: str
    prefix: str
    table: str
    pattern: str


TableKey = tuple[str, str]  # (pipeline, table)


# --- authentication --------------------------------------------------------------------------


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token: `Bearer <token>` (MinIO's auth_token,
    EventBridge API destinations) or Basic with the token as password (senders that only take a
    URL, `https://any:<token>@host/...`: versitygw, SNS). Compared in constant time."""
    if not header or not token:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    supplied = credentials.strip()
    if scheme.lower() == "basic":
        try:
            supplied = base64.b64decode(supplied, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.encode(), token.encode())


# --- parsing ---------------------------------------------------------------------------------


def json_depth(doc: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in a parsed document, counted without recursion and
    stopped once past `limit` (linear in the document's size)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_notification(body: bytes, *, enveloped: bool = False) -> list[ObjectCreated]:
    """The created objects a notification reports (keys URL-decoded, as S3 encodes them).
    BadNotification for a body that is not JSON, nests deeper than MAX_JSON_DEPTH, or wraps an
    SNS envelope in another."""
    try:
        doc = json.loads(body)
    except RecursionError:  # the parser's own guard (C, at about a thousand levels): no crash
        raise BadNotification(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadNotification(f"body is not JSON: {str(exc)[:200]}") from None
    if json_depth(doc) > MAX_JSON_DEPTH:
        raise BadNotification(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(doc, dict):
        raise BadNotification("body is not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS envelope
        if enveloped:
            raise BadNotification("an SNS notification inside an SNS notification")
        return parse_notification(doc["Message"].encode(), enveloped=True)
    if doc.get("detail-type") == "Object Created":  # EventBridge
        detail = doc.get("detail")
        bucket, key = _path(detail, "bucket", "name"), _path(detail, "object", "key")
        requester = detail.get("requester") if isinstance(detail, dict) else None
        who = requester.strip()[:MAX_PRINCIPAL] if isinstance(requester, str) else ""
        return [ObjectCreated(bucket, key, who)] if bucket and key else []
    records = doc.get("Records")
    if records is None:
        return []  # a test event (s3:TestEvent) or another kind of message: nothing to do
    if not isinstance(records, list):
        raise BadNotification("Records is not a list")
    created = []
    for record in records:
        if not isinstance(record, dict):
            raise BadNotification("a record is not an object")
        name = str(record.get("eventName") or "")
        # MinIO and versitygw write `s3:ObjectCreated:Put`, AWS `ObjectCreated:Put`.
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3")
        bucket, key = _path(s3, "bucket", "name"), _path(s3, "object", "key")
        if bucket and key:
            created.append(ObjectCreated(bucket, unquote_plus(key), principal(record)))
    return created


def principal(record: Mapping[str, Any]) -> str:
    """The uploader an S3 event record names: `userIdentity.principalId`, whatever the case of
    its key (versitygw writes `PrincipalId`), "" when none."""
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return ""
    for name, value in identity.items():
        if isinstance(name, str) and name.lower() == "principalid" and isinstance(value, str):
            return value.strip()[:MAX_PRINCIPAL]
    return ""


def sns_subscribe_url(body: bytes) -> str | None:
    """The SubscribeURL of an SNS subscription confirmation (a person opens it once), else None."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and doc.get("Type") == "SubscriptionConfirmation":
        url = doc.get("SubscribeURL")
        return url if isinstance(url, str) else None
    return None


def _path(doc: Any, outer: str, inner: str) -> str:
    """doc[outer][inner] when that is a string, else "" (senders' JSON is not trusted to be shaped)."""
    value = doc.get(outer) if isinstance(doc, dict) else None
    found = value.get(inner) if isinstance(value, dict) else None
    return found if isinstance(found, str) else ""


# --- routing ---------------------------------------------------------------------------------


def watches(pipelines: Iterable[Mapping[str, Any]], owns: Callable[[str, str], bool]) -> list[Watch]:
    """The tables file arrivals may start, from OrgPipelines as the API server returns them.

    Skips suspended orgs and tables, tables with `trigger: schedule`, and OrgPipelines that do not
    own their org id (`owns(pipeline, org)`: the owner recorded in PostgreSQL, see claims.py and
    `cache.org_owner`).
    Reads the raw spec (the CRD schema validated it) rather than building the model: this runs for
    every notification over every org.
    """
    out = []
    for body in pipelines:
        name = str((body.get("metadata") or {}).get("name") or "")
        spec = body.get("spec") or {}
        source = spec.get("source") or {}
        org, bucket = str(spec.get("orgId") or ""), str(source.get("bucket") or "")
        if not name or not org or not bucket or spec.get("suspend") or not owns(name, org):
            continue
        for table in spec.get("tables") or []:
            trigger = table.get("trigger") or TableTrigger.both.value
            if table.get("suspend") or trigger == TableTrigger.schedule.value:
                continue
            pattern = table.get("filePattern") or f"{table.get('name')}_*.csv"
            prefix = source_paths.folder(str(source.get("prefix") or ""))
            out.append(Watch(name, org, bucket, prefix, str(table["name"]), pattern))
    return out


@dataclass
class Routed:
    """What a notification asks for: object keys per table, and how many objects started nothing
    (ignored: no table's; ambiguous: several orgs'; refused: a key longer than S3 allows)."""

    runs: dict[TableKey, list[str]] = field(default_factory=dict)
    uploaders: dict[str, str] = field(default_factory=dict)
    """Object key -> who uploaded it, for the objects whose events named someone."""
    ignored: int = 0
    ambiguous: int = 0
    refused: int = 0


@dataclass
class _Folder:
    """A node of a bucket's folder tree: the watches whose prefix is this folder, and its subfolders."""

    watches: list[Watch] = field(default_factory=list)
    children: dict[str, _Folder] = field(default_factory=dict)


class Index:
    """The watched tables by bucket and folder: routing an object walks the key's folders once
    (linear in the key's length, whatever the number of orgs), not a scan of every org nor a
    lookup per prefix length (a notification at 3,000 orgs must not hold the event loop)."""

    def __init__(self, watched: Iterable[Watch]) -> None:
        self._buckets: dict[str, _Folder] = {}
        for w in watched:
            node = self._buckets.setdefault(w.bucket, _Folder())
            # A prefix is a folder (`source_paths.folder`): "" or "a/b/", whose segments are a, b.
            for segment in w.prefix.split("/")[:-1]:
                node = node.children.setdefault(segment, _Folder())
            node.watches.append(w)

    def _owners(self, bucket: str, key: str) -> list[Watch] | None:
        """The watches of the longest watched folder the key is in (the whole bucket last)."""
        node = self._buckets.get(bucket)
        if node is None:
            return None
        owners = node.watches or None
        for segment in key.split("/")[:-1]:  # the key's folders; the last part is its name
            found = node.children.get(segment)
            if found is None:
                break
            node = found
            owners = node.watches or owners
        return owners

    def route(self, objects: Iterable[ObjectCreated]) -> Routed:
        """Maps created objects to the tables they start (see the module's docstring for the rules)."""
        routed = Routed()
        for obj in objects:
            if len(obj.key) > MAX_KEY_BYTES or len(obj.key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                routed.refused += 1
                continue
            owners = self._owners(obj.bucket, obj.key)
            if owners is None:
                routed.ignored += 1
                continue
            if len({w.org for w in owners}) > 1:
                routed.ambiguous += 1
                continue
            relative = obj.key[len(owners[0].prefix) :]
            matched = [w for w in owners if source_paths.matches(relative, w.pattern)]
            if not matched:
                routed.ignored += 1
            for w in matched:
                routed.runs.setdefault((w.pipeline, w.table), []).append(obj.key)
            if matched and obj.principal:
                routed.uploaders[obj.key] = obj.principal
        return routed


def route(objects: Iterable[ObjectCreated], watched: Iterable[Watch]) -> Routed:
    """Maps created objects to the tables they start (an Index made for this call)."""
    return Index(watched).route(objects)


# --- batching --------------------------------------------------------------------------------

RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0


def retry_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """The wait after the `failures`-th failed try in a row: exponential, capped, with jitter (half
    of it random, so that the batches of many orgs failing together do not retry together)."""
    return backoff.delay(failures, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, rand)


@dataclass
class Batch:
    """Files that arrived for one table and wait for one run."""

    table: TableKey
    first_seen: float
    last_seen: float
    opened_at: str
    """Wall-clock time of the first event (UTC ISO): names the batch, and so its Job."""
    keys: list[str] = field(default_factory=list)
    count: int = 0
    uploaders: dict[str, str] = field(default_factory=dict)
    """Who uploaded each remembered key (as its event said)."""
    principals: list[str] = field(default_factory=list)
    """The distinct uploaders of the batch, up to MAX_PRINCIPALS (keys beyond the remembered ones too)."""
    failures: int = 0
    """Tries to create its Job that failed in a row (the next one waits `retry_delay(failures)`)."""
    not_before: float = 0.0
    """Not due before this (monotonic): the back-off after a failed try."""
    rows: list[int] = field(default_factory=list)
    """The ids of the stored arrivals in the batch (`arrivals`), forgotten once its Job is made."""

    def add(
        self,
        keys: Iterable[str],
        now: float,
        uploaders: Mapping[str, str] | None = None,
        rows: Iterable[int] = (),
    ) -> None:
        uploaders = uploaders or {}
        for key in keys:
            self.count += 1
            if key not in self.keys and len(self.keys) < MAX_KEYS_PER_BATCH:
                self.keys.append(key)
            who = uploaders.get(key)
            if who:
                if key in self.keys:
                    self.uploaders[key] = who
                if who not in self.principals and len(self.principals) < MAX_PRINCIPALS:
                    self.principals.append(who)
        self.rows.extend(r for r in rows if r not in self.rows)
        self.last_seen = now

    def trigger(self, bucket: str) -> triggers.RunTrigger:
        """The run's trigger: the uploaders (each file's own, and the run's user), the reason."""
        return triggers.file_arrival(self.uploaders, self.reason(bucket), self.principals)

    @property
    def batch_id(self) -> str:
        """Names the batch's Job. With stored arrivals, their first and last ids too: a leader that
        takes over rebuilds the same batch from the same rows and finds its Job made (no second
        run); rows that arrived after it make another batch, another Job."""
        base = f"{self.opened_at}\0{self.keys[0] if self.keys else ''}"
        return f"{base}\0{min(self.rows)}-{max(self.rows)}" if self.rows else base

    def reason(self, bucket: str, limit: int = 1000) -> str:
        """The Job's ORGPIPELINE_TRIGGER_REASON: the objects, shortened to `limit` characters."""
        names = ", ".join(f"s3://{bucket}/{k}" for k in self.keys)
        more = self.count - len(self.keys)
        text = f"{self.count} new objects: {names}" if self.count > 1 else f"new object {names}"
        if more > 0:
            text += f" (+{more} more)"
        return text if len(text) <= limit else text[: limit - 3] + "..."


class Batches:
    """Debounces file arrivals per table: a burst becomes one run.

    A batch is due once no file arrived for `quiet` seconds, or `max_wait` seconds after its first
    file (a steady trickle still runs), and only while no run of its table is active: files that
    arrive during a run wait for its end and then start one run more (the active run may have
    listed the prefix before they arrived). Time is passed in, so tests need no clock.
    """

    def __init__(self, quiet: float, max_wait: float) -> None:
        self.quiet, self.max_wait = quiet, max_wait
        self._pending: dict[TableKey, Batch] = {}

    def add(
        self,
        table: TableKey,
        keys: Iterable[str],
        now: float,
        wall: str,
        uploaders: Mapping[str, str] | None = None,
        rows: Iterable[int] = (),
    ) -> int:
        """Adds the keys (their uploaders, and the ids of their stored arrivals) to the table's
        pending batch; returns how many were coalesced (joined a batch that was already waiting,
        rather than opening one)."""
        batch = self._pending.get(table)
        fresh = batch is None
        if batch is None:
            batch = self._pending[table] = Batch(table, now, now, wall)
        before = batch.count
        batch.add(keys, now, uploaders, rows)
        added = batch.count - before
        return added - 1 if fresh and added else added

    def restore(self, batch: Batch, not_before: float = 0.0) -> None:
        """Puts back a batch whose Job could not be created (retried when due again, not before
        `not_before`)."""
        batch.not_before = not_before
        pending = self._pending.get(batch.table)
        if pending is None:
            self._pending[batch.table] = batch
        else:  # files arrived meanwhile: one batch, named by the older one
            batch.add(pending.keys, pending.last_seen, pending.uploaders, pending.rows)
            for who in pending.principals:
                if who not in batch.principals and len(batch.principals) < MAX_PRINCIPALS:
                    batch.principals.append(who)
            batch.count += pending.count - len(pending.keys)
            self._pending[batch.table] = batch

    def due(self, now: float, active: Callable[[TableKey], bool]) -> list[Batch]:
        """Takes the batches whose run should start now."""
        ready = [
            b
            for b in self._pending.values()
            if (now - b.last_seen >= self.quiet or now - b.first_seen >= self.max_wait)
            and now >= b.not_before
            and not active(b.table)
        ]
        for b in ready:
            del self._pending[b.table]
        return ready

    def pending(self) -> int:
        return len(self._pending)
