"""The program that test_exit.py runs in a subprocess: producers feed loopthread, then it exits.

Usage: ``python _exit_child.py MODE OUTDIR N``. Three producer threads each put items into a
channel, report events to an EventBus and log lines through a LoopHandler (to a FileHandler),
all on ``loopthread.default()``. Whatever loopthread accepted is tallied by the producers in
``OUTDIR/accepted``; the handlers write what they handled to ``OUTDIR/handled`` and the log
file ``OUTDIR/log``. The parent compares the two after the exit. Modes:

* ``normal``: producers put N items each, main joins them and returns.
* ``worker_sys_exit``: as normal, plus a worker that puts N items and calls ``sys.exit(3)``.
* ``main_raises``: main raises while the producers are still running (they are non-daemon
  threads, so Python waits for them before exiting).
* ``sigterm``: ``install_signal_handlers()``; producers run until told to halt; one of them
  sends SIGTERM to the process after N items; main, waiting, gets ``SystemExit(143)``, tells
  the producers to halt and unwinds.

Everything is written with ``os.write`` on ``O_APPEND`` descriptors (one write per line), so
nothing depends on buffers being flushed at exit.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import Any

import loopthread
from loopthread.logging import LoopHandler

# A hang dumps every thread's stack to stderr and exits before the parent's bound, so the
# failure shows where it stood (one CI run of the sigterm mode did not exit within 60 s: the
# main thread's unbounded wait had slept through the signal, see below).
faulthandler.dump_traceback_later(45, exit=True)

# loopthread's own events (loop_thread.stopped with its report) on stdout, as a user shows them.
_events = logging.getLogger("loopthread")
_events.setLevel(logging.DEBUG)
_events.addHandler(logging.StreamHandler(sys.stdout))

mode, outdir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
accepted_fd = os.open(os.path.join(outdir, "accepted"), flags)
handled_fd = os.open(os.path.join(outdir, "handled"), flags)

if mode == "sigterm":
    loopthread.install_signal_handlers()

log = logging.getLogger("exit-child")
log.setLevel(logging.INFO)
log.propagate = False
file_handler = logging.FileHandler(os.path.join(outdir, "log"))
file_handler.setFormatter(logging.Formatter("%(message)s"))
log.addHandler(LoopHandler(file_handler))


async def on_batch(batch: list[Any]) -> None:
    os.write(handled_fd, f"channel {len(batch)}\n".encode())


def on_event(event: dict[str, Any]) -> None:
    os.write(handled_fd, b"bus 1\n")


channel = loopthread.default().channel(on_batch, maxsize=1000, batch_size=64)
bus = loopthread.EventBus(maxsize=1000)
bus.on("step", on_event)
halt = threading.Event()
sent_sigterm = threading.Event()


def produce(index: int, count: int | None) -> None:
    """Feed all three paths; tally what loopthread accepted, once, at the end."""
    reporter = bus.reporter()
    items = events = lines = 0
    i = 0
    try:
        while (count is None or i < count) and not halt.is_set():
            try:
                items += channel.put((index, i))
                events += reporter.report("step", {"i": i})
            except loopthread.ChannelClosedError:
                break  # the loop stopped (the exit began): nothing more is accepted
            log.info("producer %d line %d", index, i)
            lines += 1
            i += 1
            if mode == "sigterm" and index == 0 and i == n and not sent_sigterm.is_set():
                sent_sigterm.set()
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        os.write(accepted_fd, f"channel {items}\nbus {events}\nlog {lines}\n".encode())


def worker_that_exits() -> None:
    produce(99, n)
    sys.exit(3)  # ends this thread only


producers = [
    threading.Thread(target=produce, args=(p, None if mode == "sigterm" else n)) for p in range(3)
]
for t in producers:
    t.start()
if mode == "worker_sys_exit":
    exiting = threading.Thread(target=worker_that_exits)
    exiting.start()
    exiting.join()
if mode == "main_raises":
    raise RuntimeError("main failed while producers were running")
if mode == "sigterm":
    try:
        # SIGTERM ends this wait with SystemExit(143). In slices: CPython runs a Python-level
        # signal handler only when the main thread passes through the eval loop, and a signal
        # whose C handler ran just before this thread parked in the lock's wait does not wake
        # it (no EINTR): an unbounded wait() could then sleep through the SIGTERM for ever
        # (one CI run hung here for 60 s). loopthread's own waits in the main thread are
        # sliced the same way (loopthread._util.MAIN_SLICE).
        while True:
            halt.wait(0.05)
    finally:
        halt.set()
for t in producers:
    t.join()
print("main returns", flush=True)
