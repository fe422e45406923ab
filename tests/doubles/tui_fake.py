"""FakeSource: synthetic, changing data behind the `LiveSource` interface, for developing and
testing the live view without a capture. Nothing it produces is a measurement: its status line
says "FakeSource (synthetic data)".

The simulation advances on each call by the monotonic time elapsed since the previous call
(no thread), from a seeded generator: ~20 stocks with order books that drift, add, cancel and
trade; packet/message/byte counters; log-normal per-hop latencies in log-spaced histograms
(since start, and 1 s intervals whose p50 history is the sparkline).

`python -m tui_fake [--symbol AAPL] [--seconds N] [--seed N] [--hz 10]` runs the view on it.
"""
from __future__ import annotations

import argparse
import random
import threading
import time
from collections import deque
from typing import Optional

import numpy as np

# (symbol, starting price in dollars, relative activity)
_STOCKS = (
    ("AAPL", 189.25, 30), ("MSFT", 415.10, 25), ("NVDA", 875.40, 40), ("AMZN", 178.30, 20),
    ("GOOGL", 152.80, 15), ("META", 495.60, 18), ("TSLA", 171.05, 35), ("AMD", 160.20, 22),
    ("INTC", 31.45, 10), ("QQQ", 440.75, 28), ("SPY", 512.30, 33), ("NFLX", 610.90, 6),
    ("ADBE", 480.15, 5), ("CSCO", 48.95, 7), ("PEP", 168.40, 4), ("COST", 725.35, 4),
    ("AVGO", 1320.50, 9), ("TXN", 171.85, 3), ("QCOM", 165.70, 6), ("SBUX", 91.20, 3),
)
_TYPES = (("A", 0.38), ("D", 0.34), ("U", 0.08), ("E", 0.06), ("X", 0.05), ("F", 0.03),
          ("P", 0.03), ("C", 0.01), ("I", 0.01), ("L", 0.01))
# hop -> (domain, absent reason or None, median ns, log-normal sigma); the XDP path on a veth
_HOPS = (
    ("nic_to_xdp", "PHC->TAI", "no PHC: veth has no hardware clock", 0, 0),
    ("xdp_to_dequeue", "TAI", None, 1800, 0.6),
    ("dequeue_to_decode", "TAI", None, 220, 0.4),
    ("decode_to_book", "TAI", None, 140, 0.5),
    ("xdp_to_book", "TAI", None, 2300, 0.55),
    ("sender_to_book", "tai-midnight", None, 9500, 0.5),
    ("nic_to_book", "PHC->TAI", "no PHC: veth has no hardware clock", 0, 0),
)
_EDGES = np.geomspace(1.0, 1e10, 1201)      # ~2% wide latency bins, 1 ns .. 10 s
_TICK = 100                                 # one cent in price_e4


class _Hist:
    def __init__(self):
        self.counts = np.zeros(len(_EDGES) - 1, dtype=np.int64)
        self.max = 0

    def add(self, ns: np.ndarray) -> None:
        if len(ns):
            self.counts += np.histogram(ns, _EDGES)[0]
            self.max = max(self.max, int(ns.max()))

    def stats(self) -> dict:
        n = int(self.counts.sum())
        if n == 0:
            return {"p50": 0, "p99": 0, "p999": 0, "max": 0, "count": 0}
        cum = np.cumsum(self.counts)
        out = {}
        for key, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            i = int(np.searchsorted(cum, q * n))
            out[key] = min(int(np.sqrt(_EDGES[i] * _EDGES[i + 1])), self.max)
        out["max"], out["count"] = self.max, n
        return out


