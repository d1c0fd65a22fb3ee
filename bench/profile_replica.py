"""Where a replica's CPU goes at full drain: py-spy on a real replica, summarized.

Same set-up as `make bench`'s drain_1_replica (bench/run.py): a backlog of legacy-shaped
watch uploads in one open Kafka transaction, one replica started, joined and idle, then the
commit. py-spy samples the replica from the commit until every offset is committed, and
its stacks are folded into tables: self time per function, inclusive time per function,
and self time per source area (our modules by file; libraries by package).

Modes (--mode, repeatable):
- `gil`: py-spy --gil, only the thread holding the GIL: where the Python-level work goes
  (C functions called from Python count in their caller, e.g. orjson.loads in _decode);
- `perf`: Linux perf, on-CPU samples of every thread (cpu-clock), by shared object and
  symbol: interpreter vs kernel (syscalls, futex = GIL hand-offs) vs librdkafka, orjson...;
- `native`: py-spy --native, Python and C frames; py-spy's idle filter does not work with
  native stacks here (threads waiting on the GIL are counted), so read it as wall time.
py-spy pauses the process for each sample, so wall times during profiling are longer;
the shares are what matters. Needs py-spy in the venv (`.venv/bin/pip install py-spy`)
and `perf` (Debian's linux-perf) for the perf mode.

    .venv/bin/python bench/profile_replica.py [--messages 200000] [--rate 200] \\
        [--mode cpu --mode gil] [--top 30]
Writes bench/results/profile-<mode>.txt (tables) and profile-<mode>.folded (raw stacks).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    CommitProbe,
    find_services,
    private_stack,
    start_replicas,
    stop_replicas,
    uploads,
)
from bench.workload import Prefill  # noqa: E402
from tests.integration.stack import KAFKA  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return found


def area(file: str) -> str:
    """Group a frame's file: our modules by path, libraries by top-level package."""
    path = file.replace("\\", "/")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1].lstrip("/")
            if marker == "/lib/python3":
                rest = rest.split("/", 1)[1] if "/" in rest else rest
                return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
            return rest.split("/", 1)[0].removesuffix(".py")
    for ours in ("consumer/", "schemas/"):
        if ours in path:
            return ours + path.split(ours, 1)[1]
    return path or "?"


def fold(path: Path) -> tuple[int, list[tuple[list[tuple[str, str]], int]]]:
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw.strip())
            if m:
                frames.append((m["func"], m["file"]))
            else:
                frames.append((raw.strip(), ""))
        n = int(count)
        total += n
        stacks.append((frames, n))
    return total, stacks


def tables(path: Path, top: int) -> tuple[str, dict[str, object]]:
    total, stacks = fold(path)
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    self_area: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        self_fn[f"{func} ({area(file)})"] += n
        self_area[area(file)] += n
        for key in {f"{fn} ({area(fl)})" for fn, fl in frames}:
            incl_fn[key] += n

    def block(title: str, counter: collections.Counter[str]) -> list[str]:
        lines = [f"{title}", f"{'share':>7}  {'samples':>8}  what"]
        for key, n in counter.most_common(top):
            lines.append(f"{100 * n / total:6.1f}%  {n:8d}  {key}")
        return [*lines, ""]

    text = [f"{path.name}: {total} samples", ""]
    text += block("self time by source area (leaf frame's file)", self_area)
    text += block("self time by function", self_fn)
    text += block("inclusive time by function (on the stack)", incl_fn)
    data: dict[str, object] = {
        "samples": total,
        "self_by_area": {k: round(100 * v / total, 2) for k, v in self_area.most_common(top)},
        "self_by_function": {k: round(100 * v / total, 2) for k, v in self_fn.most_common(top)},
        "inclusive_by_function": {
            k: round(100 * v / total, 2) for k, v in incl_fn.most_common(top)
        },
    }
    return "\n".join(text), data


PERF_LINE = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)\s+(?P<ip>[0-9a-f]+)\s+(?P<sym>.*) \((?P<dso>[^()]*)\)$"
)


