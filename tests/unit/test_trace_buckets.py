"""Bucket <-> value and bucket -> percentile arithmetic of hftcap.measure.trace (the BPF program uses the
same bucket formula; the integration test checks the kernel side)."""

import random

import pytest

from hftcap.measure.trace import (NBUCKETS, SUB, bucket_bounds, bucket_index, percentile_ns, summarize)


def test_small_values_have_exact_buckets():
    for v in range(2 * SUB):
        assert bucket_bounds(bucket_index(v)) == (v, v + 1)


def test_buckets_tile_the_range_without_gaps():
    prev_hi = 0
    for i in range(NBUCKETS - 1):
        lo, hi = bucket_bounds(i)
        assert lo == prev_hi, i
        assert hi > lo
        prev_hi = hi
    assert prev_hi == bucket_bounds(NBUCKETS - 1)[0]


@pytest.mark.parametrize("v", [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 1000, 1023, 1024, 999_999,
                               123_456_789, (1 << 47) + 5])
def test_value_falls_in_its_bucket_and_width_is_at_most_one_eighth(v):
    lo, hi = bucket_bounds(bucket_index(v))
    assert lo <= v < hi
    if v >= SUB:
        assert (hi - lo) * SUB <= lo


def test_random_values_roundtrip():
    rng = random.Random(7)
    for _ in range(5000):
        v = rng.randrange(0, 1 << 47)
        lo, hi = bucket_bounds(bucket_index(v))
        assert lo <= v < hi


def test_overflow_goes_to_last_bucket():
    assert bucket_index(1 << 48) == NBUCKETS - 1
    assert bucket_index(1 << 62) == NBUCKETS - 1


def _counts(values):
    c = [0] * NBUCKETS
    for v in values:
        c[bucket_index(v)] += 1
    return c


def test_percentiles_of_exact_buckets_are_exact():
    # 1..7 ns land in width-1 buckets, so the answer is the exact order statistic
    counts = _counts([1, 2, 3, 4, 5, 6, 7])
    assert percentile_ns(counts, 0.5) == 4
    assert percentile_ns(counts, 0.99) == 7
    assert percentile_ns(counts, 1 / 7) == 1


def test_percentile_is_upper_edge_and_within_one_eighth():
    values = list(range(1000, 101_000, 100))          # 1000 values
    counts = _counts(values)
    for q in (0.5, 0.9, 0.99, 1.0):
        true = sorted(values)[max(1, -(-int(q * 1000) // 1)) - 1]
        got = percentile_ns(counts, q)
        assert true <= got < true + true / 8 + 1, (q, true, got)


def test_p99_of_100_samples_is_the_99th():
    values = [100] * 98 + [5000, 90_000]
    counts = _counts(values)
    lo, hi = bucket_bounds(bucket_index(5000))
    assert percentile_ns(counts, 0.99) == hi - 1
    assert percentile_ns(counts, 0.50) == bucket_bounds(bucket_index(100))[1] - 1


def test_empty_histogram():
    counts = [0] * NBUCKETS
    assert percentile_ns(counts, 0.5) is None
    s = summarize(counts, max_ns=0, sum_ns=0)
    assert s == {"count": 0, "buckets": [], "p50_ns": None, "p99_ns": None, "max_ns": None,
                 "mean_ns": None}


def test_bad_quantile_rejected():
    with pytest.raises(ValueError):
        percentile_ns(_counts([5]), 0)


def test_summarize_lists_nonzero_buckets_and_exact_max():
    counts = _counts([10, 10, 300])
    s = summarize(counts, max_ns=300, sum_ns=320)
    assert s["count"] == 3
    assert s["buckets"] == [[10, 11, 2], [288, 320, 1]]
    assert s["max_ns"] == 300
    assert s["mean_ns"] == pytest.approx(320 / 3)
    assert s["p50_ns"] == 10
    assert s["p99_ns"] == 300          # bucket edge 319 clamped to the exact max
    s = summarize(counts)              # no exact max: bucket edges only
    assert s["p99_ns"] == 319 and s["max_ns"] == 319 and s["mean_ns"] is None
