"""Old tree against new tree: ``lt.run`` and a channel, in fresh interpreters, alternated.

Run: ``python -m perf.compare_trees OLD_COMMIT [NEW_COMMIT] [--rounds N]``. Each commit's
``loopthread/`` is copied out with ``git archive`` and imported from there (``PYTHONPATH``),
pinned to one CPU where ``taskset`` exists. Per round and tree: 3,000 ``lt.run(noop())`` with
the default monitoring (a fresh ``CollectorRegistry``), 100,000 ``ch.put`` back to back into a
sync handler then ``flush()``, and ``lt.run`` with monitoring on / off. Prints medians.
Not part of ``make bench``: it compares two trees, not loopthread with its competitors.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

_CHILD = "perf.compare_trees"


async def _noop() -> int:
    return 1


def _per_call(lt: object, calls: int) -> float:
    run = lt.run  # type: ignore[attr-defined]
    for _ in range(500):
        run(_noop())
    start = time.perf_counter()
    for _ in range(calls):
        run(_noop())
    return (time.perf_counter() - start) / calls * 1e6


def _child() -> None:
    """One round in this interpreter: print 'run_us channel_ns on_off'."""
    from prometheus_client import CollectorRegistry

    import loopthread

    tree = os.environ["COMPARE_TREE"]
    if not (loopthread.__file__ or "").startswith(tree):
        raise SystemExit(f"loopthread came from {loopthread.__file__}, not from {tree}")

    def handle(batch: list[int]) -> None:
        pass

    lt = loopthread.LoopThread("cmp", metrics_registry=CollectorRegistry()).start()
    run_us = _per_call(lt, 3000)
    ch = lt.channel(handle, maxsize=200_000)
    start = time.perf_counter()
    for i in range(100_000):
        ch.put(i)
    ch.flush()
    channel_ns = (time.perf_counter() - start) / 100_000 * 1e9
    lt.stop()
    on, off = [], []
    for _ in range(5):
        quiet = loopthread.LoopThread(
            "cmp-off", metrics_registry=None, lag_interval=None, slow_callback=None
        ).start()
        off.append(_per_call(quiet, 2000))
        quiet.stop()
        loud = loopthread.LoopThread("cmp-on", metrics_registry=CollectorRegistry()).start()
        on.append(_per_call(loud, 2000))
        loud.stop()
    print(run_us, channel_ns, statistics.median(on) / statistics.median(off))


def _tree(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", commit, "loopthread"], check=True, capture_output=True
    ).stdout
    target = into / commit
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    results: dict[str, list[list[float]]] = {args.old: [], args.new: []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {c: _tree(c, Path(tmp)) for c in results}
        for _ in range(args.rounds):
            for commit, tree in trees.items():
                env = {
                    "PYTHONPATH": f"{tree}:{here}",
                    "PATH": "/usr/bin:/bin",
                    "COMPARE_TREE": str(tree),
                }
                out = subprocess.run(
                    [*pin, sys.executable, "-c", f"import {_CHILD} as m; m._child()"],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                ).stdout
                results[commit].append([float(x) for x in out.split()])
    print("| row (median) | " + " | ".join(results) + " | new / old |")
    print("|---|---|---|---|")
    names = ["lt.run(noop()) µs, defaults", "channel ns per event", "lt.run monitoring on / off"]
    for index, name in enumerate(names):
        old, new = (statistics.median(r[index] for r in rows) for rows in results.values())
        print(f"| {name} | {old:.3f} | {new:.3f} | {new / old:.3f}x |")


if __name__ == "__main__":
    main()
