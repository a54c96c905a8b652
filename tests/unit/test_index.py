"""Image registry, inventory diffs and the package index: ids, idempotency, encode/decode."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import Component, Inventory
from streams.index import (
    ImageKey,
    ImageRecord,
    ImageRef,
    IndexUpdate,
    PackageEntry,
    SourcePosition,
    apply_index_update,
    apply_index_updates,
    apply_inventory,
    by_package,
    decode_entry,
    decode_record,
    decode_ref,
    decode_update,
    decode_updates,
    encode_entry,
    encode_record,
    encode_ref,
    encode_update,
    encode_updates,
    image_id_for,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def inv(
    components: dict[str, str | None] | set[tuple[str, str]],
    digest: str = "sha256:aa",
    tenant: str = "t1",
    **extra: object,
) -> Inventory:
    pairs = components.items() if isinstance(components, dict) else components
    return Inventory.model_validate(
        {
            "tenant": tenant,
            "image_digest": digest,
            "components": [
                Component(purl=f"pkg:{p}@{v}" if v else f"pkg:{p}", package=p, version=v)
                for p, v in sorted(pairs)
            ],
            "observed_at": T0,
            **extra,
        }
    )


def build_index(updates: list[IndexUpdate]) -> dict[str, PackageEntry]:
    index: dict[str, PackageEntry] = {}
    for u in updates:
        index[u.package] = apply_index_update(index.get(u.package), u)
    return index


def memberships(index: dict[str, PackageEntry]) -> set[tuple[str, str, int]]:
    return {(p, v, i) for p, e in index.items() for v, bm in e.versions.items() for i in bm}


def test_ids_derive_from_the_registering_message_position() -> None:
    assert [image_id_for(SourcePosition(p, o), 4) for o in (0, 1) for p in range(4)] == list(range(8))
    first = apply_inventory(None, inv({"npm/a": "1.0.0"}), source=SourcePosition(2, 7), partitions=4)
    assert first.record is not None
    assert first.record.image_id == 7 * 4 + 2


def test_redelivered_inventory_keeps_its_id_and_emits_no_updates() -> None:
    first = apply_inventory(None, inv({"npm/a": "1.0.0"}), source=SourcePosition(0, 5), partitions=1)
    assert first.record is not None
    again = apply_inventory(first.record, inv({"npm/a": "1.0.0"}), source=SourcePosition(0, 5), partitions=1)
    assert again.record is not None
    assert again.record.image_id == first.record.image_id
    assert again.updates == []
    assert again.impact is None


def test_reinventory_touches_only_the_diff() -> None:
    before = apply_inventory(
        None,
        inv({"npm/a": "1.0.0", "npm/b": "2.0.0", "npm/c": "1.0.0"}),
        source=SourcePosition(0, 1),
        partitions=1,
    )
    assert before.record is not None
    after = apply_inventory(
        before.record,
        inv({"npm/a": "1.0.0", "npm/b": "2.1.0", "npm/d": "1.0.0"}),
        source=SourcePosition(0, 2),
        partitions=1,
    )
    got = [(u.op, u.package, u.version) for u in after.updates]
    assert got == [
        ("remove", "npm/b", "2.0.0"),
        ("add", "npm/b", "2.1.0"),
        ("remove", "npm/c", "1.0.0"),
        ("add", "npm/d", "1.0.0"),
    ]
    assert after.impact is not None
    assert after.impact.reasons[0].detail == "+2 -2 components"


def test_tombstone_removes_every_index_entry() -> None:
    first = apply_inventory(
        None, inv({"npm/a": "1.0.0", "npm/b": "2.0.0"}), source=SourcePosition(0, 1), partitions=1
    )
    index = build_index(first.updates)
    gone = apply_inventory(first.record, None, source=SourcePosition(0, 2), partitions=1)
    assert gone.record is None
    assert gone.directory == (first.record.image_id, None)
    for u in gone.updates:
        index[u.package] = apply_index_update(index[u.package], u)
    assert memberships(index) == set()


def test_multiple_versions_of_one_package_in_one_image() -> None:
    out = apply_inventory(
        None,
        inv({("npm/debug", "2.6.9"), ("npm/debug", "4.1.1")}),
        source=SourcePosition(0, 1),
        partitions=1,
    )
    index = build_index(out.updates)
    assert sorted(index["npm/debug"].versions) == ["2.6.9", "4.1.1"]


def test_old_remove_replayed_after_newer_add_is_ignored() -> None:
    add10 = IndexUpdate("npm/a", "1.0.0", 7, "add", "t1", "sha256:aa", SourcePosition(0, 10))
    rm20 = IndexUpdate("npm/a", "1.0.0", 7, "remove", "t1", "sha256:aa", SourcePosition(0, 20))
    add30 = IndexUpdate("npm/a", "1.0.0", 7, "add", "t1", "sha256:aa", SourcePosition(0, 30))
    entry = apply_index_updates(None, [add10, rm20, add30])
    assert 7 in entry.versions["1.0.0"]
    # A redelivery replays the suffix from the committed offset: rm20 then add30 again.
    replayed = apply_index_updates(entry, [rm20])
    assert 7 in replayed.versions["1.0.0"]
    assert apply_index_updates(replayed, [add30]).versions["1.0.0"] == entry.versions["1.0.0"]


def test_applying_twice_equals_applying_once() -> None:
    u = IndexUpdate("npm/a", "1.0.0", 3, "add", "t1", "d", SourcePosition(1, 4))
    once = apply_index_update(None, u)
    twice = apply_index_update(once, u)
    assert encode_entry(once) == encode_entry(twice)


def test_apply_does_not_mutate_its_input() -> None:
    u1 = IndexUpdate("npm/a", "1.0.0", 3, "add", "t1", "d", SourcePosition(0, 1))
    u2 = IndexUpdate("npm/a", "1.0.0", 4, "add", "t1", "e", SourcePosition(0, 2))
    e1 = apply_index_update(None, u1)
    apply_index_update(e1, u2)
    assert list(e1.versions["1.0.0"]) == [3]


def test_codecs_round_trip() -> None:
    out = apply_inventory(
        None,
        inv(
            {"npm/a": "1.0.0", "npm/b": None},
            repository="r",
            tags=["x"],
            namespaces=["prod"],
            labels={"team": "a"},
        ),
        source=SourcePosition(3, 9),
        partitions=4,
    )
    record = out.record
    assert isinstance(record, ImageRecord)
    assert decode_record(encode_record(record)) == record
    for u in out.updates:
        assert decode_update(encode_update(u)) == u
    entry = apply_index_updates(None, [u for u in out.updates if u.package == "npm/a"])
    decoded = decode_entry(encode_entry(entry))
    assert decoded.versions == entry.versions
    assert decoded.hwm == entry.hwm
    ref = ImageRef("t1", "sha256:aa", T0, True)
    assert decode_ref(encode_ref(ref)) == ref
    assert ImageKey.parse(ImageKey("t/with/slash", "sha256:1").text) == ImageKey("t/with/slash", "sha256:1")


pkg_sets = st.sets(
    st.tuples(
        st.sampled_from(["npm/a", "npm/b", "npm/c", "pypi/d"]), st.sampled_from(["1.0.0", "1.1.0", "2.0.0"])
    ),
    max_size=6,
)


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.sampled_from(["sha256:aa", "sha256:bb", "sha256:cc"]), st.one_of(st.none(), pkg_sets)),
        max_size=12,
    )
)
def test_index_always_equals_the_latest_inventories(
    log: list[tuple[str, set[tuple[str, str]] | None]],
) -> None:
    """Any inventory/tombstone sequence: the index holds exactly the latest snapshot of each live image."""
    records: dict[str, ImageRecord] = {}
    index: dict[str, PackageEntry] = {}
    for offset, (digest, comps) in enumerate(log):
        message = inv(comps, digest=digest) if comps is not None else None
        out = apply_inventory(records.get(digest), message, source=SourcePosition(0, offset), partitions=1)
        if out.record is None:
            records.pop(digest, None)
        else:
            records[digest] = out.record
        for u in out.updates:
            index[u.package] = apply_index_update(index.get(u.package), u)
    expected = {(p, v, r.image_id) for r in records.values() for p, v in r.packages}
    assert memberships(index) == expected


@settings(max_examples=40)
@given(st.lists(pkg_sets, min_size=1, max_size=6), st.data())
def test_replaying_a_suffix_converges(snapshots: list[set[tuple[str, str]]], data: st.DataObject) -> None:
    """At-least-once: after a crash the inventory stage re-diffs a suffix against the state it restored."""
    record = None
    index: dict[str, PackageEntry] = {}
    records_at: list[ImageRecord | None] = [None]
    for offset, comps in enumerate(snapshots):
        out = apply_inventory(record, inv(comps), source=SourcePosition(0, offset), partitions=1)
        record = out.record
        records_at.append(record)
        for u in out.updates:
            index[u.package] = apply_index_update(index.get(u.package), u)
    final = memberships(index)
    # Restore the registry at any earlier or the latest point, and replay from any earlier offset.
    start = data.draw(st.integers(0, len(snapshots) - 1))
    restored = records_at[data.draw(st.integers(start, len(snapshots)))]
    record = restored
    for offset in range(start, len(snapshots)):
        out = apply_inventory(record, inv(snapshots[offset]), source=SourcePosition(0, offset), partitions=1)
        record = out.record
        for u in out.updates:
            index[u.package] = apply_index_update(index.get(u.package), u)
    assert memberships(index) == final


_PACKAGES = st.sampled_from(["npm/a", "npm/b", "deb/openssl", "pypi/x"])
_VERSIONS = st.sampled_from(["", "1.0.0", "2.0.0"])


@settings(max_examples=50)
@given(
    before=st.sets(st.tuples(_PACKAGES, _VERSIONS)),
    after=st.sets(st.tuples(_PACKAGES, _VERSIONS)),
)
def test_one_record_per_inventory_and_partition_carries_the_same_updates(
    before: set[tuple[str, str]], after: set[tuple[str, str]]
) -> None:
    first = apply_inventory(None, inv(before) if before else None, source=SourcePosition(0, 1), partitions=2)
    out = apply_inventory(first.record, inv(after), source=SourcePosition(1, 7), partitions=2)
    if not out.updates:
        return
    assert decode_updates(encode_updates(out.updates)) == out.updates
    groups = by_package(out.updates)
    assert list(groups) == sorted({u.package for u in out.updates})
    # One fold per package over its group equals the one-update-at-a-time fold.
    for package, group in groups.items():
        one_by_one = build_index([u for u in out.updates if u.package == package])[package]
        assert apply_index_updates(None, group).versions == one_by_one.versions


def test_updates_of_different_inventories_are_not_one_record() -> None:
    a = IndexUpdate("npm/a", "1", 1, "add", "t", "d", SourcePosition(0, 1))
    b = IndexUpdate("npm/b", "1", 1, "add", "t", "d", SourcePosition(0, 2))
    with pytest.raises(ValueError, match="one inventory"):
        encode_updates([a, b])
