"""What ``make dist`` checks in the built sdist and wheel, beyond ``twine check``.

``python -m tests._dist_check dist/`` (from the repository root) prints every problem found and
exits 1 if there is one. The wheel must hold every module of ``loopthread/`` (subpackages
included), ``py.typed`` and the LICENSE, and nothing else; its metadata must carry the license
expression, the project URLs, classifiers PyPI accepts and the pytest plugin's entry point. The
sdist must hold the same modules plus what building and testing it needs.
"""

from __future__ import annotations

import email.parser
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "loopthread"
URLS = ("Homepage", "Documentation", "Changelog", "Issues")
ENTRY_POINT = "loopthread = loopthread.pytest_plugin"
SDIST_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO")
SDIST_TREES = ("tests", "examples", "docs")


def package_files(root: Path = ROOT) -> set[str]:
    """The files the package is made of in the source tree: its modules and ``py.typed``."""
    base = root / PACKAGE
    found = {p.relative_to(root).as_posix() for p in base.rglob("*.py")}
    return {f for f in found if "__pycache__" not in f} | {f"{PACKAGE}/py.typed"}


def check_wheel(wheel: Path, root: Path = ROOT) -> list[str]:
    """Problems with the wheel at ``wheel`` (an empty list when there is none)."""
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        infos = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
        if len(infos) != 1:
            return [f"{wheel.name}: expected one .dist-info directory, found {sorted(infos)}"]
        info = infos.pop()
        expected = package_files(root)
        problems += [f"{wheel.name}: {n} is missing" for n in sorted(expected - names)]
        extra = {n for n in names - expected if not n.startswith(f"{info}/")}
        problems += [f"{wheel.name}: {n} is not part of the package" for n in sorted(extra)]
        license_file = f"{info}/licenses/LICENSE"
        if license_file not in names:
            problems.append(f"{wheel.name}: {license_file} is missing")
        elif archive.read(license_file) != (root / "LICENSE").read_bytes():
            problems.append(f"{wheel.name}: {license_file} differs from LICENSE")
        metadata = _parse(archive.read(f"{info}/METADATA").decode())
        problems += [f"{wheel.name}: {p}" for p in check_metadata(metadata)]
        entry_points = (
            archive.read(f"{info}/entry_points.txt").decode()
            if f"{info}/entry_points.txt" in names
            else ""
        )
        if "[pytest11]" not in entry_points or ENTRY_POINT not in entry_points:
            problems.append(f"{wheel.name}: the pytest11 entry point {ENTRY_POINT!r} is missing")
    return problems


def check_metadata(metadata: Message) -> list[str]:
    """Problems with a wheel's METADATA or an sdist's PKG-INFO."""
    from trove_classifiers import classifiers as known

    problems: list[str] = []
    if metadata.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {metadata.get('License-Expression')!r}")
    if "LICENSE" not in (metadata.get_all("License-File") or []):
        problems.append("License-File: LICENSE is missing")
    urls = {u.split(",", 1)[0].strip() for u in metadata.get_all("Project-URL") or []}
    problems += [f"Project-URL {u!r} is missing" for u in URLS if u not in urls]
    classifiers = metadata.get_all("Classifier") or []
    problems += [f"classifier {c!r} is not a known trove classifier" for c in classifiers
                 if c not in known]  # fmt: skip
    problems += [
        f"classifier {c!r}: the license goes in License-Expression only"
        for c in classifiers
        if c.startswith("License ::")
    ]
    if not metadata.get("Requires-Python"):
        problems.append("Requires-Python is missing")
    return problems


def check_sdist(sdist: Path, root: Path = ROOT) -> list[str]:
    """Problems with the sdist at ``sdist``."""
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
        top = members[0].split("/", 1)[0]
        names = {m.split("/", 1)[1] for m in members if "/" in m}
        pkg_info = archive.extractfile(f"{top}/PKG-INFO")
        metadata = _parse(pkg_info.read().decode()) if pkg_info is not None else Message()
    problems = [f"{sdist.name}: {n} is missing" for n in sorted(package_files(root) - names)]
    problems += [f"{sdist.name}: {n} is missing" for n in SDIST_FILES if n not in names]
    for tree in SDIST_TREES:
        wanted = {p.relative_to(root).as_posix() for p in (root / tree).rglob("*.py")}
        wanted = {w for w in wanted if "__pycache__" not in w}
        problems += [f"{sdist.name}: {n} is missing" for n in sorted(wanted - names)]
    problems += [f"{sdist.name}: {n} should not be shipped" for n in sorted(names)
                 if "__pycache__" in n or n.endswith(".pyc")]  # fmt: skip
    problems += [f"{sdist.name}: {p}" for p in check_metadata(metadata)]
    return problems


def _parse(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


def main(argv: list[str]) -> int:
    """Check the one wheel and the one sdist in the directory ``argv[0]``."""
    dist = Path(argv[0]) if argv else ROOT / "dist"
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"{dist}: expected one wheel and one sdist, found {wheels + sdists}")
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    for problem in problems:
        print(problem)
    if not problems:
        count = len(package_files())
        print(f"{wheels[0].name}, {sdists[0].name}: {count} package files, LICENSE, metadata ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
