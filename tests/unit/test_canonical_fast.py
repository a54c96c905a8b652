"""schemas.canonical's fast path (orjson over the dumped model) must give the very bytes of the walk it
replaces for float-free models, and leave every other value to the walk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import schemas.audit
import schemas.export
import schemas.messages
from bench.workload import T0, advisories, build_estate
from schemas.canonical import CanonicalError, _fast_model, _slow_dumps, dumps
from schemas.messages import Impact, ImpactBatch, Model, Reason
from streams.preview import preview


def _models() -> list[type[BaseModel]]:
    found = []
    for module in (schemas.messages, schemas.audit, schemas.export):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


def test_the_hot_messages_take_the_fast_path() -> None:
    for cls in (schemas.messages.Impact, ImpactBatch, schemas.messages.JobCommand, schemas.messages.RunEvent):
        assert _fast_model(cls), cls.__name__


class WithFloat(Model):
    score: float


class WithAny(Model):
    extra: dict[str, Any]


class IntKeys(Model):
    counts: dict[int, str]


def test_models_that_may_hold_a_float_or_odd_keys_take_the_walk() -> None:
    assert not _fast_model(WithFloat)
    assert not _fast_model(WithAny)
    assert not _fast_model(IntKeys)
    with pytest.raises(CanonicalError, match=r"float at \.score"):
        dumps(WithFloat(score=0.5))
    with pytest.raises(CanonicalError, match=r"float at \.extra\.x\[1\]"):
        dumps(WithAny(extra={"x": [1, 2.5]}))
    assert dumps(WithFloat(score=0.5), allow_floats=True) == b'{"score":0.5}'
    assert dumps(IntKeys(counts={2: "b", 10: "a"})) == b'{"counts":{"10":"a","2":"b"}}'


def test_the_preview_of_a_workload_encodes_identically_both_ways() -> None:
    estate = build_estate(40, seed=3)
    feed = advisories(estate, 60, start=T0, spacing=1, tag="fast", seed=5)
    result = preview(estate.inventories, feed, window=10, include_inventory_impacts=True)
    values: list[BaseModel] = [*estate.inventories[:10], *feed, *result.jobs]
    assert result.jobs
    for value in values:
        assert _fast_model(type(value)), type(value).__name__
        assert dumps(value) == _slow_dumps(value)


reasons = st.lists(
    st.builds(
        Reason,
        source=st.sampled_from(["advisory", "vex", "policy", "recheck"]),
        id=st.text(min_size=1, max_size=8),
        modified=st.datetimes(timezones=st.just(UTC)),
        detail=st.text(max_size=20),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=80)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), reasons, st.integers(0, 10**6)), min_size=1, max_size=5
    )
)
def test_impact_batches_encode_identically_both_ways(rows: list[tuple[str, list[Reason], int]]) -> None:
    batch = ImpactBatch(
        impacts=[
            Impact(
                tenant=tenant,
                image_digest="sha256:" + "a" * 64,
                event_time=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=at),
                reasons=rs,
                policy_revision=at,
            )
            for tenant, rs, at in rows
        ]
    )
    assert dumps(batch) == _slow_dumps(batch)


def test_a_naive_time_is_refused_on_either_path() -> None:
    class Naive(Model):
        at: datetime

    assert _fast_model(Naive)
    with pytest.raises(CanonicalError, match="naive datetime"):
        dumps(Naive.model_construct(at=datetime(2024, 1, 1)))


def test_every_schema_model_is_classified() -> None:
    # Classifying must not raise on any model of the project (annotations it does not know: the walk).
    assert all(isinstance(_fast_model(cls), bool) for cls in _models())
