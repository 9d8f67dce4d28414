"""The protected lane (issue 12): records at or above ``protect_level`` (default ERROR) are
never dropped by the overflow policy, and what it dropped is summarised in one WARNING record
per interval, written through the wrapped handlers (no polling: with the next batch, or at
flush/close), counted in ``stats()``."""

from __future__ import annotations

import logging
import threading

import pytest

from loopthread import LoopThread
from loopthread.logging import LoopHandler


class Held(logging.Handler):
    """Writes messages to a list; holds the consumer on "hold" until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "hold":
            self.entered.set()
            self.gate.wait(10)
        with self.changed:
            self.written.append(message)
            self.changed.notify_all()

    def wait_written(self, message: str) -> None:
        """Wait until ``message`` was written."""
        with self.changed:
            assert self.changed.wait_for(lambda: message in self.written, timeout=5)

    def hold(self, log: logging.Logger) -> None:
        """Log "hold" and wait until the consumer is inside it (the channel is then empty)."""
        self.gate.clear()
        self.entered.clear()
        log.info("hold")
        assert self.entered.wait(5)


def test_drop_newest_never_drops_protected_records_from_threads(
    lt: LoopThread, log: logging.Logger
) -> None:
    """4 threads flood a 4-record "drop_newest" queue, every 10th record an ERROR: INFO
    records are dropped, not one ERROR is (each waits for room), each thread's ERRORs are
    written in order, and the drops are counted by level."""
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    handler = LoopHandler(Collect(), loop_thread=lt, maxsize=4, overflow="drop_newest")
    log.addHandler(handler)
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        start.wait()
        for i in range(300):
            if i % 10 == 0:
                log.error("t%d error %d", t, i)
            else:
                log.info("t%d info %d", t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    stats = handler.stats()
    assert stats.dropped > 0, "the queue never filled: the test proves nothing"
    for t in range(4):
        errors = [m for m in written if m.startswith(f"t{t} error")]
        assert errors == [f"t{t} error {i}" for i in range(0, 300, 10)]
    assert stats.dropped_by_level == {"INFO": stats.dropped}
    assert stats.dropped == 4 * 270 - sum(" info " in m for m in written)


def test_drop_newest_protected_record_from_the_loop_thread_is_admitted(
    lt: LoopThread, log: logging.Logger
) -> None:
    """On the loop thread, where waiting would stall the consumer, a protected record meeting
    a full "drop_newest" queue is admitted past maxsize; an INFO there is dropped."""
    held = Held()
    handler = LoopHandler(held, loop_thread=lt, maxsize=1, overflow="drop_newest")
    log.addHandler(handler)
    held.hold(log)
    log.info("fills the queue")

    async def from_the_loop() -> None:
        log.info("dropped on the loop")
        log.error("admitted on the loop")

    lt.run(from_the_loop(), timeout=5)
    held.gate.set()
    handler.flush()
    assert held.written[0] == "hold"
    assert held.written[-2:] == ["fills the queue", "admitted on the loop"]
    stats = handler.stats()
    assert stats.channel is not None
    assert (stats.dropped, stats.channel.over_limit) == (1, 1)


def test_drop_oldest_rescues_protected_records_in_order(
    lt: LoopThread, log: logging.Logger
) -> None:
    """A "drop_oldest" queue evicts its oldest record to take a new one: an evicted ERROR is
    written anyway, in its place (before everything that was still waiting); evicted INFO
    records are gone, and the summary says how many."""
    held = Held()
    handler = LoopHandler(held, loop_thread=lt, maxsize=3, overflow="drop_oldest")
    log.addHandler(handler)
    held.hold(log)
    for message in ("error 0", "info 0", "info 1"):
        (log.error if message.startswith("error") else log.info)(message)  # the queue is full
    log.info("info 2")  # evicts "error 0": rescued
    log.info("info 3")  # evicts "info 0": dropped
    held.gate.set()
    handler.flush()
    summary = [m for m in held.written if m.startswith("dropped")]
    assert [m for m in held.written if not m.startswith("dropped")] == [
        "hold",
        "error 0",
        "info 1",
        "info 2",
        "info 3",
    ]
    assert len(summary) == 1
    assert summary[0].startswith("dropped 1 of the oldest waiting records below ERROR in the last")
    stats = handler.stats()
    assert (stats.rescued, stats.summaries) == (1, 1)


def test_without_protection_drop_oldest_loses_the_error(
    lt: LoopThread, log: logging.Logger
) -> None:
    """``protect_level=None`` is the plain policy: the evicted ERROR is gone (the protected
    lane above is what keeps it)."""
    held = Held()
    handler = LoopHandler(
        held, loop_thread=lt, maxsize=1, overflow="drop_oldest", protect_level=None
    )
    log.addHandler(handler)
    held.hold(log)
    log.error("error 0")
    log.info("info 0")  # evicts "error 0"
    held.gate.set()
    handler.flush()
    assert [m for m in held.written if not m.startswith("dropped")] == ["hold", "info 0"]
    assert handler.stats().rescued == 0


def test_one_summary_per_interval_then_at_flush(lt: LoopThread, log: logging.Logger) -> None:
    """The first drops are summarised with the next batch; drops within the interval after
    that wait for flush(), which writes the summary still owed. Each summary is a WARNING
    record saying what was dropped, by level."""
    held = Held()
    formatted: list[tuple[str, str]] = []

    class Levels(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            formatted.append((record.levelname, record.getMessage()))
            return True

    held.addFilter(Levels())
    handler = LoopHandler(
        held, loop_thread=lt, maxsize=1, overflow="drop_newest", drop_summary_interval=3600
    )
    log.addHandler(handler)
    held.hold(log)
    log.info("kept 1")
    log.info("dropped 1")
    log.debug("dropped 2")
    held.gate.set()
    handler.flush()
    first = [m for level, m in formatted if level == "WARNING"]
    assert len(first) == 1
    assert first[0].startswith("dropped 1 INFO and 1 DEBUG records in the last")
    assert "overflow='drop_newest', maxsize=1" in first[0]
    held.hold(log)
    log.info("kept 2")
    log.info("dropped 3")
    log.info("dropped 4")
    held.gate.set()
    held.wait_written("kept 2")
    log.info("after")  # a new batch, within the interval: no summary with it
    held.wait_written("after")
    assert len([m for level, m in formatted if level == "WARNING"]) == 1
    handler.flush()
    summaries = [m for level, m in formatted if level == "WARNING"]
    assert len(summaries) == 2
    assert summaries[1].startswith("dropped 2 INFO records in the last")
    assert formatted[-1][0] == "WARNING"  # written at flush, after everything else
    stats = handler.stats()
    assert (stats.dropped, stats.summaries) == (4, 2)
    assert stats.dropped_by_level == {"DEBUG": 1, "INFO": 3}


def test_no_summaries_when_turned_off(lt: LoopThread, log: logging.Logger) -> None:
    """``drop_summary_interval=None``: drops are counted, no summary record is written."""
    held = Held()
    handler = LoopHandler(
        held, loop_thread=lt, maxsize=1, overflow="drop_newest", drop_summary_interval=None
    )
    log.addHandler(handler)
    held.hold(log)
    log.info("kept")
    log.info("dropped")
    held.gate.set()
    handler.flush()
    assert held.written == ["hold", "kept"]
    assert (handler.stats().dropped, handler.stats().summaries) == (1, 0)


def test_error_policy_counts_its_refusals_and_keeps_protected_records(
    lt: LoopThread, log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """``overflow="error"``: a record refused because the queue is full is reported through
    ``handleError`` (as the stdlib's QueueHandler does) and counted as dropped; a protected
    record waits for room instead."""
    held = Held()
    handler = LoopHandler(
        held, loop_thread=lt, maxsize=1, overflow="error", drop_summary_interval=None
    )
    log.addHandler(handler)
    held.hold(log)
    log.info("kept")
    log.info("refused")
    stopper = threading.Thread(target=log.critical, args=("protected",))
    stopper.start()
    held.gate.set()
    stopper.join(5)
    handler.flush()
    assert held.written == ["hold", "kept", "protected"]
    assert handler.stats().dropped == 1
    assert "ChannelFullError" in capsys.readouterr().err


def test_protect_level_is_checked() -> None:
    """A level name or number, or None; anything else fails with what to pass."""
    assert LoopHandler(protect_level="warning") is not None
    with pytest.raises(ValueError, match="not a logging level name"):
        LoopHandler(protect_level="SEVERE")
    with pytest.raises(TypeError, match=r"protect_level takes a logging level"):
        LoopHandler(protect_level=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop_summary_interval"):
        LoopHandler(drop_summary_interval=-1)
