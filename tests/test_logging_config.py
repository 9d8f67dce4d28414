"""LoopHandler configuration (issue 12, items 7 and 8): enrichers from dictConfig (``ext://``
strings, per-enricher options), ``handler_names`` checked at configuration and resolved under a
lock, stable metrics labels, and a wrapped handler's RuntimeError costing one record only."""

from __future__ import annotations

import asyncio
import inspect
import logging
import logging.config
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import loopthread
from loopthread import LoopThread, testing
from loopthread.logging import LoopHandler


async def add_region(event: Mapping[str, Any]) -> dict[str, Any]:
    """An enricher named by ``ext://tests.test_logging_config.add_region``."""
    await asyncio.sleep(0)
    return {"region": "eu-west"}


async def add_zone(event: Mapping[str, Any]) -> dict[str, Any]:
    """Another one, given with its own options."""
    return {"zone": "b"}


@pytest.fixture(name="configured")
def fixture_configured() -> Iterator[list[logging.Logger]]:
    """Loggers the test configures (on a fresh default loop); their handlers (and the wrapped
    ones) closed afterwards."""
    testing.reset_default()
    loggers: list[logging.Logger] = []
    yield loggers
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    logging.shutdown()  # closes the wrapped FileHandlers that dictConfig created
    testing.reset_default()


def _chains() -> list[Any]:
    return [c for c in testing.components(loopthread.default()) if hasattr(c, "enrich")]


def _config(
    tmp_path: Path, loop: dict[str, Any], logger: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s %(region)s %(zone)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(tmp_path / "app.log"),
                "formatter": "plain",
            },
            "loop": {"()": "loopthread.logging.LoopHandler", **loop},
            **(extra or {}),
        },
        "loggers": {logger: {"handlers": ["loop"], "level": "INFO", "propagate": False}},
    }


def test_dictconfig_enrichers_by_ext_name_and_with_options(
    tmp_path: Path, configured: list[logging.Logger]
) -> None:
    """``"enrichers": ["ext://pkg.fn", {"fn": "ext://pkg.fn2", "timeout": 0.5, "name": ...}]``
    works from dictConfig (the ConvertingList used to be iterated unconverted: TypeError)."""
    name = "test.logcfg.ext"
    logging.config.dictConfig(
        _config(
            tmp_path,
            {
                "handler_names": ["file"],
                "enrichers": [
                    "ext://tests.test_logging_config.add_region",
                    {
                        "fn": "ext://tests.test_logging_config.add_zone",
                        "timeout": 0.5,
                        "name": "zone-lookup",
                    },
                ],
            },
            name,
        )
    )
    logger = logging.getLogger(name)
    configured.append(logger)
    logger.info("hello")
    (handler,) = logger.handlers
    handler.flush()
    assert (tmp_path / "app.log").read_text() == "hello eu-west b\n"
    (chain,) = _chains()
    assert chain.name == "logging:loop"
    zone = {e.name: e for e in chain.stats().enrichers}["zone-lookup"]
    assert zone.calls == 1


def test_enricher_max_concurrency_is_passed_through_or_refused_clearly(
    tmp_path: Path, configured: list[logging.Logger]
) -> None:
    """``max_concurrency`` per enricher: given to the chain when its enrichers support it;
    otherwise dictConfig fails saying so (never silently ignored)."""
    entry = {"fn": "ext://tests.test_logging_config.add_zone", "max_concurrency": 4}
    config = _config(tmp_path, {"handler_names": ["file"], "enrichers": [entry]}, "test.logcfg.mc")
    if "max_concurrency" in inspect.signature(loopthread.enricher).parameters:
        logging.config.dictConfig(config)
        logger = logging.getLogger("test.logcfg.mc")
        configured.append(logger)
        logger.info("hello")
        logger.handlers[0].flush()
        (chain,) = _chains()
        (stats,) = chain.stats().enrichers
        assert getattr(stats, "max_concurrency", None) == 4
    else:
        with pytest.raises(ValueError, match="Unable to configure handler 'loop'") as caught:
            logging.config.dictConfig(config)
        assert "max_concurrency is not supported" in str(caught.value.__cause__)


def test_enricher_options_bad_input_fails_at_configuration() -> None:
    """An enricher dict with an unknown key or no 'fn', or a dotted name without ext://,
    fails at construction saying what to write instead."""
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'timout'"):
        LoopHandler(enrichers=[{"fn": add_zone, "timout": 1}])
    with pytest.raises(ValueError, match="without 'fn'"):
        LoopHandler(enrichers=[{"timeout": 1}])
    with pytest.raises(TypeError, match=r"write 'ext://myapp\.lookup'"):
        LoopHandler(enrichers=["myapp.lookup"])
    with pytest.raises(TypeError, match=r"converted by logging\.config\.dictConfig only"):
        LoopHandler(enrichers=["ext://myapp.lookup"])


def test_a_misspelt_handler_name_fails_at_configuration_with_the_names_that_exist(
    tmp_path: Path,
) -> None:
    """``handler_names: ["fiel"]`` makes dictConfig raise, naming the handlers that exist (it
    used to be accepted, then 1,000 of 1,005 records went nowhere with handler_errors=0)."""
    config = _config(tmp_path, {"handler_names": ["fiel"]}, "test.logcfg.typo")
    with pytest.raises(ValueError, match="Unable to configure handler 'loop'") as caught:
        logging.config.dictConfig(config)
    cause = str(caught.value.__cause__)
    assert "no logging handler named 'fiel'" in cause
    assert "'file'" in cause
    logging.shutdown()