class _Book:
    def __init__(self, rng: random.Random, price: float):
        mid = int(round(price * 100)) * _TICK
        self.rng = rng
        self.bids = {mid - k * _TICK: [rng.randint(1, 30) * 100, rng.randint(1, 12)]
                     for k in range(1, 16)}
        self.asks = {mid + k * _TICK: [rng.randint(1, 30) * 100, rng.randint(1, 12)]
                     for k in range(1, 16)}
        self.trades: deque = deque(maxlen=64)
        self.last: Optional[int] = None
        self.volume = 0
        self.messages = 0

    def event(self, itch_ns: int) -> None:
        rng = self.rng
        side = self.bids if rng.random() < 0.5 else self.asks
        is_bid = side is self.bids
        best = max(side) if is_bid else min(side)
        other_best = min(self.asks) if is_bid else max(self.bids)
        r = rng.random()
        if r < 0.12:                                     # a trade against the best level
            lvl = side[best]
            shares = min(lvl[0], rng.randint(1, 5) * 100)
            lvl[0] -= shares
            if lvl[0] <= 0 or lvl[1] <= 1 and rng.random() < 0.5:
                del side[best]
            else:
                lvl[1] = max(1, lvl[1] - (1 if rng.random() < 0.3 else 0))
            self.trades.appendleft((itch_ns, best, shares))
            self.last, self.volume = best, self.volume + shares
            if not side:                                 # refill a wiped side
                step = -_TICK if is_bid else _TICK
                side[best + step] = [rng.randint(1, 30) * 100, rng.randint(1, 8)]
        elif r < 0.55:                                   # add an order near the top
            k = int(rng.expovariate(0.4))
            p = best - k * _TICK if is_bid else best + k * _TICK
            if rng.random() < 0.1 and abs(other_best - best) > _TICK:
                p = best + _TICK if is_bid else best - _TICK   # improve the inside
            lvl = side.setdefault(p, [0, 0])
            lvl[0] += rng.randint(1, 10) * 100
            lvl[1] += 1
        else:                                            # cancel part of a level
            prices = sorted(side, reverse=is_bid)[:10]
            p = prices[min(int(rng.expovariate(0.35)), len(prices) - 1)]
            lvl = side[p]
            lvl[0] -= min(lvl[0], rng.randint(1, 5) * 100)
            if lvl[0] <= 0:
                if len(side) > 3:
                    del side[p]
                else:
                    lvl[0], lvl[1] = 100, 1
            elif lvl[1] > 1 and rng.random() < 0.5:
                lvl[1] -= 1

    def side_array(self, side: dict, levels: int, best_high: bool) -> np.ndarray:
        prices = sorted(side, reverse=best_high)[:levels]
        return np.array([[p, side[p][0], side[p][1]] for p in prices],
                        dtype=np.int64).reshape(-1, 3)


