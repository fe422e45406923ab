"""Kernel receive-path breakdown with bcc tracepoints (the only hftcap module that imports bcc).

Stages of one UDP datagram on the kernel receive path, each a histogram aggregated in the kernel
(per-CPU arrays; log2 buckets with 8 linear sub-buckets each, in ns; clock CLOCK_MONOTONIC through
bpf_ktime_get_ns) and read by Python each interval:

  driver_to_stack    the driver hands the skb to the kernel (net:netif_rx, net:napi_gro_receive_entry,
                     net:netif_receive_skb_entry, net:netif_receive_skb_list_entry) -> the stack
                     takes it (net:netif_receive_skb). For veth and loopback: the per-CPU backlog.
  stack_to_queue     net:netif_receive_skb -> the datagram is queued on the socket and the socket
                     signalled (sock:sk_data_ready, UDP, same CPU, same softirq)
  queue_to_user      sock:sk_data_ready -> recvmsg returns that datagram (sock:sock_recv_length):
                     time in the socket queue, including the wakeup and the copy
  copy_to_user       dequeue and copy of one datagram: from the later of the recv syscall's entry,
                     the previous datagram's return in the same recvmmsg, or the thread's switch-in
                     after a wakeup -> sock:sock_recv_length
  wakeup_to_running  sched:sched_wakeup of a receiver thread blocked in recvmmsg/recvmsg/recvfrom
                     -> sched:sched_switch puts it on a CPU

How datagrams are followed without reading kernel structs (bcc may compile against headers of
another kernel version, see scripts/bcc-headers.sh; only tracepoint arguments are read): skbs are
keyed by address from the driver to the stack; the softirq that runs netif_receive_skb for an skb
also queues it and signals the socket on the same CPU, which gives the (skb, socket) pair; each
socket's queue is FIFO, so the n-th signalled datagram of a socket is the n-th one its recvmsg
returns. Positions are taken atomically on both sides. A datagram can be returned before its
signal: UDP signals after it releases the queue lock, so when the producing CPU is interrupted
(or its vCPU preempted by the host) in between, a receiver already inside recv on the other CPU
takes the datagram first. The return then leaves a placeholder at its position and the late
signal, finding it, counts it; a signal whose skb reached the stack only after that return
instead means the returned datagram was queued before the socket's first signal since attach,
and takes the next position to be returned (attribution recovers when the queue drains).
Every datagram returned to a traced receiver is counted once: matched (its stages recorded) or
unmatched by reason (UNMATCHED_REASONS); accounting() adds them up, returned = matched + reasons.
skb:skb_copy_datagram_iovec is not used: UDP copies linear skbs with copy_linear_skb(), which has no
tracepoint.

Filter: the receiving process (--pid: its thread group; --port: processes holding a UDP socket bound
to it; --netns: processes in that network namespace; all given must hold), resolved from /proc
into an in-kernel tgid set at start and every interval. Every stage is attributed when a filtered
thread receives the datagram, so other traffic on the machine never reaches a histogram.
Multicast clones and UDP GSO segments take the stamps of the skb they came from; so do datagrams
another CPU queued in the same batch (kernels with per-NUMA UDP producer queues let the CPU that
moves a batch to the socket signal for all of it), and datagrams the stack took as one list
(GRO/NAPI batches) take the stamps of the list's last skb, kept per CPU so that skb's free cannot
lose them. Not covered: read() and io_uring receivers, MSG_PEEK.
"""

import ctypes
import ctypes.util
import json
import os
import re
import time

from ..errors import HftcapError

STAGES = ("driver_to_stack", "stack_to_queue", "queue_to_user", "copy_to_user", "wakeup_to_running")
STAGE_POINTS = {   # from -> to, as tracepoints (the module docstring has the details)
    "driver_to_stack": "net:netif_rx|napi_gro_receive_entry|netif_receive_skb[_list]_entry -> "
                       "net:netif_receive_skb",
    "stack_to_queue": "net:netif_receive_skb -> sock:sk_data_ready (UDP, same CPU)",
    "queue_to_user": "sock:sk_data_ready -> sock:sock_recv_length (same socket, FIFO position)",
    "copy_to_user": "recv syscall entry | previous datagram returned | switch-in after wakeup -> "
                    "sock:sock_recv_length",
    "wakeup_to_running": "sched:sched_wakeup (thread blocked in recv*) -> sched:sched_switch in",
}
COUNTERS = ("datagrams", "unmatched", "no_stack_stamp", "no_driver_stamp", "discarded_over_10s",
            "untraced_call", "no_socket_state", "returned_before_signal", "late_signals")
