"""HLC: monotonic when the clock steps back, causal across nodes, bounded logical counter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.audit.hlc import LOGICAL_MAX, Hlc, HlcError, key, receive, tick

clock = st.integers(min_value=0, max_value=2**45)


@settings(deadline=None)
@given(st.lists(clock, min_size=1, max_size=200))
def test_tick_is_strictly_monotonic_whatever_the_clock_does(readings: list[int]) -> None:
    last: Hlc | None = None
    for now in readings:
        stamp = tick(last, now, "n")
        if last is not None:
            assert key(stamp) > key(last)
        assert stamp.physical_ms >= now  # never behind the clock
        last = stamp


def test_clock_stepping_back_bumps_logical() -> None:
    a = tick(None, 1000, "n")
    b = tick(a, 400, "n")
    assert (b.physical_ms, b.logical) == (1000, 1)
    assert str(tick(b, 1001, "n")) == "1001:0:n"


def test_logical_overflow_advances_physical() -> None:
    top = Hlc(5000, LOGICAL_MAX, "n")
    after = tick(top, 5000, "n")
    assert (after.physical_ms, after.logical) == (5001, 0)
    assert key(after) > key(top)
    merged = receive(top, Hlc(5000, LOGICAL_MAX, "m"), 10, "n")
    assert (merged.physical_ms, merged.logical) == (5001, 0)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["local", "send"]), clock),
        min_size=1,
        max_size=100,
    ),
    st.randoms(use_true_random=False),
)
def test_concurrent_nodes_preserve_causality(steps: list[tuple[str, str, int]], rnd: object) -> None:
    """Every receive is later than the message's send and the receiver's previous event."""
    state: dict[str, Hlc | None] = {"a": None, "b": None, "c": None}
    inflight: list[Hlc] = []
    for node, action, now in steps:
        prev = state[node]
        if action == "send" or not inflight:
            stamp = tick(prev, now, node)
            inflight.append(stamp)
        else:
            message = inflight.pop(0)
            stamp = receive(prev, message, now, node)
            assert key(stamp) > key(message)
        if prev is not None:
            assert key(stamp) > key(prev)
        assert stamp.logical <= LOGICAL_MAX
        state[node] = stamp


@settings(deadline=None)
@given(
    clock,
    st.integers(min_value=0, max_value=LOGICAL_MAX),
    st.from_regex(r"[a-z0-9:/-]{1,12}", fullmatch=True),
)
def test_text_round_trip(physical: int, logical: int, node: str) -> None:
    stamp = Hlc(physical, logical, node)
    assert Hlc.parse(str(stamp)) == stamp


@pytest.mark.parametrize("text", ["", "1:2", "x:1:n", "1:-1:n", f"1:{LOGICAL_MAX + 1}:n"])
def test_parse_refuses_garbage(text: str) -> None:
    with pytest.raises(HlcError):
        Hlc.parse(text)
