"""Process-wide memory tuning shared by the operator and the jobs."""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena, and freed memory stays in the arena it came
    from: with reader and writer threads the RSS grows from fragmentation alone. Two arenas (what
    MALLOC_ARENA_MAX=2 does) keep it in check; call before threads start."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, int(os.environ.get("MALLOC_ARENA_MAX", "2")))  # M_ARENA_MAX
    except (OSError, AttributeError, ValueError):
        pass  # not glibc: nothing to tune
