"""One active operator among replicas: leader election through a Kubernetes Lease.

Every replica runs `orgpipeline-operator`; the one holding the Lease
`ORGPIPELINE_LEASE_NAME` (in ORGPIPELINE_NAMESPACE) runs Kopf and acts, the others wait and poll
(every POLL_SECONDS: a takeover comes 10-12 s after the active replica's last renewal).

- Acquire: the Lease is free (no holder), or its holder has not renewed it for
  `leaseDurationSeconds` as this replica's own monotonic clock measures it (the holder's timestamps
  are not compared with this clock: no clock skew between nodes matters). The write is an update
  at the observed resourceVersion, so of two standbys that race only one wins.
- Renew: every RENEW_SECONDS. The active replica ends its process (`os._exit`: every thread of it
  stops acting at once) when it has not renewed for RENEW_DEADLINE_SECONDS (< the lease duration:
  it is gone before a standby may take over), or when it finds another holder. A watchdog thread
  checks the deadline, so a renewal stuck on a dead connection ends the process too.
- Release: a replica that stops cleanly (SIGTERM, a rollout) empties the holder, and a standby takes
  over at its next poll rather than after the lease duration.

Why a Lease rather than Kopf's peering: peering freezes an operator only while one of a higher
priority is alive, two of the same priority both run, a dead peer is noticed after its lifetime
(60 s by default), and it pauses Kopf's handlers only, not the operator's own threads (watches, the
resync loop, file arrivals). A Lease gives one holder at a time, a takeover bounded by its
duration, and one switch for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prometheus_client import Gauge

from orgpipeline_operator import kube, operator_settings

log = logging.getLogger(__name__)

LEASE_SECONDS = 10
RENEW_SECONDS = 2.0
RENEW_DEADLINE_SECONDS = 7.0
POLL_SECONDS = 1.0
LEASE_API = "coordination.k8s.io/v1"
REQUEST_TIMEOUT = (2, 3)
"""Connect and read timeouts of a Lease request: a renewal must not wait past its deadline."""


LEADER = Gauge("orgpipeline_leader", "1 on the replica that holds the Lease and acts, 0 on a standby")


class LeaseError(Exception):
    """The Lease could not be read or written; the message is one line."""


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str

    @classmethod
    def from_settings(cls, conf: operator_settings.Settings) -> LeaseSettings | None:
        """ORGPIPELINE_LEASE_NAME (unset: no election, the process acts alone, as before),
        ORGPIPELINE_NAMESPACE, and ORGPIPELINE_POD_NAME (else the host name) for the identity."""
        if not conf.lease_name:
            return None
        pod = conf.pod_name or socket.gethostname()
        # The pid and a random part: a restarted container is another candidate, not the old holder.
        return cls(conf.lease_name, conf.namespace, f"{pod}_{os.getpid()}_{uuid.uuid4().hex[:6]}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquires, renews and releases the Lease for this process (see the module docstring)."""

    def __init__(
        self,
        settings: LeaseSettings,
        api: kube.Kube,
        *,
        lease_seconds: int = LEASE_SECONDS,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        self.settings = settings
        self.api = api
        self.lease_seconds = lease_seconds
        self._exit = exit
        self._observed: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self.leading = threading.Event()
        self.last_renewed = 0.0
        self._stop = threading.Event()

    @property
    def _url(self) -> str:
        return kube.path(LEASE_API, "Lease", self.settings.namespace)

    def _request(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        return self.api.request(method, url, body, counted=False, timeout=REQUEST_TIMEOUT)

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _now()
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def try_acquire(self) -> bool:
        """One attempt: True when this process holds the Lease now (acquired or renewed)."""
        name = self.settings.name
        try:
            lease = self._request("GET", f"{self._url}/{quote(name)}")
        except kube.ApiError as exc:
            if exc.status != 404:
                raise LeaseError(f"cannot read Lease {self.settings.namespace}/{name}: {exc}") from None
            body = {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": {"name": name, "namespace": self.settings.namespace},
                "spec": self._spec(0, None),
            }
            return self._write("POST", self._url, body)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = str(lease["metadata"].get("resourceVersion") or "")
        now = time.monotonic()
        if holder == self.settings.identity:
            lease["spec"] = self._spec(int(spec.get("leaseTransitions") or 0), spec.get("acquireTime"))
            return self._write("PUT", f"{self._url}/{quote(name)}", lease)
        if holder:
            # Another holder: expired only once its record has not changed for its duration.
            if self._observed is None or self._observed[0] != version:
                self._observed = (version, now)
                return False
            duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
            if now - self._observed[1] < duration:
                return False
            log.warning("the Lease of %s expired (not renewed for %.0fs): taking over", holder, duration)
        lease["spec"] = self._spec(int(spec.get("leaseTransitions") or 0) + 1, None)
        return self._write("PUT", f"{self._url}/{quote(name)}", lease)

    def _write(self, method: str, url: str, body: dict[str, Any]) -> bool:
        try:
            self._request(method, url, body)
        except kube.ApiError as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise LeaseError(
                f"cannot write Lease {self.settings.namespace}/{self.settings.name}: {exc}"
            ) from None
        self.last_renewed = time.monotonic()
        return True

    def attempt(self) -> bool:
        """One standby's poll: True once this process holds the Lease (then it leads)."""
        try:
            if not self.try_acquire():
                return False
        except LeaseError as exc:
            log.warning("%s; retrying", exc)
            return False
        self.leading.set()
        LEADER.set(1)
        log.warning("leading (Lease %s/%s)", self.settings.namespace, self.settings.name)
        return True

    async def wait_until_leader(self) -> None:
        """Polls every POLL_SECONDS until this process holds the Lease."""
        while not await asyncio.to_thread(self.attempt):
            await asyncio.sleep(POLL_SECONDS)

    def keep(self) -> None:
        """Renews in a thread, with a watchdog that ends the process once a renewal is overdue."""
        threading.Thread(target=self._renew_forever, name="lease-renew", daemon=True).start()
        threading.Thread(target=self._watchdog, name="lease-watchdog", daemon=True).start()

    def _renew_forever(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                if not self.try_acquire():
                    self._lost("another replica holds the Lease")
                    return
            except LeaseError as exc:
                log.warning("%s (renewal overdue in %.1fs)", exc, self._left())

    def _left(self) -> float:
        return RENEW_DEADLINE_SECONDS - (time.monotonic() - self.last_renewed)

    def _watchdog(self) -> None:
        while not self._stop.wait(0.25):
            if self._left() < 0:
                self._lost(f"the Lease was not renewed for {RENEW_DEADLINE_SECONDS:.0f}s")
                return

    def _lost(self, why: str) -> None:
        if self._stop.is_set():
            return
        self._stop.set()  # once, whichever thread finds it first
        self.leading.clear()
        LEADER.set(0)
        log.error("lost leadership (%s): stopping at once", why)
        logging.shutdown()
        self._exit(1)

    def release(self) -> None:
        """Stops renewing and empties the holder (a clean stop: the next replica needs no wait)."""
        self._stop.set()
        self.leading.clear()
        url = f"{self._url}/{quote(self.settings.name)}"
        try:
            lease = self._request("GET", url)
            if (lease.get("spec") or {}).get("holderIdentity") == self.settings.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                self._request("PUT", url, lease)
        except kube.ApiError as exc:
            log.warning("cannot release the Lease (the next replica waits for it to expire): %s", exc)
