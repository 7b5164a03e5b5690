"""Repetitions, their summary, and peak memory summed over a set of processes."""

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

SAMPLE_INTERVAL_SECONDS = 0.05
MB = 1024 * 1024


@dataclass
class Samples:
    """Several repetitions of one measurement (seconds, MB, a score...)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def describe(self, digits: int = 2) -> str:
        """``median (min-max)``: the spread is the range of the repetitions."""
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}"
        return (f"{self.median:.{digits}f} ({min(self.values):.{digits}f}-"
                f"{max(self.values):.{digits}f})")


def proportional_set_size(pids: Iterable[int]) -> int:
    """Sum of PSS (bytes): a page shared by n processes counts 1/n in each, so pages of
    Ray's object store or of a memory-mapped file are counted once in the sum."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # a process that just ended holds no memory any more
    return total


def process_tree(pid: int) -> list[int]:
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class PeakMemory:
    """Sample the PSS sum of ``pids()`` in a thread while the block runs.

    ``idle`` is the sum just before the block, ``peak`` the largest sample, both in MB;
    ``above_idle`` is what the work added.
    """

    def __init__(self, pids: Callable[[], list[int]]):
        self.pids = pids
        self.idle = self.peak = 0.0
        self._stop = threading.Event()

    @property
    def above_idle(self) -> float:
        return self.peak - self.idle

    def _sample(self) -> float:
        return proportional_set_size(self.pids()) / MB

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(SAMPLE_INTERVAL_SECONDS)

    def __enter__(self) -> "PeakMemory":
        self.idle = self.peak = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result
