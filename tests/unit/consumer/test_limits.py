"""The adaptive concurrency limit and the rate cap (pure, the time is passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_consumer.limits import ConcurrencyLimit, RateLimit

pytestmark = pytest.mark.unit


def test_overload_halves_once_per_cooldown_and_successes_grow_it_back() -> None:
    lim = ConcurrencyLimit(16, cooldown=0.1)
    assert lim.allowed() == 16
    assert lim.on_overload(0.0) and lim.allowed() == 8
    assert not lim.on_overload(0.05) and lim.allowed() == 8  # the same burst of failures
    lim.on_overload(0.2)
    lim.on_overload(0.4)
    lim.on_overload(0.6)
    assert lim.allowed() == 1
    lim.on_overload(0.8)
    assert lim.allowed() == 1  # never below the minimum: one request keeps probing
    successes = 0
    while lim.allowed() < 16:
        lim.on_success()
        successes += 1
    assert 100 < successes < 200  # additive: about limit successes per extra slot
    lim.on_success()
    assert lim.allowed() == 16


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 0.3)), max_size=300), st.integers(1, 64))
def test_the_limit_stays_between_minimum_and_maximum(events: list[tuple[bool, float]], maximum: int) -> None:
    lim = ConcurrencyLimit(maximum)
    now = 0.0
    for overload, dt in events:
        now += dt
        if overload:
            lim.on_overload(now)
        else:
            lim.on_success()
        assert 1 <= lim.allowed() <= maximum


@pytest.mark.parametrize(("rate", "burst", "asks", "waits"), [
    (0, None, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),             # no limit
    (10, 2, [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.2]),      # burst of 2, then one every 0.1 s
    (10, 1, [0.0, 1.0, 1.0], [0.0, 0.0, 0.1]),                # refilled after a pause, capped at burst
])
def test_rate_limit_table(rate: float, burst: float | None, asks: list[float], waits: list[float]) -> None:
    rl = RateLimit(rate, burst)
    assert [round(rl.reserve(t), 6) for t in asks] == waits


@given(st.floats(1, 1000), st.integers(1, 500))
def test_n_requests_at_once_are_spread_at_the_rate(rate: float, n: int) -> None:
    rl = RateLimit(rate)
    waits = [rl.reserve(0.0) for _ in range(n)]
    assert waits == sorted(waits)
    assert waits[-1] == pytest.approx(max(0.0, (n - rl.burst) / rate), abs=1e-9)
