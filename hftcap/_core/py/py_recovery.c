/* py_recovery.c: the boundary of recovery.c. hc_py_recov_cfg() parses the settings the
 * Python side chose (hftcap.feed.recovery), hc_py_recov_report() copies the figures of a
 * running recovery into a dict, and hftcap._core.RecoveryLab drives one consumer with books
 * and a lab-mode recovery (no socket, requests recorded) on a clock the caller gives: the
 * hostile-reply and ordering tests run through exactly the data thread's code. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <string.h>

#include "py.h"
#include "feed.h"
#include "book.h"
#include "recovery.h"
#include "join.h"

static const char *state_names[] = { "synced", "gap_wait", "recovering", "degraded" };

#define STAT(f) { #f, offsetof(struct hc_recov_stats, f) }
static const struct { const char *name; size_t off; } stat_fields[] = {
	STAT(gaps_seen), STAT(gaps_lost), STAT(messages_missing), STAT(messages_late),
	STAT(messages_recovered), STAT(messages_lost), STAT(held_messages), STAT(reorder_peak),
	STAT(overflows), STAT(oversize), STAT(requests_sent), STAT(retries), STAT(remainders),
	STAT(timeouts), STAT(failovers), STAT(send_errors), STAT(replies), STAT(reply_duplicates),
	STAT(replies_late), STAT(drop_unknown_source), STAT(drop_wrong_session),
	STAT(drop_unrequested), STAT(drop_malformed), STAT(session_changes), STAT(backwards),
	STAT(episodes), STAT(gaps_filled_a), STAT(gaps_filled_b), STAT(gaps_filled_server),
	STAT(gaps_filled_mixed), STAT(gaps_with_loss),
};

int hc_py_recov_cfg(PyObject *d, struct hc_recov_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	if (!PyDict_Check(d)) {
		PyErr_SetString(PyExc_TypeError, "recovery must be a dict");
		return -1;
	}
	unsigned long long gap = 0, rto = 0;
	unsigned int rb = 0, rmax = 0, mo = 0, rr = 0;
	PyObject *servers = PyDict_GetItemString(d, "servers");
	PyObject *empty = PyTuple_New(0);
	if (!empty)
		return -1;
	static char *kw[] = { "servers", "reorder_buffer", "gap_timeout_ns", "request_timeout_ns",
			      "request_max", "max_outstanding", "request_retries",
			      "line_down_timeout_ns", "ab_mask", NULL };
	PyObject *ign;
	unsigned long long down = 0, ab = 0;
	int ok = PyArg_ParseTupleAndKeywords(empty, d, "OIKKIII|KK", kw, &ign, &rb, &gap, &rto, &rmax,
					     &mo, &rr, &down, &ab);
	Py_DECREF(empty);
	if (!ok)
		return -1;
	cfg->reorder_buffer = rb;
	cfg->gap_timeout_ns = gap;
	cfg->request_timeout_ns = rto;
	cfg->request_max = rmax;
	cfg->max_outstanding = mo;
	cfg->request_retries = rr;
	cfg->line_down_ns = down;
	cfg->ab_mask = ab; /* the capture sets it from its B lines; the lab from this */
	PyObject *seq = PySequence_Fast(servers, "servers must be a sequence of (ip, port)");
	if (!seq)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	if (n > HC_RECOV_MAX_SERVERS) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "at most %d re-request servers", HC_RECOV_MAX_SERVERS);
		return -1;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		const char *ip;
		int port;
		struct in_addr a;
		if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "si", &ip, &port)) {
			Py_DECREF(seq);
			return -1;
		}
		if (inet_pton(AF_INET, ip, &a) != 1 || port <= 0 || port > 65535) {
			Py_DECREF(seq);
			PyErr_Format(PyExc_ValueError, "bad re-request server %s:%d", ip, port);
			return -1;
		}
		cfg->server_ip_be[i] = a.s_addr;
		cfg->server_port_be[i] = htons((uint16_t)port);
	}
	cfg->nservers = (uint32_t)n;
	Py_DECREF(seq);
	return 0;
}

#define HSTAT(f) { #f, offsetof(struct hc_recov_hole_stats, f) }
static const struct { const char *name; size_t off; } hole_fields[] = {
	HSTAT(holes), HSTAT(filled), HSTAT(failed), HSTAT(requests), HSTAT(retries),
	HSTAT(timeouts), HSTAT(failovers), HSTAT(replies), HSTAT(messages),
};

