"""The C histogram (hftcap/_core/hist.{h,c}) through hftcap._core.Histogram: geometry, exact
counters, overflow, reset/merge, export layout, and the C file alone under ASan/UBSan."""
import threading

import numpy as np
import pytest

from hftcap import _core
from sanitized import build_and_run

G = _core.hist_geometry()
LOW = np.frombuffer(G["low"], dtype=np.uint64)
HIGH = np.frombuffer(G["high"], dtype=np.uint64)
NB, OVF, LAST, MAX_NS = G["buckets"], G["overflow_index"], G["last_regular_index"], G["max_ns"]


def expected_index(v: np.ndarray) -> np.ndarray:
    """Bucket of each value from the geometry alone (independent of hc_hist_index)."""
    idx = np.searchsorted(LOW[:OVF], v, side="right") - 1
    return np.where(v > MAX_NS, OVF, idx)


def test_geometry_is_contiguous_and_within_one_percent():
    assert MAX_NS == 10_000_000_000 and OVF == NB - 1 and LAST == OVF - 1
    assert LOW[0] == 0
    # regular buckets tile [0, 10 s] without gaps or overlap
    assert np.array_equal(HIGH[:LAST], LOW[1:OVF])
    assert LOW[LAST] <= MAX_NS < HIGH[LAST] == MAX_NS + 1
    assert LOW[OVF] == MAX_NS + 1 and HIGH[OVF] == 2**64 - 1
    width = (HIGH[:OVF] - LOW[:OVF]).astype(np.float64)
    assert np.all(width[:256] == 1), "values below 256 ns are exact"
    rel = width[256:] / LOW[256:OVF].astype(np.float64)
    assert rel.max() <= 1 / 128 + 1e-12, "a bucket is at most 0.78% of its lower bound wide"
    # 10 ns .. 10 s covered by regular buckets, struct small
    assert 8 * G["record_words"] < 32 * 1024
    assert G["record_words"] == G["header_words"] + NB


def test_index_of_every_bucket_edge():
    for i in range(OVF):
        lo, hi = int(LOW[i]), int(HIGH[i])
        assert _core.Histogram.index(lo) == i
        assert _core.Histogram.index(hi - 1) == i
    assert _core.Histogram.index(MAX_NS) == LAST
    assert _core.Histogram.index(MAX_NS + 1) == OVF
    assert _core.Histogram.index(2**64 - 1) == OVF


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_record_matches_geometry_and_numpy(seed):
    rng = np.random.default_rng(seed)
    v = np.concatenate([
        rng.integers(0, 300, 1009, dtype=np.uint64),
        (10 ** rng.uniform(1, 10.3, 20011)).astype(np.uint64),   # 10 ns .. ~20 s
        np.array([0, 1, 10, 255, 256, 257, MAX_NS, MAX_NS + 1, 2**64 - 1], dtype=np.uint64),
    ])
    h = _core.Histogram()
    assert h.record(v) == v.size
    counts = np.frombuffer(h, dtype=np.uint64)
    assert np.array_equal(counts, np.bincount(expected_index(v), minlength=NB).astype(np.uint64))
    assert h.count == v.size
    assert h.min == int(v.min()) and h.max == int(v.max())
    in_range = v[v <= MAX_NS]
    assert h.sum == int(in_range.astype(object).sum())
    assert h.overflow == int((v > MAX_NS).sum())


def test_counts_view_is_live_not_a_copy():
    h = _core.Histogram()
    view = np.frombuffer(h, dtype=np.uint64)
    assert not view.flags.writeable
    h.record_value(1000)
    assert view[_core.Histogram.index(1000)] == 1
    assert bytes(h.counts) == view.tobytes()
    with pytest.raises(TypeError, match="read-only"):
        memoryview(h).cast("B")[0:1] = b"x"


def test_empty_reset_and_merge():
    h = _core.Histogram()
    assert (h.count, h.min, h.max, h.sum, h.overflow) == (0, None, None, 0, 0)
    a = np.array([5, 700, 123456789, MAX_NS + 5], dtype=np.uint64)
    b = np.array([3, 9_999_999_999, 42], dtype=np.uint64)
    ha, hb, hab = _core.Histogram(), _core.Histogram(), _core.Histogram()
    ha.record(a)
    hb.record(b)
    hab.record(np.concatenate([a, b]))
    ha.merge(hb)
    assert ha.to_bytes() == hab.to_bytes()
    ha.reset()
    assert (ha.count, ha.min, ha.max, ha.sum) == (0, None, None, 0)
    assert not np.frombuffer(ha, dtype=np.uint64).any()


def test_record_rejects_other_dtypes():
    h = _core.Histogram()
    for bad in (np.arange(4, dtype=np.int32), np.arange(4, dtype=np.float64),
                np.arange(4, dtype=np.uint64).astype(">u8") if np.little_endian else None):
        if bad is None:
            continue
        with pytest.raises(TypeError, match="uint64"):
            h.record(bad)
    with pytest.raises((BufferError, ValueError, TypeError)):
        h.record(np.arange(8, dtype=np.uint64)[::2])   # not contiguous
    assert h.count == 0
    with pytest.raises(OverflowError):
        h.record_value(-1)


