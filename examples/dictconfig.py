"""LoopHandler from logging.config.dictConfig: wrap handlers configured in the same dict.

The wrapped handlers are named in ``handler_names``; only the LoopHandler is attached to a
logger, so the file and the console are written on the loop thread's executor.

Run: python examples/dictconfig.py
"""

from __future__ import annotations

import logging
import logging.config
import tempfile
from pathlib import Path

import structlog

# loopthread reports its own lifecycle through structlog; show only its warnings here.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def config(logfile: Path) -> dict[str, object]:
    """The recipe: plain handlers, plus one LoopHandler that wraps them by name."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "plain",
            },
            "file": {"class": "logging.FileHandler", "filename": str(logfile), "level": "WARNING"},
            "background": {
                "()": "loopthread.logging.LoopHandler",
                "handler_names": ["console", "file"],
                "maxsize": 10_000,
                "overflow": "block",
            },
        },
        "root": {"level": "INFO", "handlers": ["background"]},
    }


def main() -> None:
    """Configure, log, flush, and show what reached the console and the file."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = Path(tmp) / "app.log"
        logging.config.dictConfig(config(logfile))
        log = logging.getLogger("app")
        log.info("configured from a dict")
        log.warning("disk at %d%%", 91)
        logging.getLogger().handlers[0].flush()
        print(f"the file got {len(logfile.read_text().splitlines())} line(s) (WARNING and up)")
        logging.shutdown()  # closes the file handler before the directory goes


if __name__ == "__main__":
    main()