static PyObject *hole_dict(const struct hc_recov_hole_stats *st)
{
	PyObject *d = PyDict_New();
	for (size_t i = 0; d && i < sizeof(hole_fields) / sizeof(hole_fields[0]); i++) {
		uint64_t v = __atomic_load_n((const uint64_t *)((const char *)st + hole_fields[i].off),
					     __ATOMIC_RELAXED);
		PyObject *o = PyLong_FromUnsignedLongLong(v);
		if (!o || PyDict_SetItemString(d, hole_fields[i].name, o)) {
			Py_XDECREF(o);
			Py_CLEAR(d);
		}
		Py_XDECREF(o);
	}
	return d;
}

static PyObject *stats_dict(const struct hc_recov_stats *st)
{
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	for (size_t i = 0; i < sizeof(stat_fields) / sizeof(stat_fields[0]); i++) {
		uint64_t v = __atomic_load_n((const uint64_t *)((const char *)st + stat_fields[i].off),
					     __ATOMIC_RELAXED);
		PyObject *o = PyLong_FromUnsignedLongLong(v);
		if (!o || PyDict_SetItemString(d, stat_fields[i].name, o)) {
			Py_XDECREF(o);
			Py_DECREF(d);
			return NULL;
		}
		Py_DECREF(o);
	}
	return d;
}

#define LSTAT(f) { #f, offsetof(struct hc_line_stats, f) }
static const struct { const char *name; size_t off; } line_fields[] = {
	LSTAT(packets), LSTAT(messages), LSTAT(wins), LSTAT(duplicates), LSTAT(filled), LSTAT(late_copies),
	LSTAT(heartbeats),
	LSTAT(gaps), LSTAT(gap_messages), LSTAT(other_session), LSTAT(down_events),
	LSTAT(up_events), LSTAT(downtime_ns), LSTAT(last_rx_ns),
};

/* None without a B line; else {"a": {...}, "b": {...}, "events": [(tai_ns, line, up, silent_ns)]}. */
static PyObject *lines_report(const struct hc_recov *r, uint32_t k)
{
	if (!hc_recov_has_b(r, k))
		Py_RETURN_NONE;
	PyObject *out = PyDict_New();
	if (!out)
		return NULL;
	for (uint32_t l = 0; l < 2; l++) {
		const struct hc_line_stats *ls = hc_recov_line(r, k, l);
		PyObject *d = PyDict_New();
		if (!d || PyDict_SetItemString(out, l ? "b" : "a", d)) {
			Py_XDECREF(d);
			Py_DECREF(out);
			return NULL;
		}
		Py_DECREF(d);
		for (size_t i = 0; i < sizeof(line_fields) / sizeof(line_fields[0]); i++) {
			uint64_t v = __atomic_load_n((const uint64_t *)((const char *)ls + line_fields[i].off),
						     __ATOMIC_RELAXED);
			PyObject *o = PyLong_FromUnsignedLongLong(v);
			if (!o || PyDict_SetItemString(d, line_fields[i].name, o)) {
				Py_XDECREF(o);
				Py_DECREF(out);
				return NULL;
			}
			Py_DECREF(o);
		}
		PyObject *lag = hc_py_hist_bytes(hc_recov_line_lag(r, k, l), 1);
		if (!lag || PyDict_SetItemString(d, "lag", lag)) {
			Py_XDECREF(lag);
			Py_DECREF(out);
			return NULL;
		}
		Py_DECREF(lag);
		int down = (int)__atomic_load_n(&ls->down, __ATOMIC_RELAXED);
		PyObject *stv = PyUnicode_FromString(down ? "down" : "up");
		if (!stv || PyDict_SetItemString(d, "state", stv)) {
			Py_XDECREF(stv);
			Py_DECREF(out);
			return NULL;
		}
		Py_DECREF(stv);
	}
	struct hc_line_event ev[HC_LINE_EVENTS];
	uint32_t n = hc_recov_line_events(r, k, ev);
	PyObject *el = PyList_New(n);
	for (uint32_t i = 0; el && i < n; i++)
		PyList_SET_ITEM(el, i, Py_BuildValue("(KsKs)", (unsigned long long)ev[i].tai_ns,
						     ev[i].line ? "b" : "a",
						     (unsigned long long)ev[i].silent_ns,
						     ev[i].up ? "up" : "down"));
	if (!el || PyDict_SetItemString(out, "events", el)) {
		Py_XDECREF(el);
		Py_DECREF(out);
		return NULL;
	}
	Py_DECREF(el);
	return out;
}

