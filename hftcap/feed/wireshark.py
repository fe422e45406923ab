"""Where the Wireshark ITCH 5.0 dissector is installed (hftcap/feed/lua/itch50.lua, shipped in
the package) and the tshark command line that chains it under Wireshark's MoldUDP64."""
from __future__ import annotations

from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua" / "itch50.lua"


def tshark_args(port: int = 26400) -> list[str]:
    return ["-X", f"lua_script:{LUA}", "-d", f"udp.port=={port},moldudp64", "-d", "moldudp64.payload,itch50"]


def dissector_help(port: int = 26400) -> str:
    return (f"{LUA}\n"
            f"tshark {' '.join(tshark_args(port))} -r capture.pcapng -Y 'itch50.stock == \"AAPL\"'\n"
            "Wireshark: copy it to ~/.local/lib/wireshark/plugins/, then Analyze > Decode As: "
            f"UDP port {port} -> MoldUDP64, MoldUDP64 payload -> ITCH50")
