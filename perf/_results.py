"""Machine-readable benchmark results: ``perf/results/<bench>.json``, read by ``perf/charts.py``.

Each benchmark keeps printing its markdown report; while it runs under :func:`record`, every
table it renders with ``perf._harness.markdown_table(..., key=...)`` is also kept as rows, and
:func:`series` keeps data that is no table (the latency distributions behind a CDF chart).
When the report is done, one JSON file per benchmark is written::

    {"bench": "bench_calls", "date": "2026-12-01T18:47:38Z", "command": "python -m perf ...",
     "python": "3.11.7", "implementation": "CPython", "platform": "linux", "cpus": 2,
     "quick": true, "seconds": 41.2,
     "tables": {"single": {"title": "1 caller thread: ...", "columns": [...]}, ...},
     "rows": [{"table": "single", "method": "lt.run", "noop median µs": 61.3, ...}, ...],
     "series": {...}, "markdown": "the report as printed"}

Cells keep their numbers: a cell rendered as ``"1.23x"``, ``"0.50%"`` or ``"12,345"`` is stored
as the number (the column's name says the unit), ``"n/a"`` as null; other text stays text.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_DIR", "keep_table", "record", "series"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?(e-?[0-9]+)?[x%]?$")


@dataclass
class _Collected:
    tables: list[tuple[str, list[str], list[list[Any]], str]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)


_active: list[_Collected] = []  # the benchmark running under record(), if any


def keep_table(
    key: str, headers: Sequence[str], rows: Sequence[Sequence[object]], text: str
) -> None:
    """Keep one rendered table (``text``) for the JSON file, when a benchmark is recorded."""
    if _active:
        _active[-1].tables.append((key, list(headers), [list(r) for r in rows], text))


def series(key: str, value: Any) -> None:
    """Keep JSON-serialisable data that is no table (e.g. percentiles for a CDF)."""
    if _active:
        _active[-1].series[key] = value


def _cell(value: object) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value
    text = str(value)
    if text == "n/a":
        return None
    if _NUMBER.match(text):
        return float(text.rstrip("x%").replace(",", ""))
    return text


def _title(markdown: str, table_text: str) -> str:
    """The heading above a table in the report (``### ...``), or '' when it has none."""
    at = markdown.find(table_text)
    if at < 0:
        return ""
    headings = [ln for ln in markdown[:at].splitlines() if ln.startswith("#")]
    return headings[-1].lstrip("#").strip() if headings else ""


def record(
    bench: str,
    report: Callable[[], str],
    *,
    quick: bool,
    command: str,
    directory: Path = RESULTS_DIR,
) -> str:
    """Run ``report()``, write ``directory/<bench>.json`` from what it rendered, return its text."""
    collected = _Collected()
    _active.append(collected)
    started = time.time()
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    try:
        markdown = report()
    finally:
        _active.remove(collected)
    tables: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for key, headers, table_rows, text in collected.tables:
        if key in tables:
            raise ValueError(f"{bench}: two tables with the key {key!r}; give each its own")
        if len(set(headers)) != len(headers):
            raise ValueError(f"{bench}: table {key!r} repeats a column name: {headers}")
        tables[key] = {"title": _title(markdown, text), "columns": headers}
        rows += [
            {"table": key, **{h: _cell(v) for h, v in zip(headers, row, strict=True)}}
            for row in table_rows
        ]
    document = {
        "bench": bench,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": command,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "gil": "off" if not getattr(sys, "_is_gil_enabled", lambda: True)() else "on",
        "platform": sys.platform,
        "cpus": os.cpu_count(),
        "loadavg_before": load,
        "quick": quick,
        "seconds": round(time.time() - started, 1),
        "tables": tables,
        "rows": rows,
        "series": collected.series,
        "markdown": markdown,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return markdown
