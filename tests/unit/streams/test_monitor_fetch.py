"""The monitor's batch drain never drops fetched records: what it cannot apply is read again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP

from driftline.streams._faust_app import _faust_classes, split_fetch

pytestmark = pytest.mark.unit

T0, T1, T2 = TP("r", 0), TP("r", 1), TP("other", 0)


def _recs(partition: int, *offsets: int) -> list[Any]:
    return [
        SimpleNamespace(partition=partition, offset=o, value=b"%d" % o, timestamp=1000 + o)
        for o in offsets
    ]


def test_a_fetch_while_the_flow_runs_is_applied_whole() -> None:
    batch, rewind = split_fetch(
        {T0: _recs(0, 3, 4), T1: [], T2: _recs(0, 7)}, {T0, T1, T2}, flow_active=True
    )
    assert rewind == {}
    assert batch.rows == {
        "r": [(0, 3, b"3", 1003), (0, 4, b"4", 1004)],
        "other": [(0, 7, b"7", 1007)],
    }
    assert batch.next_offsets == {T0: 5, T2: 8}


def test_a_fetch_during_a_rebalance_is_read_again_from_its_first_records() -> None:
    batch, rewind = split_fetch({T0: _recs(0, 3, 4), T2: _recs(0, 7)}, None, flow_active=False)
    assert batch.rows == {} and batch.next_offsets == {}
    assert rewind == {T0: 3, T2: 7}


def test_a_partition_outside_the_active_set_is_read_again() -> None:
    batch, rewind = split_fetch({T0: _recs(0, 3), T1: _recs(1, 9, 10)}, {T0}, flow_active=True)
    assert batch.next_offsets == {T0: 4}
    assert rewind == {T1: 9}


def test_rewind_seeks_assigned_partitions_and_skips_revoked_ones() -> None:
    consumer_cls = _faust_classes(100).Transport.Consumer
    consumer = object.__new__(consumer_cls)
    seeks: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        if tp == T1:  # what aiokafka raises for a partition no longer assigned
            raise IllegalStateError(f"No current assignment for partition {tp}")
        seeks.append((tp, offset))

    consumer.seek = seek  # type: ignore[method-assign]
    asyncio.run(consumer._rewind({T0: 3, T1: 9, T2: 7}))
    assert seeks == [(T0, 3), (T2, 7)]
