"""Process-wide memory tuning shared by the operator and the jobs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (`return_freed_memory` runs after every part)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena, and freed memory stays in the arena it came
    from: with reader and writer threads the RSS grows from fragmentation alone. Two arenas (what
    MALLOC_ARENA_MAX=2 does) keep it in check; call before threads start."""
    libc = _libc()
    try:
        if libc is not None:
            libc.mallopt(-8, int(os.environ.get("MALLOC_ARENA_MAX", "2")))  # M_ARENA_MAX
    except (AttributeError, ValueError):
        pass  # not glibc: nothing to tune


TRIM_INTERVAL_SECONDS = 0.25
"""At most one trim in this time: a trim walks the whole heap (~2-7 ms here), and what is freed
in between is reused by the next allocations anyway."""

_last_trim = 0.0


def return_freed_memory() -> None:
    """Gives the pages of freed memory back to the system (glibc's malloc_trim). Between batches
    most of a batch's memory is free but scattered over the heap, where glibc would keep it.
    Called after every block and part; trims at most once per TRIM_INTERVAL_SECONDS."""
    global _last_trim
    now = time.monotonic()
    if now - _last_trim < TRIM_INTERVAL_SECONDS:
        return
    _last_trim = now
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass  # not glibc
