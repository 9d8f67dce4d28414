"""The circuit breaker of one enricher, on its own: no loop, no chain, a clock moved by hand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loopthread._enrich._breaker import (
    CALL,
    CLOSED,
    HALF_OPEN,
    OPEN,
    SKIP,
    TRIAL,
    CircuitBreaker,
)


class FakeClock:
    """A clock the test moves by hand; counts how often it is read."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def breaker(threshold: int | None = 3, cooldown: float = 30.0) -> tuple[CircuitBreaker, FakeClock]:
    """A breaker on a fresh fake clock, and the clock."""
    clock = FakeClock()
    return CircuitBreaker(threshold, cooldown, clock), clock


def trip(b: CircuitBreaker) -> None:
    """Record faults until the closed circuit opens."""
    assert b.state is CLOSED
    while not b.record_failure(False):
        pass
    assert b.state is OPEN


# ---------------------------------------------------------------------- closed


def test_new_breaker_is_closed_and_quiet() -> None:
    """A new breaker is closed, counts nothing, lets every call through, never reads the clock."""
    b, clock = breaker()
    assert (b.state, b.consecutive, b.trial, b.quiet) == (CLOSED, 0, False, True)
    assert b.admit() is CALL
    assert b.admit() is CALL
    assert clock.reads == 0


def test_threshold_consecutive_faults_open_the_circuit() -> None:
    """Only the ``threshold``-th consecutive fault opens it, stamped with the clock's time."""
    b, clock = breaker(threshold=3)
    assert b.record_failure(False) is False
    assert b.record_failure(False) is False
    assert (b.state, b.consecutive, b.quiet) == (CLOSED, 2, False)
    assert b.admit() is CALL  # closed, though not quiet: still called
    assert clock.reads == 0
    clock.now = 1234.5
    assert b.record_failure(False) is True
    assert (b.state, b.consecutive, b.opened_at) == (OPEN, 3, 1234.5)
    assert clock.reads == 1


def test_success_resets_the_consecutive_count() -> None:
    """Faults separated by a success never add up to the threshold."""
    b, _ = breaker(threshold=2)
    for _ in range(5):
        assert b.record_failure(False) is False
        assert b.record_success(False) is False  # it was closed: nothing closed "just now"
        assert (b.consecutive, b.quiet) == (0, True)
    assert b.state is CLOSED


def test_threshold_none_never_opens_on_faults() -> None:
    """``threshold=None``: any number of faults are counted and the circuit stays closed."""
    b, clock = breaker(threshold=None)
    for _ in range(100):
        assert b.record_failure(False) is False
    assert (b.state, b.consecutive) == (CLOSED, 100)
    assert b.admit() is CALL
    assert clock.reads == 0


def test_threshold_one_opens_on_the_first_fault() -> None:
    """With ``threshold=1`` the first fault opens the circuit."""
    b, _ = breaker(threshold=1)
    assert b.record_failure(False) is True
    assert b.state is OPEN


# ---------------------------------------------------------------------- open, cool-down


def test_open_circuit_skips_until_the_cooldown_is_over() -> None:
    """Open: every call is skipped while less than ``cooldown`` has passed since it opened."""
    b, clock = breaker(threshold=1, cooldown=30.0)
    trip(b)
    assert b.admit() is SKIP
    clock.now += 29.999
    assert b.admit() is SKIP
    assert (b.state, b.trial) == (OPEN, False)


def test_cooldown_over_turns_half_open_and_admits_one_trial() -> None:
    """At exactly ``cooldown`` seconds the next call is the trial and the circuit is half-open."""
    b, clock = breaker(threshold=1, cooldown=30.0)
    trip(b)
    clock.now += 30.0
    assert b.admit() is TRIAL
    assert (b.state, b.trial, b.quiet) == (HALF_OPEN, True, False)


def test_state_at_shows_half_open_after_cooldown_without_changing_anything() -> None:
    """``state_at`` is what stats show: open turns half-open once the cool-down is over."""
    b, clock = breaker(threshold=1, cooldown=10.0)
    trip(b)
    reads = clock.reads
    assert b.state_at(clock.now + 9.9) is OPEN
    assert b.state_at(clock.now + 10.0) is HALF_OPEN
    assert (b.state, b.trial, clock.reads) == (OPEN, False, reads)
    closed, _ = breaker()
    assert closed.state_at(1e12) is CLOSED


