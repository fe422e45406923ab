"""A veth pair in a network namespace this test creates: the real ioctl backend reports no PHC,
hardware timestamping is refused without breaking anything, the NIC hops are absent and the
budget says so (never a zero)."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from hftcap import _core
from hftcap.measure import latency as L
from bounds import bound

pytestmark = pytest.mark.root

PROBE = r"""
import json, sys
from hftcap.measure import clocks
from hftcap.measure import latency
d = clocks.describe_clocks(sys.argv[1])
with clocks.hw_rx_timestamping(sys.argv[1]) as st:
    hw = {"enabled": st.enabled, "reason": st.reason, "changed": st.changed,
          "warnings": st.warnings}
print(json.dumps({"clocks": d, "hw": hw, "file": clocks.__file__,
                  "nic_to_xdp": latency.hop_absent_reason("nic_to_xdp", d)}))
"""


def test_veth_has_no_phc_and_nic_hops_are_absent(lab, tmp_path):
    r = subprocess.run(["ip", "netns", "exec", lab.host_ns, sys.executable, "-c", PROBE, lab.host_if],
                       cwd=tmp_path, capture_output=True, text=True, timeout=bound(60))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "site-packages" in out["file"] or "dist-packages" in out["file"]
    c = out["clocks"]
    assert c["driver"] == "veth" and c["phc"] is None
    assert c["phc_reason"] == "veth has no PHC"
    assert c["status"] == "hw clock: none (veth has no PHC)"
    assert c["ts_info"]["phc_index"] == -1 and not c["ts_info"]["hw_rx_all"]
    assert c["synced_to_tai"] is False and c["offset"] is None
    assert not out["hw"]["enabled"] and not out["hw"]["changed"]
    assert out["hw"]["reason"].startswith(f"hardware RX timestamps unavailable on {lab.host_if}")
    assert out["nic_to_xdp"] == "no PHC: veth has no PHC"

    # the budget of a run on this interface: NIC hops absent with the reason, never a 0
    hops = {}
    for hop in L.hops_for("xdp"):
        why = L.hop_absent_reason(hop.name, c)
        hops[hop.name] = L.Absent(why) if why else _core.Histogram()
    hops["xdp_to_dequeue"].record(np.array([1500, 1700, 2100], dtype=np.uint64))
    f = tmp_path / "veth.json"
    L.save_result(f, {"xdp": hops}, {"path": "xdp", "interface": lab.host_if, "clock_sources": c})
    buf = io.StringIO()
    L.run_budget([str(f)], console=Console(file=buf, width=240, color_system=None))
    text = buf.getvalue()
    for hop in ("nic_to_xdp", "nic_to_book"):
        [row] = [ln for ln in text.splitlines() if ln.startswith(f"│ {hop} ")]
        cells = [x.strip() for x in row.split("│")[1:-1]]
        assert "absent (no PHC: veth has no PHC)" in cells
        assert "0" not in cells and "0 ns" not in cells
        assert cells[-1] == "PHC->TAI"
    assert "hw clock: none (veth has no PHC)" in text
