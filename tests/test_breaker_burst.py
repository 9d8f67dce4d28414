"""The circuit breaker counts a burst of overlapping faults once (pure: no loop, a fake clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loopthread._enrich._breaker import CLOSED, OPEN, TRIAL, CircuitBreaker


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_faults_count_once() -> None:
    """200 calls begin together and all fail: one fault toward the threshold, not 200."""
    b = CircuitBreaker(5, 30.0, FakeClock())
    began = [b.epoch for _ in range(200)]
    opened = [b.record_failure(False, e) for e in began]
    assert not any(opened)
    assert (b.state, b.consecutive, b.epoch) == (CLOSED, 1, 1)


def test_waves_each_count_once_and_open_at_the_threshold() -> None:
    """Each wave of calls begun after the last counted fault counts once: the 5th wave opens."""
    b = CircuitBreaker(5, 30.0, FakeClock())
    for wave in range(1, 6):
        began = [b.epoch for _ in range(4)]
        opened = [b.record_failure(False, e) for e in began]
        assert opened == [wave == 5, False, False, False]
    assert (b.state, b.consecutive) == (OPEN, 5)


def test_a_failed_trial_counts_whenever_it_began() -> None:
    """The half-open trial reopens the circuit even if a straggler's fault came in meanwhile."""
    clock = FakeClock()
    b = CircuitBreaker(1, 10.0, clock)
    straggler = b.epoch
    assert b.record_failure(False, b.epoch)
    clock.now += 10.0
    assert b.admit() is TRIAL
    trial_began = b.epoch
    assert not b.record_failure(False, straggler)  # began before the counted fault
    assert b.epoch == trial_began  # the straggler was not counted...
    assert b.record_failure(True, trial_began - 1)  # ...and a trial counts even if "stale"
    assert b.state is OPEN


@given(st.lists(st.booleans(), max_size=60))
def test_sequential_calls_count_every_fault(steps: list[bool]) -> None:
    """Calls that never overlap (each begins after the previous ended) count exactly as a
    breaker without bursts does: ``began`` changes nothing for them."""
    with_epochs = CircuitBreaker(3, 30.0, FakeClock())
    plain = CircuitBreaker(3, 30.0, FakeClock())
    for ok in steps:
        if ok:
            assert with_epochs.record_success(False) == plain.record_success(False)
        else:
            began = with_epochs.epoch
            assert with_epochs.record_failure(False, began) == plain.record_failure(False)
        assert (with_epochs.state, with_epochs.consecutive) == (plain.state, plain.consecutive)
