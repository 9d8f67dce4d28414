"""LoopHandler's counters: written by any thread without a lock, read as sums.

Every thread that logs (and the loop thread, and the executor workers that write) counts into
its own :class:`Cell`, a plain object that only that thread writes: ``cell.emitted += 1`` is
one thread's read-modify-write of its own slot, correct with or without the GIL. Readers sum
the cells under a lock. (``itertools.count`` was used before: it has no accessor for its
value, so it was read by parsing its ``repr``, and neither its ``next()`` nor that read is
documented as safe without the GIL.)

A thread that exits leaves no cell behind: its cell lives in a ``threading.local``; when the
thread ends, the cell's token dies and a weakref callback notes it (a lock-free append: the
callback may run in a dying thread or in a forked child, where no lock may be waited for); the
next registration or read folds the cell into the totals of the dead, so a server that starts a
thread per connection does not grow the registry.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections import deque
from collections.abc import Callable

from loopthread._process import fork_safe_lock

__all__ = ["Cell", "Counts", "Totals"]

FIELDS = ("emitted", "dropped", "written_directly", "handler_errors", "rescued", "summaries")


class Cell:
    """One thread's counts. Only its own thread writes it."""

    __slots__ = (*FIELDS, "ctx", "levels")

    def __init__(self) -> None:
        # The context this thread's last queued record was given (shared by its next records
        # while the thread's variables stay the same); kept until the thread logs again.
        self.ctx: contextvars.Context | None = None
        self.emitted = 0
        self.dropped = 0
        self.written_directly = 0
        self.handler_errors = 0
        self.rescued = 0
        self.summaries = 0
        self.levels: dict[int, int] = {}  # records dropped by the overflow policy, by level


class Totals:
    """The sum of every cell (plain data)."""

    __slots__ = (*FIELDS, "levels")

    def __init__(self) -> None:
        self.emitted = 0
        self.dropped = 0
        self.written_directly = 0
        self.handler_errors = 0
        self.rescued = 0
        self.summaries = 0
        self.levels: dict[int, int] = {}

    def add(self, cell: Cell | Totals) -> None:
        """Add ``cell``'s counts to these."""
        self.emitted += cell.emitted
        self.dropped += cell.dropped
        self.written_directly += cell.written_directly
        self.handler_errors += cell.handler_errors
        self.rescued += cell.rescued
        self.summaries += cell.summaries
        for level, count in list(cell.levels.items()):
            self.levels[level] = self.levels.get(level, 0) + count


class _Token:
    """Lives in the thread's ``threading.local``; dies with the thread."""

    __slots__ = ("__weakref__", "cell")

    def __init__(self, cell: Cell) -> None:
        self.cell = cell


class Counts:
    """The cells of one LoopHandler: :meth:`cell` for the current thread, :meth:`totals`."""

    __slots__ = ("_dead", "_graves", "_live", "_lock", "local")

    def __init__(self) -> None:
        #: ``local.cell`` is the current thread's cell once :meth:`cell` made it.
        self.local = threading.local()
        self._lock = fork_safe_lock()
        self._live: dict[int, tuple[weakref.ref[_Token], Cell]] = {}
        self._dead = Totals()
        self._graves: deque[int] = deque()  # keys of cells whose thread ended

    def cell(self) -> Cell:
        """The current thread's cell (made on its first call in each thread)."""
        try:
            cell: Cell = self.local.cell
        except AttributeError:
            pass
        else:
            return cell
        cell = Cell()
        token = _Token(cell)
        key = id(token)
        ref = weakref.ref(token, self._folder(key))
        with self._lock:
            self._bury()
            self._live[key] = (ref, cell)
        self.local.token = token
        self.local.cell = cell
        return cell

    def _folder(self, key: int) -> Callable[[weakref.ref[_Token]], None]:
        graves = self._graves

        def fold(_: weakref.ref[_Token]) -> None:
            graves.append(key)

        return fold

    def _bury(self) -> None:
        # Under _lock.
        graves, live = self._graves, self._live
        while graves:
            entry = live.pop(graves.popleft(), None)
            if entry is not None:
                self._dead.add(entry[1])

    def totals(self) -> Totals:
        """The counts of every thread, alive or gone."""
        out = Totals()
        with self._lock:
            self._bury()
            out.add(self._dead)
            for _, cell in list(self._live.values()):
                out.add(cell)
        return out