/* {"feeds": [{state, stats, lost: [(first, count)], hist: bytes, lines}], "socket": stats}. */
PyObject *hc_py_recov_report(const struct hc_recov *r, uint32_t nfeeds)
{
	PyObject *out = PyDict_New(), *feeds = PyList_New(0);
	struct hc_recov_range *lost = PyMem_Malloc(sizeof(*lost) * HC_RECOV_LOST_RANGES);
	if (!out || !feeds || !lost)
		goto fail;
	for (uint32_t k = 0; k < nfeeds; k++) {
		uint32_t nl = hc_recov_lost(r, k, lost);
		PyObject *ll = PyList_New(nl);
		if (!ll)
			goto fail;
		for (uint32_t i = 0; i < nl; i++)
			PyList_SET_ITEM(ll, i, Py_BuildValue("(KK)", (unsigned long long)lost[i].first,
							     (unsigned long long)lost[i].count));
		PyObject *st = stats_dict(hc_recov_stats(r, k));
		PyObject *h = hc_py_hist_bytes(hc_recov_hist(r, k, 0), 1);
		PyObject *hl = hc_py_hist_bytes(hc_recov_hist(r, k, 1), 1);
		PyObject *ho = hole_dict(hc_recov_hole_stats(r, k));
		int s = hc_recov_state(r, k);
		PyObject *lines = lines_report(r, k);
		PyObject *fd = (st && h && hl && ho && lines)
			? Py_BuildValue("{s:s,s:O,s:O,s:O,s:O,s:O,s:O}", "state", state_names[s], "stats", st,
					"lost", ll, "recovery_time", h, "loss_declared_after", hl, "hole", ho,
					"lines", lines)
			: NULL;
		Py_XDECREF(ho);
		Py_XDECREF(st);
		Py_XDECREF(h);
		Py_XDECREF(hl);
		Py_XDECREF(lines);
		Py_DECREF(ll);
		if (!fd || PyList_Append(feeds, fd)) {
			Py_XDECREF(fd);
			goto fail;
		}
		Py_DECREF(fd);
	}
	PyObject *sock = stats_dict(hc_recov_stats(r, nfeeds));
	if (!sock || PyDict_SetItemString(out, "socket", sock)) {
		Py_XDECREF(sock);
		goto fail;
	}
	Py_DECREF(sock);
	if (PyDict_SetItemString(out, "feeds", feeds))
		goto fail;
	Py_DECREF(feeds);
	PyMem_Free(lost);
	return out;
fail:
	PyMem_Free(lost);
	Py_XDECREF(out);
	Py_XDECREF(feeds);
	return NULL;
}

/* ---- RecoveryLab ---- */

typedef struct {
	PyObject_HEAD
	struct hc_consumer *c;
	struct hc_recov *r;
	struct hc_join *j; /* arm_join: a late join on the lab's consumer */
} LabObject;

static int Lab_init(LabObject *self, PyObject *args, PyObject *kw)
{
	PyObject *cfgd;
	if (!PyArg_ParseTuple(args, "O", &cfgd))
		return -1;
	struct hc_recov_cfg cfg;
	if (hc_py_recov_cfg(cfgd, &cfg) < 0)
		return -1;
	cfg.lab = 1;
	self->c = PyMem_Calloc(1, sizeof(*self->c));
	if (!self->c) {
		PyErr_NoMemory();
		return -1;
	}
	hc_consumer_init(self->c, 1, 0);
	int err = hc_books_new(&self->c->books, 1 << 16);
	if (!err)
		err = hc_recov_new(&self->r, &cfg, 1);
	if (err) {
		hc_py_errno(err, "recovery lab");
		return -1;
	}
	self->c->recov = self->r;
	return 0;
}

