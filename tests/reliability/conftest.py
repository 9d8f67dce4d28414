"""Prints the figures each reliability scenario recorded, as a markdown table, after the run.

``LOOPTHREAD_FIGURES=path`` also writes them as JSON (for updating the README's table).
"""

from __future__ import annotations

import json
import os
from typing import Any

from tests.reliability._support import FIGURES, SOAK


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures table (only when reliability scenarios ran)."""
    if not FIGURES:
        return
    size = "soak size (LOOPTHREAD_SOAK=1)" if SOAK else "CI size"
    terminalreporter.section(f"loopthread reliability figures, {size}")
    terminalreporter.write_line("| scenario | figures |")
    terminalreporter.write_line("| --- | --- |")
    for scenario, figures in FIGURES.items():
        cells = ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
        terminalreporter.write_line(f"| {scenario} | {cells} |")
    path = os.environ.get("LOOPTHREAD_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump({"soak": SOAK, "figures": FIGURES}, out, indent=2, default=str)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)
