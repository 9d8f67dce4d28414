"""What ``lt.channel_from`` can read, and how each kind of source is read.

* ``multiprocessing.Queue``, ``SimpleQueue``: read by the loop (its pipe's fd); items are
  the unpickled objects;
* ``multiprocessing.connection.Connection``: read by the loop (its fd); items as ``recv()``
  returns them;
* ``socket.socket``, an ``int`` fd, an object with ``fileno()`` (pipe, FIFO, tty): read by the
  loop; items are ``bytes``, one per read (``framing="chunks"``) or per line (``"lines"``);
* an object with a blocking ``get()`` and a ``put()`` (``queue.Queue``, a manager's queue
  proxy): read by a thread blocked in ``get()``; items are the objects themselves.

``decode`` (bytes -> item) replaces ``pickle.loads`` for the first two kinds and is applied to
each frame for the third. On a loop that cannot watch fds (``add_reader`` not implemented:
Windows' proactor loop), a ``multiprocessing`` queue is read by a thread in ``get()`` like a
``queue.Queue``; the fd kinds are refused there, with what to do instead.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing import queues as mp_queues
from typing import TYPE_CHECKING, Any

from loopthread._channel._framing import ChunksFramer, LinesFramer, MultiprocessingFramer
from loopthread._channel._source_fd import FdReader
from loopthread._channel._source_pump import QueuePump

if TYPE_CHECKING:
    from loopthread._channel._source import Reader, SourceChannel


__all__ = ["FRAMINGS", "Plan", "plan_for"]

FRAMINGS = ("chunks", "lines")

#: What a queue's get() raises once the source is gone for good.
_SHUTDOWN = getattr(queue, "ShutDown", None)  # Python 3.13+: Queue.shutdown()
_QUEUE_ENDS: tuple[type[BaseException], ...] = (_SHUTDOWN,) if _SHUTDOWN is not None else ()
_MP_ENDS: tuple[type[BaseException], ...] = (EOFError, OSError)


@dataclass(frozen=True, slots=True)
class Plan:
    """How to read one source: on the loop (``fd`` given) or by a thread, and the fallback."""

    kind: str
    fd: int | None
    primary: Callable[[SourceChannel[Any]], Reader]
    fallback: Callable[[SourceChannel[Any]], Reader] | None = None


def plan_for(source: object, framing: str | None, decode: object) -> Plan:
    """Check ``source``, ``framing`` and ``decode``; say how the source will be read.

    Raises:
        TypeError: a source of no known kind, or options that do not apply to it.
        ValueError: a closed source, a write end, or a regular file.
    """
    if decode is not None and not callable(decode):
        raise TypeError(
            f"decode must be a callable taking bytes (such as json.loads); got {decode!r}."
        )
    if isinstance(source, mp_queues.JoinableQueue):
        raise TypeError(
            "lt.channel_from() does not read a multiprocessing.JoinableQueue: its task_done() "
            "takes a lock that other processes hold, which the loop thread must not wait for. "
            "Use a multiprocessing.Queue (and flush() the channel instead of join())."
        )
    if isinstance(source, mp_queues.Queue | mp_queues.SimpleQueue):
        return _mp_queue(source, framing, decode)
    if isinstance(source, mp_connection.Connection):
        return _connection(source, framing, decode)
    if isinstance(source, asyncio.Queue):
        raise TypeError(
            "an asyncio.Queue lives on an event loop already: read it in a task "
            "(while True: item = await q.get()), not with lt.channel_from()."
        )
    get, put = getattr(source, "get", None), getattr(source, "put", None)
    if callable(get) and callable(put):
        if framing is not None or decode is not None:
            raise TypeError(
                f"framing= and decode= apply to byte streams (pipes, sockets); the items of "
                f"{type(source).__name__} are objects already. Leave them out."
            )
        return Plan(
            "queue", None, lambda ch: QueuePump(ch, kind="queue", source=source, ends=_QUEUE_ENDS)
        )
    if isinstance(source, int) or callable(getattr(source, "fileno", None)):
        return _stream(source, framing, decode)
    raise TypeError(
        "lt.channel_from() reads a multiprocessing.Queue or SimpleQueue, a "
        "multiprocessing.connection.Connection, a pipe or socket (an int fd or an object with "
        "fileno()), or a queue.Queue-like object (blocking get() and put()); got "
        f"{type(source).__name__} {source!r}."
    )


def _no_framing(framing: str | None, kind: str) -> None:
    if framing is not None:
        raise TypeError(
            f"framing= applies to raw pipes and sockets; a {kind} has its own (length-prefixed "
            "pickles). Leave it out (decode= replaces pickle.loads)."
        )


def _fileno(source: Any, kind: str) -> int:
    try:
        return int(source.fileno())
    except (OSError, ValueError) as exc:
        raise ValueError(f"the {kind} is closed ({exc}); pass an open one.") from exc


def _mp_queue(source: Any, framing: str | None, decode: object) -> Plan:
    kind = f"multiprocessing.{type(source).__name__}"
    if not isinstance(source, mp_queues.SimpleQueue) and getattr(source, "_closed", False):
        raise ValueError(f"the {kind} was closed in this process; pass an open one.")
    _no_framing(framing, kind)
    fd = _fileno(source._reader, kind)
    loads: Any = decode or pickle.loads

    def primary(ch: SourceChannel[Any]) -> Reader:
        return FdReader(
            ch,
            kind=kind,
            fd=fd,
            framer=MultiprocessingFramer(),
            decode=loads,
            lock=source._rlock,
            sem=getattr(source, "_sem", None),
        )

    def fallback(ch: SourceChannel[Any]) -> Reader:
        return QueuePump(ch, kind=kind, source=source, ends=_MP_ENDS)

    return Plan(kind, fd, primary, None if decode is not None else fallback)


def _connection(source: mp_connection.Connection, framing: str | None, decode: object) -> Plan:
    kind = "multiprocessing.connection.Connection"
    _no_framing(framing, kind)
    if source.closed:
        raise ValueError(f"the {kind} is closed; pass an open one.")
    if not source.readable:
        raise ValueError(
            f"the {kind} is a write end: pass the reader (Pipe(duplex=False) returns "
            "(reader, writer))."
        )
    fd = _fileno(source, kind)
    loads: Any = decode or pickle.loads
    return Plan(
        kind,
        fd,
        lambda ch: FdReader(
            ch,
            kind=kind,
            fd=fd,
            framer=MultiprocessingFramer(),
            decode=loads,
            is_closed=lambda: source.closed,
        ),
    )


def _stream(source: Any, framing: str | None, decode: object) -> Plan:
    framing = "chunks" if framing is None else framing
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}; got {framing!r}.")
    kind = "socket" if isinstance(source, socket.socket) else "fd"
    if type(source).__name__ == "SSLSocket":
        raise TypeError(
            "an ssl.SSLSocket carries encrypted bytes and buffers decrypted ones in Python: "
            "read it with asyncio streams (asyncio.open_connection(ssl=...)) instead."
        )
    if isinstance(source, socket.socket) and source.type == socket.SOCK_DGRAM:
        raise TypeError(
            "a datagram (UDP) socket has no stream to frame, and an empty datagram would read "
            "as EOF: read it with loop.create_datagram_endpoint() and put() each datagram "
            "into a channel."
        )
    fd = source if isinstance(source, int) else _fileno(source, kind)
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ValueError(f"fd {fd} is not open ({exc}); pass an open pipe or socket.") from exc
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        raise ValueError(
            f"fd {fd} is a regular file, which is always readable: there is nothing to wait "
            "for. lt.channel_from() reads pipes, FIFOs and sockets; read a file directly."
        )
    lines = framing == "lines"
    is_closed = _closed_check(source, fd, mode)
    return Plan(
        kind,
        fd,
        lambda ch: FdReader(
            ch,
            kind=kind,
            fd=fd,
            framer=LinesFramer() if lines else ChunksFramer(),
            decode=decode,  # type: ignore[arg-type]
            rest_is_frame=lines,
            is_closed=is_closed,
        ),
    )


def _closed_check(source: Any, fd: int, mode: int) -> Callable[[], bool]:
    """Whether the user closed the source: its fileno() changed or fails (a socket's is -1);
    for an int fd, that the number no longer names the same file (closed, or reused)."""
    if not isinstance(source, int):

        def fileno_changed() -> bool:
            try:
                return bool(getattr(source, "closed", False)) or int(source.fileno()) != fd
            except (OSError, ValueError):
                return True

        return fileno_changed
    first = os.fstat(fd)
    ident = (first.st_dev, first.st_ino, mode)

    def fd_changed() -> bool:
        try:
            now = os.fstat(fd)
        except OSError:
            return True
        return (now.st_dev, now.st_ino, now.st_mode) != ident

    return fd_changed
