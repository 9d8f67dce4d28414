"""loopthread's metrics under prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

prometheus_client chooses the mode when it is first imported, so every scenario runs in a
fresh interpreter with the variable pointing at ``tmp_path`` (tests/_mp_scenarios.py), and
its processes are scraped the way gunicorn's documented setup does: ``MultiProcessCollector``
over the directory, ``generate_latest``, parsed by ``prometheus_client.parser``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loopthread import metrics

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run_scenario(tmp_path: Path, *args: str) -> dict[str, Any]:
    files = tmp_path / "prometheus"
    files.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(files)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests._mp_scenarios", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def samples(raw: list[list[Any]]) -> Samples:
    out: Samples = {}
    for name, labels, value in raw:
        key = (name, frozenset(labels.items()))
        assert key not in out, f"duplicate series {key}"
        out[key] = value
    return out


def get(s: Samples, name: str, **labels: str) -> float | None:
    return s.get((name, frozenset(labels.items())))


def family(s: Samples, name: str) -> Samples:
    return {key: v for key, v in s.items() if key[0] == name}


def cumulative(s: Samples) -> Samples:
    """Every sample of a counter, histogram or summary (what must never go down)."""
    gauges = ("_in_flight", "_depth", "_workers", "_high_water", "_circuit_state")
    return {key: v for key, v in s.items() if not key[0].endswith(gauges)}


def test_outside_multiprocess_mode_flush_writes_nothing() -> None:
    """This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert metrics.flush() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_counts_add_up_across_processes_and_outlive_them(tmp_path: Path, method: str) -> None:
    """Three workers and the parent: every counter and histogram is the exact sum, after the
    workers exited (their counters are in their files) and after mark_process_dead (which
    removes only their live gauges)."""
    result = run_scenario(tmp_path, "sum", method)
    assert result["exitcodes"] == [0, 0, 0]
    exited = samples(result["exited"])
    default = {"loop": "loopthread-default"}
    assert get(exited, "loopthread_calls_total", **default, outcome="ok") == 10 + 20 + 30
    assert get(exited, "loopthread_calls_total", **default, outcome="error") == 0 + 1 + 2
    assert get(exited, "loopthread_calls_total", **default, outcome="timeout") == 3
    assert get(exited, "loopthread_calls_total", **default, outcome="cancelled") == 0
    assert get(exited, "loopthread_call_duration_seconds_count", **default) == 66
    assert get(exited, "loopthread_call_duration_seconds_bucket", **default, le="+Inf") == 66
    sum_seconds = get(exited, "loopthread_call_duration_seconds_sum", **default)
    assert sum_seconds is not None
    assert sum_seconds >= 3 * 0.01  # the three timeouts
    assert get(exited, "loopthread_loops_created_total", **default) == 3
    events = {**default, "channel": "events"}
    assert get(exited, "loopthread_channel_put_total", **events) == 5 + 10 + 15
    assert get(exited, "loopthread_channel_handled_total", **events) == 30
    assert get(exited, "loopthread_calls_total", loop="parent", outcome="ok") == 4
    assert get(exited, "loopthread_loops_created_total", loop="parent") == 1
    # Gauges of stopped loops are written as 0; livesum: no pid label.
    assert get(exited, "loopthread_calls_in_flight", **default) == 0
    # (a channel closed at exit has no gauges left, as in one process; 0 if ever written)
    assert get(exited, "loopthread_channel_depth", **events) in (None, 0)
    marked = samples(result["marked"])
    assert cumulative(marked) == cumulative(exited)
    # The workers' live gauges went with mark_process_dead; the parent's (alive) remain.
    assert family(marked, "loopthread_calls_in_flight") == {
        ("loopthread_calls_in_flight", frozenset({("loop", "parent")})): 0.0
    }
    for pid in result["pids"]:
        assert not [f for f in result["files"] if f.startswith("gauge_live") and str(pid) in f]
        assert f"counter_{pid}.db" in result["files"]


