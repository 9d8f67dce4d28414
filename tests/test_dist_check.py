"""The checks ``make dist`` runs on the built archives find what they are meant to find.

Each case builds a small wheel or sdist by hand (from the source tree's own files), breaks one
thing, and expects the checker to name it; the unbroken archives pass.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("trove_classifiers", reason="the dist extra (make dist) is not installed")

from tests import _dist_check
from tests._dist_check import ROOT, check_sdist, check_wheel, package_files

INFO = "loopthread-0.1.0.dist-info"
METADATA = """\
Metadata-Version: 2.4
Name: loopthread
Version: 0.1.0
License-Expression: MIT
License-File: LICENSE
Project-URL: Homepage, https://github.com/loopthread/loopthread
Project-URL: Documentation, https://github.com/loopthread/loopthread#readme
Project-URL: Changelog, https://github.com/loopthread/loopthread/blob/main/CHANGELOG.md
Project-URL: Issues, https://github.com/loopthread/loopthread/issues
Classifier: Framework :: AsyncIO
Classifier: Typing :: Typed
Requires-Python: >=3.11
"""
ENTRY_POINTS = "[pytest11]\nloopthread = loopthread.pytest_plugin\n"


def wheel_members() -> dict[str, bytes]:
    """What a good wheel holds."""
    members = {name: (ROOT / name).read_bytes() for name in package_files()}
    members[f"{INFO}/licenses/LICENSE"] = (ROOT / "LICENSE").read_bytes()
    members[f"{INFO}/METADATA"] = METADATA.encode()
    members[f"{INFO}/entry_points.txt"] = ENTRY_POINTS.encode()
    return members


def write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {"loopthread-0.1.0/": b"", **members}.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def sdist_members() -> dict[str, bytes]:
    """What a good sdist holds (under its top directory)."""
    names = set(package_files()) | {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"}
    for tree in ("tests", "examples", "docs"):
        names |= {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / tree).rglob("*.py")
            if "__pycache__" not in p.parts
        }
    members = {f"loopthread-0.1.0/{n}": (ROOT / n).read_bytes() for n in sorted(names)}
    members["loopthread-0.1.0/PKG-INFO"] = METADATA.encode()
    return members


def test_a_good_wheel_and_sdist_pass(tmp_path: Path) -> None:
    """Both archives as `make dist` should build them: no problem reported."""
    assert check_wheel(write_wheel(tmp_path / "good.whl", wheel_members())) == []
    assert check_sdist(write_sdist(tmp_path / "good.tar.gz", sdist_members())) == []


def test_the_package_files_include_subpackages_and_py_typed() -> None:
    """What the wheel must hold is found in the tree, subpackages included."""
    files = package_files()
    assert {"loopthread/py.typed", "loopthread/pytest_plugin.py"} <= files
    assert {"loopthread/_core/_loop.py", "loopthread/_channel/_api.py"} <= files
    assert "loopthread/_enrich/__init__.py" in files


@pytest.mark.parametrize(
    ("drop", "problem"),
    [
        ("loopthread/py.typed", "loopthread/py.typed is missing"),
        ("loopthread/_core/_call.py", "loopthread/_core/_call.py is missing"),
        (f"{INFO}/licenses/LICENSE", f"{INFO}/licenses/LICENSE is missing"),
        (f"{INFO}/entry_points.txt", "the pytest11 entry point"),
    ],
)
def test_a_file_left_out_of_the_wheel_is_named(tmp_path: Path, drop: str, problem: str) -> None:
    """A missing module, py.typed, LICENSE or entry point: reported by name."""
    members = wheel_members()
    del members[drop]
    problems = check_wheel(write_wheel(tmp_path / "broken.whl", members))
    assert any(problem in p for p in problems), problems


def test_files_outside_the_package_are_refused(tmp_path: Path) -> None:
    """The test suite (or anything else) leaking into the wheel is reported."""
    members = wheel_members() | {"tests/conftest.py": b""}
    problems = check_wheel(write_wheel(tmp_path / "extra.whl", members))
    assert problems == ["extra.whl: tests/conftest.py is not part of the package"]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (("License-Expression: MIT", "License-Expression: BSD"), "License-Expression is 'BSD'"),
        (("Project-URL: Issues, https", "Project-URL: Bugs, https"), "'Issues' is missing"),
        (
            ("Classifier: Typing :: Typed", "Classifier: Typing :: Typo"),
            "'Typing :: Typo' is not a known trove classifier",
        ),
        (
            ("Classifier: Typing :: Typed", "Classifier: License :: OSI Approved :: MIT License"),
            "the license goes in License-Expression only",
        ),
    ],
)
def test_metadata_problems_are_named(tmp_path: Path, edit: tuple[str, str], problem: str) -> None:
    """Wrong license, a missing URL, an unknown or a license classifier: reported."""
    members = wheel_members()
    members[f"{INFO}/METADATA"] = METADATA.replace(*edit).encode()
    problems = check_wheel(write_wheel(tmp_path / "meta.whl", members))
    assert any(problem in p for p in problems), problems


def test_an_incomplete_sdist_is_named(tmp_path: Path) -> None:
    """An sdist without LICENSE or a test file, or with bytecode in it: each is reported."""
    members = sdist_members()
    del members["loopthread-0.1.0/LICENSE"]
    del members["loopthread-0.1.0/tests/conftest.py"]
    members["loopthread-0.1.0/loopthread/__pycache__/x.cpython-311.pyc"] = b""
    problems = check_sdist(write_sdist(tmp_path / "bad.tar.gz", members))
    assert problems == [
        "bad.tar.gz: LICENSE is missing",
        "bad.tar.gz: tests/conftest.py is missing",
        "bad.tar.gz: loopthread/__pycache__/x.cpython-311.pyc should not be shipped",
    ]


def test_main_wants_exactly_one_wheel_and_one_sdist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty dist directory is an error, not a pass."""
    assert _dist_check.main([str(tmp_path)]) == 1
    assert "expected one wheel and one sdist" in capsys.readouterr().out
