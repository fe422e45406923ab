"""A listening session: composes the stages of the pipeline for one `hftcap listen` run.

The receive path (hftcap.receive) opens the C capture; measurement (hftcap.measure) names the
clocks and turns the C histograms into hops; the book stage (hftcap.book, hftcap.feed) gives
views of the live books. The session holds them together and knows none of their insides."""
from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

from .book.books import Books
from .errors import HftcapError, UsageError, from_oserror
from .feed.snapshots import SnapshotBooks
from .measure import clocks, latency, progcost
from .receive import pcapng
from .receive.options import ListenOptions
from .receive.path import (BIND_NAMES, XDP_MODE_NAMES, check_foreign_xdp, check_kernel, join_groups,
                           kernel_version, open_capture, resolve_interface)



def _user_clock(k: dict) -> str:
    """The domain of the data thread's own stamps (dequeue, decode, book), for the conditions."""
    if k["source"] == "tsc":
        return "CLOCK_TAI (invariant TSC mapped to CLOCK_TAI; see stamp_clock for its error)"
    return "CLOCK_TAI"


class Session:
    """An open receive path: the C capture plus what Python holds around it."""

    def __init__(self, o: ListenOptions):
        from . import _core
        self.o = o
        self.core = _core
        self.ifindex = resolve_interface(o.interface, o.netns)
        check_kernel(o.path)
        if o.path == "xdp":
            check_foreign_xdp(_core, self.ifindex, o.interface, o.netns)
        self.rx_queues = clocks.get_rx_queues(o.interface)
        self.bound_queues = self._queues_to_bind()
        self.kernel = kernel_version()
        self.tai_clock = self.kernel >= (6, 1)
        # Device-wide NIC setting: turned on for the run, restored by close() (also on errors).
        self._hwts_cm = clocks.hw_rx_timestamping(o.interface) if o.want_hw_ts else None
        self.hwts = self._hwts_cm.__enter__() if self._hwts_cm else None
        try:
            self.clocks = clocks.describe_clocks(o.interface)
        except Exception as e:  # a probe failure must not stop the capture: report it
            self.clocks = {"interface": o.interface, "phc": None, "phc_reason": f"probe failed: {e}",
                           "synced_to_tai": False, "status": f"hw clock: unknown (probe failed: {e})"}
        tai_off = clocks.kernel_tai_offset_s() or 0
        self.itch_epoch = clocks.itch_epoch_tai_ns(o.itch_clock, tai_off)
        # Without a PHC the RX-timestamp kfunc can only return 0 (veth) or an error: the plain
        # program then does the same work without the call (about 70 ns a packet fewer on veth).
        self.no_phc = self.clocks.get("phc") is None and not str(self.clocks.get("phc_reason") or "").startswith("probe")
        cap_o = dataclasses.replace(o, want_hw_ts=False) if self.no_phc else o
        try:
            self.cap = open_capture(_core, cap_o, self.ifindex, self.bound_queues, self.tai_clock,
                                    bool(self.clocks.get("synced_to_tai")), self.itch_epoch)
        except HftcapError:
            self._restore_hwts()
            raise
        # The XDP program's own run time (kernel BPF statistics, when the caller turned them on).
        self.prog_cost = progcost.ProgCost(_core, self.cap.info()["prog_id"]) if o.path == "xdp" else None
        self.members = []
        if o.path == "xdp":
            try:
                self.members = join_groups(self.ifindex, o.feeds + o.feeds_b)
            except OSError as e:
                self.cap.close()
                self._restore_hwts()
                raise from_oserror(e, f"joining the multicast group on {o.interface}") from None
        self.capfile = None
        if o.write is not None:
            try:
                comment = "hftcap " + " ".join(sys.argv[1:])
                wcpu = pcapng.writer_cpu_for(o.write, o.cpu)
                ifaces = [pcapng.feed_interface(self, wcpu)]
                if o.recovery is not None:   # interface 1 (HC_PCAP_IF_RECOVERY): the replies
                    ifaces.append(pcapng.recovery_interface(self))
                self.capfile = pcapng.CaptureFile(
                    o.write, ifaces, comment, writer_cpu=wcpu,
                    ring_bytes=pcapng.descriptor_ring_bytes(o.write) if o.path == "xdp" else None)
                self.cap.set_writer(self.capfile.core)
            except BaseException:
                self.close()
                raise
        self.started_mono = None
        # Late join: the data thread buffers from the first packet until the snapshot is in.
        try:
            self.join = self.cap.arm_join(o.join_buffer) if o.snapshot else None
        except (ValueError, OSError) as e:
            self.close()
            raise HftcapError(f"cannot arm the join buffer: {e}", hint="a smaller --join-buffer") from None
        self.snapshot_client = None
        self.on_snapshot_event = None  # (kind, text): restore progress (listen prints it in --json mode)
        self.doctor = None          # the doctor's Report of this host, set by run_listen
        self.metrics_url = None     # the Prometheus endpoint, when listen --metrics serves one

    def start(self):
        self.cap.start()
        self.started_mono = time.monotonic()
        if self.join is not None:
            from .feed.glimpse import SnapshotClient, parse_hostport
            host, port = parse_hostport(self.o.snapshot)
            books = self.cap.books()
            # restore=True: after a gap declared lost the data thread re-arms the join and this
            # thread restores the books from a fresh snapshot (hftcap.feed.glimpse).
            self.snapshot_client = SnapshotClient(self.join, books.stats, host, port, self.o.snapshot_user,
                                                  self.o.snapshot_password, restore=True,
                                                  on_event=self.on_snapshot_event).start()

    def reset_hists(self):
        """Measure from now on: the hop histograms and the XDP program's run time."""
        self.cap.reset_hists()
        if self.prog_cost is not None:
            self.prog_cost.mark()

    def xdp_program_cost(self) -> dict | None:
        return self.prog_cost.read() if self.prog_cost is not None else None

    def _queues_to_bind(self) -> list[int]:
        o = self.o
        if o.queues is None:
            return [o.queue]
        if o.queues == "all":
            return list(range(min(self.rx_queues or 1, 64)))
        qs = [int(x) for x in o.queues.split(",")]
        if self.rx_queues and max(qs) >= self.rx_queues:
            raise UsageError(f"--queue {max(qs)}: {o.interface} has {self.rx_queues} RX queues",
                             hint=f"use 0-{self.rx_queues - 1}, or --queue all")
        return qs

    def _restore_hwts(self):
        if self._hwts_cm is not None:
            cm, self._hwts_cm = self._hwts_cm, None
            cm.__exit__(None, None, None)

    def close_capture_file(self) -> dict | None:
        """Stop the data thread, then drain and close the capture file: its summary entry."""
        if self.capfile is None:
            return None
        self.cap.stop()
        d = self.cap.xsk_drops()
        kdrops = ({k: v for k, v in d.items() if k != "socket_drops"} if self.o.path == "xdp"
                  else {"socket_drops": d["socket_drops"]})
        cf, self.capfile = self.capfile, None
        out = cf.close()
        out["kernel_drops"] = kdrops
        return out

    def close(self):
        if self.capfile is not None:
            self.close_capture_file()
        if getattr(self, "snapshot_client", None) is not None:
            self.snapshot_client.stop()
        self.cap.close()
        for s in self.members:
            s.close()
        self.members = []
        self._restore_hwts()

    # -- books (the live ones, snapshots under their seqlock) --
    @property
    def books(self):
        if getattr(self, "_books", None) is None:
            core, snaps = self.cap.books(), self.cap.snapshots()
            # hftcap Book Snapshots 'Z' (not ITCH) land in their own table: a stock that has
            # one is answered from it (hftcap.feed.snapshots), any other from the order books.
            self._books = (None if core is None else Books(core=core) if snaps is None
                           else SnapshotBooks(core, snaps))
        return self._books

    def books_stats(self) -> dict:
        b = self.books
        if b is None:
            return {}
        st = b.stats()
        return {"messages": {k: v for k, v in st["messages"].items() if v},
                "drops": {**{f"itch_{k}": v for k, v in st["drops"].items()},
                          **{f"snapshot_{k}": v for k, v in st.get("snapshot_drops", {}).items()}},
                "orders_live": st.get("orders_live")}

    def symbols(self) -> list[tuple[int, str, int]]:
        b = self.books
        if b is None:
            return []
        return [(loc, sym, b.info(loc)["messages"]) for loc, sym in b.symbols()]

    def book(self, locate: int, levels: int) -> dict:
        import numpy as np
        bk = self.books.book(locate, levels)
        info = bk.info
        return {"bids": np.stack([bk.bid_price_e4, bk.bid_shares, bk.bid_orders], axis=1).astype(np.int64)
                if len(bk.bid_price_e4) else np.zeros((0, 3), np.int64),
                "asks": np.stack([bk.ask_price_e4, bk.ask_shares, bk.ask_orders], axis=1).astype(np.int64)
                if len(bk.ask_price_e4) else np.zeros((0, 3), np.int64),
                "state": info.get("trading_state", ""),
                "last_trade_price_e4": info["last_trade_price_e4"] if info.get("trades") else None,
                "volume": info.get("volume", 0),
                "suspect": bool(info.get("suspect"))}

    def trades(self, locate: int, n: int):
        t = self.books.trades(locate, n)
        return [(int(x["itch_ns"]), int(x["price_e4"]), int(x["shares"])) for x in t[::-1]]

    def hop_data(self) -> dict:
        """{hop: HistSnapshot | Absent} for this path's hops, from a live snapshot."""
        snaps = dict(zip(self.core.HOP_NAMES, latency.parse_export(self.cap.hists())))
        out = {}
        for h in latency.hops_for(self.o.path):
            why = self.absent_reason(h.name)
            out[h.name] = latency.Absent(why) if why else snaps[h.name]
        return out

    def absent_reason(self, hop: str) -> str | None:
        why = latency.hop_absent_reason(hop, self.clocks)
        if why:
            return why
        if hop == "sender_to_book" and not self.itch_epoch:
            return "the ITCH timestamps' clock is not given (--itch-clock)"
        return None

    def conditions(self, elapsed: float | None = None, messages: int | None = None) -> dict:
        i = self.info()
        c = {k: i.get(k) for k in ("path", "xdp_mode", "bind_mode", "poll_mode", "cpu", "kernel",
                                   "interface", "queue", "netns", "feeds")}
        c["clock_sources"] = {"user": _user_clock(i["stamp_clock"]), "xdp": i.get("xdp_clock"),
                              "itch": self.o.itch_clock, "nic": self.clocks}
        c["hop_domains"] = {"sender_to_book": self.o.itch_clock}
        if elapsed:
            c["duration_s"] = round(elapsed, 3)
            if messages is not None:
                c["message_rate"] = round(messages / elapsed, 1)
        c["warmup_s"] = self.o.warmup
        if self.doctor is not None:
            c["doctor"] = self.doctor.conditions()
        return c

    def info(self) -> dict:
        i = self.cap.info()
        o = self.o
        d = {
            "interface": o.interface,
            "netns": o.netns,
            "path": o.path,
            "xdp_mode": XDP_MODE_NAMES.get(i["xdp_mode"]) if o.path == "xdp" else None,
            "bind_mode": BIND_NAMES.get(i["bind_mode"]) if o.path == "xdp" else "socket",
            "poll_mode": o.poll,
            "warm_books": o.warm_books,
            "queue": o.queue if len(self.bound_queues) == 1 else ",".join(map(str, self.bound_queues)),
            "cpu": o.cpu,
            "feeds": [str(f) for f in o.feeds],
            "feeds_b": [str(f) for f in o.feeds_b],
            "kernel": platform.release(),
            "xdp_clock": ("CLOCK_TAI" if self.tai_clock else "CLOCK_MONOTONIC") if o.path == "xdp" else None,
            "tai_offset_s": i["tai_offset_s"],
            "rx_queues": self.rx_queues,
            "hw_clock": self.clocks.get("status"),
            "itch_clock": o.itch_clock,
            "stamp_clock": self.cap.stamp_clock(),
        }
        if self.hwts is not None:
            d["hw_rx_timestamping"] = ("enabled for the run" if self.hwts.enabled
                                       else f"not enabled: {self.hwts.reason}")
        if o.path == "xdp":
            d["prog_id"] = i["prog_id"]
            d["hw_program"] = bool(i["hw_program"])
            if not i["hw_program"]:
                err = -i["hw_program_err"]
                d["hw_program_reason"] = (
                    "the device-bound program with bpf_xdp_metadata_rx_timestamp did not load "
                    f"({os.strerror(err)}): needs Linux 6.3+ and a driver with XDP RX metadata"
                    if err else f"plain program loaded: {self.clocks.get('phc_reason')}" if self.no_phc
                    else "hardware timestamps not requested")
        return d

    def hw_timestamps(self, stats: dict) -> tuple[bool, str]:
        i = self.cap.info()
        if stats.get("hw_stamped"):
            return True, f"NIC hardware RX timestamps on {stats['hw_stamped']} packets"
        if self.o.path == "xdp" and not i["hw_program"] and not self.no_phc:
            return False, self.info()["hw_program_reason"]
        if stats.get("packets"):
            return False, (f"{self.o.interface} gave no hardware RX timestamp "
                           "(no PHC, e.g. veth, or hardware RX stamping not enabled)")
        return False, "no packet received"