@pytest.mark.timeout(60)
def test_gauges_follow_their_multiprocess_modes(tmp_path: Path) -> None:
    """Three live workers with calls parked and items waiting: in flight and depth are summed
    (livesum), high water is the largest (livemax), circuit state has one series per worker
    (liveall, with its pid); at exit they read 0, and mark_process_dead removes them."""
    result = run_scenario(tmp_path, "gauges")
    assert result["exitcodes"] == [0, 0, 0]
    reports = result["reports"]
    assert [r["written"] for r in reports] == [1, 1, 1]
    assert [r["in_flight"] for r in reports] == [1, 2, 3]
    live = samples(result["live"])
    default = {"loop": "loopthread-default"}
    q = {**default, "channel": "q"}
    assert get(live, "loopthread_calls_in_flight", **default) == 6
    assert get(live, "loopthread_channel_depth", **q) == sum(r["depth"] for r in reports)
    assert sum(r["depth"] for r in reports) > 0
    assert get(live, "loopthread_channel_high_water", **q) == max(r["high_water"] for r in reports)
    assert len({r["high_water"] for r in reports}) > 1  # max differs from sum and from any one
    circuit = {**default, "chain": "c", "enricher": "e"}
    for r in reports:
        pid = str(r["pid"])
        assert get(live, "loopthread_enricher_circuit_state", **circuit, state="closed", pid=pid)
        assert get(live, "loopthread_enricher_circuit_state", **circuit, state="open", pid=pid) == 0
    assert len(family(live, "loopthread_enricher_circuit_state")) == 3 * 3
    assert get(live, "loopthread_enricher_duration_seconds_count", **circuit) == 3  # summed
    exited = samples(result["exited"])
    assert get(exited, "loopthread_calls_in_flight", **default) == 0
    assert get(exited, "loopthread_channel_depth", **q) == 0
    assert (get(exited, "loopthread_calls_total", **default, outcome="ok") or 0) > 0
    marked = samples(result["marked"])
    assert cumulative(marked) == cumulative(exited)
    gauges = set(exited) - set(cumulative(exited))
    assert gauges
    assert not gauges & set(marked)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["select", "lag_only", "uvloop"])
def test_written_when_idle_and_while_busy_without_flush(tmp_path: Path, mode: str) -> None:
    """Without flush(): the files catch up once the loop is idle, and while a coroutine keeps
    it busy for good; stop() writes the final values and the gauges as 0."""
    if mode == "uvloop":
        pytest.importorskip("uvloop")
    result = run_scenario(tmp_path, "moments", mode)
    # ok calls: lt.run(_event()), then 7 (idle), then 20 more (busy)
    idle = samples(result["idle"])
    assert get(idle, "loopthread_calls_total", loop="w", outcome="ok") == 8
    assert get(idle, "loopthread_calls_in_flight", loop="w") == 3
    busy = samples(result["busy"])
    assert get(busy, "loopthread_calls_total", loop="w", outcome="ok") == 28
    assert result["busy_in_flight"] in (3, 4)  # the spinner, written or not yet
    for key, v in cumulative(idle).items():
        assert busy[key] >= v, key
    stopped = samples(result["stopped"])
    # ... then the spinner, the lt.run that releases the parked calls, and those 3
    assert get(stopped, "loopthread_calls_total", loop="w", outcome="ok") == 28 + 1 + 1 + 3
    assert get(stopped, "loopthread_calls_in_flight", loop="w") == 0
    assert get(stopped, "loopthread_call_duration_seconds_count", loop="w") == 33


@pytest.mark.timeout(60)
def test_restarts_clashes_closed_channels_and_a_loop_without_monitor(tmp_path: Path) -> None:
    """Counters continue across LoopThreads of one name, two running ones are ``name#2``, a
    closed channel's counts stay (a new one of its name adds to them), and a LoopThread with
    no monitor thread warns and is written at flush() and stop() only."""
    result = run_scenario(tmp_path, "lifecycle")
    restarted = samples(result["restarted"])
    assert get(restarted, "loopthread_calls_total", loop="r", outcome="ok") == 8
    assert get(restarted, "loopthread_loops_created_total", loop="r") == 2
    clash = samples(result["clash"])
    assert get(clash, "loopthread_calls_total", loop="same", outcome="ok") == 1
    assert get(clash, "loopthread_calls_total", loop="same#2", outcome="ok") == 2
    assert get(clash, "loopthread_channel_put_total", loop="same", channel="ch") == 15
    assert get(clash, "loopthread_channel_handled_total", loop="same", channel="ch") == 15
    assert get(clash, "loopthread_channel_depth", loop="same", channel="ch") in (None, 0)
    stopped = samples(result["clash_stopped"])
    for key, v in cumulative(clash).items():
        assert stopped[key] >= v, key
    assert get(stopped, "loopthread_calls_in_flight", loop="same#2") == 0
    assert "loop_thread.metrics_written_at_stop_only" in result["quiet_warnings"]
    before = samples(result["quiet_before_flush"])
    assert get(before, "loopthread_calls_total", loop="quiet", outcome="ok") == 0
    assert result["quiet_flushed"] == 1
    after = samples(result["quiet_after_flush"])
    assert get(after, "loopthread_calls_total", loop="quiet", outcome="ok") == 4
    final = samples(result["quiet_stopped"])
    assert get(final, "loopthread_calls_total", loop="quiet", outcome="ok") == 5
    assert result["flush_after_stop"] == 0


@pytest.mark.timeout(60)
def test_a_fork_during_a_write_does_not_hang_the_child(tmp_path: Path) -> None:
    result = run_scenario(tmp_path, "fork_mid_write")
    assert result["exitcode"] == 0
    s = samples(result["samples"])
    assert get(s, "loopthread_calls_total", loop="loopthread-default", outcome="ok") == 1
    assert get(s, "loopthread_calls_total", loop="parent", outcome="ok") == 1
