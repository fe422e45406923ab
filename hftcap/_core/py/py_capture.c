/* py_capture.c: hftcap._core.Capture, the boundary of the receive paths. Coarse calls
 * only: open (constructor), start, wait, stop, stats snapshots, close. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include "py.h"
#include "capture.h"
#include "book.h"
#include "snap.h"
#include "pcapng.h"
#include "join.h"

/* The books outlive the capture: close() stops the data thread and moves them here, so a
 * Books view taken before close() (which keeps this object alive) stays valid. */
typedef struct {
	PyObject_HEAD
	struct hc_capture *cap;
	struct hc_books *books;
	struct hc_snap_table *snaps; /* hftcap Book Snapshots, taken over like the books */
	PyObject *writer;            /* PcapngWriter the data thread copies into, or NULL */
	struct hc_join *join;        /* late join (arm_join), freed after the data thread stops */
} CaptureObject;

static void capture_release(CaptureObject *self)
{
	struct hc_capture *c = self->cap;
	self->cap = NULL;
	struct hc_pcapng *w = NULL;
	if (self->writer) {
		w = hc_py_pcapng_get(self->writer);
		if (!w)
			PyErr_Clear(); /* already closed: nothing asks the sockets any more */
	}
	Py_BEGIN_ALLOW_THREADS
	self->books = hc_capture_take_books(c);
	self->snaps = hc_capture_take_snaps(c);
	if (w) {
		/* The writer may still read frames in this capture's UMEM: finish the file first. */
		hc_capture_stop(c);
		hc_pcapng_close(w);
		hc_pcapng_set_xsk_drops(w, NULL, NULL); /* the sockets go with the capture */
	}
	hc_capture_close(c);
	Py_END_ALLOW_THREADS
}

static const char *xdp_stat_names[HC_XDP_NSTATS] = {
	[HC_XDP_REDIRECTED] = "redirected",
	[HC_XDP_PASS_NOT_FEED] = "pass_not_feed",
	[HC_XDP_PASS_NO_SOCKET] = "pass_no_socket",
	[HC_XDP_PASS_FRAGMENT] = "pass_fragment",
	[HC_XDP_MALFORMED] = "malformed",
	[HC_XDP_META_FAILED] = "meta_failed",
	[HC_XDP_HW_TS_ERR] = "hw_ts_error",
};

