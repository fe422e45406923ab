"""Test-side ITCH 5.0 tables, encoder/decoder and a small, obviously-correct book model.

Everything here is written from /work/shared/specs/ITCH50.md (tables 3 and 4), not from the C
code, so the C decoder and books are checked against an independent reading of the spec.
Field names are the spec's in snake_case, with the unit suffix hftcap uses (_e4, _e8, _s).
"""
from __future__ import annotations

import struct
from collections import Counter, defaultdict

# (field, size, kind): a = alpha (space padded), u = unsigned BE integer
_STOCK = ("stock", 8, "a")
SPEC = {
    "S": [("event_code", 1, "a")],
    "R": [_STOCK, ("market_category", 1, "a"), ("financial_status_indicator", 1, "a"),
          ("round_lot_size", 4, "u"), ("round_lots_only", 1, "a"), ("issue_classification", 1, "a"),
          ("issue_sub_type", 2, "a"), ("authenticity", 1, "a"),
          ("short_sale_threshold_indicator", 1, "a"), ("ipo_flag", 1, "a"),
          ("luld_reference_price_tier", 1, "a"), ("etp_flag", 1, "a"),
          ("etp_leverage_factor", 4, "u"), ("inverse_indicator", 1, "a")],
    "H": [_STOCK, ("trading_state", 1, "a"), ("reserved", 1, "a"), ("reason", 4, "a")],
    "Y": [_STOCK, ("reg_sho_action", 1, "a")],
    "L": [("mpid", 4, "a"), _STOCK, ("primary_market_maker", 1, "a"),
          ("market_maker_mode", 1, "a"), ("market_participant_state", 1, "a")],
    "V": [("level1_e8", 8, "u"), ("level2_e8", 8, "u"), ("level3_e8", 8, "u")],
    "W": [("breached_level", 1, "a")],
    "K": [_STOCK, ("ipo_quotation_release_time_s", 4, "u"),
          ("ipo_quotation_release_qualifier", 1, "a"), ("ipo_price_e4", 4, "u")],
    "J": [_STOCK, ("auction_collar_reference_price_e4", 4, "u"),
          ("upper_auction_collar_price_e4", 4, "u"), ("lower_auction_collar_price_e4", 4, "u"),
          ("auction_collar_extension", 4, "u")],
    "h": [_STOCK, ("market_code", 1, "a"), ("operational_halt_action", 1, "a")],
    "A": [("order_reference_number", 8, "u"), ("buy_sell_indicator", 1, "a"), ("shares", 4, "u"),
          _STOCK, ("price_e4", 4, "u")],
    "F": [("order_reference_number", 8, "u"), ("buy_sell_indicator", 1, "a"), ("shares", 4, "u"),
          _STOCK, ("price_e4", 4, "u"), ("attribution", 4, "a")],
    "E": [("order_reference_number", 8, "u"), ("executed_shares", 4, "u"), ("match_number", 8, "u")],
    "C": [("order_reference_number", 8, "u"), ("executed_shares", 4, "u"), ("match_number", 8, "u"),
          ("printable", 1, "a"), ("execution_price_e4", 4, "u")],
    "X": [("order_reference_number", 8, "u"), ("canceled_shares", 4, "u")],
    "D": [("order_reference_number", 8, "u")],
    "U": [("original_order_reference_number", 8, "u"), ("new_order_reference_number", 8, "u"),
          ("shares", 4, "u"), ("price_e4", 4, "u")],
    "P": [("order_reference_number", 8, "u"), ("buy_sell_indicator", 1, "a"), ("shares", 4, "u"),
          _STOCK, ("price_e4", 4, "u"), ("match_number", 8, "u")],
    "Q": [("shares", 8, "u"), _STOCK, ("cross_price_e4", 4, "u"), ("match_number", 8, "u"),
          ("cross_type", 1, "a")],
    "B": [("match_number", 8, "u")],
    "I": [("paired_shares", 8, "u"), ("imbalance_shares", 8, "u"), ("imbalance_direction", 1, "a"),
          _STOCK, ("far_price_e4", 4, "u"), ("near_price_e4", 4, "u"),
          ("current_reference_price_e4", 4, "u"), ("cross_type", 1, "a"),
          ("price_variation_indicator", 1, "a")],
    "N": [_STOCK, ("interest_flag", 1, "a")],
    "O": [_STOCK, ("open_eligibility_status", 1, "a"), ("minimum_allowable_price_e4", 4, "u"),
          ("maximum_allowable_price_e4", 4, "u"), ("near_execution_price_e4", 4, "u"),
          ("near_execution_time", 8, "u"), ("lower_price_range_collar_e4", 4, "u"),
          ("upper_price_range_collar_e4", 4, "u")],
}
# Table 3: total length per type
LENGTHS = {"S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35,
           "h": 21, "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44,
           "Q": 40, "B": 19, "I": 50, "N": 20, "O": 48}


