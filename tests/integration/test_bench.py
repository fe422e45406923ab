"""`hftcap bench` end to end with short durations: every path, every hop (or its absence with a
reason), loss counted exactly, and the JSON shape other tools read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hftcap.measure import latency
from bounds import bound

pytestmark = pytest.mark.root
HFTCAP = str(Path(sys.executable).parent / "hftcap")


def test_bench_json_has_every_path_and_hop(tmp_path):
    out = tmp_path / "bench.json"
    cp = subprocess.run([HFTCAP, "bench", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--rate", "20000",
                         "--stocks", "4", "--json", str(out)], capture_output=True, text=True, timeout=bound(300))
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(out.read_text())
    assert set(doc["paths"]) == {"xdp-busy", "xdp-wakeup", "kernel-busy", "kernel-block"}
    c = doc["conditions"]
    assert c["rounds"] == 1 and c["message_rate"] == 20000 and c["kernel"]
    expected_sent = int(20000 * (0.5 + 0.2))
    for name, p in doc["paths"].items():
        path = name.split("-")[0]
        assert set(p) >= {"hops", "sent", "received", "cpu_s", "bytes"}
        assert p["sent"] == expected_sent
        assert p["lost"] == p["sent"] - p["received"]  # exact, never hidden
        assert p["received"] > 0 and p["bytes"] > 0 and p["cpu_s"] > 0
        for h in latency.hops_for(path):
            # Present with numbers, or left out with the reason in absent_hops; never zeros.
            assert (h.name in p["hops"]) != (h.name in p["absent_hops"]), (name, h.name)
        for hop, v in p["hops"].items():
            assert set(v) == {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "count", "rounds_p50_ns"}
            assert v["rounds_p50_ns"] == [v["p50_ns"]]  # one round: its p50 is the merged one
            assert v["count"] > 0 and 0 < v["p50_ns"] <= v["p99_ns"] <= v["max_ns"]
        assert "sender_to_book" in p["hops"]
        assert ("xdp_to_book" in p["hops"]) == (path == "xdp")
        assert ("stack_to_book" in p["hops"]) == (path == "kernel")
        assert "nic_to_book" in p["absent_hops"]  # veth has no PHC
    assert "sender_to_book" in cp.stdout and "xdp-busy" in cp.stdout
    # The floor ran in the same round, same packet rate, and has every hop it defines.
    from hftcap.measure import floor
    assert set(doc["floor"]) == {"floor-xdp", "floor-kernel"}
    for fm, f in doc["floor"].items():
        assert set(f["hops"]) == set(floor.HOPS[f["kind"]]), fm
        assert f["trials"] == 1 and f["sent"] == int(20000 / 4 * (0.5 + 0.2))
        assert f["lost"] == f["sent"] - f["received"] and f["received"] > 0
        for v in f["hops"].values():
            assert v["count"] > 0 and 0 < v["p50_ns"] <= v["p99_ns"] <= v["max_ns"]
        assert f["sender"]["stamp_to_return"]["count"] == f["sent"]
    assert doc["floor"]["floor-xdp"]["xdp_program_cost"]["runs"] >= doc["floor"]["floor-xdp"]["received"]
    # Excess: hftcap minus the floor, from the figures of this same document.
    for name, rows in doc["excess"].items():
        p = doc["paths"][name]
        kind = name.split("-")[0]
        fm = f"floor-{kind}"
        want = {"sender_to_book", "xdp_to_dequeue" if kind == "xdp" else "stack_to_dequeue",
                "sender_stamp_to_send_return"} | ({"xdp_program"} if kind == "xdp" else set())
        assert set(rows) == want, (name, set(rows))
        for hop, r in rows.items():
            if hop == "xdp_program":
                assert r["mean_ns"] == p["xdp_program_cost"]["ns_per_run"]
                assert r["excess_mean_ns"] == round(r["mean_ns"] - doc["floor"][fm]["xdp_program_cost"]["ns_per_run"], 1)
                continue
            if hop == "sender_stamp_to_send_return":
                mine, base = p["sender"]["stamp_to_send_return"], doc["floor"][fm]["sender"]["stamp_to_return"]
            else:
                mine, base = p["hops"][hop], doc["floor"][fm]["hops"][r["floor"].split("/")[1]]
            assert (r["p50_ns"], r["floor_p50_ns"]) == (mine["p50_ns"], base["p50_ns"])
            assert r["excess_p50_ns"] == mine["p50_ns"] - base["p50_ns"]
            assert r["excess_p99_ns"] == mine["p99_ns"] - base["p99_ns"]
    assert set(doc["excess"]) == set(doc["paths"])
    assert "excess over the floor" in cp.stdout
    # The machine's cache line from the sender's CPU to the receiver's, before every trial.
    import statistics
    ln = doc["cpu_line"]
    assert (ln["cpu_a"], ln["cpu_b"]) == (c["sender_cpu"], c["receiver_cpu"])
    each = ln["before_each_trial_p50_ns"]
    assert set(each) == set(doc["paths"]) | set(doc["floor"]) and all(len(v) == 1 for v in each.values())
    got = [v for vs in each.values() for v in vs if v is not None]
    assert ln["measured"] == len(got) >= 1 and ln["measured"] + len(ln["not_measured"]) == len(each)
    assert ln["one_way_p50_ns"] == round(statistics.median(got), 1) and ln["one_way_max_p50_ns"] == max(got)
    assert 5 < ln["one_way_min_ns"] <= ln["one_way_p50_ns"] < 1_000_000
    assert "cache line written on CPU 0" in " ".join(cp.stdout.split())


def test_bench_trace_splits_the_kernel_path(tmp_path):
    out = tmp_path / "bench.json"
    cp = subprocess.run([HFTCAP, "bench", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--rate", "20000",
                         "--stocks", "2", "--path", "kernel-block", "--trace", "--json", str(out)],
                        capture_output=True, text=True, timeout=bound(300))
    assert cp.returncode == 0, cp.stderr
    p = json.loads(out.read_text())["paths"]["kernel-block"]
    st = p["kernel_stages"]
    for stage in ("driver_to_stack", "stack_to_queue", "copy_to_user"):
        assert st[stage]["count"] > 0 and st[stage]["p50_ns"] > 0, (stage, st)
    # Every datagram the listener received was seen by the tracer, at most (filter = its pid), and
    # each one it saw is matched or unmatched by reason, exactly.
    assert st["copy_to_user"]["count"] <= p["packets"]
    a = p["kernel_stages_accounting"]
    assert a["returned"] == a["matched"] + sum(a["unmatched_by_reason"].values()), a
    assert a["returned"] <= p["packets"], (a, p["packets"])
    assert a["unmatched_by_reason"]["queued_before_trace"] == 0, a   # traced before the first packet
    assert st["queue_to_user"]["count"] == a["matched"], (st, a)
    assert "traced datagrams: returned" in cp.stdout


def test_bench_alternates_stamp_sources(tmp_path):
    """--stamp tsc,clock: each path once per source in every round, each trial's data thread on
    the source asked for, its calibration in the JSON, loss counted exactly for both."""
    from hftcap import _core
    out = tmp_path / "bench.json"

    def bench(stamp):
        return subprocess.run([HFTCAP, "bench", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--rate",
                               "20000", "--stocks", "4", "--path", "xdp-busy", "--stamp", stamp, "--no-floor",
                               "--json", str(out)], capture_output=True, text=True, timeout=bound(300))
    sources = {"tsc", "clock"}
    if not _core.TSC_INVARIANT:
        # (a TCG guest's CPU model has none): asking for the TSC is one error line with a hint, and
        # the clock_gettime source alone is measured as below
        cp = bench("tsc,clock")
        assert cp.returncode != 0 and "Traceback" not in cp.stderr, cp.stderr
        assert "TSC is not invariant" in cp.stderr and "--stamp clock" in cp.stderr, cp.stderr
        sources = {"clock"}
    cp = bench(",".join(sorted(sources, reverse=True)))
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(out.read_text())
    assert set(doc["paths"]) == {f"xdp-busy:{s}" for s in sources}
    for name, p in doc["paths"].items():
        src = name.split(":")[1]
        assert p["stamp_clock"]["source"] == src and p["stamp_clock"]["trials"] == 1
        assert p["sent"] == int(20000 * 0.7) and p["received"] > 0
        assert p["lost"] == p["sent"] - p["received"]
        assert p["hops"]["dequeue_to_decode"]["count"] == p["hops"]["decode_to_book"]["count"] > 0
    if "tsc" in sources:
        tsc = doc["paths"]["xdp-busy:tsc"]["stamp_clock"]
        assert tsc["tsc_hz"][0] > 1e8 and tsc["checks"] >= 1 and "max_abs_error_ns" in tsc
        assert "stamps: invariant TSC" in cp.stdout
