from __future__ import annotations

import pytest

from driftline.streams.state import APPLIED, LOST, REFUSED, BucketDelta, Guard, RedisState

pytestmark = pytest.mark.integration


def _delta(state: RedisState, start: int, n: int) -> dict[str, BucketDelta]:
    return {state.bucket_key(1000, start): BucketDelta(start, {"c:a": n}, {"s:a": 0.5 * n})}


def test_batch_applies_once_and_redelivery_changes_nothing(redis_client, redis_prefix):
    st = RedisState(redis_client, redis_prefix, "fraud")
    g = [Guard("t", 0, 0, 9, 5_500)]
    r = st.apply(g, _delta(st, 5000, 3), 5_100, ttl_s=600)
    assert r.status == APPLIED
    assert r.offsets == {"t:0": 9} and r.max_times == {0: 5_500} and r.first == 5_100
    again = st.apply(g, _delta(st, 5000, 3), 5_100, ttl_s=600)
    assert again.status == REFUSED
    # overlapping batch (offsets 5..12) is refused too: the caller must drop offsets <= 9
    assert st.apply([Guard("t", 0, 5, 12, 6_000)], _delta(st, 5000, 1), None, 600).status == REFUSED
    ok = st.apply([Guard("t", 0, 10, 12, 4_000, 9)], _delta(st, 5000, 1), 4_000, 600)
    assert ok.status == APPLIED and ok.max_times == {0: 5_500} and ok.first == 4_000
    [(start, fields)] = st.read_buckets(1000, 0, 10_000)
    assert start == 5000 and fields["c:a"] == "4" and float(fields["s:a"]) == 2.0


def test_a_stale_view_is_refused_and_a_rolled_back_redis_is_lost(redis_client, redis_prefix):
    st = RedisState(redis_client, redis_prefix, "p")
    assert st.apply([Guard("t", 0, 0, 9, 9_000)], _delta(st, 0, 1), 0, 600).status == APPLIED
    # another monitor applied offsets 10..19; this caller still believes 9 was the last
    assert st.apply([Guard("t", 0, 10, 19, 19_000, 9)], _delta(st, 0, 1), 0, 600).status == (
        APPLIED
    )
    stale = st.apply([Guard("t", 0, 20, 29, 20_000, 9)], _delta(st, 0, 1), 0, 600)
    assert stale.status == REFUSED and stale.offsets == {"t:0": 19}
    assert stale.max_times == {0: 19_000}  # what the caller judges lateness with on retry
    ok = st.apply([Guard("t", 0, 20, 29, 20_000, 19)], _delta(st, 0, 1), 0, 600)
    assert ok.status == APPLIED
    # Redis restarted from a snapshot older than what the caller applied
    redis_client.hset(st.key("off"), "t:0", 24)
    assert st.apply([Guard("t", 0, 30, 39, 30_000, 29)], _delta(st, 0, 1), 0, 600).status == LOST


def test_lost_state_is_detected(redis_client, redis_prefix):
    st = RedisState(redis_client, redis_prefix, "p")
    st.apply([Guard("t", 1, 0, 4, 100)], _delta(st, 0, 1), 100, 600)
    st.clear()
    r = st.apply([Guard("t", 1, 5, 8, 200, expected_prev=4)], _delta(st, 0, 1), 200, 600)
    assert r.status == LOST
    assert st.read_buckets(1000, 0, 10_000) == []


def test_cleanup_deletes_old_buckets_and_marks_only_move_forward(redis_client, redis_prefix):
    st = RedisState(redis_client, redis_prefix, "p")
    for i in range(5):
        st.apply([Guard("t", 0, i, i, i * 1000, i - 1)], _delta(st, i * 1000, 1), None, 600)
    st.apply([Guard("t", 0, 5, 5, 5000, 4)], _delta(st, 5000, 1), None, 600, cutoff=3000)
    assert [s for s, _ in st.read_buckets(1000, 0, 10_000)] == [3000, 4000, 5000]
    assert redis_client.exists(st.bucket_key(1000, 1000)) == 0
    assert st.mark([("a", 3000, {"state": "firing"})]) == ["a"]
    assert st.mark([("a", 2000, {"state": "ok"})], floor=7) == []
    ends, states = st.emitted()
    assert ends == {"a": 3000} and states == {"a": {"state": "firing"}}
    assert st.snapshot().floor == 7


def test_read_matrix_returns_chosen_counters_of_one_interval_in_start_order(
    redis_client, redis_prefix
):
    st = RedisState(redis_client, redis_prefix, "p")
    for i, start in enumerate([3000, 1000, 2000]):
        st.apply([Guard("t", 0, i, i, start, i - 1)], _delta(st, start, i + 1), None, 600)
    other = {st.bucket_key(5000, 0): BucketDelta(0, {"c:a": 9})}  # another interval
    st.apply([Guard("t", 0, 3, 3, 3000, 2)], other, None, 600)
    starts, mat = st.read_matrix(1000, 1000, 3000, ["s:a", "c:missing", "c:a"])
    assert starts.tolist() == [1000, 2000]
    assert mat.tolist() == [[1.0, 0.0, 2.0], [1.5, 0.0, 3.0]]
    starts, mat = st.read_matrix(1000, 10_000, 20_000, ["c:a"])
    assert starts.size == 0 and mat.shape == (0, 1)
    with pytest.raises(ValueError, match="fields"):
        st.read_matrix(1000, 0, 1, [])