static int Capture_init(CaptureObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ifname", "ifindex", "feeds", "path", "xdp_mode", "bind_mode",
				  "poll_mode", "cpu", "queue", "max_packets", "want_hw_ts",
				  "tai_clock", "busy_poll_us", "timing", "phc_is_tai",
				  "itch_epoch_tai_ns", "books", "expected_orders", "queues",
				  "recovery", "stamp", "capture_frames", "rcvbuf", "feeds_b", "warm_books", NULL };
	struct hc_capture_cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	const char *ifname;
	PyObject *feeds;
	unsigned long long max_packets = 0;
	cfg.cpu = -1;
	cfg.want_hw_ts = 1;
	cfg.tai_clock = 1;
	cfg.busy_poll_us = 50;
	cfg.timing = 1;
	unsigned long long epoch = 0, expected_orders = 1 << 20;
	cfg.books = 1;
	PyObject *queues = Py_None, *recovery = Py_None, *feeds_b = Py_None;
	const char *stamp = "auto";
	if (!PyArg_ParseTupleAndKeywords(args, kw, "siO|iiiiiIKppippKpKOOsIiOp", kwlist, &ifname,
					 &cfg.ifindex, &feeds, &cfg.path, &cfg.xdp_mode,
					 &cfg.bind_mode, &cfg.poll_mode, &cfg.cpu, &cfg.queue,
					 &max_packets, &cfg.want_hw_ts, &cfg.tai_clock,
					 &cfg.busy_poll_us, &cfg.timing, &cfg.phc_is_tai, &epoch,
					 &cfg.books, &expected_orders, &queues, &recovery, &stamp,
					 &cfg.capture_frames, &cfg.rcvbuf, &feeds_b, &cfg.warm_books))
		return -1;
	if (hc_py_stamp_source(stamp, &cfg.stamp) < 0)
		return -1;
	if (recovery != Py_None) {
		if (hc_py_recov_cfg(recovery, &cfg.recov) < 0)
			return -1;
		cfg.recovery = 1;
	}
	if (queues != Py_None) {
		PyObject *qs = PySequence_Fast(queues, "queues must be a sequence of ints");
		if (!qs)
			return -1;
		Py_ssize_t nq = PySequence_Fast_GET_SIZE(qs);
		if (nq < 1 || nq > HC_MAX_QUEUES) {
			Py_DECREF(qs);
			PyErr_Format(PyExc_ValueError, "between 1 and %d queues", HC_MAX_QUEUES);
			return -1;
		}
		for (Py_ssize_t i = 0; i < nq; i++) {
			long q = PyLong_AsLong(PySequence_Fast_GET_ITEM(qs, i));
			if (q < 0 || q >= HC_MAX_QUEUES) {
				Py_DECREF(qs);
				if (!PyErr_Occurred())
					PyErr_Format(PyExc_ValueError, "queue %ld out of range", q);
				return -1;
			}
			cfg.queues[i] = (uint32_t)q;
		}
		cfg.nqueues = (uint32_t)nq;
		Py_DECREF(qs);
	}
	cfg.itch_epoch_tai_ns = epoch;
	cfg.expected_orders = expected_orders;
	if (strlen(ifname) >= IF_NAMESIZE) {
		PyErr_SetString(PyExc_ValueError, "interface name too long");
		return -1;
	}
	strcpy(cfg.ifname, ifname);
	cfg.max_packets = max_packets;
	PyObject *seq = PySequence_Fast(feeds, "feeds must be a sequence of (group, port)");
	if (!seq)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	if (n < 1 || n > HC_MAX_FEEDS) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "between 1 and %d feeds", HC_MAX_FEEDS);
		return -1;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		const char *group;
		int port;
		if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "si", &group, &port)) {
			Py_DECREF(seq);
			return -1;
		}
		struct in_addr a;
		if (inet_pton(AF_INET, group, &a) != 1 || port <= 0 || port > 65535) {
			Py_DECREF(seq);
			PyErr_Format(PyExc_ValueError, "bad feed %s:%d", group, port);
			return -1;
		}
		cfg.group_be[i] = a.s_addr;
		cfg.port_be[i] = htons((uint16_t)port);
	}
	cfg.nfeeds = (uint32_t)n;
	Py_DECREF(seq);
	if (feeds_b != Py_None) { /* [(group, port) or None] aligned with feeds: the B lines */
		PyObject *sb = PySequence_Fast(feeds_b, "feeds_b must be a sequence");
		if (!sb)
			return -1;
		Py_ssize_t nb = PySequence_Fast_GET_SIZE(sb);
		if (nb > n) {
			Py_DECREF(sb);
			PyErr_SetString(PyExc_ValueError, "more B lines than feeds");
			return -1;
		}
		for (Py_ssize_t i = 0; i < nb; i++) {
			PyObject *it = PySequence_Fast_GET_ITEM(sb, i);
			if (it == Py_None)
				continue;
			const char *group;
			int port;
			struct in_addr a;
			if (!PyArg_ParseTuple(it, "si", &group, &port)) {
				Py_DECREF(sb);
				return -1;
			}
			if (inet_pton(AF_INET, group, &a) != 1 || port <= 0 || port > 65535) {
				Py_DECREF(sb);
				PyErr_Format(PyExc_ValueError, "bad B line %s:%d", group, port);
				return -1;
			}
			cfg.group_b_be[i] = a.s_addr;
			cfg.port_b_be[i] = htons((uint16_t)port);
			cfg.ab_mask |= 1ull << i;
		}
		Py_DECREF(sb);
		if (cfg.ab_mask && !cfg.recovery) {
			PyErr_SetString(PyExc_ValueError, "B lines need the recovery settings (recovery=)");
			return -1;
		}
	}

	const char *stage = "";
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_capture_open(&cfg, &self->cap, &stage);
	Py_END_ALLOW_THREADS
	if (err) {
		self->cap = NULL;
		errno = -err;
		PyObject *e = PyObject_CallFunction(PyExc_OSError, "is", -err, stage);
		if (e) {
			PyErr_SetObject(PyExc_OSError, e);
			Py_DECREF(e);
		}
		return -1;
	}
	return 0;
}