def test_a_handler_name_that_is_not_a_string_fails_at_configuration(tmp_path: Path) -> None:
    """``handler_names: [3]`` is a TypeError at configuration; so is naming itself."""
    with pytest.raises(ValueError, match="Unable to configure handler 'loop'") as caught:
        logging.config.dictConfig(_config(tmp_path, {"handler_names": [3]}, "test.logcfg.int"))
    assert "handler_names[0] must be the name of a handler" in str(caught.value.__cause__)
    with pytest.raises(ValueError, match="Unable to configure handler 'loop'") as caught:
        logging.config.dictConfig(
            _config(tmp_path, {"handler_names": ["loop"]}, "test.logcfg.self")
        )
    assert "names itself" in str(caught.value.__cause__)
    logging.shutdown()


def test_names_resolved_once_under_a_lock_no_record_misses_a_handler(tmp_path: Path) -> None:
    """Names dictConfig builds after the LoopHandler are resolved at the first record. With
    its loop stopped, 8 threads write their first records directly at the same moment: each
    record reaches both named handlers (without the lock, a thread could see the list half
    built and write to one of them only)."""
    stopped = LoopThread("stopped-for-names").start()
    stopped.stop()
    holder: dict[str, LoopHandler] = {}

    def build(**options: Any) -> LoopHandler:
        handler = LoopHandler(loop_thread=stopped, **options)
        holder["handler"] = handler
        return handler

    globals()["_build_for_names_test"] = build
    lost = 0
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over every microsecond: races show
    try:
        for round_ in range(100):
            lost += _race_first_records(holder)
            assert holder["handler"].stats().written_directly == 8, round_
            holder["handler"].close()
    finally:
        sys.setswitchinterval(switch)
        globals().pop("_build_for_names_test", None)
        globals().pop("_Counting", None)
        logging.shutdown()
    assert lost == 0


def _race_first_records(holder: dict[str, LoopHandler]) -> int:
    """One dictConfig, then 8 threads' first records at once; how many writes were missed."""
    counts = {"b_first": 0, "c_second": 0}
    lock = threading.Lock()

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with lock:
                counts[self.get_name()] += 1

    globals()["_Counting"] = Counting
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "a_loop": {
                    "()": "tests.test_logging_config._build_for_names_test",
                    "handler_names": ["b_first", "c_second"],
                },
                "b_first": {"()": "tests.test_logging_config._Counting"},
                "c_second": {"()": "tests.test_logging_config._Counting"},
            },
        }
    )
    handler = holder["handler"]
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        handler.handle(logging.makeLogRecord({"msg": "first", "levelno": 20}))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (8 - counts["b_first"]) + (8 - counts["c_second"])


def test_a_handler_built_in_code_has_a_stable_metrics_label(lt: LoopThread) -> None:
    """Its channel and chain are labelled "logging:" + its name, or else the wrapped handlers'
    class names: the same in every process (it was "logging:<id>", a new series each run)."""

    class Audit(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

    unnamed = LoopHandler(logging.StreamHandler(), Audit(), enrichers=[add_zone], loop_thread=lt)
    named = LoopHandler(Audit(), loop_thread=lt, name="audit")
    log = logging.getLogger(f"test.logcfg.label.{id(lt)}")
    log.propagate = False
    log.addHandler(unnamed)
    log.addHandler(named)
    try:
        log.critical("label me")  # StreamHandler writes to stderr: pytest captures it
        for handler in (unnamed, named):
            handler.flush()
        unnamed_channel, named_channel = unnamed.stats().channel, named.stats().channel
        assert unnamed_channel is not None
        assert named_channel is not None
        assert unnamed_channel.name == "logging:StreamHandler+Audit"
        assert named_channel.name == "logging:audit"
        chains = [c.name for c in testing.components(lt) if hasattr(c, "enrich")]
        assert chains == ["logging:StreamHandler+Audit"]
    finally:
        for handler in (unnamed, named):
            log.removeHandler(handler)
            handler.close()


def test_a_runtime_error_from_a_wrapped_handler_costs_one_record(lt: LoopThread) -> None:
    """A wrapped handler's filter that raises RuntimeError on one record of a batch: the
    records before it are written once (the whole batch used to be written again on the loop
    thread), the ones after it are written too (they used to be lost), and one failure is
    counted."""
    written: list[str] = []
    gate = threading.Event()
    entered = threading.Event()

    class Picky(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "hold":
                entered.set()
                gate.wait(5)
                return
            written.append(record.getMessage())

    def refuse(record: logging.LogRecord) -> bool:
        if record.getMessage() == "bad":
            raise RuntimeError("filter broke")
        return True

    target = Picky()
    target.addFilter(refuse)
    handler = LoopHandler(target, loop_thread=lt)
    log = logging.getLogger(f"test.logcfg.runtime.{id(lt)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    try:
        log.info("hold")
        assert entered.wait(5)
        for message in ("a", "bad", "b", "c"):
            log.info(message)  # queued behind "hold": one batch
        gate.set()
        handler.flush()
    finally:
        log.removeHandler(handler)
        handler.close()
    assert written == ["a", "b", "c"]
    assert handler.stats().handler_errors == 1


def test_a_handler_that_failed_to_build_leaves_nothing_for_logging_shutdown() -> None:
    """Bad arguments raise before the handler registers with logging: ``logging.shutdown()``
    (what runs at exit) does not meet a half-built LoopHandler while the error's traceback
    (which holds it) is still around (it raised AttributeError)."""
    with pytest.raises(ValueError, match="maxsize") as bad_size:
        LoopHandler(maxsize=0)
    with pytest.raises(TypeError, match="not callable") as bad_enricher:
        LoopHandler(enrichers=[3])
    logging.shutdown()  # raises if a half-built handler is in logging's list
    assert bad_size.value is not None
    assert bad_enricher.value is not None
