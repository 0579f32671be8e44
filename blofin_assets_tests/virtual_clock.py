"""A virtual clock for the BloFin client's pacing: injected as both ``clock`` and ``sleep``, so
sleeping advances time at once and is recorded; tests of pacing run fast and deterministic."""

from __future__ import annotations

import threading


class VirtualClock:
    """Injected clock + sleep: sleeping advances virtual time instantly and is recorded."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def most_in_any_window(stamps: list[float], seconds: float) -> int:
    """The most stamps in any half-open window [t, t + seconds): BloFin's per-window count."""
    ordered = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(ordered):
        while ordered[first] <= stamp - seconds:
            first += 1
        most = max(most, last - first + 1)
    return most