static void Capture_dealloc(CaptureObject *self)
{
	if (self->cap)
		capture_release(self);
	if (self->books)
		hc_books_free(self->books);
	hc_snap_table_free(self->snaps);
	Py_XDECREF(self->writer);
	hc_join_free(self->join);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_CAP(self)                                                            \
	do {                                                                      \
		if (!(self)->cap) {                                               \
			PyErr_SetString(PyExc_ValueError, "capture is closed");  \
			return NULL;                                              \
		}                                                                 \
	} while (0)

static PyObject *Capture_start(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	int err = hc_capture_start(self->cap);
	if (err)
		return hc_py_errno(err, "start");
	Py_RETURN_NONE;
}

static PyObject *Capture_stop(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	Py_BEGIN_ALLOW_THREADS
	hc_capture_stop(self->cap);
	Py_END_ALLOW_THREADS
	Py_RETURN_NONE;
}

static PyObject *Capture_close(CaptureObject *self, PyObject *unused)
{
	if (self->cap)
		capture_release(self);
	Py_RETURN_NONE;
}

/* wait(timeout_s) -> True when the packet limit was reached. Sleeps in short steps with the
 * GIL released, so signals reach Python within ~50 ms. */
static PyObject *Capture_wait(CaptureObject *self, PyObject *args)
{
	double timeout;
	if (!PyArg_ParseTuple(args, "d", &timeout))
		return NULL;
	NEED_CAP(self);
	int done = 0;
	Py_BEGIN_ALLOW_THREADS
	struct timespec step = { 0, 2 * 1000 * 1000 };
	double waited = 0;
	while (!(done = hc_capture_done(self->cap)) && waited < timeout) {
		nanosleep(&step, NULL);
		waited += 0.002;
	}
	Py_END_ALLOW_THREADS
	return PyBool_FromLong(done);
}

/* Counters of a consumer as a dict; relaxed loads, so it can run beside the data thread. */
static PyObject *consumer_stats(const struct hc_consumer *cons, uint64_t io_errors)
{
	struct hc_mold_stats sum;
	memset(&sum, 0, sizeof(sum));
	uint64_t last_seq = 0;
	for (uint32_t i = 0; i < cons->nfeeds; i++) {
		const struct hc_mold *m = &cons->mold[i];
		const uint64_t *src = (const uint64_t *)&m->st;
		uint64_t *dst = (uint64_t *)&sum;
		for (size_t k = 0; k < sizeof(sum) / 8; k++)
			dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		uint64_t next = __atomic_load_n(&m->next, __ATOMIC_RELAXED);
		if (m->have_session && next - 1 > last_seq)
			last_seq = next - 1;
	}
	PyObject *d = PyDict_New();
	PyObject *drops = PyDict_New();
	if (!d || !drops)
		goto fail;
	if (hc_py_put_u64(d, "packets", __atomic_load_n(&cons->packets, __ATOMIC_RELAXED)) ||
	    hc_py_put_u64(d, "bytes", __atomic_load_n(&cons->bytes, __ATOMIC_RELAXED)) ||
	    hc_py_put_u64(d, "messages", sum.messages) || hc_py_put_u64(d, "gaps", sum.gaps) ||
	    hc_py_put_u64(d, "gap_events", sum.gap_events) ||
	    hc_py_put_u64(d, "duplicates", sum.duplicates) ||
	    hc_py_put_u64(d, "heartbeats", sum.heartbeats) ||
	    hc_py_put_u64(d, "end_of_session", sum.end_of_session) ||
	    hc_py_put_u64(d, "sessions", sum.sessions) ||
	    hc_py_put_u64(d, "last_sequence", last_seq) ||
	    hc_py_put_u64(d, "hw_stamped", __atomic_load_n(&cons->hw_stamped, __ATOMIC_RELAXED)) ||
	    hc_py_put_u64(d, "xsk_frames_foreseen",
			  __atomic_load_n(&cons->xsk_foreseen, __ATOMIC_RELAXED)) ||
	    hc_py_put_u64(d, "xsk_frames_not_foreseen",
			  __atomic_load_n(&cons->xsk_not_foreseen, __ATOMIC_RELAXED)) ||
	    hc_py_put_u64(d, "io_errors", io_errors))
		goto fail;
	PyObject *firsts = PyList_New(cons->nfeeds);
	if (!firsts || PyDict_SetItemString(d, "first_sequence", firsts)) {
		Py_XDECREF(firsts);
		goto fail;
	}
	Py_DECREF(firsts);
	for (uint32_t i = 0; i < cons->nfeeds; i++)
		PyList_SET_ITEM(firsts, i, PyLong_FromUnsignedLongLong(
			__atomic_load_n(&cons->first_seq[i], __ATOMIC_RELAXED)));
	if (hc_py_put_u64(drops, "mold_short", sum.drop_short) ||
	    hc_py_put_u64(drops, "mold_truncated", sum.drop_truncated) ||
	    hc_py_put_u64(drops, "mold_trailing", sum.drop_trailing) ||
	    hc_py_put_u64(drops, "bad_frame", cons->drop_bad_frame) ||
	    hc_py_put_u64(drops, "bad_feed", cons->drop_bad_feed))
		goto fail;
	if (PyDict_SetItemString(d, "drops", drops))
		goto fail;
	Py_DECREF(drops);
	return d;
fail:
	Py_XDECREF(d);
	Py_XDECREF(drops);
	return NULL;
}

static PyObject *Capture_stats(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	return consumer_stats(hc_capture_consumer(self->cap), hc_capture_io_errors(self->cap));
}

static PyObject *Capture_xdp_stats(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	uint64_t v[HC_XDP_NSTATS];
	int err = hc_capture_xdp_stats(self->cap, v);
	if (err)
		return hc_py_errno(err, "xdp stats");
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	for (int i = 0; i < HC_XDP_NSTATS; i++)
		if (hc_py_put_u64(d, xdp_stat_names[i], v[i])) {
			Py_DECREF(d);
			return NULL;
		}
	return d;
}

static PyObject *Capture_info(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	const struct hc_capture_info *i = hc_capture_info(self->cap);
	return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:I,s:i,s:K}", "xdp_mode", i->xdp_mode,
			     "bind_mode", i->bind_mode, "hw_program", i->hw_program,
			     "hw_program_err", i->hw_program_err, "hw_ts_socket", i->hw_ts_socket,
			     "prog_id", i->prog_id, "tai_offset_s", i->tai_offset_s,
			     "thread_cpu_ns",
			     (unsigned long long)hc_capture_thread_cpu_ns(self->cap));
}