def perf_tables(data: Path, top: int, names: dict[int, str]) -> tuple[str, dict[str, object]]:
    """Machine-wide on-CPU samples: by process, then the replica's (and mariadbd's) by
    shared object and by symbol. perf attached to one pid records nothing on this VM's
    kernel, so the recording is system-wide (-a) and split by pid here."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,pid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    )
    by_proc: collections.Counter[str] = collections.Counter()
    by_dso: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    by_sym: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in script.stdout.splitlines():
        m = PERF_LINE.match(line)
        if not m:
            continue
        total += 1
        pid = int(m["pid"])
        who = "idle" if pid == 0 else names.get(pid, "other: " + m["comm"].strip())
        by_proc[who if not who.startswith("other") else "other processes"] += 1
        dso = Path(m["dso"]).name or m["dso"]
        by_dso[who][dso] += 1
        by_sym[who][f"{m['sym']} ({dso})"] += 1

    def block(title: str, counter: collections.Counter[str], base: int) -> list[str]:
        lines = [title, f"{'share':>7}  {'samples':>8}  what"]
        lines += [f"{100 * n / base:6.1f}%  {n:8d}  {k}" for k, n in counter.most_common(top)]
        return [*lines, ""]

    text = [f"{data.name}: {total} on-CPU samples, all CPUs", ""]
    text += block("machine CPU by process (share of all samples)", by_proc, total)
    data_out: dict[str, object] = {
        "samples": total,
        "by_process": {k: round(100 * v / total, 2) for k, v in by_proc.most_common()},
    }
    for who in ("replica", "mariadbd"):
        n = by_proc.get(who, 0)
        if not n:
            continue
        text += block(f"{who}: by shared object (share of its samples)", by_dso[who], n)
        text += block(f"{who}: by symbol (share of its samples)", by_sym[who], n)
        data_out[who] = {
            "samples": n,
            "by_dso": {k: round(100 * v / n, 2) for k, v in by_dso[who].most_common(top)},
            "by_symbol": {k: round(100 * v / n, 2) for k, v in by_sym[who].most_common(top)},
        }
    return "\n".join(text), data_out


def profile(mode: str, messages: int, rate: int, top: int, seed: int) -> None:
    out = RESULTS / ("profile-perf.data" if mode == "perf" else f"profile-{mode}.folded")
    with private_stack() as stack:
        fill = Prefill(KAFKA, stack.topic)
        fill.produce(uploads(messages, seed))
        (replica,) = start_replicas(stack, 1)
        pid = replica.proc.pid  # type: ignore[union-attr]
        if mode == "perf":  # system-wide: perf -p records nothing on this VM's kernel
            cmd = ["perf", "record", "-a", "-e", "cpu-clock", "-F", str(rate), "-o", str(out)]
        else:
            flag = "--gil" if mode == "gil" else "--native"
            cmd = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
            cmd += ["--output", str(out), flag]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        probe = CommitProbe(stack)
        try:
            time.sleep(1.5)  # the profiler attached and sampling
            t0 = fill.commit()
            t1 = probe.wait(fill.offsets.last, 1800)
        finally:
            probe.close()
            # py-spy writes its output on SIGINT; perf on SIGTERM (SIGINT left a truncated file).
            spy.send_signal(signal.SIGTERM if mode == "perf" else signal.SIGINT)
            _, err = spy.communicate(timeout=120)
            stop_replicas([replica])
        print(f"{mode}: {fill.readings} readings drained in {t1 - t0:.1f}s while profiling")
        if not out.exists():
            raise SystemExit(f"{cmd[0]} wrote nothing: {err.decode()[-2000:]}")
    tool = "perf record -a -e cpu-clock -F" if mode == "perf" else f"py-spy record --{mode} --rate"
    header = (
        f"# {tool} {rate}, "
        f"drain of {fill.messages} messages / {fill.readings} readings, load "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    if mode == "perf":
        names = {pid: "replica"}
        names.update({p: n for n, p in find_services().items() if p is not None})
        names = {p: {"mariadb": "mariadbd"}.get(n, n) for p, n in names.items()}
        text, data = perf_tables(out, top, names)
    else:
        text, data = tables(out, top)
    (RESULTS / f"profile-{mode}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"profile-{mode}.txt").write_text(header + text + "\n")
    print(header + text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--mode", action="append", choices=("gil", "perf", "native"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fold-only", type=Path, help="just summarize a .folded file")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fold_only:
        print(tables(args.fold_only, args.top)[0])
        return 0
    for mode in args.mode or ["gil", "perf"]:
        profile(mode, args.messages, args.rate, args.top, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
