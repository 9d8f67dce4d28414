"""Run every benchmark in perf/ and print one report: `python -m perf [--quick]`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main() -> None:
    quick = "--quick" in sys.argv
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    print(f"# loopthread benchmarks ({time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]})")
    print(f"command: python -m perf{' --quick' if quick else ''}\n")
    for name in names:
        module = importlib.import_module(f"perf.{name}")
        print(f"## {name}\n")
        print(module.report(quick=quick))
        print(flush=True)


if __name__ == "__main__":
    main()