/* hists() -> bytes: every hop's histogram as export records (hftcap.latency.parse_export). */
static PyObject *Capture_hists(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	return hc_py_hist_bytes(hc_capture_consumer(self->cap)->hists, HC_NHOPS);
}

static PyObject *Capture_negative(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	const struct hc_consumer *cons = hc_capture_consumer(self->cap);
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	for (int h = 0; h < HC_NHOPS; h++)
		if (hc_py_put_u64(d, hc_hop_names[h], __atomic_load_n(&cons->negative[h], __ATOMIC_RELAXED))) {
			Py_DECREF(d);
			return NULL;
		}
	return d;
}

static PyObject *Capture_reset_hists(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	hc_capture_reset_hists(self->cap);
	Py_RETURN_NONE;
}

/* books() -> hftcap._core.Books viewing the live books (snapshots under their seqlock). */
static PyObject *Capture_books(CaptureObject *self, PyObject *unused)
{
	struct hc_books *b = self->cap ? hc_capture_books(self->cap) : self->books;
	if (!b)
		Py_RETURN_NONE;
	return hc_py_books_wrap(b, (PyObject *)self);
}

/* snapshots() -> hftcap._core.SnapTable viewing the live Book Snapshot table (snap.h). */
static PyObject *Capture_snapshots(CaptureObject *self, PyObject *unused)
{
	struct hc_snap_table *t = self->cap ? hc_capture_snaps(self->cap) : self->snaps;
	if (!t)
		Py_RETURN_NONE;
	return hc_py_snaps_wrap(t, (PyObject *)self);
}

