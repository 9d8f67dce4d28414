"""The typed facade: mypy --strict reports each deliberate error in tests/typing/ (and only
those), so a signature that loses its types fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "typing"


@pytest.mark.timeout(180)
def test_mypy_reports_every_deliberate_error_and_nothing_else() -> None:
    # mypy is part of `make test`'s venv; interpreters it does not build on (free-threaded
    # 3.13 installs only the `test` extra) have nothing to check the types with.
    pytest.importorskip("mypy")
    target = HERE / "deliberate_errors.py"
    expected = {
        (number, match[1])
        for number, line in enumerate(target.read_text().splitlines(), start=1)
        if (match := re.search(r"# E: ([\w-]+)", line))
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=170,
    )
    reported = {
        (int(match[1]), match[2])
        for match in re.finditer(r"deliberate_errors\.py:(\d+): error: .*\[([\w-]+)\]", proc.stdout)
    }
    assert reported == expected, proc.stdout