def encode(mtype: str, stock_locate=0, tracking_number=0, timestamp_ns=0, **fields) -> bytes:
    """One ITCH message; missing alpha fields are spaces, missing integers 0."""
    out = bytearray(mtype.encode("ascii"))
    out += struct.pack(">HH", stock_locate, tracking_number)
    out += timestamp_ns.to_bytes(6, "big")
    for name, size, kind in SPEC[mtype]:
        v = fields.pop(name, None)
        if kind == "a":
            s = (v or "").encode("latin-1")
            assert len(s) <= size, name
            out += s.ljust(size, b" ")
        else:
            out += int(v or 0).to_bytes(size, "big")
    assert not fields, f"unknown fields {fields}"
    return bytes(out)


def decode(msg: bytes) -> dict:
    """Inverse of encode (for well-formed messages of known type and exact length)."""
    t = chr(msg[0])
    d = {"type": t, "stock_locate": int.from_bytes(msg[1:3], "big"),
         "tracking_number": int.from_bytes(msg[3:5], "big"),
         "timestamp_ns": int.from_bytes(msg[5:11], "big")}
    off = 11
    for name, size, kind in SPEC[t]:
        raw = msg[off:off + size]
        d[name] = raw.decode("latin-1") if kind == "a" else int.from_bytes(raw, "big")
        off += size
    return d


def frame(msgs) -> bytes:
    """NASDAQ file layout: u16 BE length before each message."""
    return b"".join(struct.pack(">H", len(m)) + m for m in msgs)


def unframe(data: bytes):
    off = 0
    while off + 2 <= len(data):
        n = int.from_bytes(data[off:off + 2], "big")
        yield data[off + 2: off + 2 + n]
        off += 2 + n


class RefBooks:
    """Dicts and lists: orders by reference, per (locate, side) price -> FIFO of references."""

    def __init__(self):
        self.orders = {}  # ref -> [locate, side, price_e4, shares]
        self.levels = defaultdict(lambda: defaultdict(list))  # (locate, side) -> price -> [refs]
        self.drops = Counter()
        self.volume = Counter()
        self.last_price = {}
        self.symbols = {}
        self.state = {}

    def _add(self, locate, side, ref, shares, price):
        if shares == 0:
            self.drops["zero_shares"] += 1
            return
        if ref in self.orders:
            self.drops["duplicate_ref"] += 1
            return
        self.orders[ref] = [locate, side, price, shares]
        self.levels[(locate, side)][price].append(ref)

    def _remove(self, ref):
        locate, side, price, _ = self.orders.pop(ref)
        q = self.levels[(locate, side)][price]
        q.remove(ref)
        if not q:
            del self.levels[(locate, side)][price]

    def _reduce(self, ref, n, print_price=None, printable=False):
        if ref not in self.orders:
            self.drops["unknown_ref"] += 1
            return
        o = self.orders[ref]
        if n > o[3]:
            self.drops["over_reduce"] += 1
            n = o[3]
        if printable:
            self.volume[o[0]] += n
            self.last_price[o[0]] = print_price if print_price else o[2]
        o[3] -= n
        if o[3] == 0:
            self._remove(ref)

    def apply(self, m: dict):
        t = m["type"]
        loc = m["stock_locate"]
        if t in "AF":
            side = {"B": 0, "S": 1}.get(m["buy_sell_indicator"])
            if side is None:
                self.drops["bad_side"] += 1
                return
            self._add(loc, side, m["order_reference_number"], m["shares"], m["price_e4"])
        elif t == "E":
            self._reduce(m["order_reference_number"], m["executed_shares"], None, True)
        elif t == "C":
            self._reduce(m["order_reference_number"], m["executed_shares"], m["execution_price_e4"],
                         m["printable"] == "Y")
        elif t == "X":
            self._reduce(m["order_reference_number"], m["canceled_shares"])
        elif t == "D":
            if m["order_reference_number"] not in self.orders:
                self.drops["unknown_ref"] += 1
            else:
                self._remove(m["order_reference_number"])
        elif t == "U":
            old = m["original_order_reference_number"]
            if old not in self.orders:
                self.drops["unknown_ref"] += 1
                return
            locate, side, _, _ = self.orders[old]
            self._remove(old)
            self._add(locate, side, m["new_order_reference_number"], m["shares"], m["price_e4"])
        elif t == "P":
            self.volume[loc] += m["shares"]
            self.last_price[loc] = m["price_e4"]
        elif t == "Q":
            if m["shares"]:
                self.volume[loc] += m["shares"]
                self.last_price[loc] = m["cross_price_e4"]
        elif t == "R":
            self.symbols[loc] = m["stock"].rstrip(" ")
        elif t == "H":
            self.state[loc] = m["trading_state"]

    def book(self, locate):
        """(bids, asks): lists of (price_e4, shares, orders), best first."""
        out = []
        for side in (0, 1):
            lv = self.levels.get((locate, side), {})
            prices = sorted(lv, reverse=(side == 0))
            out.append([(p, sum(self.orders[r][3] for r in lv[p]), len(lv[p])) for p in prices])
        return tuple(out)

    def queue(self, locate, side, price):
        return [(r, self.orders[r][3]) for r in self.levels.get((locate, side), {}).get(price, [])]

    def bbo(self, locate):
        b, a = self.book(locate)
        return ((b[0][0], b[0][1]) if b else (0, 0)), ((a[0][0], a[0][1]) if a else (0, 0))

    def locates(self):
        return {k[0] for k, v in self.levels.items() if v}
