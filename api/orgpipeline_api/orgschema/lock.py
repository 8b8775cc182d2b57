"""The run lock: a PostgreSQL advisory lock per org and table, so two runs cannot interleave.

A session-level lock on the run's own connection: it is released when the run ends or its
connection dies (a killed pod), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import hashlib

import psycopg

from orgpipeline_api.errors import LockTimeout


def key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key from the parts (stable across processes and versions)."""
    digest = hashlib.sha256("\x00".join(("orgpipeline", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def acquire(conn: psycopg.Connection[object], org_id: str, table: str, timeout_seconds: float) -> None:
    """Waits for the run lock of (org, table) up to the timeout; raises LockTimeout."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout_seconds * 1000)}ms",))
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (key("run", org_id, table),))
    except psycopg.errors.LockNotAvailable:
        conn.rollback()
        raise LockTimeout(
            f"another run of org {org_id} table {table} is still running after {timeout_seconds:g}s"
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', '0', false)")
    if not conn.autocommit:
        conn.commit()


def release(conn: psycopg.Connection[object], org_id: str, table: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key("run", org_id, table),))
