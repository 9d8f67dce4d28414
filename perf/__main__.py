"""Run every benchmark in perf/ and print one report: `python -m perf [--quick]`.

Each benchmark also writes its results to ``perf/results/<bench>.json`` (``perf/_results.py``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from perf._results import record


def main() -> None:
    quick = "--quick" in sys.argv
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    print(f"# loopthread benchmarks ({time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]})")
    print(f"command: python -m perf{' --quick' if quick else ''}\n")
    command = f"python -m perf{' --quick' if quick else ''}"
    for name in names:
        module = importlib.import_module(f"perf.{name}")
        print(f"## {name}\n")
        report = functools.partial(module.report, quick=quick)
        print(record(name, report, quick=quick, command=command))
        print(flush=True)


if __name__ == "__main__":
    main()
