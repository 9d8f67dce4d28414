"""The default loop as a deployment needs it: configure_default(), LOOPTHREAD_* environment
variables, and loopthread.resource() values that follow the process (issue "Prefork servers").

Fork tests use real ``os.fork()``; children report through a pipe and end with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import loopthread
from loopthread import LoopThreadError, testing

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
fork_warning = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    """Each test starts with no default loop and no configured options, and leaves none."""
    testing.reset_default()
    loopthread.configure_default()
    yield
    testing.reset_default()
    loopthread.configure_default()


# ---------------------------------------------------------------------- configure_default


def test_configure_default_sets_the_options_of_the_default_loop() -> None:
    loopthread.configure_default(executor_workers=3, cancel_grace=0.25, lag_interval=None)
    lt = loopthread.default()
    assert lt.executor.max_workers == 3
    assert lt.cancel_grace == 0.25
    assert lt.stats().loop_lag is None  # no lag probe


def test_configure_default_checks_its_options_at_once() -> None:
    with pytest.raises(TypeError, match=r"unknown option.*executor_wokers.*executor_workers"):
        loopthread.configure_default(executor_wokers=3)
    with pytest.raises(TypeError, match="name"):
        loopthread.configure_default(name="mine")
    with pytest.raises(ValueError, match="cancel_grace"):
        loopthread.configure_default(cancel_grace=-1)
    assert testing.current_default() is None  # nothing was started by a check


def test_configure_default_after_start_with_other_options_is_refused() -> None:
    loopthread.configure_default(executor_workers=2)
    lt = loopthread.default()
    loopthread.configure_default(executor_workers=2)  # the same options: fine
    with pytest.raises(LoopThreadError, match=r"executor_workers=2.*before the first"):
        loopthread.configure_default(executor_workers=4)
    assert loopthread.default() is lt
    lt.stop()
    loopthread.configure_default(executor_workers=4)  # stopped: the next default uses them
    assert loopthread.default().executor.max_workers == 4


def _child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_environment_variables_configure_the_default_loop() -> None:
    code = (
        "import json, loopthread\n"
        "lt = loopthread.default()\n"
        "print(json.dumps([lt.executor.max_workers, lt.cancel_grace, lt.stats().loop_lag]))\n"
    )
    proc = _child(
        code,
        {
            "LOOPTHREAD_EXECUTOR_WORKERS": "5",
            "LOOPTHREAD_CANCEL_GRACE": "0.5",
            "LOOPTHREAD_LAG_INTERVAL": "off",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [5, 0.5, None]


def test_configure_default_wins_over_the_environment() -> None:
    code = (
        "import loopthread\n"
        "loopthread.configure_default(executor_workers=2)\n"
        "print(loopthread.default().executor.max_workers)\n"
    )
    proc = _child(code, {"LOOPTHREAD_EXECUTOR_WORKERS": "7"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


def test_a_bad_environment_variable_is_named_in_the_error() -> None:
    proc = _child("import loopthread\nloopthread.default()\n", {"LOOPTHREAD_UVLOOP": "maybe"})
    assert proc.returncode == 1
    assert "LOOPTHREAD_UVLOOP='maybe' is not valid: it takes 1 or 0" in proc.stderr


# ---------------------------------------------------------------------- loopthread.resource


class Client:
    """Stands in for a connection pool: knows the process and loop it was made in."""

    made: ClassVar[list[Client]] = []

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.get_running_loop()
        self.closed = False
        Client.made.append(self)

    async def aclose(self) -> None:
        self.closed = True


async def make_client() -> Client:
    return Client()


async def describe(res: loopthread.DefaultResource[Client]) -> dict[str, Any]:
    client = await res.get()
    return {
        "pid": client.pid,
        "on_this_loop": client.loop is asyncio.get_running_loop(),
        "id": id(client),
    }


def test_a_default_resource_is_created_lazily_once_and_closed_with_its_loop() -> None:
    Client.made.clear()
    res = loopthread.resource(make_client, name="client")
    assert testing.current_default() is None  # declaring starts nothing
    assert not res.created
    first = loopthread.run(describe(res))
    second = loopthread.run(describe(res))
    assert first == second
    assert first["on_this_loop"]
    assert res.created
    assert len(Client.made) == 1
    loopthread.default().stop()
    assert Client.made[0].closed
    assert not res.created
    # A replaced default loop gets a value of its own.
    third = loopthread.run(describe(res))
    assert third["id"] != first["id"]
    assert len(Client.made) == 2


def test_a_default_resource_refuses_other_loops_clearly() -> None:
    res = loopthread.resource(make_client)
    with loopthread.LoopThread("other") as other, pytest.raises(LoopThreadError, match="another"):
        other.run(res.get())


def test_loopthread_resource_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"loopthread.resource\(\) takes an async function"):
        loopthread.resource(42)  # type: ignore[arg-type]
    coro = make_client()
    with pytest.raises(TypeError, match=r"loopthread.resource\(make_pool\)"):
        loopthread.resource(coro)  # type: ignore[arg-type]


def _in_fork(fn: Any) -> Any:
    """Run ``fn()`` in a forked child; return what it returned (JSON through a pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read)
            os.write(write, json.dumps(fn()).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os.close(write)
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


@needs_fork
@fork_warning
@pytest.mark.parametrize("parent_used_it", [False, True])
def test_a_default_resource_declared_before_fork_gets_a_value_per_process(
    parent_used_it: bool,
) -> None:
    """The --preload case: declared at import in the master (used there or not), each child
    gets its own value on its own loop; the parent's value is never used in a child, and the
    child's value is closed when its default loop stops."""
    Client.made.clear()
    res = loopthread.resource(make_client, name="client")
    parent = loopthread.run(describe(res)) if parent_used_it else None

    def child() -> dict[str, Any]:
        seen = loopthread.run(describe(res))
        again = loopthread.run(describe(res))
        mine = [c for c in Client.made if c.pid == os.getpid()]
        loopthread.default().stop()
        return {**seen, "same": again == seen, "made": len(mine), "closed": mine[0].closed}

    got = _in_fork(child)
    assert got["pid"] != os.getpid()
    assert got["on_this_loop"]
    assert got["same"]
    assert (got["made"], got["closed"]) == (1, True)
    if parent is not None:
        assert loopthread.run(describe(res)) == parent  # the parent's value is untouched
        assert not Client.made[0].closed


@needs_fork
@fork_warning
def test_configured_options_survive_fork() -> None:
    loopthread.configure_default(executor_workers=3)
    loopthread.default()  # the parent's default runs; the child makes its own

    def child() -> list[Any]:
        lt = loopthread.default()
        return [lt.executor.max_workers, lt.pid == os.getpid()]

    assert _in_fork(child) == [3, True]


@needs_fork
@fork_warning
def test_a_resource_of_the_parents_loop_says_what_works_in_the_child() -> None:
    lt = loopthread.default()
    res = lt.resource(make_client)
    loopthread.run(res.get())

    def child() -> str:
        try:
            loopthread.run(res.get())
        except LoopThreadError as exc:
            return str(exc)
        return "no error"

    message = _in_fork(child)
    assert f"of process {os.getpid()}" in message
    assert "loopthread.resource(make)" in message


@needs_fork
@fork_warning
def test_the_parents_default_loop_kept_from_import_says_what_works_in_the_child() -> None:
    lt = loopthread.default()  # kept at import time, as a module global would be

    def child() -> str:
        try:
            lt.run(asyncio.sleep(0))
        except loopthread.LoopNotRunningError as exc:
            return str(exc)
        return "no error"

    message = _in_fork(child)
    assert f"started in process {os.getpid()}" in message
    assert "loopthread.default() (or loopthread.run()) where the work is done" in message


# ---------------------------------------------------------------------- multiprocessing

#: Declared at import, as an application module would: each pool worker imports it again.
POOL_CLIENT = loopthread.resource(make_client, name="pool-client")


async def _client_identity() -> tuple[int, int]:
    client = await POOL_CLIENT.get()
    return client.pid, id(client)


def _pool_task(_: int) -> tuple[int, int, int]:
    pid, client = loopthread.run(_client_identity(), timeout=10)
    return os.getpid(), pid, client


@pytest.mark.parametrize(
    "method",
    [m for m in ("spawn", "forkserver", "fork") if m in multiprocessing.get_all_start_methods()],
)
@fork_warning
def test_multiprocessing_pool_workers_each_get_their_own_default_loop_and_value(
    method: str,
) -> None:
    if method == "fork":
        loopthread.run(_client_identity(), timeout=10)  # the parent made one first
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map(_pool_task, range(8))
    clients: dict[int, set[int]] = defaultdict(set)
    for worker, made_in, client in results:
        assert made_in == worker != os.getpid()  # made in the worker, never the parent's
        clients[worker].add(client)
    assert all(len(ids) == 1 for ids in clients.values()), clients


@needs_fork
@fork_warning
def test_a_default_resource_follows_into_a_grandchild() -> None:
    """A child that used the resource forks again: the grandchild makes its own value on its
    own default loop, never the child's or the parent's."""
    res = loopthread.resource(make_client, name="client")
    parent = loopthread.run(describe(res))

    def child() -> dict[str, Any]:
        mine = loopthread.run(describe(res))
        grandchild = _in_fork(lambda: loopthread.run(describe(res)))
        return {"child": mine, "grandchild": grandchild}

    got = _in_fork(child)
    pids = {parent["pid"], got["child"]["pid"], got["grandchild"]["pid"]}
    assert len(pids) == 3
    assert got["grandchild"]["on_this_loop"]
    assert got["grandchild"]["pid"] != got["child"]["pid"]
