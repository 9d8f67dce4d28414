"""EnricherChain(merge=...): flat, deep, a user function; fapilog-style enrichers (``enrich``
method, ``start``/``stop`` hooks) dropped in as they are (issues 12 and 16)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import loopthread
from loopthread import EnricherChain, LoopThread

Fields = Mapping[str, Any]


def returning(fields: dict[str, Any], name: str) -> Any:
    """An async enricher returning ``fields`` (the same object every time)."""

    async def enrich(event: Fields) -> Fields:
        await asyncio.sleep(0)
        return fields

    return loopthread.enricher(enrich, name=name)


@pytest.fixture(name="logs")
def fixture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog events emitted during the test (from any thread)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


# ---------------------------------------------------------------------- deep


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_deep_merge_keeps_every_group_s_fields(lt: LoopThread, mode: str) -> None:
    """Two enrichers returning a ``context`` group each: deep keeps both groups' fields (flat
    keeps only the last group); the event's own group is merged too, not replaced."""
    enrichers = [
        returning({"context": {"request_id": "r1"}, "diagnostics": {"host": "web-1"}}, "a"),
        returning({"context": {"user_id": 7}, "diagnostics": {"pid": 12}}, "b"),
    ]
    event = {"event": "login", "context": {"tenant": "acme"}}
    deep = EnricherChain(enrichers, mode=mode, merge="deep", loop_thread=lt)  # type: ignore[arg-type]
    flat = EnricherChain(enrichers, mode=mode, loop_thread=lt)  # type: ignore[arg-type]
    assert deep.enrich_sync(event) == {
        "event": "login",
        "context": {"tenant": "acme", "request_id": "r1", "user_id": 7},
        "diagnostics": {"host": "web-1", "pid": 12},
    }
    assert flat.enrich_sync(event) == {
        "event": "login",
        "context": {"user_id": 7},
        "diagnostics": {"pid": 12},
    }
    assert event == {"event": "login", "context": {"tenant": "acme"}}


Tree = dict[str, Any]
keys = st.sampled_from(["a", "b", "c"])
leaves: st.SearchStrategy[Any] = st.integers(0, 9) | st.none() | st.just({})
trees: st.SearchStrategy[Tree] = st.recursive(
    st.dictionaries(keys, leaves, max_size=3),
    lambda children: st.dictionaries(keys, leaves | children, max_size=3),
    max_leaves=8,
)


def paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The tree as {path: leaf}; an empty mapping is a leaf of its own ({})."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(paths(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def model(trees_in_order: list[Tree]) -> dict[tuple[str, ...], Any]:
    """Deep merge, specified on paths: each leaf of a later tree replaces whatever lies on its
    path (a scalar on a prefix of it, or, if the leaf is a scalar, anything under it); an
    empty mapping only fills a path that holds nothing under it."""
    state: dict[tuple[str, ...], Any] = {}
    for tree in trees_in_order:
        for path, value in paths(tree).items():
            for prefix_len in range(1, len(path)):
                state.pop(path[:prefix_len], None)  # a scalar or {} on the way is replaced
            below = [p for p in state if len(p) > len(path) and p[: len(path)] == path]
            if value == {} and below:
                continue  # {} merged into a non-empty mapping changes nothing
            for p in below:
                del state[p]
            state[path] = value
    return state


@pytest.fixture(name="shared_lt", scope="module")
def fixture_shared_lt() -> Iterator[LoopThread]:
    """One LoopThread for the Hypothesis examples."""
    lt = LoopThread("test-merge-hypothesis").start()
    yield lt
    lt.stop()


@settings(max_examples=150, deadline=None)
@given(
    event=trees,
    results=st.lists(trees, max_size=4),
    mode=st.sampled_from(["parallel", "sequential"]),
)
def test_deep_merge_matches_its_path_model_and_changes_no_input(
    shared_lt: LoopThread, event: Tree, results: list[Tree], mode: str
) -> None:
    """For any event and enricher results: the deep-merged event is the path model's, in
    both modes, and neither the event nor any enricher's result was changed (nested
    mappings included)."""
    before = copy.deepcopy((event, results))
    chain = EnricherChain(
        [returning(r, f"e{i}") for i, r in enumerate(results)],
        mode=mode,  # type: ignore[arg-type]
        merge="deep",
        loop_thread=shared_lt,
    )
    merged = chain.enrich_sync(event)
    assert paths(merged) == model([event, *results])
    assert (event, results) == before
    if not any(isinstance(v, Mapping) for r in results for v in r.values()):
        assert merged == {**event, **{k: v for r in results for k, v in r.items()}}


# ---------------------------------------------------------------------- a user function