class FakeSource:
    """A `LiveSource` with synthetic data; `msg_rate` messages per second, seeded."""

    def __init__(self, seed: int = 1, msg_rate: float = 60_000.0, clock=time.monotonic):
        self._rng = random.Random(seed)
        self._np = np.random.default_rng(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._t0 = self._t = self._interval_t = clock()
        self._rate = msg_rate
        self._books = {i + 1: _Book(self._rng, px) for i, (_, px, _w) in enumerate(_STOCKS)}
        self._names = {i + 1: s for i, (s, _, _) in enumerate(_STOCKS)}
        self._weights = [w for _, _, w in _STOCKS]
        self._c = {"packets": 0, "messages": 0, "bytes": 0, "gaps": 0, "duplicates": 0}
        self._drops = {"ring_full": 0, "bad_length": 0, "unknown_type": 0, "stale_session": 0}
        self._xdp = {"redirected": 0, "pass_not_feed": 0, "pass_no_socket": 0}
        self._by_type = {t: 0 for t, _ in _TYPES}
        self._reset_hists()

    def _reset_hists(self) -> None:
        self._since = {h: _Hist() for h, *_ in _HOPS}
        self._cur = {h: _Hist() for h, *_ in _HOPS}
        self._last_interval: dict = {h: None for h, *_ in _HOPS}
        self._spark = {h: deque(maxlen=60) for h, *_ in _HOPS}

    def _advance(self) -> None:
        now = self._clock()
        dt = min(now - self._t, 1.0)
        if dt <= 0:
            return
        self._t = now
        rng, nrng = self._rng, self._np
        msgs = int(self._rate * dt * rng.uniform(0.7, 1.3))
        pkts = max(1, msgs // 4) if msgs else 0
        self._c["messages"] += msgs
        self._c["packets"] += pkts
        # UDP payload: MoldUDP64 header 20 B + ~34 B a message; + 42 B Ethernet/IPv4/UDP
        self._c["bytes"] += pkts * 20 + msgs * 34 + pkts * 42
        self._xdp["redirected"] += pkts
        self._xdp["pass_not_feed"] += int(rng.random() < dt * 2)
        if rng.random() < dt * 0.05:
            self._c["gaps"] += 1
        if rng.random() < dt * 0.03:
            self._c["duplicates"] += 1
        if rng.random() < dt * 0.02:
            self._drops["unknown_type"] += 1
        left = msgs
        for t, share in _TYPES:
            n = min(left, int(round(msgs * share)))
            self._by_type[t] += n
            left -= n
        self._by_type["A"] += left
        itch_ns = int(time.clock_gettime_ns(time.CLOCK_REALTIME) % 86_400_000_000_000)
        per_stock = nrng.multinomial(msgs, np.array(self._weights) / sum(self._weights))
        for loc, n in zip(self._books, per_stock):
            book = self._books[loc]
            book.messages += int(n)
            for _ in range(min(int(n) // 200 + (1 if n else 0), 40)):   # a few visible events
                book.event(itch_ns)
        n_lat = min(pkts, 5000)
        for hop, _dom, absent, med, sigma in _HOPS:
            if absent:
                continue
            x = nrng.lognormal(np.log(med), sigma, n_lat)
            self._since[hop].add(x)
            self._cur[hop].add(x)
        if now - self._interval_t >= 1.0:
            self._interval_t = now
            for hop, _d, absent, *_ in _HOPS:
                if absent:
                    continue
                st = self._cur[hop].stats()
                self._last_interval[hop] = st
                self._spark[hop].append(float(st["p50"]))
                self._cur[hop] = _Hist()

    # -- LiveSource ----------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            self._advance()
            return {"interface": "fake0 FakeSource (synthetic data)", "netns": None,
                    "path": "xdp", "xdp_mode": "native", "bind_mode": "copy",
                    "poll_mode": "busy", "cpu": 1, "queue": 0,
                    "hw_clock": "none (veth has no PHC)", "ptp": "none",
                    "uptime_s": self._clock() - self._t0}

    def counters(self) -> dict:
        with self._lock:
            self._advance()
            return dict(self._c, drops=dict(self._drops), xdp=dict(self._xdp),
                        messages_by_type=dict(self._by_type))

    def symbols(self) -> list:
        with self._lock:
            return [(loc, self._names[loc], b.messages) for loc, b in self._books.items()]

    def book(self, locate: int, levels: int) -> dict:
        with self._lock:
            b = self._books[locate]
            return {"bids": b.side_array(b.bids, levels, True),
                    "asks": b.side_array(b.asks, levels, False),
                    "state": "T", "last_trade_price_e4": b.last, "volume": b.volume}

    def trades(self, locate: int, n: int) -> list:
        with self._lock:
            return list(self._books[locate].trades)[:n]

    def latency(self) -> dict:
        with self._lock:
            out = {}
            for hop, dom, absent, *_ in _HOPS:
                if absent:
                    out[hop] = {"domain": dom, "absent": absent, "since_start": None,
                                "interval": None, "spark": []}
                else:
                    out[hop] = {"domain": dom, "absent": None,
                                "since_start": self._since[hop].stats(),
                                "interval": self._last_interval[hop],
                                "spark": list(self._spark[hop])}
            return out

    def reset_latency(self) -> None:
        with self._lock:
            self._reset_hists()


def main(argv=None) -> int:
    from hftcap.view.tui import run_live
    ap = argparse.ArgumentParser(prog="python -m tui_fake",
                                 description="the live view on synthetic data")
    ap.add_argument("--symbol", default=None)
    ap.add_argument("--seconds", type=float, default=None, help="quit after this long")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hz", type=float, default=10.0, help="frames per second")
    a = ap.parse_args(argv)
    run_live(FakeSource(seed=a.seed), symbol=a.symbol, refresh_hz=a.hz, max_seconds=a.seconds,
             title="hftcap tui_fake")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
