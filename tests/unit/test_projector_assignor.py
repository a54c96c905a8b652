"""agents/projector_assignor.py: every projected partition goes to one member, the oldest, so the read
models have one writer (FerretDB loses one of two concurrent updates of a document)."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from hypothesis import given
from hypothesis import strategies as st

from agents.projector_assignor import OneWriterAssignor, elect, started_ms

members = st.dictionaries(
    st.text("abcdef0123456789-", min_size=1, max_size=8), st.integers(0, 2**40) | st.none(), min_size=1
)


@given(members)
def test_the_oldest_member_writes(started: dict[str, int | None]) -> None:
    writer = elect(started)
    known = [m for m, t in started.items() if t is not None]
    if known:
        assert started[writer] == min(started[m] or 0 for m in known)
        assert writer == min(m for m in known if started[m] == started[writer])
    else:
        assert writer == min(started)


@given(members)
def test_the_choice_does_not_depend_on_the_order_members_are_listed(started: dict[str, int | None]) -> None:
    assert elect(dict(reversed(list(started.items())))) == elect(started)


def test_a_new_member_does_not_take_over() -> None:
    assert elect({"zz": 1_000, "aa": 2_000}) == "zz"


def test_metadata_carries_the_start_time() -> None:
    meta = OneWriterAssignor.metadata(["t.jobs"])
    assert started_ms(meta.user_data) is not None
    assert started_ms(b"") is None


def test_all_partitions_of_every_subscribed_topic_go_to_one_member() -> None:
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2} if topic == "t.jobs" else {0, 1})
    old = ConsumerProtocolMemberMetadata(0, ["t.jobs", "t.impacts"], OneWriterAssignor.metadata([]).user_data)
    young = ConsumerProtocolMemberMetadata(0, ["t.jobs", "t.impacts"], b"\x7f" + b"\xff" * 7)
    out = OneWriterAssignor.assign(cluster, {"b-old": old, "a-young": young})  # type: ignore[arg-type]
    assert sorted(out["b-old"].assignment) == [("t.impacts", [0, 1]), ("t.jobs", [0, 1, 2])]
    assert out["a-young"].assignment == []
