"""CPU and memory of processes from /proc, for the benchmark's per-reading costs (Linux only).

CPU is utime+stime of /proc/<pid>/stat (all threads of the process; plus cutime+cstime, the
reaped children, when asked), in seconds. A `Sampler` thread records a time series of every
watched process, so a scenario can take the CPU over exactly the window it measured (e.g.
first to last DB row), interpolating between samples, instead of over whatever its polling
happened to span. Services are found by the port they listen on, which tells the broker
of 127.0.0.1:9092 apart from other brokers on the machine.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PROC = Path("/proc")


def _stat_fields(path: Path) -> list[str]:
    """Fields after the `(comm)` of a stat file; index 0 is field 3 (state)."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime of every thread of `pid` (+ reaped children's), in seconds."""
    f = _stat_fields(PROC / str(pid) / "stat")
    ticks = int(f[11]) + int(f[12])  # fields 14, 15: utime, stime
    if children:
        ticks += int(f[13]) + int(f[14])  # fields 16, 17: cutime, cstime
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and of its live descendants (e.g. uvicorn workers), reaped ones included."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += cpu_seconds(p, children=True)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def descendants(pid: int) -> list[int]:
    parent_of: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int(_stat_fields(entry / "stat")[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    out: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == parent]
        out.extend(kids)
        frontier.extend(kids)
    return out


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, utime+stime seconds) of every live thread of `pid`."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out  # the process is gone (a shared service restarted by someone else)
    for task in tasks:
        try:
            raw = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw[raw.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(f[11]) + int(f[12])) / CLOCK_TICKS)
    return out


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB: the resident set now and its peak over the process's life."""
    rss = hwm = 0.0
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


MACHINE = 0


def machine_busy_s() -> float:
    """CPU seconds the machine spent busy (all cores; idle and iowait excluded), /proc/stat."""
    f = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state hex, inode) of every TCP socket (v4 and v6)."""
    rows: list[tuple[int, int, str, int]] = []
    for name in ("tcp", "tcp6"):
        path = PROC / "net" / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], int(f[9])
            rows.append(
                (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode)
            )
    return rows


def pid_listening_on(port: int) -> int | None:
    """The process that owns the listening TCP socket of `port` (needs root for others')."""
    listening = {inode for lp, _, state, inode in _tcp_table() if lp == port and state == "0A"}
    if not listening:
        return None
    for entry in PROC.iterdir():
        if entry.name.isdigit() and _socket_inodes(int(entry.name)) & listening:
            return int(entry.name)
    return None


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of `pid`'s TCP connections to `server_port` (to find its DB sessions)."""
    inodes = _socket_inodes(pid)
    return {lp for lp, rp, _, inode in _tcp_table() if rp == server_port and inode in inodes}


@dataclass(slots=True)
class Series:
    """Time series of one process: CPU seconds and (when sampled) RSS."""

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    hwm_mb: float = 0.0

    def at(self, t: float) -> float | None:
        """CPU seconds at wall time `t`, linearly interpolated; None outside the series."""
        if not self.times or t < self.times[0] or t > self.times[-1]:
            return None
        i = bisect.bisect_left(self.times, t)
        if self.times[i] == t or i == 0:
            return self.cpu[i]
        t0, t1 = self.times[i - 1], self.times[i]
        c0, c1 = self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    def between(self, t0: float, t1: float) -> float | None:
        a, b = self.at(t0), self.at(t1)
        return None if a is None or b is None else b - a

    def peak_rss_mb(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        values = [r for t, r in zip(self.times, self.rss_mb, strict=True) if t0 <= t <= t1]
        return max(values) if values else None


@dataclass(slots=True)
class Watched:
    name: str
    pid: int  # MACHINE (0): the whole machine's busy CPU, all cores
    children: bool = False  # add reaped children (cutime/cstime)
    tree: bool = False  # add live descendants (worker processes)
    memory: bool = False  # also sample RSS / VmHWM


class Sampler:
    """Samples watched processes every `interval` seconds on a daemon thread.

    `mark()` takes one sample right now (the start of a window, say), so a window edge
    does not depend on the sampling phase. A process that exits keeps its last values.
    """

    def __init__(self, watched: Iterable[Watched], interval: float = 0.2) -> None:
        self.watched = list(watched)
        self.interval = interval
        self.series: dict[str, Series] = {w.name: Series() for w in self.watched}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def add(self, watched: Watched) -> None:
        with self._lock:
            self.watched.append(watched)
            self.series[watched.name] = Series()

    def start(self) -> Sampler:
        self.mark()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.mark()

    def _cpu(self, w: Watched) -> float:
        if w.pid == MACHINE:
            return machine_busy_s()
        return tree_cpu_seconds(w.pid) if w.tree else cpu_seconds(w.pid, w.children)

    def mark(self) -> float:
        now = time.time()
        with self._lock:
            for w in self.watched:
                s = self.series[w.name]
                if s.times and now <= s.times[-1]:
                    continue
                try:
                    cpu = self._cpu(w)
                    rss, hwm = memory_mb(w.pid) if w.memory else (0.0, 0.0)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # exited: keep the last sample
                s.times.append(now)
                s.cpu.append(cpu)
                s.rss_mb.append(rss)
                s.hwm_mb = max(s.hwm_mb, hwm)
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.mark()

    def cpu_between(self, name: str, t0: float, t1: float) -> float | None:
        with self._lock:
            return self.series[name].between(t0, t1)