static void Lab_dealloc(LabObject *self)
{
	if (self->c && self->c->books)
		hc_books_free(self->c->books);
	hc_recov_free(self->r);
	hc_join_free(self->j);
	PyMem_Free(self->c);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lab_packet(LabObject *self, PyObject *args)
{
	Py_buffer b;
	unsigned long long now;
	int line = 0;
	if (!PyArg_ParseTuple(args, "y*K|i", &b, &now, &line))
		return NULL;
	struct hc_pkt_times t = { .deq_tai_ns = now };
	hc_consumer_packet(self->c, line ? HC_FEED_LINE_B : 0, b.buf, (uint32_t)b.len, &t);
	PyBuffer_Release(&b);
	Py_RETURN_NONE;
}

static PyObject *Lab_reply(LabObject *self, PyObject *args)
{
	Py_buffer b;
	const char *ip;
	int port;
	unsigned long long now;
	if (!PyArg_ParseTuple(args, "y*siK", &b, &ip, &port, &now))
		return NULL;
	struct in_addr a;
	if (inet_pton(AF_INET, ip, &a) != 1) {
		PyBuffer_Release(&b);
		return PyErr_Format(PyExc_ValueError, "bad address %s", ip);
	}
	hc_recov_reply(self->r, self->c, b.buf, (uint32_t)b.len, a.s_addr, htons((uint16_t)port), now);
	PyBuffer_Release(&b);
	Py_RETURN_NONE;
}

static PyObject *Lab_tick(LabObject *self, PyObject *args)
{
	unsigned long long now;
	if (!PyArg_ParseTuple(args, "K", &now))
		return NULL;
	hc_recov_tick(self->r, self->c, now);
	uint64_t t = hc_recov_next_timer_ns(self->r, now);
	if (t == UINT64_MAX)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(t);
}

static PyObject *Lab_sent(LabObject *self, PyObject *unused)
{
	enum { CAP = 4096 };
	uint32_t *srv = PyMem_Malloc(CAP * sizeof(*srv));
	uint8_t(*pk)[20] = PyMem_Malloc(CAP * 20);
	if (!srv || !pk) {
		PyMem_Free(srv);
		PyMem_Free(pk);
		return PyErr_NoMemory();
	}
	uint32_t n = hc_recov_sent(self->r, srv, pk, CAP);
	PyObject *l = PyList_New(n);
	for (uint32_t i = 0; l && i < n; i++)
		PyList_SET_ITEM(l, i, Py_BuildValue("(Iy#)", srv[i], (const char *)pk[i], (Py_ssize_t)20));
	PyMem_Free(srv);
	PyMem_Free(pk);
	return l;
}

static PyObject *Lab_report(LabObject *self, PyObject *unused)
{
	PyObject *d = hc_py_recov_report(self->r, 1);
	if (!d)
		return NULL;
	const struct hc_mold *m = &self->c->mold[0];
	PyObject *mold = Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "next", m->next,
				       "messages", m->st.messages, "duplicates", m->st.duplicates,
				       "gaps", m->st.gaps, "gap_events", m->st.gap_events,
				       "drop_truncated", m->st.drop_truncated, "packets", m->st.packets);
	if (!mold || PyDict_SetItemString(d, "mold", mold)) {
		Py_XDECREF(mold);
		Py_DECREF(d);
		return NULL;
	}
	Py_DECREF(mold);
	return d;
}

static PyObject *Lab_books(LabObject *self, PyObject *unused)
{
	return hc_py_books_wrap(self->c->books, (PyObject *)self);
}

/* arm_join(capacity) -> Join: the lab's consumer buffers into a join (its hooks re-request a
 * hole through this recovery); the caller plays the loader with the Join, the data thread
 * with packet/reply/tick/idle. */
static PyObject *Lab_arm_join(LabObject *self, PyObject *arg)
{
	unsigned long long cap = PyLong_AsUnsignedLongLong(arg);
	if (PyErr_Occurred())
		return NULL;
	if (self->j) {
		PyErr_SetString(PyExc_ValueError, "join already armed");
		return NULL;
	}
	int rc = hc_join_new(&self->j, cap);
	if (rc)
		return hc_py_errno(rc, "join buffer");
	hc_consumer_attach_join(self->c, self->j);
	return hc_py_join_wrap(self->j, self->c->books, (PyObject *)self);
}

static PyObject *Lab_idle(LabObject *self, PyObject *unused)
{
	hc_consumer_idle(self->c);
	Py_RETURN_NONE;
}

static PyMethodDef Lab_methods[] = {
	{ "arm_join", (PyCFunction)Lab_arm_join, METH_O, "arm_join(capacity) -> Join (late join / restore)" },
	{ "idle", (PyCFunction)Lab_idle, METH_NOARGS, "the data thread between packets (a splice)" },
	{ "packet", (PyCFunction)Lab_packet, METH_VARARGS, "packet(datagram, now_ns, line=0): a live packet (line 1: the B line, with ab_mask=1)" },
	{ "reply", (PyCFunction)Lab_reply, METH_VARARGS,
	  "reply(datagram, ip, port, now_ns): a datagram on the request socket" },
	{ "tick", (PyCFunction)Lab_tick, METH_VARARGS,
	  "tick(now_ns) -> ns to the next timer (None: none armed)" },
	{ "sent", (PyCFunction)Lab_sent, METH_NOARGS, "[(server index, request bytes)] so far" },
	{ "report", (PyCFunction)Lab_report, METH_NOARGS, "figures, as Capture.recovery() gives them" },
	{ "books", (PyCFunction)Lab_books, METH_NOARGS, "the books fed" },
	{ NULL },
};

static PyTypeObject LabType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hftcap._core.RecoveryLab",
	.tp_basicsize = sizeof(LabObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Lab_init,
	.tp_dealloc = (destructor)Lab_dealloc,
	.tp_methods = Lab_methods,
	.tp_doc = "One feed's consumer, books and recovery on a caller-given clock (tests).",
};

int hc_py_add_recovery(PyObject *m)
{
	if (PyType_Ready(&LabType) < 0)
		return -1;
	return PyModule_AddObjectRef(m, "RecoveryLab", (PyObject *)&LabType);
}
