"""Process-wide memory tuning shared by the operator and the jobs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


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


def return_freed_memory() -> None:
    """Gives the pages of freed memory back to the system (glibc's malloc_trim). Between batches
    most of a batch's memory is free but scattered over the heap, where glibc would keep it."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass  # not glibc
