from hypothesis import given
from hypothesis import strategies as st

from streams.guard import Guarded, decode, encode, source_of

positions = st.dictionaries(st.text(min_size=1, max_size=20), st.integers(min_value=0, max_value=2**62))


@given(st.one_of(st.none(), st.binary(max_size=200)), positions)
def test_round_trip(state: bytes | None, pos: dict[str, int]) -> None:
    value = Guarded(state, pos)
    assert decode(encode(value)) == value


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=50))
def test_replaying_a_partition_applies_each_offset_once(offsets: list[int]) -> None:
    """Redelivery after a crash replays a suffix of a partition; each offset must count once."""
    src = source_of("inventory", 3)
    ordered = sorted(set(offsets))
    replay = ordered + ordered[len(ordered) // 2 :]
    value, applied = Guarded(), []
    for offset in replay:
        if value.seen(src, offset):
            continue
        applied.append(offset)
        value = value.advance(b"x", src, offset)
    assert applied == ordered


def test_sources_are_independent() -> None:
    value = Guarded().advance(b"s", "a/0", 10)
    assert value.seen("a/0", 10)
    assert not value.seen("a/1", 0)
    assert not value.seen("b/0", 5)