def test_user_merge_function(lt: LoopThread) -> None:
    """A merge function decides: here the first enricher to set a key keeps it, and lists
    under the same key are concatenated."""

    def first_wins(event: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in fields.items():
            if isinstance(value, list) and isinstance(event.get(key), list):
                event[key] = [*event[key], *value]
            else:
                event.setdefault(key, value)
        return event

    chain = EnricherChain(
        [returning({"k": 1, "tags": ["a"]}, "a"), returning({"k": 2, "tags": ["b"]}, "b")],
        merge=first_wins,
        loop_thread=lt,
    )
    assert chain.enrich_sync({"tags": ["e"]}) == {"tags": ["e", "a", "b"], "k": 1}


def test_failing_merge_costs_that_enricher_s_fields_only(
    lt: LoopThread, logs: list[MutableMapping[str, Any]]
) -> None:
    """A merge that raises (or returns no mapping) leaves that result out, counted and logged;
    the event and the other enrichers' fields go on."""

    def picky(event: dict[str, Any], fields: Mapping[str, Any]) -> Any:
        if "bad" in fields:
            raise KeyError("bad")
        if "junk" in fields:
            return ["not", "a", "mapping"]
        return {**event, **fields}

    chain = EnricherChain(
        [returning({"bad": 1}, "a"), returning({"good": 1}, "b"), returning({"junk": 1}, "c")],
        merge=picky,
        loop_thread=lt,
    )
    assert chain.enrich_sync({"id": 1}) == {"id": 1, "good": 1}
    assert chain.stats().merge_failures == 2
    failed = [e for e in logs if e["event"] == "enricher_chain.merge_failed"]
    assert [e["enricher"] for e in failed] == ["a", "c"]
    assert "not a mapping" in failed[1]["error"]


@pytest.mark.parametrize(
    ("merge", "error", "match"),
    [
        ("nested", ValueError, "merge must be 'flat', 'deep' or a function"),
        (42, TypeError, "got int"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_bad_merge_is_refused(merge: Any, error: type[Exception], match: str) -> None:
    """merge= is 'flat', 'deep' or a plain function, checked at construction."""
    with pytest.raises(error, match=match):
        EnricherChain([], merge=merge)


def test_async_merge_function_is_refused() -> None:
    """A merge runs for every result on the loop: an async one is refused, saying why."""

    async def merge(event: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        return event

    with pytest.raises(TypeError, match=r"got an async function.*must not await"):
        EnricherChain([], merge=merge)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- fapilog's enrichers


class FapilogStyle:
    """fapilog's enricher protocol: ``name``, ``start()``, ``stop()``, ``enrich(event)``."""

    name = "runtime_info"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def enrich(self, event: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("enrich")
        return {"diagnostics": {"host": "web-1"}, "context": {"service": "billing"}}

    async def health_check(self) -> bool:
        return True


class Both:
    """Has both pairs of hook names: only ``startup()``/``shutdown()`` may be called."""

    name = "both"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def startup(self) -> None:
        self.calls.append("startup")

    async def start(self) -> None:  # pragma: no cover - must not be called
        self.calls.append("start")

    async def shutdown(self) -> None:
        self.calls.append("shutdown")

    async def stop(self) -> None:  # pragma: no cover - must not be called
        self.calls.append("stop")

    async def __call__(self, event: Fields) -> Fields:
        return {}


def test_fapilog_enricher_drops_in() -> None:
    """An object with ``enrich()``, ``start()`` and ``stop()`` works as it is: started once
    before first use, its groups deep-merged, stopped at ``lt.stop()``. An enricher with both
    pairs of names gets ``startup()``/``shutdown()`` only."""
    lt = LoopThread("fapilog").start()
    fap = FapilogStyle()
    both: list[str] = []
    chain = EnricherChain(
        [fap, returning({"context": {"request_id": "r1"}}, "request"), Both(both)],
        merge="deep",
        loop_thread=lt,
    )
    assert chain.enrich_sync({"context": {"user_id": 7}}) == {
        "context": {"user_id": 7, "service": "billing", "request_id": "r1"},
        "diagnostics": {"host": "web-1"},
    }
    chain.enrich_sync({})
    assert fap.calls == ["start", "enrich", "enrich"]
    assert lt.stop(5).finished
    assert fap.calls == ["start", "enrich", "enrich", "stop"]
    assert both == ["startup", "shutdown"]
    assert [s.name for s in chain.stats().enrichers] == ["runtime_info", "request", "both"]


def test_object_with_neither_call_nor_enrich_is_refused() -> None:
    """The error names both shapes an enricher may have."""

    class Neither:
        name = "x"

    with pytest.raises(TypeError, match=r"not callable.*async enrich\(event\) method"):
        EnricherChain([Neither()])  # type: ignore[list-item]