# Why a datagram returned to a receiver has no stages; accounting() gives returned = matched + these.
UNMATCHED_REASONS = {
    "untraced_call": "returned by a receive call whose entry was not traced: it began before attach "
                     "or before its process joined the filter, or it is read()/io_uring (not covered)",
    "queued_before_trace": "queued before its socket's first signal since attach: never signalled "
                           "to the tracer",
    "signal_after_return": "returned before its sk_data_ready ran (or was stamped): the producing CPU "
                           "was interrupted between queueing and signalling and a receiver already in "
                           "recv took it",
}

SUB_BITS = 3                     # 8 linear sub-buckets per power of two: bucket width <= 1/8 of value
SUB = 1 << SUB_BITS
MAX_MSB = 47                     # values >= 2**48 ns (~78 h) land in the last bucket
NBUCKETS = (MAX_MSB - SUB_BITS + 2) * SUB
CLOCK = "CLOCK_MONOTONIC (bpf_ktime_get_ns)"
TRACEFS = "/sys/kernel/tracing"
STALE_NS = 10_000_000_000


def bucket_index(value_ns):
    """Bucket of a value; the same arithmetic as hc_bucket() in the BPF program."""
    v = int(value_ns)
    if v < SUB:
        return v
    m = v.bit_length() - 1
    if m > MAX_MSB:
        return NBUCKETS - 1
    return (m - SUB_BITS + 1) * SUB + ((v >> (m - SUB_BITS)) & (SUB - 1))


def bucket_bounds(idx):
    """[lo, hi) in ns of bucket idx."""
    if idx < SUB:
        return idx, idx + 1
    m = idx // SUB + SUB_BITS - 1
    sub = idx % SUB
    width = 1 << (m - SUB_BITS)
    lo = (SUB + sub) << (m - SUB_BITS)
    return lo, lo + width


