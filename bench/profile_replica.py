"""Where a replica's CPU goes at full drain: py-spy on a real replica, summarized.

Same set-up as `make bench`'s drain_1_replica (bench/run.py): a backlog of legacy-shaped
watch uploads in one open Kafka transaction, one replica started, joined and idle, then the
commit. py-spy samples the replica from the commit until every offset is committed, and
its stacks are folded into tables: self time per function, inclusive time per function,
and self time per source area (our modules by file; libraries by package).

Modes (--mode, repeatable): `cpu` = every thread that is on a CPU (py-spy's default idle
filter, with --native so C frames such as orjson or the f-string renderer show up);
`gil` = only the thread holding the GIL (`--gil`: where the Python-level work goes).
py-spy pauses the process for each sample, so wall times during profiling are longer;
the shares are what matters. Needs py-spy in the venv (`.venv/bin/pip install py-spy`).

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


def profile(mode: str, messages: int, rate: int, top: int, seed: int) -> None:
    out = RESULTS / f"profile-{mode}.folded"
    with private_stack() as stack:
        fill = Prefill(KAFKA, stack.topic)
        fill.produce(uploads(messages, seed))
        (replica,) = start_replicas(stack, 1)
        pid = replica.proc.pid  # type: ignore[union-attr]
        cmd = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
        ]
        cmd += ["--gil"] if mode == "gil" else ["--native"]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        probe = CommitProbe(stack)
        try:
            time.sleep(1.5)  # py-spy attached and sampling
            t0 = fill.commit()
            t1 = probe.wait(fill.offsets.last, 1800)
        finally:
            probe.close()
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
            stop_replicas([replica])
        print(f"{mode}: {fill.readings} readings drained in {t1 - t0:.1f}s under py-spy")
        if not out.exists():
            raise SystemExit(f"py-spy wrote nothing: {err.decode()[-2000:]}")
    text, data = tables(out, top)
    header = (
        f"# py-spy record --{'gil' if mode == 'gil' else 'native'} --rate {rate}, "
        f"drain of {fill.messages} messages / {fill.readings} readings, load "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    (RESULTS / f"profile-{mode}.txt").write_text(header + text + "\n")
    (RESULTS / f"profile-{mode}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(header + text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--mode", action="append", choices=("cpu", "gil"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fold-only", type=Path, help="just summarize a .folded file")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fold_only:
        print(tables(args.fold_only, args.top)[0])
        return 0
    for mode in args.mode or ["cpu", "gil"]:
        profile(mode, args.messages, args.rate, args.top, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