def test_export_layout():
    h1, h2 = _core.Histogram(), _core.Histogram()
    h1.record(np.array([10, 20, 30], dtype=np.uint64))
    h2.record_value(MAX_NS + 1)
    rec = np.frombuffer(h1.to_bytes(), dtype=np.uint64)
    assert rec.size == G["record_words"]
    assert list(rec[:4]) == [3, 10, 30, 60]        # count, min_ns, max_ns, sum_ns
    assert rec[4 + 10] == rec[4 + 20] == rec[4 + 30] == 1
    both = _core.hist_export([h1, h2])
    assert both == h1.to_bytes() + h2.to_bytes()
    rec2 = np.frombuffer(both, dtype=np.uint64)[G["record_words"]:]
    assert list(rec2[:4]) == [1, MAX_NS + 1, MAX_NS + 1, 0] and rec2[4 + OVF] == 1
    assert _core.hist_export([]) == b""
    with pytest.raises(TypeError):
        _core.hist_export([h1, 3])


def test_record_in_threads_with_gil_released():
    """Four threads record into their own histograms at once; every count is exact."""
    rng = np.random.default_rng(7)
    data = [rng.integers(0, 2 * MAX_NS, 200_003, dtype=np.uint64) for _ in range(4)]
    hs = [_core.Histogram() for _ in data]
    ts = [threading.Thread(target=h.record, args=(d,)) for h, d in zip(hs, data)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for h, d in zip(hs, data):
        assert np.array_equal(np.frombuffer(h, dtype=np.uint64),
                              np.bincount(expected_index(d), minlength=NB).astype(np.uint64))


C_HARNESS = r"""
#include <stdio.h>
#include <inttypes.h>
#include "hist.h"
int main(void) {
    static struct hc_hist h, h2;
    hc_hist_init(&h); hc_hist_init(&h2);
    uint64_t v[] = {0, 1, 255, 256, 511, 512, 1000, 10000000000ull, 10000000001ull, UINT64_MAX};
    for (unsigned i = 0; i < sizeof v / sizeof v[0]; i++) {
        hc_hist_record(&h, v[i]);
        printf("%" PRIu64 " %u\n", v[i], hc_hist_index(v[i]));
    }
    hc_hist_merge(&h2, &h);
    uint64_t out[2 * HC_HIST_RECORD_WORDS];
    long w = hc_hist_export(&h, 1, out, HC_HIST_RECORD_WORDS - 1);
    printf("short %ld\n", w);
    const struct hc_hist *p[2] = {&h, &h2};
    w = hc_hist_export_ptrs(p, 2, out, 2 * HC_HIST_RECORD_WORDS);
    printf("export %ld %" PRIu64 " %" PRIu64 "\n", w, out[0], out[HC_HIST_RECORD_WORDS]);
    printf("sizeof %zu low_ovf %" PRIu64 " high_last %" PRIu64 " bad %" PRIu64 "\n",
           sizeof(struct hc_hist), hc_hist_bucket_low(HC_HIST_OVERFLOW),
           hc_hist_bucket_high(HC_HIST_LAST_REGULAR), hc_hist_bucket_low(HC_HIST_BUCKETS));
    return 0;
}
"""


def test_c_core_alone_under_sanitizers(tmp_path):
    """hist.c compiled without Python, with ASan+UBSan: edge values index like the module."""
    r = build_and_run(tmp_path, C_HARNESS, ["hist"], flags=["-Werror"], asan_options="detect_leaks=0")
    lines = r.stdout.splitlines()
    for line in lines[:10]:
        v, i = map(int, line.split())
        assert i == _core.Histogram.index(v)
    assert lines[10] == "short -28"                   # -ENOSPC
    assert lines[11] == f"export {2 * G['record_words']} 10 10"
    assert lines[12] == (f"sizeof {8 * G['record_words']} low_ovf {MAX_NS + 1} "
                         f"high_last {MAX_NS + 1} bad {2**64 - 1}")
    assert r.stderr == ""


def test_record_releases_the_gil_and_guards_the_histogram():
    """While record() runs in a thread, the main thread runs Python: it sees a partial count,
    and other access to that histogram (to_bytes, reset, merge, record) is refused."""
    v = np.full(8_000_011, 1234, dtype=np.uint64)
    for _ in range(5):                  # the main thread may not get a CPU in time: retry
        h = _core.Histogram()
        t = threading.Thread(target=h.record, args=(v,))
        seen, refused = set(), 0
        t.start()
        while t.is_alive():
            c = h.count
            if 0 < c < v.size:
                seen.add(c)
                try:
                    h.to_bytes()        # harmless if the record just finished
                except RuntimeError as e:
                    assert "another thread" in str(e)
                    refused += 1
        t.join()
        assert h.count == v.size and h.sum == v.size * 1234
        if seen and refused:
            return
    pytest.fail("never observed record() running without the GIL")
