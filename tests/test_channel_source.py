"""lt.channel_from(): channels fed by a multiprocessing.Queue, a Connection, a pipe, a socket
or a queue.Queue; flush and close cover what is in the source; nothing lost silently."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import pickle
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopthread import (
    ChannelClosedError,
    LoopNotRunningError,
    LoopThread,
    SourceChannel,
    SourceStats,
    WouldDeadlockError,
    testing,
)
from tests import _source_workers
from tests._seam_support import in_forked_child, run_python

SPAWN = multiprocessing.get_context("spawn")
LINUX_PROC = Path("/proc/self/task").exists()


class Held:
    """A sync handler that records batches and can hold the consumer until released (in the
    loop's executor, so the loop itself stays free)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self.released.clear()
        self.entered.clear()

    async def __call__(self, batch: list[Any]) -> None:
        self.entered.set()
        if not self.released.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
        self.items.extend(batch)


@pytest.fixture(name="held")
def fixture_held() -> Iterator[Held]:
    """A holding handler, released at teardown so no executor thread stays parked."""
    held = Held()
    yield held
    held.released.set()


@pytest.fixture(name="pipe")
def fixture_pipe() -> Iterator[tuple[Connection, Connection]]:
    """A one-way multiprocessing pipe (reader, writer), closed afterwards."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    yield reader, writer
    reader.close()
    writer.close()


def put_and_flush(ch: SourceChannel[Any], rec: testing.Recorder[Any], put: Any, count: int) -> None:
    """Put 0 .. count - 1 into the source with ``put``; flush; all arrived, in order."""
    for i in range(count):
        put(i)
    assert ch.flush(timeout=10)
    assert rec.items == list(range(count))


def thread_names() -> list[str]:
    """The threads of this process but multiprocessing's queue feeders (an mp.Queue that this
    process put into has one until the queue is collected: other tests' come and go)."""
    return sorted(t.name for t in threading.enumerate() if t.name != "QueueFeederThread")


# ---------------------------------------------------------------- each kind of source


def test_multiprocessing_queue_is_read_by_the_loop_without_a_thread(lt: LoopThread) -> None:
    """A multiprocessing.Queue fed by a worker process: every item in order, through the
    loop's own fd watch (no thread added), on the loop thread."""
    q = SPAWN.Queue()
    rec: testing.Recorder[Any] = testing.Recorder()
    before = thread_names()
    ch = lt.channel_from(q, rec)
    assert thread_names() == before
    worker = SPAWN.Process(target=_source_workers.produce, args=(q, 7, 500))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert ch.flush(timeout=10)
    assert rec.items == [(7, i) for i in range(500)]
    stats = ch.stats()
    assert isinstance(stats, SourceStats)
    assert (stats.source, stats.reader) == ("multiprocessing.Queue", "add_reader")
    assert stats.ended is None
    assert (stats.put, stats.handled, stats.unreadable) == (500, 500, 0)
    assert 1 <= stats.wakeups <= stats.reads  # at most one wake-up per read, none spare
    assert thread_names() == before
    ch.close(timeout=5)
    assert ch.stats().ended == "closed"


def test_bounded_multiprocessing_queue_writers_are_released(lt: LoopThread) -> None:
    """A bounded mp.Queue: each message read releases the writers' semaphore, as get() does,
    so a writer putting 10x maxsize items finishes."""
    q = SPAWN.Queue(maxsize=10)
    rec: testing.Recorder[Any] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    worker = SPAWN.Process(target=_source_workers.produce, args=(q, 1, 100))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert ch.flush(timeout=10)
    assert rec.items == [(1, i) for i in range(100)]
    ch.close(timeout=5)


def test_simple_queue(lt: LoopThread) -> None:
    """A multiprocessing.SimpleQueue is read the same way."""
    q = SPAWN.SimpleQueue()
    rec: testing.Recorder[Any] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    put_and_flush(ch, rec, q.put, 50)  # written to the pipe before put() returns (no feeder)
    assert ch.stats().source == "multiprocessing.SimpleQueue"
    ch.close(timeout=5)


def test_connection_objects_and_eof_close_the_channel(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """Objects sent on a Connection arrive as sent; when every writer is closed the channel
    closes itself (EOF) after handling them, and put() says why it is closed."""
    reader, writer = pipe
    rec: testing.Recorder[Any] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    for i in range(20):
        writer.send({"i": i, "payload": "x" * i})
    writer.close()
    assert rec.wait_for(20) == [{"i": i, "payload": "x" * i} for i in range(20)]
    ch.close(timeout=5)
    stats = ch.stats()
    assert (stats.ended, stats.closed, stats.unhandled) == ("eof", True, 0)
    with pytest.raises(ChannelClosedError, match="source"):
        ch.put({"late": True})


def test_a_source_closed_by_the_user_is_never_read_through_a_reused_fd(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """The user closes the Connection (its writer still open) and a new pipe takes its fd
    number: flush() reads none of the new pipe's bytes; the channel notices the close, logs
    it and closes itself (ended "closed") after what the source held."""
    reader, writer = pipe
    rec: testing.Recorder[Any] = testing.Recorder()
    ch = lt.channel_from(reader, rec, decode=bytes)
    writer.send_bytes(b"one")
    assert ch.flush(timeout=5)
    old_fd = reader.fileno()
    reader.close()
    read_fd, write_fd = os.pipe()
    try:
        assert read_fd == old_fd  # the lowest free number: the source's
        os.write(write_fd, b"\x00\x00\x00\x05hello")
        with structlog.testing.capture_logs() as logs:
            assert ch.flush(timeout=5)
            ch.close(timeout=5)
        assert rec.items == [b"one"]
        assert os.read(read_fd, 100) == b"\x00\x00\x00\x05hello"  # still the user's
    finally:
        os.close(read_fd)
        os.close(write_fd)
    stats = ch.stats()
    assert (stats.ended, stats.closed, stats.handled, stats.unreadable) == ("closed", True, 1, 0)
    assert [e["event"] for e in logs].count("channel.source_closed") == 1


def test_the_reading_process_closing_its_queue_loses_nothing(lt: LoopThread) -> None:
    """This process puts into the mp.Queue it reads, then q.close(); q.join_thread() (which
    closes the queue's read end here): every item is still handled, then the EOF closes the
    channel."""
    q: multiprocessing.Queue[int] = multiprocessing.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    for i in range(100):
        q.put(i)
    q.close()
    q.join_thread()
    assert rec.wait_for(100) == list(range(100))
    ch.close(timeout=5)
    stats = ch.stats()
    assert (stats.ended, stats.handled, stats.unhandled) == ("eof", 100, 0)


def test_pipe_lines_with_decode_and_a_last_unterminated_line(lt: LoopThread) -> None:
    """framing="lines" on an os.pipe fd: one item per line (decoded), the line split across
    writes reassembled, and the last line without a newline delivered at EOF."""
    read_fd, write_fd = os.pipe()
    rec: testing.Recorder[str] = testing.Recorder()
    try:
        ch = lt.channel_from(read_fd, rec, framing="lines", decode=lambda b: b.decode())
        os.write(write_fd, b"alpha\nbe")
        assert ch.flush(timeout=5)  # "be" waits for the rest of its line
        assert rec.items == ["alpha"]
        os.write(write_fd, b"ta\ngamma\ndel")
        os.write(write_fd, b"ta")
        os.close(write_fd)
        write_fd = -1
        assert rec.wait_for(4) == ["alpha", "beta", "gamma", "delta"]
        ch.close(timeout=5)
        assert ch.stats().ended == "eof"
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_socket_chunks(lt: LoopThread) -> None:
    """A socket, framing "chunks" (the default): the bytes arrive complete and in order."""
    left, right = socket.socketpair()
    rec: testing.Recorder[bytes] = testing.Recorder()
    try:
        ch = lt.channel_from(left, rec)
        payload = bytes(range(256)) * 1000
        right.sendall(payload)
        right.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while b"".join(rec.items) != payload:  # chunks arrive as the kernel hands them over
            assert time.monotonic() < deadline, len(b"".join(rec.items))
            rec.wait_for(len(rec.items) + 1, timeout=10)
        ch.close(timeout=5)
        assert ch.stats().source == "socket"
    finally:
        left.close()
        right.close()


def test_queue_queue_is_read_by_one_named_thread(lt: LoopThread) -> None:
    """A queue.Queue: one daemon thread named after the channel reads it; flush covers what
    the queue held; q.join() works (task_done per item); close ends the thread, and what is
    put later stays in the queue."""
    q: queue.Queue[int] = queue.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec, name="jobs")
    pump = [t for t in threading.enumerate() if t.name == f"{lt.name}-source-jobs"]
    assert len(pump) == 1
    assert pump[0].daemon
    for i in range(300):
        q.put(i)
    assert ch.flush(timeout=5)
    assert rec.items == list(range(300))
    q.join()  # every item (and the flush's mark) was task_done()
    ch.close(timeout=5)
    pump[0].join(5)
    assert not pump[0].is_alive()
    q.put(999)
    assert q.get_nowait() == 999  # after close, the queue is the caller's again
    stats = ch.stats()
    assert (stats.reader, stats.ended, stats.handled) == ("thread", "closed", 300)


def test_flush_covers_what_the_pipe_holds_at_the_call(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """Items written just before flush() (still in the pipe, not read yet) are covered."""
    reader, writer = pipe
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    for round_ in range(20):
        for i in range(50):
            writer.send(round_ * 50 + i)
        assert ch.flush(timeout=5)
        assert len(rec.items) == (round_ + 1) * 50
    assert rec.items == list(range(1000))
    ch.close(timeout=5)


def test_flush_covers_what_a_queue_holds_at_the_call(lt: LoopThread) -> None:
    """Items put into a queue.Queue just before flush() are covered."""
    q: queue.Queue[int] = queue.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    for round_ in range(20):
        for i in range(50):
            q.put(round_ * 50 + i)
        assert ch.flush(timeout=5)
        assert len(rec.items) == (round_ + 1) * 50
    ch.close(timeout=5)


def test_full_channel_leaves_items_in_the_source(
    lt: LoopThread, held: Held, pipe: tuple[Connection, Connection]
) -> None:
    """While maxsize items wait, the pipe is not read: the rest stays in it and the writer
    blocks once the pipe is full (back-pressure); released, everything arrives in order."""
    reader, writer = pipe
    held.hold()
    ch = lt.channel_from(reader, held, maxsize=4, batch_size=2)
    writer.send((0, b""))
    assert held.entered.wait(5)
    payload = b"x" * 2000
    count = 300  # 600 KB: many times a pipe's buffer and one read (64 KiB)

    def write() -> None:
        for i in range(1, count):
            writer.send((i, payload))

    writing = threading.Thread(target=write)
    writing.start()
    assert not ch.flush(timeout=0.3)  # the handler is held: the bound, not a sleep
    assert writing.is_alive()  # blocked: the channel stopped reading, the pipe is full
    assert ch.stats().depth <= 4 + 65536 // 2000 + 1  # maxsize, plus what one read brought
    held.released.set()
    writing.join(10)
    assert not writing.is_alive()
    assert ch.flush(timeout=10)
    assert [i for i, _ in held.items] == list(range(count))
    ch.close(timeout=5)


def test_unreadable_messages_are_counted_logged_and_skipped(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """A message that does not unpickle, and one that decode() rejects, are counted as
    unreadable and logged; the items around them arrive."""
    reader, writer = pipe
    rec: testing.Recorder[Any] = testing.Recorder()
    with structlog.testing.capture_logs() as logs:
        ch = lt.channel_from(reader, rec)
        writer.send(1)
        writer.send_bytes(b"not a pickle")
        writer.send_bytes(pickle.dumps(1)[:-3])  # truncated
        writer.send(2)
        assert ch.flush(timeout=5)
        ch.close(timeout=5)
    assert rec.items == [1, 2]
    stats = ch.stats()
    assert (stats.unreadable, stats.put, stats.handled, stats.failed) == (2, 2, 2, 0)
    events = [e for e in logs if e["event"] == "channel.source_unreadable"]
    assert events
    assert events[0]["log_level"] == "error"


def test_decode_failure_is_unreadable(lt: LoopThread) -> None:
    """decode= raising on a line counts that line as unreadable; the others go through."""
    read_fd, write_fd = os.pipe()
    rec: testing.Recorder[int] = testing.Recorder()
    try:
        with structlog.testing.capture_logs():
            ch = lt.channel_from(read_fd, rec, framing="lines", decode=int)
            os.write(write_fd, b"1\ntwo\n3\n")
            assert ch.flush(timeout=5)
            ch.close(timeout=5)
        assert rec.items == [1, 3]
        assert ch.stats().unreadable == 1
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_close_reads_what_the_source_holds_then_leaves_the_rest(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """close() handles what was in the pipe when it was called; what is written afterwards
    stays in the pipe for whoever reads it next."""
    reader, writer = pipe
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    for i in range(300):
        writer.send(i)
    ch.close(timeout=5)
    assert rec.items == list(range(300))
    stats = ch.stats()
    assert (stats.handled, stats.unhandled, stats.ended) == (300, 0, "closed")
    writer.send("after")
    assert reader.recv() == "after"


def test_close_without_timeout_ends_on_a_message_whose_rest_never_comes(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """A writer died in the middle of a message (the pipe holds its first bytes, the writer
    end stays open: no EOF): close() without a timeout still returns, the partial message is
    counted unreadable."""
    reader, writer = pipe
    rec: testing.Recorder[bytes] = testing.Recorder()
    ch = lt.channel_from(reader, rec, decode=bytes)
    writer.send_bytes(b"whole")
    os.write(writer.fileno(), (100).to_bytes(4, "big") + b"first bytes")  # 11 of 100
    with structlog.testing.capture_logs() as logs:
        assert returns_within(ch.close, 10)
    stats = ch.stats()
    assert (rec.items, stats.unreadable, stats.ended) == ([b"whole"], 1, "closed")
    assert any(e["event"] == "channel.source_unreadable" for e in logs)


def test_stop_reads_the_source_and_drains(pipe: tuple[Connection, Connection]) -> None:
    """LoopThread.stop() reads what the source holds, handles it, and reports 0 unhandled."""
    reader, writer = pipe
    lt = LoopThread("source-stop", lag_interval=None).start()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    for i in range(500):
        writer.send(i)
    report = testing.stop_cleanly(lt)
    assert report.items_unhandled == 0
    assert rec.items == list(range(500))
    assert ch.stats().ended == "closed"


def test_stop_ends_the_queue_thread() -> None:
    """stop() reads what a queue.Queue holds and ends its thread."""
    other = LoopThread("source-stop-q", lag_interval=None).start()
    q: queue.Queue[int] = queue.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = other.channel_from(q, rec, name="q")
    pump = next(t for t in threading.enumerate() if t.name == "source-stop-q-source-q")
    for i in range(100):
        q.put(i)
    testing.stop_cleanly(other)
    pump.join(5)
    assert not pump.is_alive()
    assert rec.items == list(range(100))
    assert ch.stats().ended == "closed"


def test_aflush_and_aclose_on_the_loop(lt: LoopThread, pipe: tuple[Connection, Connection]) -> None:
    """In a coroutine on the loop: await aflush() covers the pipe, await aclose() drains."""
    reader, writer = pipe
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)

    async def main() -> tuple[bool, int, int]:
        for i in range(100):
            writer.send(i)
        ok = await ch.aflush(timeout=5)
        seen = len(rec.items)
        writer.send(100)
        await ch.aclose(timeout=5)
        return ok, seen, len(rec.items)

    assert lt.run(main(), timeout=10) == (True, 100, 101)
    with pytest.raises(WouldDeadlockError):
        lt.run_sync(ch.flush)


def test_aflush_of_a_queue_on_the_loop(lt: LoopThread) -> None:
    """await aflush() on a queue.Queue source, from the loop."""
    q: queue.Queue[int] = queue.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec)

    async def main() -> tuple[bool, int]:
        for i in range(100):
            q.put(i)
        return await ch.aflush(timeout=5), len(rec.items)

    assert lt.run(main(), timeout=10) == (True, 100)
    ch.close(timeout=5)


def test_a_corrupt_stream_ends_the_source_and_closes_the_channel(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """Bytes that are not multiprocessing frames (a negative length) end the reading with an
    error: the items before them are handled, the channel closes itself, the error is logged."""
    reader, writer = pipe
    rec: testing.Recorder[Any] = testing.Recorder()
    with structlog.testing.capture_logs() as logs:
        ch = lt.channel_from(reader, rec)
        writer.send("before")
        os.write(writer.fileno(), (-5).to_bytes(4, "big", signed=True) + b"junk")
        assert rec.wait_for(1) == ["before"]
        ch.close(timeout=5)
    stats = ch.stats()
    assert (stats.ended, stats.closed, stats.handled, stats.unhandled) == ("error", True, 1, 0)
    ended = [e for e in logs if e["event"] == "channel.source_ended"]
    assert ended
    assert ended[0]["reason"] == "error"


def test_stop_at_its_deadline_counts_what_was_read_and_leaves_the_rest(
    held: Held, pipe: tuple[Connection, Connection]
) -> None:
    """A handler that hangs past stop()'s deadline: what was read and not handled is counted
    unhandled (put == handled + unhandled), what was not read stays in the pipe."""
    reader, writer = pipe
    lt = LoopThread("source-deadline", lag_interval=None).start()
    held.hold()
    ch = lt.channel_from(reader, held, maxsize=2, batch_size=1)
    writer.send((0, b""))
    assert held.entered.wait(5)

    def write() -> None:
        for i in range(1, 100):
            writer.send((i, b"y" * 4000))

    writing = threading.Thread(target=write)
    writing.start()
    with structlog.testing.capture_logs():
        report = lt.stop(timeout=0.5)
    held.released.set()
    stats = ch.stats()
    assert report.items_unhandled == stats.unhandled > 0
    assert stats.put == stats.handled + stats.unhandled
    assert stats.ended == "closed"
    expected = stats.put  # the rest is in the pipe, whole: nothing torn, nothing taken
    while expected < 100:
        assert reader.poll(5)
        assert reader.recv()[0] == expected
        expected += 1
    writing.join(5)
    assert not writing.is_alive()


@pytest.mark.skipif(not hasattr(queue.Queue, "shutdown"), reason="Queue.shutdown(): 3.13+")
def test_queue_shutdown_ends_the_channel(lt: LoopThread) -> None:
    """queue.Queue.shutdown() ends the reading (EOF); the items before it are handled."""
    q: queue.Queue[int] = queue.Queue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    for i in range(10):
        q.put(i)
    q.shutdown()  # type: ignore[attr-defined]
    assert rec.wait_for(10) == list(range(10))
    ch.close(timeout=5)
    assert (ch.stats().ended, ch.closed) == ("eof", True)


class FlakyQueue(queue.Queue[Any]):
    """A queue-like source whose get() raises for some items (a user's wrapper that decodes)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        if item == "bad":
            raise ValueError("cannot decode this one")
        return item


def test_timed_out_flush_and_close_leave_no_marker_in_a_queue(lt: LoopThread, held: Held) -> None:
    """A flush and a close that time out while the thread is behind put their markers into the
    queue.Queue: once the thread ended, they are gone from it (the user finds its own items
    only), and every item the thread took is counted in put, handled or unhandled."""
    q: queue.Queue[int] = queue.Queue()
    ch = lt.channel_from(q, held, maxsize=1, name="markers")
    (pump,) = [t for t in threading.enumerate() if t.name.endswith("-source-markers")]
    held.hold()
    for i in range(10):
        q.put(i)
    assert held.entered.wait(10)
    with structlog.testing.capture_logs():
        assert not ch.flush(timeout=0.2)  # held: the bound, not a sleep
        ch.close(timeout=0.2)
    held.released.set()
    pump.join(10)
    assert not pump.is_alive()
    left = []
    while not q.empty():
        left.append(q.get_nowait())
    stats = ch.stats()
    assert left == list(range(stats.put, 10))
    assert stats.put == stats.handled + stats.failed + stats.unhandled
    assert stats.unhandled > 0


class InterruptedPut(queue.Queue[Any]):
    """A queue.Queue whose next put() is interrupted by Ctrl-C, once armed."""

    interrupt_next = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if self.interrupt_next:
            self.interrupt_next = False
            raise KeyboardInterrupt
        super().put(item, block, timeout)


def test_ctrl_c_in_close_of_a_queue_lets_the_next_close_stop_the_thread(lt: LoopThread) -> None:
    """Ctrl-C while close() puts its stop into the queue: nothing was put, so the next
    close() (no timeout) puts it, the thread ends and the close returns."""
    q = InterruptedPut()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec, name="ctrl-c")
    put_and_flush(ch, rec, q.put, 3)
    (pump,) = [t for t in threading.enumerate() if t.name.endswith("-source-ctrl-c")]
    q.interrupt_next = True
    with pytest.raises(KeyboardInterrupt):
        ch.close()
    assert returns_within(ch.close, 10)
    assert (ch.stats().ended, ch.stats().handled) == ("closed", 3)
    pump.join(10)
    assert not pump.is_alive()


def test_queue_get_failures_are_counted_and_skipped(lt: LoopThread) -> None:
    """get() raising is an unreadable item: counted, logged, the reading goes on."""
    q = FlakyQueue()
    rec: testing.Recorder[Any] = testing.Recorder()
    with structlog.testing.capture_logs() as logs:
        ch = lt.channel_from(q, rec)
        for item in (1, "bad", 2):
            q.put(item)
        assert ch.flush(timeout=5)
        ch.close(timeout=5)
    assert rec.items == [1, 2]
    assert ch.stats().unreadable == 1
    assert any(e["event"] == "channel.source_unreadable" for e in logs)


def test_flush_of_a_queue_waits_while_the_channel_is_full(lt: LoopThread, held: Held) -> None:
    """A full channel holds the queue's thread in put(): flush() waits (until its timeout)
    and completes once the handler is released."""
    q: queue.Queue[int] = queue.Queue()
    held.hold()
    ch = lt.channel_from(q, held, maxsize=2, batch_size=1)
    q.put(0)
    assert held.entered.wait(5)
    for i in range(1, 50):
        q.put(i)
    assert not ch.flush(timeout=0.2)  # the handler is held: the bound, not a sleep
    assert q.qsize() > 0  # the rest waits in the queue
    held.released.set()
    assert ch.flush(timeout=10)
    assert held.items == list(range(50))
    ch.close(timeout=5)


def test_close_on_the_loop_thread_returns_and_closes_in_the_background(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """close() called on the loop thread does not block it; a later close() from a thread
    waits for that close, which handled what the pipe held."""
    reader, writer = pipe
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    for i in range(100):
        writer.send(i)
    lt.run_sync(ch.close)
    ch.close(timeout=5)
    assert ch.closed
    assert rec.items == list(range(100))


def test_put_still_works_and_mixes_with_the_source(
    lt: LoopThread, pipe: tuple[Connection, Connection]
) -> None:
    """put() into a source channel: the item goes through like one read from the source."""
    reader, writer = pipe
    rec: testing.Recorder[str] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    writer.send("from the pipe")
    assert ch.flush(timeout=5)
    assert ch.put("from put")
    assert ch.flush(timeout=5)
    assert rec.items == ["from the pipe", "from put"]
    ch.close(timeout=5)
    assert ch.stats().put == 2


def test_run_in_executor_handler(lt: LoopThread, pipe: tuple[Connection, Connection]) -> None:
    """run_in="executor": a blocking handler runs in the executor, never on the loop thread;
    flush covers the pipe all the same."""
    reader, writer = pipe
    threads: set[int] = set()
    got: list[int] = []

    def save(batch: list[int]) -> None:
        threads.add(threading.get_ident())
        got.extend(batch)

    ch = lt.channel_from(reader, save, run_in="executor")
    for i in range(200):
        writer.send(i)
    assert ch.flush(timeout=5)
    assert got == list(range(200))
    assert lt.thread.ident not in threads
    ch.close(timeout=5)


def test_uvloop_watches_the_fd_too(pipe: tuple[Connection, Connection]) -> None:
    """On uvloop the fd is watched the same way (its add_reader)."""
    pytest.importorskip("uvloop")
    reader, writer = pipe
    lt = LoopThread("source-uvloop", uvloop=True, lag_interval=None).start()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(reader, rec)
    put_and_flush(ch, rec, writer.send, 500)
    assert ch.stats().reader == "add_reader"
    testing.stop_cleanly(lt)


# ---------------------------------------------------------------- bad input


def test_bad_sources_and_options_fail_at_the_call(
    lt: LoopThread, pipe: tuple[Connection, Connection], tmp_path: Path
) -> None:
    """Each misuse raises at once, saying what to pass instead."""
    reader, writer = pipe
    regular = os.open(tmp_path / "file", os.O_CREAT | os.O_RDONLY)

    async def handle(batch: list[Any]) -> None:
        pass

    cases: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
        (3.5, {}, TypeError, "reads a multiprocessing.Queue"),
        (SPAWN.JoinableQueue(), {}, TypeError, "JoinableQueue"),
        (SPAWN.Queue(), {"framing": "lines"}, TypeError, "framing"),
        (queue.Queue(), {"decode": int}, TypeError, "objects already"),
        (reader, {"decode": 3}, TypeError, "decode must be a callable"),
        (writer, {}, ValueError, "write end"),
        (regular, {}, ValueError, "regular file"),
        (reader, {"framing": "lines"}, TypeError, "framing"),
    ]
    for source, options, error, text in cases:
        with pytest.raises(error, match=text):
            lt.channel_from(source, handle, **options)
    os.close(regular)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(ValueError, match="not open"):
        lt.channel_from(read_fd, handle)
    with socket.socket() as sock, pytest.raises(ValueError, match="framing must be"):
        lt.channel_from(sock, handle, framing="json")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(TypeError, match="create_datagram_endpoint"),
    ):
        lt.channel_from(udp, handle)

    async def an_asyncio_queue() -> asyncio.Queue[int]:
        return asyncio.Queue()

    with pytest.raises(TypeError, match=r"asyncio\.Queue"):
        lt.channel_from(lt.run(an_asyncio_queue()), handle)
    closed_reader, closed_writer = multiprocessing.Pipe(duplex=False)
    closed_reader.close()
    closed_writer.close()
    with pytest.raises(ValueError, match="closed"):
        lt.channel_from(closed_reader, handle)
    assert not [c for c in testing.components(lt) if isinstance(c, SourceChannel)]
    with pytest.raises(LoopNotRunningError):
        LoopThread("never-started").channel_from(reader, handle)


def test_one_reader_per_source(lt: LoopThread, pipe: tuple[Connection, Connection]) -> None:
    """A second channel_from on a source that a live one reads is refused (add_reader would
    silently take the fd over); once the first is closed, it is allowed."""
    reader, writer = pipe
    rec: testing.Recorder[int] = testing.Recorder()
    first = lt.channel_from(reader, rec)
    with pytest.raises(ValueError, match="read by channel"):
        lt.channel_from(reader, rec)
    first.close(timeout=5)
    second = lt.channel_from(reader, rec)
    writer.send(1)
    assert second.flush(timeout=5)
    assert rec.items == [1]
    second.close(timeout=5)


class NoFdLoop(asyncio.SelectorEventLoop):
    """An event loop that cannot watch file descriptors, as Windows' proactor loop."""

    add_reader = asyncio.BaseEventLoop.add_reader  # raises NotImplementedError


def test_loop_without_add_reader_falls_back_to_a_thread_for_queues() -> None:
    """On a loop without add_reader, a multiprocessing.Queue is read by a thread blocked in
    get(); a Connection is refused with what to do instead."""
    with LoopThread("no-fd", loop_factory=NoFdLoop, lag_interval=None) as lt:
        q = SPAWN.Queue()
        rec: testing.Recorder[int] = testing.Recorder()
        ch = lt.channel_from(q, rec, name="mpq")
        assert ch.stats().reader == "thread"
        for i in range(100):
            q.put(i)
        assert rec.wait_for(100) == list(range(100))
        assert ch.flush(timeout=5)
        ch.close(timeout=5)
        assert ch.stats().ended == "closed"
        reader, writer = multiprocessing.Pipe(duplex=False)
        with pytest.raises(TypeError, match="cannot watch file descriptors"):
            lt.channel_from(reader, rec)
        reader.close()
        writer.close()
        report = lt.stop()
    assert report.items_unhandled == 0


# ---------------------------------------------------------------- idle, contention


def voluntary_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return next(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches:")
    )


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_idle_sources_cost_no_wake_ups() -> None:
    """An idle mp.Queue source costs the loop thread nothing, and an idle queue.Queue costs
    its thread nothing: at most 2 wake-ups each in one second."""
    with LoopThread("idle-source", lag_interval=None) as lt:
        q = SPAWN.Queue()
        qq: queue.Queue[int] = queue.Queue()
        rec: testing.Recorder[int] = testing.Recorder()
        ch = lt.channel_from(q, rec)
        chq = lt.channel_from(qq, rec, name="idle")
        q.put(1)
        qq.put(2)
        assert rec.wait_for(2)
        assert ch.flush(timeout=5)
        assert chq.flush(timeout=5)
        pump = next(t for t in threading.enumerate() if t.name == "idle-source-source-idle")
        ids = [lt.thread.native_id, pump.native_id]
        assert None not in ids
        before = [voluntary_switches(i) for i in ids if i is not None]
        time.sleep(1.0)  # the measurement window itself
        after = [voluntary_switches(i) for i in ids if i is not None]
        assert all(a - b <= 2 for a, b in zip(after, before, strict=True)), (before, after)
        q.put(3)
        assert rec.wait_for(3)


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_another_reader_holding_the_read_lock_backs_off_without_spinning(lt: LoopThread) -> None:
    """While another reader holds the queue's read lock, the channel does not spin (a few
    backoff wake-ups) and reads on once the lock is free."""
    q = SPAWN.SimpleQueue()
    rec: testing.Recorder[int] = testing.Recorder()
    with structlog.testing.capture_logs() as logs:
        ch = lt.channel_from(q, rec)
        native_id = lt.thread.native_id
        assert native_id is not None
        # The lock another reader's get() holds while it reads (multiprocessing's own).
        read_lock: Any = q._rlock  # type: ignore[attr-defined]
        read_lock.acquire()
        try:
            before = voluntary_switches(native_id)
            q.put(1)
            assert not ch.flush(timeout=0.5)  # the bound, not a sleep: the lock is held
            woken = voluntary_switches(native_id) - before
        finally:
            read_lock.release()
        assert ch.flush(timeout=5)
        ch.close(timeout=5)
    assert rec.items == [1]
    assert woken < 40, woken  # backoff 1 ms doubling to 100 ms: ~10 in 0.5 s; a spin: 1000s
    assert any(e["event"] == "channel.source_contended" for e in logs)


def returns_within(call: Any, seconds: float) -> bool:
    """Whether ``call()`` (one that may block forever) returned within ``seconds``."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_flush_is_done_when_another_reader_took_what_the_pipe_held(lt: LoopThread) -> None:
    """What the pipe held at the flush is taken by another reader (holding the queue's read
    lock, as its get() does): the flush returns once the pipe is empty, it does not wait for
    bytes it will never read."""
    q = SPAWN.SimpleQueue()
    rec: testing.Recorder[int] = testing.Recorder()
    read_lock: Any = q._rlock  # type: ignore[attr-defined]
    with structlog.testing.capture_logs():  # the contention warnings
        ch = lt.channel_from(q, rec)

        async def start_flush() -> asyncio.Task[bool]:
            task = asyncio.ensure_future(ch.aflush())
            await asyncio.sleep(0)  # its first step took the pipe's byte count
            return task

        async def result(task: asyncio.Task[bool]) -> bool:
            return await task

        read_lock.acquire()
        try:
            q.put(1)
            q.put(2)
            task = lt.run(start_flush())
            other = [pickle.loads(q._reader.recv_bytes()) for _ in range(2)]  # type: ignore[attr-defined]
        finally:
            read_lock.release()
        assert lt.run(result(task), timeout=10) is True
        ch.close(timeout=5)
    assert (other, rec.items, ch.stats().ended) == ([1, 2], [], "closed")


def test_flush_and_close_with_another_process_reading_the_queue(lt: LoopThread) -> None:
    """Another process also reads the queue (blocked in get(), it holds the read lock most
    of the time): flush() and close() without a timeout still return once the pipe was
    emptied, whoever read it; each item went to exactly one of the two readers."""
    q = SPAWN.SimpleQueue()
    out = SPAWN.SimpleQueue()
    ready = SPAWN.Event()
    rec: testing.Recorder[int] = testing.Recorder()
    with structlog.testing.capture_logs():  # the contention warnings
        ch = lt.channel_from(q, rec)
        other = SPAWN.Process(target=_source_workers.count_until_none, args=(q, out, ready))
        other.start()
        try:
            assert ready.wait(60)
            for _ in range(5):
                for i in range(1000):
                    q.put(i)
                assert returns_within(ch.flush, 10)
            assert returns_within(ch.close, 10)
            q.put(None)
            other.join(30)
            assert other.exitcode == 0
            taken = out.get()
        finally:
            if other.is_alive():
                other.kill()
    stats = ch.stats()
    assert (stats.ended, stats.unhandled) == ("closed", 0)
    assert taken + stats.handled == 5000


# ---------------------------------------------------------------- fork, processes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_does_not_read_the_source(lt: LoopThread) -> None:
    """In a forked child the parent's channel_from is closed and reads nothing: what the child
    writes into the queue reaches the parent's channel, all of it."""
    q = multiprocessing.get_context("fork").Queue()
    rec: testing.Recorder[Any] = testing.Recorder()
    ch = lt.channel_from(q, rec)

    def child() -> str:
        answer = f"closed={ch.closed} ended={ch.stats().ended}"
        try:
            ch.put("x")
        except ChannelClosedError as exc:
            answer += " fork" if "fork" in str(exc) else f" {exc!r}"
        for i in range(100):
            q.put(("child", i))
        q.close()
        q.join_thread()
        return answer

    answer = in_forked_child(child, timeout=20)
    assert answer == "closed=True ended=forked fork"
    assert ch.flush(timeout=10)
    assert rec.items == [("child", i) for i in range(100)]
    ch.close(timeout=5)


def test_four_worker_processes_20000_events(lt: LoopThread) -> None:
    """4 worker processes x 5,000 events through 4 mp.Queues read by channel_from, then the
    workers stop: 0 lost, 0 duplicated, FIFO per source, and no thread per source."""
    workers, per_worker = 4, 5_000
    queues = [SPAWN.Queue() for _ in range(workers)]
    got: dict[int, list[tuple[int, int]]] = {w: [] for w in range(workers)}

    def handler_for(w: int) -> Any:
        def handle(batch: list[tuple[int, int]]) -> None:
            got[w].extend(batch)

        return handle

    before = thread_names()
    channels = [lt.channel_from(q, handler_for(w)) for w, q in enumerate(queues)]
    assert thread_names() == before
    procs = [
        SPAWN.Process(target=_source_workers.produce, args=(q, w, per_worker))
        for w, q in enumerate(queues)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for ch in channels:
        assert ch.flush(timeout=30)
    assert thread_names() == before
    for w in range(workers):
        assert got[w] == [(w, i) for i in range(per_worker)], f"source {w}"
    for ch in channels:
        ch.close(timeout=5)
        stats = ch.stats()
        assert (stats.put, stats.handled, stats.failed, stats.unhandled) == (5000, 5000, 0, 0)
        assert stats.unreadable == 0
    assert sum(len(v) for v in got.values()) == workers * per_worker


def test_exit_reads_and_drains_a_default_loop_source() -> None:
    """Items in a pipe read by a default-loop channel_from when the program returns are read
    and handled by the exit hook, and the report counts 0 unhandled."""
    source = """
        import logging, multiprocessing, sys, loopthread
        logging.getLogger("loopthread").setLevel(logging.DEBUG)  # shows loop_thread.stopped
        logging.getLogger("loopthread").addHandler(logging.StreamHandler(sys.stdout))
        total = 0
        def handler(batch):
            global total
            total += len(batch)
            sys.stdout.write(f"handled {total}\\n")
            sys.stdout.flush()
        reader, writer = multiprocessing.Pipe(duplex=False)
        ch = loopthread.default().channel_from(reader, handler)
        for i in range(2_000):
            writer.send(i)
        print("main returns", flush=True)
    """
    proc = run_python(source)
    assert proc.returncode == 0, proc.describe()
    # The handler and the main thread both write to stdout: their lines may interleave.
    assert max(int(n) for n in re.findall(r"handled (\d+)", proc.stdout)) == 2000, proc.describe()
    assert "items_unhandled=0" in proc.stdout, proc.describe()


def test_queue_simple_queue(lt: LoopThread) -> None:
    """A queue.SimpleQueue (no task_done) is read by the thread too."""
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    rec: testing.Recorder[int] = testing.Recorder()
    ch = lt.channel_from(q, rec)
    put_and_flush(ch, rec, q.put, 100)
    ch.close(timeout=5)
    assert ch.stats().reader == "thread"


def test_manager_queue_proxy(lt: LoopThread) -> None:
    """A manager's queue proxy (another process holds the queue): read by the thread, its
    flush marks and stop travel through the manager too."""
    with SPAWN.Manager() as manager:
        q = manager.Queue()
        rec: testing.Recorder[int] = testing.Recorder()
        ch = lt.channel_from(q, rec)
        put_and_flush(ch, rec, q.put, 50)
        ch.close(timeout=10)
        assert ch.stats().ended == "closed"
        q.put(-1)
        assert q.get(timeout=5) == -1  # the queue is the caller's again; no marker left in it
        assert q.qsize() == 0


# ---------------------------------------------------------------- properties


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big", signed=True) + payload


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=25),
    cuts=st.lists(st.integers(0, 8000), max_size=12),
    lines=st.booleans(),
)
def test_any_split_of_the_stream_gives_the_same_messages(
    lt: LoopThread, *, messages: list[bytes], cuts: list[int], lines: bool
) -> None:
    """However the byte stream is cut into writes (and reads: a flush after each write makes
    the reader see that exact cut), the handler gets each message once, whole, in order."""
    if lines:
        messages = [m.replace(b"\n", b"") for m in messages]
        stream = b"".join(m + b"\n" for m in messages)
    else:
        stream = b"".join(_frame(m) for m in messages)
    reader, writer = multiprocessing.Pipe(duplex=False)
    rec: testing.Recorder[Any] = testing.Recorder()
    try:
        if lines:
            ch = lt.channel_from(reader.fileno(), rec, framing="lines")
        else:
            ch = lt.channel_from(reader, rec, decode=bytes)
        bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
        for start, end in itertools.pairwise(bounds):
            os.write(writer.fileno(), stream[start:end])
            assert ch.flush(timeout=5)
        ch.close(timeout=5)
    finally:
        reader.close()
        writer.close()
    assert rec.items == messages
    assert ch.stats().unreadable == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    maxsize=st.integers(1, 8),
    batch_size=st.integers(1, 5),
    producers=st.integers(1, 3),
    per_producer=st.integers(0, 80),
    fail_every=st.integers(0, 4),
    thread_source=st.booleans(),
)
def test_exactly_once_or_reported_fifo_per_producer(
    lt: LoopThread,
    *,
    maxsize: int,
    batch_size: int,
    producers: int,
    per_producer: int,
    fail_every: int,
    thread_source: bool,
) -> None:
    """Several producers write into one source: every item is handled or failed exactly
    once (the accounting says which), each producer's items in its order."""
    handed: list[tuple[int, int]] = []
    failed: list[tuple[int, int]] = []
    calls = 0

    def handler(batch: list[tuple[int, int]]) -> None:
        nonlocal calls
        calls += 1
        handed.extend(batch)
        if fail_every and calls % fail_every == 0:
            failed.extend(batch)
            raise ValueError("fails on purpose")

    source: Any = queue.Queue() if thread_source else SPAWN.SimpleQueue()
    with structlog.testing.capture_logs():
        ch = lt.channel_from(source, handler, maxsize=maxsize, batch_size=batch_size)

        def produce(p: int) -> None:
            for i in range(per_producer):
                source.put((p, i))

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ch.flush(timeout=10)
        ch.close(timeout=5)
    stats = ch.stats()
    total = producers * per_producer
    assert stats.put == total == stats.handled + stats.failed
    assert (stats.unhandled, stats.dropped, stats.depth) == (0, 0, 0)
    assert stats.failed == len(failed)
    assert sorted(handed) == sorted((p, i) for p in range(producers) for i in range(per_producer))
    for p in range(producers):
        mine = [i for q, i in handed if q == p]
        assert mine == list(range(per_producer)), f"producer {p}"
