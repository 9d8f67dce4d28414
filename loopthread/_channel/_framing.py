"""How the bytes read from a pipe or socket become messages, for ``lt.channel_from``.

A framer is fed whatever one ``os.read`` returned and gives back the complete frames in it,
keeping a partial one for the next read. Three framings:

* :class:`MultiprocessingFramer`: the wire format of ``multiprocessing.connection`` (what
  ``Connection.send``/``send_bytes`` and a ``multiprocessing.Queue``'s feeder thread write): a
  4-byte big-endian signed length and the payload, or ``-1`` and an 8-byte length for payloads
  over 2 GiB (Python 3.8+). Unchanged from 3.8 to 3.13;
* :class:`LinesFramer`: ``b"\\n"``-terminated lines (the newline is not part of the frame);
* :class:`ChunksFramer`: each read is one frame (a byte stream with no framing of its own).

Reading the bytes ourselves, instead of ``Connection.recv_bytes()`` per message, is what lets
the loop thread never block: ``recv_bytes`` waits for the rest of a message whose first bytes
are in the pipe (forever, if its writer was killed mid-message while this process holds a
write end, as the process that created a ``multiprocessing.Queue`` does), and costs a
``poll`` and two reads per message where one read here serves a whole batch.
"""

from __future__ import annotations

from typing import Any, Protocol

from loopthread._util import describe

__all__ = [
    "ChunksFramer",
    "Framer",
    "FramingError",
    "LinesFramer",
    "MultiprocessingFramer",
    "log_unreadable",
]


class FramingError(ValueError):
    """The stream does not follow its framing (a corrupt length header); ``frames`` holds the
    complete frames read before the corruption."""

    def __init__(self, message: str, frames: list[bytes]) -> None:
        super().__init__(message)
        self.frames = frames


class Framer(Protocol):
    """Bytes in, complete frames out."""

    def feed(self, data: bytes) -> list[bytes]:
        """Take one read's bytes; return the frames they complete, in order."""
        ...

    def needed(self) -> int | None:
        """Bytes still missing from the partial frame held: 0 at a frame boundary, None if
        unknown (a line not terminated yet)."""
        ...

    def take_rest(self) -> bytes:
        """Hand over (and forget) the bytes of a partial frame held; b"" if none."""
        ...


class _Buffered:
    """A framer that keeps the bytes of a partial frame between reads."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class MultiprocessingFramer(_Buffered):
    """``multiprocessing.connection`` framing: length header, then the payload."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        size_of = int.from_bytes
        end_of_buf = len(buf)
        view = memoryview(buf)
        try:
            while end_of_buf - pos >= 4:
                size = size_of(view[pos : pos + 4], "big", signed=True)
                header = 4
                if size == -1:
                    if end_of_buf - pos < 12:
                        break
                    size = size_of(view[pos + 4 : pos + 12], "big")
                    header = 12
                elif size < 0:
                    raise FramingError(
                        f"corrupt multiprocessing frame header (length {size}): the stream was "
                        "torn (two readers, or a writer that does not use Connection.send)",
                        frames,
                    )
                end = pos + header + size
                if end > end_of_buf:
                    break
                frames.append(bytes(view[pos + header : end]))
                pos = end
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return frames

    def needed(self) -> int | None:
        held = len(self._buf)
        if not held:
            return 0
        if held < 4:
            return 4 - held
        size = int.from_bytes(self._buf[:4], "big", signed=True)
        if size == -1:
            if held < 12:
                return 12 - held
            return 12 + int.from_bytes(self._buf[4:12], "big") - held
        return max(0, 4 + size - held)


class LinesFramer(_Buffered):
    """``b"\\n"``-terminated lines; each frame is one line without its newline."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        last = buf.rfind(b"\n")
        if last < 0:
            return []
        lines = bytes(buf[:last]).split(b"\n")
        del buf[: last + 1]
        return lines

    def needed(self) -> int | None:
        return 0 if not self._buf else None


class ChunksFramer:
    """No framing: every read is one frame."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        return [data]

    def needed(self) -> int | None:
        return 0

    def take_rest(self) -> bytes:
        return b""


def log_unreadable(
    channel: Any, limiter: Any, *, source: str, total: int, exc: BaseException | None, what: str
) -> None:
    """Log a message of ``source`` that could not be read (rate-limited by ``limiter``)."""
    suppressed = limiter.allow("source_unreadable")
    if suppressed is not None:
        channel._log(
            "channel.source_unreadable",
            level="error",
            source=source,
            unreadable_total=total,
            suppressed=suppressed,
            what=what,
            error=None if exc is None else describe(exc),
            exc_info=exc,
        )
