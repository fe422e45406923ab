"""`hftcap bench` end to end with short durations: every path, every hop (or its absence with a
reason), loss counted exactly, and the JSON shape other tools read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hftcap.measure import latency

pytestmark = pytest.mark.root
HFTCAP = str(Path(sys.executable).parent / "hftcap")


def test_bench_json_has_every_path_and_hop(tmp_path):
    out = tmp_path / "bench.json"
    cp = subprocess.run([HFTCAP, "bench", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--rate", "20000",
                         "--stocks", "4", "--json", str(out)], capture_output=True, text=True, timeout=300)
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
            assert set(v) == {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "count"}
            assert v["count"] > 0 and 0 < v["p50_ns"] <= v["p99_ns"] <= v["max_ns"]
        assert "sender_to_book" in p["hops"]
        assert ("xdp_to_book" in p["hops"]) == (path == "xdp")
        assert ("stack_to_book" in p["hops"]) == (path == "kernel")
        assert "nic_to_book" in p["absent_hops"]  # veth has no PHC
    assert "sender_to_book" in cp.stdout and "xdp-busy" in cp.stdout


def test_bench_trace_splits_the_kernel_path(tmp_path):
    out = tmp_path / "bench.json"
    cp = subprocess.run([HFTCAP, "bench", "--rounds", "1", "--seconds", "0.5", "--warmup", "0.2", "--rate", "20000",
                         "--stocks", "2", "--path", "kernel-block", "--trace", "--json", str(out)],
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    p = json.loads(out.read_text())["paths"]["kernel-block"]
    st = p["kernel_stages"]
    for stage in ("driver_to_stack", "stack_to_queue", "copy_to_user"):
        assert st[stage]["count"] > 0 and st[stage]["p50_ns"] > 0, (stage, st)
    # Every datagram the listener received was seen by the tracer, at most (filter = its pid).
    assert st["copy_to_user"]["count"] <= p["packets"]