/* set_writer(w): before start, copy every packet into w's ring (listen --write). */
static PyObject *Capture_set_writer(CaptureObject *self, PyObject *arg)
{
	NEED_CAP(self);
	if (self->writer) {
		PyErr_SetString(PyExc_ValueError, "a writer is already set");
		return NULL;
	}
	struct hc_pcapng *w = hc_py_pcapng_get(arg);
	if (!w)
		return NULL;
	int err = hc_capture_set_ring(self->cap, hc_pcapng_ring(w));
	if (err)
		return hc_py_errno(err, "set_writer");
	hc_pcapng_set_xsk_drops(w, hc_capture_xsk_drops, self->cap);
	Py_INCREF(arg);
	self->writer = arg;
	Py_RETURN_NONE;
}

static PyObject *Capture_xsk_drops(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	struct hc_xsk_drops d;
	int err = hc_capture_xsk_drops(self->cap, &d);
	if (err)
		return hc_py_errno(err, "XDP_STATISTICS");
	return Py_BuildValue("{s:K,s:K,s:K,s:K}", "rx_dropped", (unsigned long long)d.rx_dropped,
			     "rx_ring_full", (unsigned long long)d.rx_ring_full,
			     "rx_fill_ring_empty_descs", (unsigned long long)d.rx_fill_ring_empty_descs,
			     "socket_drops", (unsigned long long)d.socket_drops);
}

/* recovery() -> None, or the recovery figures (hc_py_recov_report). */
static PyObject *Capture_recovery(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	struct hc_recov *r = hc_capture_recov(self->cap);
	if (!r)
		Py_RETURN_NONE;
	return hc_py_recov_report(r, hc_capture_consumer(self->cap)->nfeeds);
}

/* arm_join(capacity) -> hftcap._core.Join: before start(), buffer the feed from its first
 * packet until a snapshot is handed over (join.h). */
static PyObject *Capture_arm_join(CaptureObject *self, PyObject *arg)
{
	NEED_CAP(self);
	unsigned long long cap = PyLong_AsUnsignedLongLong(arg);
	if (PyErr_Occurred())
		return NULL;
	struct hc_books *b = hc_capture_books(self->cap);
	if (!b || self->join) {
		PyErr_SetString(PyExc_ValueError, self->join ? "join already armed" : "a join needs books");
		return NULL;
	}
	if (hc_py_join_new(&self->join, cap) < 0)
		return NULL;
	hc_capture_set_join(self->cap, self->join);
	return hc_py_join_wrap(self->join, b, (PyObject *)self);
}

static PyObject *Capture_stamp_clock(CaptureObject *self, PyObject *unused)
{
	NEED_CAP(self);
	return hc_py_clock_dict(hc_capture_clock(self->cap));
}

static PyMethodDef Capture_methods[] = {
	{ "recovery", (PyCFunction)Capture_recovery, METH_NOARGS,
	  "Gap recovery figures per feed (None when not configured)." },
	{ "arm_join", (PyCFunction)Capture_arm_join, METH_O,
	  "arm_join(capacity) -> Join: buffer the feed until a snapshot is in (before start)." },
	{ "set_writer", (PyCFunction)Capture_set_writer, METH_O,
	  "set_writer(PcapngWriter): before start, copy every packet into its ring." },
	{ "xsk_drops", (PyCFunction)Capture_xsk_drops, METH_NOARGS,
	  "The AF_XDP sockets' XDP_STATISTICS drop counters, summed." },
	{ "snapshots", (PyCFunction)Capture_snapshots, METH_NOARGS,
	  "The live table of hftcap Book Snapshots 'Z' (None without books)." },
	{ "books", (PyCFunction)Capture_books, METH_NOARGS, "The live books (None without books)." },
	{ "hists", (PyCFunction)Capture_hists, METH_NOARGS, "Per-hop histograms (export bytes)." },
	{ "negative", (PyCFunction)Capture_negative, METH_NOARGS,
	  "Per hop: samples whose later stamp was earlier (clock disagreement)." },
	{ "reset_hists", (PyCFunction)Capture_reset_hists, METH_NOARGS,
	  "Clear the histograms (done by the data thread before its next sample)." },
	{ "start", (PyCFunction)Capture_start, METH_NOARGS, "Start the data thread." },
	{ "stop", (PyCFunction)Capture_stop, METH_NOARGS, "Stop and join the data thread." },
	{ "close", (PyCFunction)Capture_close, METH_NOARGS, "Detach XDP, close sockets, free." },
	{ "wait", (PyCFunction)Capture_wait, METH_VARARGS, "wait(timeout_s) -> limit reached" },
	{ "stats", (PyCFunction)Capture_stats, METH_NOARGS, "Consumer counters snapshot." },
	{ "xdp_stats", (PyCFunction)Capture_xdp_stats, METH_NOARGS, "XDP program counters." },
	{ "info", (PyCFunction)Capture_info, METH_NOARGS, "What setup obtained." },
	{ "stamp_clock", (PyCFunction)Capture_stamp_clock, METH_NOARGS,
	  "The consumer's stamp clock: source and calibration (tsc: its error at the checks)." },
	{ NULL },
};

