"""Every code sample of the documentation runs: the ```python blocks of docs/**/*.md and README.md.

Each page runs in a subprocess of its own (a fresh interpreter, as a reader's script would: its
own default loop, logging and structlog configuration), its blocks in order in one namespace, in
an empty temporary directory. A page passes when every block ran, the interpreter exited 0
within the bound, no LoopThread that a sample started is still running at the end (samples stop
what they start), and nothing was printed that says a sample went wrong (a traceback, an
exception ignored at exit, a coroutine never awaited).

Markers, in an HTML comment on the line right before a block (they do not show on the site):

- ``<!-- docs-test: skip REASON -->``: the block is not run (a gunicorn config, a sketch of
  code that needs a service). Use it sparingly: the REASON is required.
- ``<!-- docs-test: file NAME -->``: the block is written to the file NAME in the page's
  directory instead of being run (``app.py`` of the deploy guide, run by gunicorn in
  tests/test_docs_deploy.py); later blocks may import it.

and, anywhere on a page, a hidden block that runs at its place, for what a sample needs and a
reader does not (a stand-in for an HTTP client, a module for ``ext://`` to import)::

    <!-- docs-test: setup
    async def fetch(url): return b"..."
    -->
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
PAGE_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^\s*<!-- docs-test: (?P<kind>skip|file)(?: (?P<arg>.*?))? -->\s*$")
_SETUP = re.compile(r"^\s*<!-- docs-test: setup\s*$")
_BAD_OUTPUT = ("Traceback (most recent call last)", "Exception ignored", "was never awaited")


@dataclass(frozen=True)
class Block:
    """One code block of a page: where it starts, what it is, and what to do with it."""

    line: int  # 1-based line of its first line of code
    code: str
    kind: str  # "run", "setup", "skip", "file"
    arg: str = ""


def blocks(path: Path) -> list[Block]:
    """The python blocks and hidden setup blocks of one page, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if _SETUP.match(lines[i]):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            found.append(Block(i + 2, "\n".join(lines[i + 1 : end]), "setup"))
            i = end + 1
            continue
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent = fence["indent"]
        end = next(
            j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"
        )  # a fence closes at the next bare ```
        if fence["lang"] == "python":
            marker = _MARKER.match(lines[i - 1]) if i else None
            code = "\n".join(ln.removeprefix(indent) for ln in lines[i + 1 : end])
            kind, arg = ("run", "") if marker is None else (marker["kind"], marker["arg"] or "")
            if kind == "skip" and not arg:
                raise ValueError(f"{path}:{i}: docs-test: skip needs a reason")
            found.append(Block(i + 2, code, kind, arg))
        i = end + 1
    return found


# The runner, run by the page's interpreter: each block compiled under its page and line, so a
# failure's traceback points at the markdown. It fails if a LoopThread it can see still runs.
RUNNER = """
import json as _json, sys as _sys
import loopthread as _lt, loopthread.testing as _testing
_page, _todo = _sys.argv[1], _json.loads(_sys.stdin.read())
_namespace = _sys.modules["__main__"].__dict__  # pickling by name (multiprocessing) finds them
for _line, _code in _todo:
    exec(compile("\\n" * (_line - 1) + _code, _page, "exec"), _namespace)
_default = _testing.current_default()
_left = [name for name, value in list(_namespace.items())
         if isinstance(value, _lt.LoopThread) and value.running and value is not _default]
if _left:
    _sys.exit(f"{_page}: the samples left LoopThreads running: {_left} (stop what you start)")
print(f"docs-test: {len(_todo)} blocks ran")
"""


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def run_page(path: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run a page's blocks in a fresh interpreter in ``workdir``; write its file blocks there."""
    todo: list[tuple[int, str]] = []
    for block in blocks(path):
        if block.kind == "file":
            (workdir / block.arg).write_text(block.code + "\n")
        elif block.kind in ("run", "setup"):
            todo.append((block.line, block.code))
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", RUNNER, str(path)],
        input=json.dumps(todo),
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=PAGE_TIMEOUT,
        check=False,
    )


def test_every_page_is_collected() -> None:
    """The pages of the site and the README are all here, and most of them have samples."""
    names = {_page_id(p) for p in PAGES}
    assert {"README.md", "docs/getting-started.md", "docs/guide/deploy.md"} <= names
    assert len(PAGES_WITH_SAMPLES) >= 15, [_page_id(p) for p in PAGES_WITH_SAMPLES]


def test_skips_are_rare_and_say_why() -> None:
    """At most a handful of blocks are not run, each with its reason."""
    skipped = [(p, b) for p in PAGES for b in blocks(p) if b.kind == "skip"]
    ran = [b for p in PAGES for b in blocks(p) if b.kind == "run"]
    assert len(skipped) <= 5, [(_page_id(p), b.line, b.arg) for p, b in skipped]
    assert len(ran) >= 10 * max(1, len(skipped))


def test_blocks_follow_the_markers(tmp_path: Path) -> None:
    """The extractor runs python blocks, skips marked ones, writes file blocks, runs hidden
    setup at its place, and leaves other languages alone; a skip without a reason is refused."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-test: setup\nx = 1\n-->\n"
        "```python\nassert x == 1\n```\n"
        "<!-- docs-test: skip needs a broker -->\n```python\nimport celery\n```\n"
        '<!-- docs-test: file app.py -->\n```python title="app.py"\nAPP = 1\n```\n'
        "```sh\nmake test\n```\n"
        "- a list item\n\n    ```python\n    y = 2\n    ```\n"
    )
    found = [(b.kind, b.arg, b.code, b.line) for b in blocks(page)]
    assert found == [
        ("setup", "", "x = 1", 2),
        ("run", "", "assert x == 1", 5),
        ("skip", "needs a broker", "import celery", 9),
        ("file", "app.py", "APP = 1", 13),
        ("run", "", "y = 2", 21),
    ]
    page.write_text("<!-- docs-test: skip -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        blocks(page)


PAGES_WITH_SAMPLES = [p for p in PAGES if any(b.kind in ("run", "setup") for b in blocks(p))]


@pytest.mark.timeout(PAGE_TIMEOUT + 30)
@pytest.mark.parametrize("path", PAGES_WITH_SAMPLES, ids=_page_id)
def test_page_samples_run(path: Path, tmp_path: Path) -> None:
    """Every python block of the page runs, in order, in a fresh interpreter, and cleans up."""
    result = run_page(path, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{_page_id(path)} failed:\n{output[-6000:]}"
    assert "docs-test:" in result.stdout, output[-3000:]
    bad = [marker for marker in _BAD_OUTPUT if marker in output]
    assert not bad, f"{_page_id(path)} printed {bad}:\n{output[-6000:]}"
