"""The one back-off of every retry loop of the operator: exponential, capped, with jitter.

Half of each wait is random, so that what fails together (every org, every watch, when the API
server restarts) does not all come back in the same instant. Callers log once per change of error
(`Streak`), not once per try.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable


def delay(failures: int, first: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """The wait after the `failures`-th failed try in a row: `first` doubling, at most `cap`, the
    upper half of it random."""
    exp = min(cap, first * 2 ** max(0, failures - 1))
    return exp / 2 + rand() * exp / 2


class Streak:
    """Failures in a row per key (an org, a handler): the next wait, and whether the error changed
    (the caller logs only then). Thread-safe."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self._lock = threading.Lock()
        self._failures: dict[Hashable, tuple[int, str]] = {}

    def failed(self, key: Hashable, error: str, first: float | None = None) -> tuple[float, bool]:
        """(the wait before the next try, whether `error` differs from the last one's)."""
        with self._lock:
            count, last = self._failures.get(key, (0, ""))
            self._failures[key] = (count + 1, error)
        base = self.first if first is None else first
        return delay(count + 1, base, max(base, self.cap)), error != last

    def succeeded(self, key: Hashable) -> int:
        """Forgets the key; how many tries had failed before."""
        with self._lock:
            count, _ = self._failures.pop(key, (0, ""))
        return count
