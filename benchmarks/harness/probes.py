"""What the measured process watches about itself: garbage-collection pauses, the RSS of its
process tree, its resource usage, and where Dagster's console output goes."""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class FullCollections:
    """Full garbage collections between start() and stop() (gc.callbacks): when each began
    (epoch seconds, comparable with step timings) and how long it paused the process."""

    def __init__(self) -> None:
        self.collections: list[tuple[float, float]] = []
        self._started = 0.0
        self._began = 0.0

    @property
    def pauses(self) -> list[float]:
        return [pause for _, pause in self.collections]

    def seconds_inside(self, intervals: list[tuple[float, float]]) -> float:
        """Pause seconds of the collections that began inside any [start, end] interval."""
        return sum(
            pause
            for began, pause in self.collections
            if any(start <= began <= end for start, end in intervals)
        )

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            self._began = time.time()
        else:
            self.collections.append((self._began, time.perf_counter() - self._started))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def collect_unwatched(self) -> None:
        """A full collection between timed runs, not counted as a pause of either."""
        self.stop()
        gc.collect()
        self.start()

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


class TreeSampler(threading.Thread):
    """Samples the RSS of this process and all its descendants (step processes of the
    multiprocess executor, forkserver grandchildren included) every `interval` seconds.

    Each sample is kept with its epoch time, so a step's peak is the largest sample inside the
    step's [start, end] (``peak_between``): ru_maxrss only says the whole process's peak.
    """

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_single_mb = 0.0
        self.pids: set[int] = set()
        self.samples: list[tuple[float, float, float]] = []  # (epoch s, tree RSS MB, CPU s)
        self._stop_event = threading.Event()

    def peak_between(self, start: float, end: float) -> float | None:
        """Largest tree RSS sampled in [start, end] (epoch s); None if no sample fell there."""
        inside = [rss for at, rss, _ in self.samples if start <= at <= end]
        return round(max(inside), 1) if inside else None

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds (user + system, the whole tree) spent between the samples nearest
        [start, end]: on a shared machine a step's CPU varies less than its wall time."""
        before = [cpu for at, _, cpu in self.samples if at <= start]
        until = [cpu for at, _, cpu in self.samples if at <= end]
        if not before or not until:
            return None
        return round(until[-1] - before[-1], 2)

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop_event.wait(self.interval):
            try:
                processes = [me, *me.children(recursive=True)]
            except psutil.Error:
                continue
            total, cpu = 0.0, 0.0
            for process in processes:
                try:
                    rss = process.memory_info().rss / 2**20
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                self.pids.add(process.pid)
                total += rss
                cpu += times.user + times.system
                self.peak_single_mb = max(self.peak_single_mb, rss)
            self.peak_total_mb = max(self.peak_total_mb, total)
            self.samples.append((time.time(), total, cpu))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass(frozen=True)
class ResourceUsage:
    """Peak RSS and CPU of this process and of its waited-for children, so far."""

    self_rss_mb: float
    children_rss_mb: float
    cpu_seconds: float

    @classmethod
    def now(cls) -> ResourceUsage:
        mine = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            self_rss_mb=mine.ru_maxrss / 1024,
            children_rss_mb=children.ru_maxrss / 1024,
            cpu_seconds=sum(u.ru_utime + u.ru_stime for u in (mine, children)),
        )


@contextmanager
def redirect_fds(path: Path) -> Iterator[None]:
    """Send fd 1 and 2 (Dagster's console logs) to a file; JSON goes to the saved stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextmanager
def log_path_on_failure(log_path: Path) -> Iterator[None]:
    """A failed run keeps its temp dir; say where its Dagster log is (on the real stderr)."""
    try:
        yield
    except BaseException:
        sys.stderr.write(f"run failed; Dagster log: {log_path}\n")
        raise