def percentile_ns(counts, q):
    """Value at quantile q (0 < q <= 1) from bucket counts: the inclusive upper edge of the bucket
    holding the ceil(q*n)-th smallest sample, so the true value is <= the result and above it by
    less than one bucket width (< 1/8 of the value). None when there are no samples."""
    n = sum(counts)
    if n == 0:
        return None
    if not 0 < q <= 1:
        raise ValueError("quantile must be in (0, 1]")
    rank = max(1, -(-int(round(q * n * 1_000_000)) // 1_000_000))
    cum = 0
    for idx, c in enumerate(counts):
        cum += c
        if cum >= rank:
            return bucket_bounds(idx)[1] - 1
    raise AssertionError("unreachable: rank <= total")


def summarize(counts, max_ns=None, sum_ns=None):
    """Stage summary from bucket counts and, when known, the exact max and sum kept beside them.
    Percentiles are bucket upper edges, clamped to the exact max (still an upper bound)."""
    n = sum(counts)
    buckets = [[*bucket_bounds(i), c] for i, c in enumerate(counts) if c]
    if not n:
        return {"count": 0, "buckets": [], "p50_ns": None, "p99_ns": None, "max_ns": None,
                "mean_ns": None}
    exact_max = max_ns is not None
    if not exact_max:
        max_ns = buckets[-1][1] - 1

    def pct(q):
        v = percentile_ns(counts, q)
        return min(v, max_ns) if exact_max else v

    return {
        "count": n,
        "buckets": buckets,
        "p50_ns": pct(0.50),
        "p99_ns": pct(0.99),
        "max_ns": max_ns,
        "mean_ns": (sum_ns / n) if sum_ns is not None else None,
    }


_BPF_TEXT = r"""
#include <uapi/linux/ptrace.h>

#define NSTAGES   __NSTAGES__
#define NB        __NB__
#define SUB_BITS  __SUB_BITS__
#define MAX_MSB   __MAX_MSB__
#define HC_FILTER __FILTER__
#define STALE_NS  __STALE_NS__ULL
#define HC_IPPROTO_UDP 17
#define HC_MSG_PEEK 2

enum { ST_DRIVER_STACK, ST_STACK_QUEUE, ST_QUEUE_USER, ST_COPY_USER, ST_WAKE_RUN };
enum { C_DATAGRAMS, C_UNMATCHED, C_NO_STACK, C_NO_DRIVER, C_DISCARDED, C_UNTRACED_CALL,
       C_NO_SOCKET, C_BEFORE_SIGNAL, C_LATE_SIGNAL, NCOUNTERS };

struct hc_skb_ts {
    u64 driver_ns;
    u64 stack_ns;
    u64 queue_ns;
    u64 returned_ns;             /* in `queued`: returned before its signal (a placeholder) */
    u64 returned_traced;         /* that return was to a traced receive call */
};
struct hc_sk_seq {               /* FIFO position in one socket's receive queue */
    u64 sk;
    u64 seq;
};
struct hc_sk_state {
    u64 enq;                     /* datagrams signalled (sk_data_ready) */
    u64 deq;                     /* datagrams returned (sock_recv_length) */
};

BPF_TABLE("lru_hash", u64, struct hc_skb_ts, skbs, 65536);       /* skb -> driver/stack stamps */
BPF_TABLE("lru_hash", struct hc_sk_seq, struct hc_skb_ts, queued, 65536);
BPF_TABLE("lru_hash", u64, struct hc_sk_state, socks, 16384);
/* The stamps of the skb the stack took last on this CPU (stack_ns 0: none yet), a copy that
 * outlives the skb's entry in `skbs`, which a free of that skb deletes before the signal reads it
 * when the stack hands over a list (GRO/NAPI batches: every skb of the list passes
 * netif_receive_skb before the first is queued, and one dropped there is freed at once). */
struct hc_cur {
    u64 driver_ns;
    u64 stack_ns;
};
BPF_PERCPU_ARRAY(cur_skb, struct hc_cur, 1);
BPF_HASH(allowed, u32, u8, 4096);         /* receiving tgids (when filtering) */
/* tid inside recvmmsg/recvmsg/recvfrom -> start of the current datagram's receive; LRU so that a
 * thread killed inside the syscall cannot fill it */
BPF_TABLE("lru_hash", u32, u64, in_recv, 8192);
BPF_TABLE("lru_hash", u32, u64, woken, 8192);        /* tid -> sched_wakeup time */
BPF_PERCPU_ARRAY(hist, u64, NSTAGES * NB);
BPF_PERCPU_ARRAY(maxv, u64, NSTAGES);
BPF_PERCPU_ARRAY(sumv, u64, NSTAGES);
BPF_PERCPU_ARRAY(counters, u64, NCOUNTERS);

static __always_inline u32 hc_msb(u64 v)
{
    u32 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8)  { v >>= 8;  r += 8; }
    if (v >> 4)  { v >>= 4;  r += 4; }
    if (v >> 2)  { v >>= 2;  r += 2; }
    if (v >> 1)  { r += 1; }
    return r;
}

static __always_inline void hc_count(u32 c)
{
    u64 *p = counters.lookup(&c);
    if (p)
        *p += 1;
}

/* Per-CPU maps: no atomics needed, tracepoint programs do not nest on one CPU. */
static __always_inline void hc_record(u32 stage, u64 d)
{
    u32 idx;
    if (d > STALE_NS) {           /* a recycled skb/socket address or tid, not a latency */
        hc_count(C_DISCARDED);
        return;
    }
    if (d < (1 << SUB_BITS)) {
        idx = d;
    } else {
        u32 m = hc_msb(d);
        if (m > MAX_MSB)
            idx = NB - 1;
        else
            idx = (m - SUB_BITS + 1) * (1 << SUB_BITS) + ((d >> (m - SUB_BITS)) & ((1 << SUB_BITS) - 1));
    }
    u32 k = stage * NB + idx;
    u64 *c = hist.lookup(&k);
    if (c)
        *c += 1;
    u64 *s = sumv.lookup(&stage);
    if (s)
        *s += d;
    u64 *mx = maxv.lookup(&stage);
    if (mx && d > *mx)
        *mx = d;
}

static __always_inline int hc_driver(const void *skbaddr)
{
    u64 key = (u64)skbaddr;
    struct hc_skb_ts v = {};
    v.driver_ns = bpf_ktime_get_ns();
    skbs.update(&key, &v);        /* a new life of this address starts here */
    return 0;
}

TRACEPOINT_PROBE(net, netif_rx) { return hc_driver(args->skbaddr); }
TRACEPOINT_PROBE(net, napi_gro_receive_entry) { return hc_driver(args->skbaddr); }
TRACEPOINT_PROBE(net, netif_receive_skb_entry) { return hc_driver(args->skbaddr); }
TRACEPOINT_PROBE(net, netif_receive_skb_list_entry) { return hc_driver(args->skbaddr); }

TRACEPOINT_PROBE(net, netif_receive_skb)
{
    u64 key = (u64)args->skbaddr;
    u64 now = bpf_ktime_get_ns();
    u64 driver_ns = 0, stack_ns = now;
    struct hc_skb_ts *e = skbs.lookup(&key);
    if (e) {
        if (e->stack_ns == 0)     /* first pass only (a bridge or VLAN passes it again) */
            e->stack_ns = now;
        driver_ns = e->driver_ns;
        stack_ns = e->stack_ns;
    } else {
        struct hc_skb_ts v = {};
        v.stack_ns = now;
        skbs.update(&key, &v);
    }
    u32 z = 0;
    struct hc_cur *cur = cur_skb.lookup(&z);
    if (cur) {
        cur->driver_ns = driver_ns;
        cur->stack_ns = stack_ns;
    }
    return 0;
}

/* UDP enqueues and signals inside the softirq that ran netif_receive_skb for that skb, on the
 * same CPU. Every signalled datagram takes the next FIFO position of its socket. */
TRACEPOINT_PROBE(sock, sk_data_ready)
{
    if (args->protocol != HC_IPPROTO_UDP)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 sk = (u64)args->skaddr;
    struct hc_sk_state zero = {};
    struct hc_sk_state *st = socks.lookup_or_try_init(&sk, &zero);
    if (!st)
        return 0;
    struct hc_skb_ts v = {};
    v.queue_ns = now;
    u32 z = 0;
    struct hc_cur *cur = cur_skb.lookup(&z);
    if (cur && cur->stack_ns) {   /* kept: multicast clones and GSO segments share it */
        v.driver_ns = cur->driver_ns;
        v.stack_ns = cur->stack_ns;
    }
    /* Positions are taken atomically and entries inserted only where none is (per-key atomic),
     * so a signal and a return racing for one position on two CPUs meet exactly once. */
    struct hc_sk_seq pos = { .sk = sk, .seq = __sync_fetch_and_add(&st->enq, 1) };
    if (queued.insert(&pos, &v) == 0)
        return 0;
    /* The position holds a placeholder: its datagram was returned before this signal. */
    struct hc_skb_ts *e = queued.lookup(&pos);
    if (!e || !e->returned_ns)
        return 0;
    u64 returned_ns = e->returned_ns, traced = e->returned_traced;
    queued.delete(&pos);
    if (!v.stack_ns || v.stack_ns <= returned_ns) {
        /* This is that datagram's signal, late: UDP signals after it releases the queue lock,
         * and a receiver already in recv on another CPU took the datagram first. */
        if (traced)
            hc_count(C_LATE_SIGNAL);
        return 0;
    }
    /* The stack took this skb after that return: the returned datagram was queued before the
     * socket's first signal since attach, and this one is the next to be returned. */
    pos.seq = st->deq;
    st->enq = pos.seq + 1;
    queued.update(&pos, &v);
    return 0;
}

/* Raw tracepoints: args[0] is the skb. The formatted kfree_skb record names an enum the
 * generic headers may not have. */
RAW_TRACEPOINT_PROBE(kfree_skb) { u64 key = ctx->args[0]; skbs.delete(&key); return 0; }
RAW_TRACEPOINT_PROBE(consume_skb) { u64 key = ctx->args[0]; skbs.delete(&key); return 0; }

static __always_inline int hc_receiver(u64 id)
{
#if HC_FILTER
    u32 tgid = id >> 32;
    return allowed.lookup(&tgid) != 0;
#else
    return 1;
#endif
}

static __always_inline int hc_recv_enter(void)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    if (!hc_receiver(id))
        return 0;
    u64 now = bpf_ktime_get_ns();
    in_recv.update(&tid, &now);
    return 0;
}

static __always_inline int hc_recv_exit(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!in_recv.lookup(&tid))
        return 0;
    in_recv.delete(&tid);
    woken.delete(&tid);           /* woken while still on CPU: no switch-in to measure */
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg) { return hc_recv_enter(); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { return hc_recv_enter(); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return hc_recv_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return hc_recv_exit(); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return hc_recv_exit(); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return hc_recv_exit(); }

/* One datagram returned by a UDP socket (once per datagram inside recvmmsg too).
 * skb:skb_copy_datagram_iovec is not used: UDP copies linear skbs with copy_linear_skb(), which
 * has no tracepoint. */
TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->protocol != HC_IPPROTO_UDP || args->ret < 0 || (args->flags & HC_MSG_PEEK))
        return 0;
    u64 now = bpf_ktime_get_ns();
    /* Every dequeue advances the socket's FIFO position, whoever the reader is. */
    u64 sk = (u64)args->sk;
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u64 *start = in_recv.lookup(&tid);   /* only receivers that pass the filter are here */
    struct hc_skb_ts v = {};
    int matched = 0;
    struct hc_sk_state *st = socks.lookup(&sk);
    if (st) {
        struct hc_sk_seq pos = { .sk = sk, .seq = __sync_fetch_and_add(&st->deq, 1) };
        struct hc_skb_ts *e = queued.lookup(&pos);
        if (!e) {                 /* not signalled yet: leave a placeholder for its signal */
            struct hc_skb_ts ph = {};
            ph.returned_ns = now;
            ph.returned_traced = start != 0;
            if (queued.insert(&pos, &ph) != 0)
                e = queued.lookup(&pos);      /* the signal came meanwhile */
        }
        if (e && !e->returned_ns) {
            v = *e;
            matched = 1;
            queued.delete(&pos);
        }
    }

    if (!start) {
        if (hc_receiver(id))      /* a receiver's call that began before it was traced */
            hc_count(C_UNTRACED_CALL);
        return 0;
    }
    if (*start && *start <= now)
        hc_record(ST_COPY_USER, now - *start);
    *start = now;                 /* the next datagram of a recvmmsg starts here */
    hc_count(C_DATAGRAMS);
    if (!matched) {
        hc_count(C_UNMATCHED);
        hc_count(st ? C_BEFORE_SIGNAL : C_NO_SOCKET);
        return 0;
    }
    if (v.queue_ns > now) {
        /* Its signal was stamped after this return began: the signal-after-return case of the
         * signal's probe, met from this side (both probes ran at once on two CPUs). Counted as
         * that, unmatched, so every matched datagram has its queue_to_user sample. */
        hc_count(C_UNMATCHED);
        hc_count(C_BEFORE_SIGNAL);
        hc_count(C_LATE_SIGNAL);
        return 0;
    }
    hc_record(ST_QUEUE_USER, now - v.queue_ns);
    if (v.stack_ns == 0) {
        hc_count(C_NO_STACK);
        return 0;
    }
    if (v.stack_ns <= v.queue_ns)
        hc_record(ST_STACK_QUEUE, v.queue_ns - v.stack_ns);
    if (v.driver_ns && v.driver_ns <= v.stack_ns)
        hc_record(ST_DRIVER_STACK, v.stack_ns - v.driver_ns);
    else
        hc_count(C_NO_DRIVER);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    u32 tid = args->pid;
    if (!in_recv.lookup(&tid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    woken.insert(&tid, &now);     /* the first wakeup counts */
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    if (woken.lookup(&prev))      /* woken before it left the CPU: not a wakeup latency */
        woken.delete(&prev);
    u64 *t = woken.lookup(&next);
    if (t) {
        u64 now = bpf_ktime_get_ns();
        hc_record(ST_WAKE_RUN, now - *t);
        woken.delete(&next);
        u64 *start = in_recv.lookup(&next);
        if (start)
            *start = now;         /* the datagram's receive work starts when it runs again */
    }
    return 0;
}
"""


def _bpf_text(filtering):
    subst = {"__NSTAGES__": len(STAGES), "__NB__": NBUCKETS, "__SUB_BITS__": SUB_BITS,
             "__MAX_MSB__": MAX_MSB, "__FILTER__": int(bool(filtering)), "__STALE_NS__": STALE_NS}
    text = _BPF_TEXT
    for k, v in subst.items():
        text = text.replace(k, str(v))
    return text


def ensure_tracefs():
    """Mount tracefs at /sys/kernel/tracing when it is not mounted. True if this call mounted it."""
    if os.path.ismount(TRACEFS) or os.path.exists(os.path.join(TRACEFS, "events")):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise HftcapError(f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}",
                          hint=f"mount -t tracefs nodev {TRACEFS}")
    return True


def _import_bcc():
    try:
        import bcc  # noqa: PLC0415 -- bcc is optional and imported only here
    except ImportError as e:
        raise HftcapError(f"bcc (BPF Compiler Collection) is not importable: {e}",
                          hint="apt-get install python3-bpfcc (and make the venv with "
                               "--system-site-packages)") from None
    return bcc


def _check_headers():
    rel = os.uname().release
    build = f"/lib/modules/{rel}/build"
    if not os.path.isdir(build):
        raise HftcapError(f"bcc needs kernel headers at {build}, which is missing",
                          hint="run scripts/bcc-headers.sh as root (links the installed "
                               "linux-headers-*-amd64)")


def _resolve_netns(netns):
    """Inode of a network namespace given by name (/run/netns/NAME), path or inode number."""
    if isinstance(netns, int) or (isinstance(netns, str) and netns.isdigit()):
        return int(netns)
    path = netns if "/" in netns else f"/run/netns/{netns}"
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise HftcapError(f"network namespace {netns!r}: {e.strerror} ({path})",
                          hint="ip netns list") from None


def _proc_pids():
    for d in os.listdir("/proc"):
        if d.isdigit():
            yield int(d)


def _netns_of(pid):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _udp_inodes_for_port(pid, port):
    """Socket inodes bound to UDP port `port` in the network namespace of `pid`."""
    inodes = set()
    for name in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return inodes


_SOCK_RE = re.compile(r"socket:\[(\d+)\]")


def _pid_has_socket(pid, inodes):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            m = _SOCK_RE.fullmatch(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m and m.group(1) in inodes:
            return True
    return False


def _tgid_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def resolve_receivers(netns=None, port=None, pid=None, strict=True):
    """Set of tgids that pass the filter (all given conditions), or None when nothing filters.
    strict: a missing pid is an error (at start); otherwise it resolves to no receiver."""
    if netns is None and port is None and pid is None:
        return None
    ns_ino = _resolve_netns(netns) if netns is not None else None
    if pid is not None:
        tgid = _tgid_of(pid)
        if tgid is None:
            if not strict:
                return set()
            raise HftcapError(f"no process with pid {pid}", hint="ps -e")
        candidates = [tgid]
    else:
        candidates = list(_proc_pids())
    out = set()
    port_inodes = {}                      # netns inode -> socket inodes bound to the port
    for p in candidates:
        ino = _netns_of(p)
        if ino is None or (ns_ino is not None and ino != ns_ino):
            continue
        if port is not None:
            if ino not in port_inodes:
                port_inodes[ino] = _udp_inodes_for_port(p, port)
            if not port_inodes[ino] or not _pid_has_socket(p, port_inodes[ino]):
                continue
        out.add(p)
    return out


def accounting_of(counters):
    """{returned, matched, unmatched_by_reason}: returned = matched + sum(unmatched_by_reason), exact
    by construction. Matched datagrams have a signalled FIFO position; their stages are recorded."""
    pending = counters["returned_before_signal"] - counters["late_signals"]
    reasons = {"untraced_call": counters["untraced_call"],
               "queued_before_trace": counters["no_socket_state"] + pending,
               "signal_after_return": counters["late_signals"]}
    return {"returned": counters["datagrams"] + counters["untraced_call"],
            "matched": counters["datagrams"] - counters["unmatched"],
            "unmatched_by_reason": reasons}


class KernelPathTracer:
    """Attach the kernel-path tracepoints, read the in-kernel histograms, detach.

    Use start(); read() as often as wanted (cumulative since start()); stop(). Also a context manager.
    Filters (all that are given must hold) select the receiving process: pid (its thread group),
    port (processes holding a UDP socket bound to it) and netns (processes in that network
    namespace; name in /run/netns, a path, or an inode). They are resolved from /proc at start() and
    again at every read() and refresh_filter(), so receivers started later join within one interval.
    """

    def __init__(self, netns=None, port=None, pid=None):
        self.netns, self.port, self.pid = netns, port, pid
        self.filtering = not (netns is None and port is None and pid is None)
        self.tracefs_mounted = False
        self.receivers = None            # tgids that pass the filter now
        self.receivers_seen = set()      # every tgid that passed it since start()
        self._bpf = None

    def describe_filter(self):
        if not self.filtering:
            return "none: every receiving process on this machine"
        parts = []
        if self.pid is not None:
            parts.append(f"pid {self.pid} (its thread group)")
        if self.port is not None:
            parts.append(f"processes holding a UDP socket bound to port {self.port}")
        if self.netns is not None:
            parts.append(f"processes in network namespace {self.netns}")
        return (" and ".join(parts) + "; resolved from /proc each interval into an in-kernel "
                "tgid set; every stage is attributed when a matching thread receives the datagram")

    def start(self):
        if os.geteuid() != 0:
            raise HftcapError("hftcap trace needs root to load BPF programs",
                              hint="run it with sudo")
        bcc = _import_bcc()
        _check_headers()
        self.tracefs_mounted = ensure_tracefs()
        if self.filtering:
            self.receivers = resolve_receivers(self.netns, self.port, self.pid)
        try:
            self._bpf = bcc.BPF(text=_bpf_text(self.filtering).encode())
        except Exception as e:  # bcc raises bare Exception for compile and attach failures
            raise HftcapError(f"bcc could not compile or attach the trace program: {e}",
                              hint="check scripts/bcc-headers.sh ran and tracefs is mounted at "
                                   f"{TRACEFS}") from None
        self._sync_filter()
        return self

    def _sync_filter(self):
        if not self.filtering or self._bpf is None:
            return
        table = self._bpf[b"allowed"]
        want = self.receivers or set()
        self.receivers_seen |= want
        have = {k.value for k in table.keys()}
        for tgid in have - want:
            del table[table.Key(tgid)]
        for tgid in want - have:
            table[table.Key(tgid)] = table.Leaf(1)

    def refresh_filter(self):
        if self.filtering:
            self.receivers = resolve_receivers(self.netns, self.port, self.pid, strict=False)
            self._sync_filter()
        return self.receivers

    @staticmethod
    def _read_array(table):
        out = []
        for i in range(table.max_entries):
            out.append(sum(table[table.Key(i)]))
        return out

    @staticmethod
    def _read_max(table):
        return [max(table[table.Key(i)]) for i in range(table.max_entries)]

    def read(self, refresh=True):
        """dict stage -> {count, buckets [[lo_ns, hi_ns, count]...], p50_ns, p99_ns, max_ns,
        mean_ns}; cumulative since start(). p50/p99 are bucket upper edges (approximate, < 1/8
        above the true value); max and mean are exact."""
        if self._bpf is None:
            raise HftcapError("tracer is not started")
        if refresh:
            self.refresh_filter()
        hist = self._read_array(self._bpf[b"hist"])
        sums = self._read_array(self._bpf[b"sumv"])
        maxs = self._read_max(self._bpf[b"maxv"])
        out = {}
        for s, name in enumerate(STAGES):
            counts = hist[s * NBUCKETS:(s + 1) * NBUCKETS]
            out[name] = summarize(counts, max_ns=maxs[s], sum_ns=sums[s])
        return out

    def counters(self):
        vals = self._read_array(self._bpf[b"counters"])
        return dict(zip(COUNTERS, vals))

    def accounting(self, counters=None):
        """Every datagram returned to a traced receiver since start(), matched or unmatched by reason
        (accounting_of)."""
        return accounting_of(self.counters() if counters is None else counters)

    def stop(self):
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _fmt_ns(v):
    if v is None:
        return "-"
    if v < 10_000:
        return f"{v} ns"
    if v < 10_000_000:
        return f"{v / 1000:.1f} us"
    return f"{v / 1e6:.1f} ms"


def _render(console, stats, counters, tracer, elapsed_s, final):
    from rich.table import Table  # noqa: PLC0415

    title = f"kernel receive path, {elapsed_s:.1f} s since attach" + (" (final)" if final else "")
    t = Table(title=title, caption=f"clock {CLOCK}; cumulative since attach; p50/p99 = bucket "
                                   "upper edges (approximate, < 12.5% high); max exact")
    for col in ("stage", "count", "p50", "p99", "max"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name in STAGES:
        s = stats[name]
        t.add_row(name, str(s["count"]), _fmt_ns(s["p50_ns"]), _fmt_ns(s["p99_ns"]),
                  _fmt_ns(s["max_ns"]))
    console.print(t)
    console.print("counters: " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    acc = accounting_of(counters)
    console.print(f"datagrams returned {acc['returned']} = matched {acc['matched']} + unmatched "
                  + " + ".join(f"{k} {v}" for k, v in acc["unmatched_by_reason"].items()))


def run_trace(netns=None, port=None, pid=None, duration=10.0, interval=1.0, json_out=False,
              console=None, on_attach=None):
    """`hftcap trace`: attach, print the stage table every interval (cumulative), detach.
    With json_out, print one JSON document at the end. on_attach(tracer), if given, is called once
    the programs are attached (a bench or test starts its traffic there). Returns the exit code."""
    if interval <= 0 or duration <= 0:
        raise HftcapError("--duration and --interval must be positive", code=2)
    if console is None:
        from rich.console import Console  # noqa: PLC0415
        console = Console()
    tracer = KernelPathTracer(netns=netns, port=port, pid=pid)
    tracer.start()
    try:
        if on_attach is not None:
            on_attach(tracer)
        if not json_out:
            if tracer.tracefs_mounted:
                console.print(f"mounted tracefs at {TRACEFS}")
            console.print(f"tracing kernel receive path; filter: {tracer.describe_filter()}; "
                          f"receivers now: {sorted(tracer.receivers) if tracer.filtering else 'all'}")
        t0 = time.monotonic()
        end = t0 + duration
        try:
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                time.sleep(min(interval, end - now))
                if not json_out and time.monotonic() < end - 1e-3:
                    _render(console, tracer.read(), tracer.counters(), tracer,
                            time.monotonic() - t0, final=False)
        except KeyboardInterrupt:
            pass
        stats = tracer.read()
        counters = tracer.counters()
        elapsed = time.monotonic() - t0
        if json_out:
            doc = {"clock": CLOCK, "duration_s": elapsed, "filter": tracer.describe_filter(),
                   "receivers": sorted(tracer.receivers_seen) if tracer.filtering else None,
                   "tracefs_mounted": tracer.tracefs_mounted,
                   "percentiles": "bucket upper edge, < 12.5% above the true value; max exact",
                   "stage_points": STAGE_POINTS, "stages": stats, "counters": counters,
                   "accounting": accounting_of(counters), "unmatched_reasons": UNMATCHED_REASONS}
            console.print(json.dumps(doc), markup=False, highlight=False, soft_wrap=True)
        else:
            _render(console, stats, counters, tracer, elapsed, final=True)
    finally:
        tracer.stop()
    return 0