def test_fault_while_already_open_only_counts() -> None:
    """A call admitted before the circuit opened fails later: counted, the cool-down kept."""
    b, clock = breaker(threshold=2, cooldown=30.0)
    trip(b)
    opened_at = b.opened_at
    clock.now += 20.0
    assert b.record_failure(False) is False
    assert (b.state, b.opened_at, b.consecutive) == (OPEN, opened_at, 3)


# ---------------------------------------------------------------------- half-open trial


def test_half_open_lets_exactly_one_trial_through() -> None:
    """While the trial is in flight every other call is skipped, however much time passes."""
    b, clock = breaker(threshold=1, cooldown=5.0)
    trip(b)
    clock.now += 5.0
    assert b.admit() is TRIAL
    assert b.admit() is SKIP
    clock.now += 1000.0
    assert b.admit() is SKIP


def test_trial_success_closes_the_circuit() -> None:
    """A successful trial closes the circuit; calls flow again and the breaker is quiet."""
    b, clock = breaker(threshold=2, cooldown=5.0)
    trip(b)
    clock.now += 5.0
    assert b.admit() is TRIAL
    assert b.record_success(True) is True
    assert (b.state, b.consecutive, b.trial, b.quiet) == (CLOSED, 0, False, True)
    assert b.admit() is CALL


def test_trial_failure_reopens_at_once_and_restarts_the_cooldown() -> None:
    """A failed trial opens the circuit again whatever the threshold, from the trial's time."""
    b, clock = breaker(threshold=3, cooldown=5.0)
    trip(b)
    clock.now += 7.0
    assert b.admit() is TRIAL
    assert b.record_failure(True) is True
    assert (b.state, b.trial, b.opened_at) == (OPEN, False, clock.now)
    clock.now += 4.9
    assert b.admit() is SKIP
    clock.now += 0.1
    assert b.admit() is TRIAL


def test_released_trial_lets_the_next_call_be_the_trial() -> None:
    """A trial cut short by its caller records nothing; the next call is the trial instead."""
    b, clock = breaker(threshold=1, cooldown=5.0)
    trip(b)
    clock.now += 5.0
    assert b.admit() is TRIAL
    b.release()
    assert (b.state, b.trial, b.quiet) == (HALF_OPEN, False, False)
    assert b.admit() is TRIAL
    assert b.admit() is SKIP


def test_success_of_an_earlier_call_closes_while_the_trial_is_in_flight() -> None:
    """Any success closes the circuit; the trial still in flight keeps the breaker not quiet."""
    b, clock = breaker(threshold=1, cooldown=5.0)
    trip(b)
    clock.now += 5.0
    assert b.admit() is TRIAL
    assert b.record_success(False) is True  # a call admitted before the circuit opened
    assert (b.state, b.trial, b.quiet) == (CLOSED, True, False)
    assert b.admit() is CALL
    assert b.record_success(True) is False  # the trial: already closed
    assert (b.trial, b.quiet) == (False, True)


# ---------------------------------------------------------------------- the ``quiet`` contract

_OPS = st.lists(
    st.sampled_from(["admit", "ok", "ok_trial", "fail", "fail_trial", "release", "tick"]),
    max_size=40,
)


@given(ops=_OPS, threshold=st.one_of(st.none(), st.integers(1, 4)))
def test_quiet_is_exactly_closed_without_faults_or_trial(
    ops: list[str], threshold: int | None
) -> None:
    """After any sequence of decisions ``quiet`` matches its definition, and when quiet,
    ``admit`` says CALL and ``record_success`` changes nothing: what the hot path relies on."""
    b, clock = breaker(threshold=threshold, cooldown=10.0)
    for op in ops:
        if op == "admit":
            b.admit()
        elif op in ("ok", "ok_trial"):
            b.record_success(op == "ok_trial")
        elif op in ("fail", "fail_trial"):
            b.record_failure(op == "fail_trial")
        elif op == "release":
            b.release()
        else:
            clock.now += 6.0
        assert b.quiet == (b.state is CLOSED and b.consecutive == 0 and not b.trial)
        if b.quiet:
            before = (b.state, b.consecutive, b.opened_at, b.trial)
            assert b.admit() is CALL
            assert b.record_success(False) is False
            assert b.record_success(True) is False
            assert (b.state, b.consecutive, b.opened_at, b.trial) == before
