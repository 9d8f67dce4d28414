"""The package as it is installed: every module imports, and (under ``make test-wheel``) it is
the built wheel's copy in a fresh virtualenv that the tests import, not the source tree.

``make test-wheel`` sets ``LOOPTHREAD_TEST_INSTALLED`` to that virtualenv's directory and runs
these tests (and a subset of the suite) from a copy of ``tests/`` outside the repository.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import pkgutil
import sys
import sysconfig
from pathlib import Path

import pytest

import loopthread

INSTALLED = os.environ.get("LOOPTHREAD_TEST_INSTALLED")
wheel_only = pytest.mark.skipif(not INSTALLED, reason="only under make test-wheel")

#: Modules a user imports by name; the rest are found by walking the package.
PUBLIC = {
    "loopthread",
    "loopthread.logging",
    "loopthread.metrics",
    "loopthread.pytest_plugin",
    "loopthread.structlog",
    "loopthread.testing",
}


def walk() -> set[str]:
    """Every module of the installed package, subpackages included (``__main__`` aside)."""
    found = {
        m.name for m in pkgutil.walk_packages(loopthread.__path__, "loopthread.", onerror=print)
    }
    return {"loopthread"} | {m for m in found if not m.endswith(".__main__")}


def test_every_module_imports() -> None:
    """Each module of the package imports on its own (public ones and subpackages found)."""
    modules = walk()
    assert modules >= PUBLIC
    assert {"loopthread._core", "loopthread._channel", "loopthread._enrich"} <= modules
    for name in sorted(modules):
        importlib.import_module(name)


@wheel_only
def test_the_package_is_the_installed_wheel() -> None:
    """loopthread comes from the fresh virtualenv's site-packages, installed from a wheel."""
    assert INSTALLED is not None
    assert Path(sys.prefix).resolve() == Path(INSTALLED).resolve()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(loopthread.__file__).resolve().is_relative_to(purelib), loopthread.__file__
    dist = importlib.metadata.distribution("loopthread")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    assert "archive_info" in direct_url, direct_url  # a wheel file, not an editable checkout
    assert not (Path.cwd() / "loopthread").exists()  # nothing to shadow it where tests run


@wheel_only
def test_the_wheel_installed_every_module_it_lists() -> None:
    """The modules the wheel's RECORD lists are exactly the ones found by walking the package."""
    files = importlib.metadata.files("loopthread") or []
    recorded = set()
    for file in files:
        parts = file.with_suffix("").parts
        if file.suffix == ".py" and parts[0] == "loopthread" and parts[-1] != "__main__":
            recorded.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert recorded == walk()
    assert any(str(f) == "loopthread/py.typed" for f in files)


@wheel_only
def test_the_license_is_installed() -> None:
    """The wheel's LICENSE is in its .dist-info (metadata 2.4 ``licenses/``)."""
    dist = importlib.metadata.distribution("loopthread")
    assert "MIT License" in (dist.read_text("licenses/LICENSE") or "")
    assert dist.metadata["License-Expression"] == "MIT"
