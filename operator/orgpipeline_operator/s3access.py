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
import datetime
import hashlib
import json
import secrets
import threading
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
            return exc.reason, str(exc)
    return None


def org_keys(settings: S3Settings, client: kube.Kube, spec: Any) -> tuple[str, str]:
    """The org's S3 keys: from its labelled credentialsSecret, else its own versitygw account."""
    ref = spec.source.credentials_secret
    if ref:
        return _secret_keys(settings, client, spec.org_id, ref)
    if settings.s3_accounts != "versitygw":
        raise SourceAccessError(
            "SourceCredentialsRequired",
            "ORGPIPELINE_S3_ACCOUNTS=none: the org needs spec.source.credentialsSecret, a Secret in "
            f"{settings.namespace} with its own keys, labelled {LABEL_ORG_ID}={spec.org_id}",
        )
    return ensure_account(settings, spec.org_id, spec.source.bucket, spec.source.prefix)


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


def ensure_account(settings: S3Settings, org_id: str, bucket: str, prefix: str) -> tuple[str, str]:
    """The org's account (made on first use, its secret kept by versitygw and read back) and its
    policy statement on the source bucket (and on no other bucket)."""
    access = account_name(org_id)
    secret = list_users(settings).get(access)
    if secret is None:
        secret = secrets.token_hex(20)
        body = (
            f"<Account><Access>{access}</Access><Secret>{secret}</Secret><Role>user</Role>"
            "<UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>"
        ).encode()
        status, text = _admin(settings, "create-user", body=body)
        if status >= 400 and "exists" not in text.lower():
            raise SourceAccessError("S3AccountsUnavailable", f"cannot create S3 account {access}: {text}")
        if status >= 400:  # made meanwhile (another reconcile of the same org): use its secret
            secret = list_users(settings).get(access, secret)
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    with _POLICY_LOCK:
        for name in _buckets(settings):
            _set_statement(settings, name, access, folder if name == bucket else None)
    return access, secret


def remove_account(settings: S3Settings, org_id: str) -> None:
    """Deletion of the org: its statements go from every bucket's policy, then its account."""
    if settings.s3_accounts != "versitygw":
        return
    access = account_name(org_id)
    with _POLICY_LOCK:
        for name in _buckets(settings):
            _set_statement(settings, name, access, None)
    if access in list_users(settings):
        status, text = _admin(settings, "delete-user", {"access": access})
        if status >= 400:
            raise SourceAccessError("S3AccountsUnavailable", f"cannot delete S3 account {access}: {text}")


def statement(bucket: str, access: str, folder: str) -> dict[str, Any]:
    """The org's one statement: list the bucket (and ask its region, as S3 clients do first), read
    the objects under its folder."""
    return {
        "Effect": "Allow",
        "Principal": {"AWS": [access]},
        "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{folder}*"],
    }


def _set_statement(settings: S3Settings, bucket: str, access: str, folder: str | None) -> None:
    """Makes the account's statement in the bucket's policy the one for `folder` (None: none)."""
    current = get_policy(settings, bucket)
    kept = [s for s in (current or {}).get("Statement", []) if not _names(s, access)]
    wanted = kept + ([statement(bucket, access, folder)] if folder is not None else [])
    if current is not None and wanted == current.get("Statement"):
        return
    if current is None and folder is None:
        return
    if wanted:
        doc = {"Version": "2012-10-17", "Statement": wanted}
        status, text = _s3(settings, "PUT", f"/{bucket}", {"policy": ""}, json.dumps(doc).encode())
    else:
        status, text = _s3(settings, "DELETE", f"/{bucket}", {"policy": ""})
    if status >= 300:
        raise SourceAccessError(
            "S3AccountsUnavailable", f"cannot write the policy of bucket {bucket}: {text}"
        )


def _names(stmt: dict[str, Any], access: str) -> bool:
    principal = (stmt.get("Principal") or {}).get("AWS") if isinstance(stmt.get("Principal"), dict) else None
    names = principal if isinstance(principal, list) else [principal]
    return access in names


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


def _buckets(settings: S3Settings) -> list[str]:
    status, text = _s3(settings, "GET", "/", {})
    if status >= 300:
        raise SourceAccessError("S3AccountsUnavailable", f"cannot list the S3 buckets: {text}")
    return [e.text or "" for e in ET.fromstring(text).iter() if e.tag.endswith("}Name") or e.tag == "Name"]


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

    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), retries=False)


_HTTP = _pool()
