"""Exit and signals, in subprocesses: whatever reached loopthread before the exit is delivered.

Each scenario runs ``_exit_child.py`` (see its docstring): three producer threads put channel
items, report EventBus events and log lines through a ``LoopHandler`` into a ``FileHandler``,
all on the default loop; the program then ends in one of four ways. The producers tally what
loopthread accepted; the test counts what the handlers and the log file got. They must match
exactly: nothing accepted is lost at exit, whatever way the program ends.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability._support import record, run_python, scaled

CHILD = str(Path(__file__).with_name("_exit_child.py"))
N = scaled(10_000, 100_000)


def tally(path: Path) -> Counter[str]:
    """Sum ``kind count`` lines by kind."""
    totals: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            kind, count = line.split()
            totals[kind] += int(count)
    return totals


@pytest.mark.parametrize(
    ("mode", "exit_code", "stderr_has"),
    [
        ("normal", 0, ""),
        ("worker_sys_exit", 0, ""),
        ("main_raises", 1, "RuntimeError: main failed while producers were running"),
        ("sigterm", 128 + signal.SIGTERM, ""),
    ],
)
def test_everything_accepted_before_exit_is_delivered(
    tmp_path: Path, mode: str, exit_code: int, stderr_has: str
) -> None:
    """The program exits (normally, sys.exit in a worker, an exception in main, SIGTERM with
    install_signal_handlers): every channel item, EventBus event and log line loopthread
    accepted before the exit reached its handler or the log file, and the exit is bounded."""
    proc = run_python([CHILD, mode, str(tmp_path), str(N)], timeout=60)
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    if stderr_has:
        assert stderr_has in proc.stderr
    else:
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    accepted = tally(tmp_path / "accepted")
    handled = tally(tmp_path / "handled")
    log_lines = (tmp_path / "log").read_text().splitlines()
    producers = 4 if mode == "worker_sys_exit" else 3
    if mode != "sigterm":
        assert accepted == Counter(channel=producers * N, bus=producers * N, log=producers * N)
    else:
        assert accepted["channel"] >= N  # SIGTERM came after N items of producer 0
    assert handled["channel"] == accepted["channel"]
    assert handled["bus"] == accepted["bus"]
    assert len(log_lines) == accepted["log"]
    assert len(set(log_lines)) == len(log_lines)  # each line once
    assert "items_unhandled=0" in proc.stdout
    record(
        f"exit: {mode}",
        items=accepted["channel"],
        events=accepted["bus"],
        log_lines=accepted["log"],
        lost=(accepted["channel"] - handled["channel"])
        + (accepted["bus"] - handled["bus"])
        + (accepted["log"] - len(log_lines)),
        exit_code=proc.returncode,
    )
