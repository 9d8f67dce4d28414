"""The public surface: __all__ is exactly what the package exports, and it is typed."""

from __future__ import annotations

import importlib.resources
import types

import loopthread


def test_all_matches_public_names() -> None:
    """Every public name is in __all__, and everything in __all__ exists."""
    public = {
        name
        for name, value in vars(loopthread).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(loopthread.__all__) == public
    assert sorted(loopthread.__all__) == loopthread.__all__


def test_py_typed_shipped() -> None:
    """The package ships py.typed for type checkers."""
    assert importlib.resources.files("loopthread").joinpath("py.typed").is_file()


def test_exceptions_subclass_builtins() -> None:
    """loopthread's errors are RuntimeErrors, so existing handlers keep catching them."""
    for name in (
        "LoopThreadError",
        "LoopNotRunningError",
        "WouldDeadlockError",
        "ChannelFullError",
        "ChannelClosedError",
    ):
        assert issubclass(getattr(loopthread, name), RuntimeError)
        assert issubclass(getattr(loopthread, name), loopthread.LoopThreadError)
