"""The C consumer's hop order is the one hftcap.measure.latency (and DESIGN.md) names."""
from hftcap import _core
from hftcap.measure import latency


def test_c_hop_names_match_latency_table():
    assert _core.HOP_NAMES == tuple(h.name for h in latency.HOPS)


def test_itch_epoch_is_a_midnight_of_its_clock():
    import time

    from hftcap.measure.clocks import DAY_NS, itch_epoch_tai_ns
    assert itch_epoch_tai_ns("none", 0) == 0
    e = itch_epoch_tai_ns("tai-midnight", 0)
    assert e % DAY_NS == 0 and 0 <= time.clock_gettime_ns(time.CLOCK_TAI) - e < DAY_NS
    assert itch_epoch_tai_ns("utc-midnight", 37) % DAY_NS == 37 * 10**9
    et = itch_epoch_tai_ns("et-midnight", 0) % DAY_NS
    assert et in (4 * 3600 * 10**9, 5 * 3600 * 10**9)  # EDT or EST
