"""Under fire, item 1: a signal at a random instant must never wedge the loop.

A signal handler that raises (Ctrl-C's KeyboardInterrupt, the SystemExit of
``install_signal_handlers()``) can fire between any two bytecodes of the main thread, including
inside a stdlib ``Condition.__enter__`` after the lock was taken: that lock then stays held.
The loop thread must never wait on such a lock (the future of ``submit()``, the Event of a
``concurrent.futures.wait()`` on it, the LoopThread's own stop event), and a caller must get the
signal's exception, not ``RuntimeError: cannot release un-acquired lock``.

``_storm_child.py`` (see its docstring) runs the storm in a subprocess; a child that hangs is
killed and fails the test. Before the fix the loop wedged after 153-493 signals.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import loopthread
from tests.reliability._support import record, run_python, scaled

CHILD = str(Path(__file__).with_name("_storm_child.py"))
#: A bound on an answer that must come at once (a healthy run answers in milliseconds).
PROMPT = 3.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_storm_of_signals_in_the_calling_thread_never_wedges_the_loop(seed: int) -> None:
    signals = scaled(5000, 50_000)
    try:
        proc = run_python([CHILD, str(signals), "20", str(seed)], timeout=60)
    except subprocess.TimeoutExpired:
        record("under fire: signal storm in the caller", hung=1)
        pytest.fail("the storm child hung: killed after 60 s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    examples = "\n".join(result["examples"])
    record(
        "under fire: signal storm in the caller",
        signals=result["interrupts"],
        calls=result["calls"],
        wedged=0 if result["healthy"] else 1,
        hung=0,
    )
    assert result["healthy"], f"the loop stopped answering after the storm:\n{examples}"
    assert result["stopped"], f"stop() did not finish after the storm:\n{examples}"
    assert result["own_lock_errors"] == 0, f"a lock error reached the caller:\n{examples}"
    # The storm really happened: most rounds were cut short by a signal.
    assert result["interrupts"] >= signals // 2, result


def test_one_ctrl_c_leaves_every_other_blocked_caller_answered() -> None:
    """Ctrl-C in the main thread while it and 12 other threads wait in ``lt.run``: the main
    thread gets KeyboardInterrupt (not slept through: see ``loopthread._util.MAIN_SLICE``),
    the loop keeps serving the 12, and ``stop()`` answers each of them."""
    lt = loopthread.LoopThread(name="twelve", cancel_grace=1.0).start()
    lock = threading.Lock()
    inside = 0
    all_in = threading.Event()

    async def never() -> None:
        nonlocal inside
        with lock:
            inside += 1
            if inside == 13:
                all_in.set()
        await asyncio.Event().wait()

    outcomes: list[str] = []

    def caller() -> None:
        try:
            lt.run(never())
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test checks
            with lock:
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    main = threading.get_ident()

    sent_at: list[float] = []

    def interrupt() -> None:
        if all_in.wait(10):
            sent_at.append(time.monotonic())
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            lt.run(never(), timeout=20)
        # Promptly: not when the 20 s timeout ends the wait (a signal slept through).
        assert time.monotonic() - sent_at[0] < PROMPT
        # The loop still serves: the 12 are still waiting, and a new call works.
        assert lt.run(asyncio.sleep(0, "alive"), timeout=5) == "alive"
        assert outcomes == []
    finally:
        lt.stop(timeout=2)
    for thread in threads:
        thread.join(5)
    assert sorted(outcomes) == ["LoopNotRunningError"] * 12