static PyTypeObject CaptureType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hftcap._core.Capture",
	.tp_basicsize = sizeof(CaptureObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Capture_init,
	.tp_dealloc = (destructor)Capture_dealloc,
	.tp_methods = Capture_methods,
	.tp_doc = "A receive path (AF_XDP or kernel socket) feeding the C consumer.",
};

static PyObject *py_xdp_query(PyObject *mod, PyObject *args)
{
	int ifindex;
	if (!PyArg_ParseTuple(args, "i", &ifindex))
		return NULL;
	uint32_t id = 0;
	int mode = 0, err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_xdp_query(ifindex, &id, &mode);
	Py_END_ALLOW_THREADS
	if (err)
		return hc_py_errno(err, "xdp query");
	if (!id)
		Py_RETURN_NONE;
	char name[32] = "";
	hc_prog_name(id, name, sizeof(name));
	return Py_BuildValue("{s:I,s:i,s:s}", "id", id, "mode", mode, "name", name);
}

struct hc_consumer *hc_py_consumer_new(PyObject *pkts, PyObject **seq)
{
	*seq = PySequence_Fast(pkts, "packets must be a sequence of bytes");
	if (!*seq)
		return NULL;
	struct hc_consumer *c = PyMem_Malloc(sizeof(*c));
	if (!c) {
		Py_CLEAR(*seq);
		PyErr_NoMemory();
		return NULL;
	}
	hc_consumer_init(c, 1, 0);
	return c;
}

/* consume(packets) -> stats: run MoldUDP64 payloads (a sequence of bytes) through a fresh
 * consumer, feed 0, no timestamps. For offline checks and tests: one call, not per packet. */
static PyObject *py_consume(PyObject *mod, PyObject *args)
{
	PyObject *pkts;
	if (!PyArg_ParseTuple(args, "O", &pkts))
		return NULL;
	PyObject *seq;
	struct hc_consumer *c = hc_py_consumer_new(pkts, &seq);
	if (!c)
		return NULL;
	struct hc_pkt_times t = { 0 };
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	for (Py_ssize_t i = 0; i < n; i++) {
		Py_buffer b;
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &b, PyBUF_SIMPLE) < 0) {
			PyMem_Free(c);
			Py_DECREF(seq);
			return NULL;
		}
		hc_consumer_packet(c, 0, b.buf, (uint32_t)b.len, &t);
		PyBuffer_Release(&b);
	}
	Py_DECREF(seq);
	PyObject *r = consumer_stats(c, 0);
	PyMem_Free(c);
	return r;
}

static PyMethodDef capture_funcs[] = {
	{ "consume", py_consume, METH_VARARGS,
	  "consume(packets) -> stats of MoldUDP64 payloads run through a fresh consumer" },
	{ "xdp_query", py_xdp_query, METH_VARARGS,
	  "xdp_query(ifindex) -> None or {id, mode, name} of the attached XDP program" },
	{ NULL },
};

int hc_py_add_capture(PyObject *m)
{
	if (PyType_Ready(&CaptureType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Capture", (PyObject *)&CaptureType) < 0)
		return -1;
	if (PyModule_AddFunctions(m, capture_funcs) < 0)
		return -1;
	PyObject *names = PyTuple_New(HC_NHOPS);
	if (!names)
		return -1;
	for (int h = 0; h < HC_NHOPS; h++)
		PyTuple_SET_ITEM(names, h, PyUnicode_FromString(hc_hop_names[h]));
	if (PyModule_AddObject(m, "HOP_NAMES", names) < 0) {
		Py_DECREF(names);
		return -1;
	}
	return 0;
}
