"""`hftcap exchange --file CAPTURE.pcapng` replays a `listen --write` capture into the lab: a
second listener sees the same packets (tshark's MoldUDP64 fields), the same books, and the
replay never runs ahead of the recorded pace."""
from __future__ import annotations

import json
import signal

import pytest

from capread import mold_fields
from bounds import wait_for
from listenproc import FEED, Listener, hftcap

pytestmark = pytest.mark.root

GEN = ["--seed", 4, "--stocks", 3, "--messages", 12_000]


def listen_while(lab, cap, *cmd):
    """Listen while cmd sends; stopped once every packet sent is in: the exchange's stream ends
    with End of Session; a replay's packets are counted (it re-sends the End of Session packets
    the first capture holds, one or more)."""
    li = Listener(lab, "--symbol", "*", "--duration", 60, "--write", cap).wait_ready()
    try:
        sent = json.loads(hftcap(*cmd, "--json"))
        if "capture_packets" in sent:          # a replay
            wait_for(lambda: li.metrics().get("hftcap_packets_total", 0) >= sent["packets_sent"], 30,
                     f"the listener to take the {sent['packets_sent']} packets replayed")
            li.p.send_signal(signal.SIGINT)
        else:
            li.stop_after_end_of_session()
        return sent, li.result()
    finally:
        li.kill()


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_replay_a_capture_into_a_listener(lab, tmp_path, speed):
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    _, first = listen_while(lab, a, "exchange", "--netns", lab.ex_ns, "--feed", FEED, *GEN, "--msg-rate", 20_000,
                            "-k", 4, "--linger", 0)
    assert first["gaps"] == 0 and first["messages"] == 12_000
    rep, second = listen_while(lab, b, "exchange", "--netns", lab.ex_ns, "--feed", FEED, "--file", a,
                               "--speed", speed)
    assert rep["packets_sent"] == rep["capture_packets"] == first["packets"] and rep["send_errors"] == 0
    assert rep["elapsed_ns"] + rep["late_max_ns"] >= rep["recorded_span_ns"] / speed, "ran ahead of the capture"
    assert rep["recorded_span_ns"] > 0.4e9, "the capture spans 0.6 s of sending"
    assert second["packets"] == first["packets"] and second["gaps"] == 0 and second["duplicates"] == 0
    assert mold_fields(b) == mold_fields(a)
    assert second["books"] == first["books"]


def test_replay_refuses_generator_options(lab, tmp_path):
    a = tmp_path / "x.pcapng"
    a.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(24))
    from conftest import run_hftcap
    cp = run_hftcap("exchange", "--file", a, "--msg-rate", 1000)
    assert cp.returncode == 2 and "--speed" in cp.stderr
