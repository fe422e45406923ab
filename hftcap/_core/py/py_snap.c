/* py_snap.c: the Python face of hftcap's Book Snapshot 'Z' (snap.h, NOT part of ITCH 5.0):
 * stream conversion (GIL released), encode/decode of one message (tests, tools), and
 * SnapTable, the receiver's table of the last snapshot per stock, owned (offline feed /
 * consume) or borrowed from a live capture. Levels come back as bytes of struct
 * hc_level_snap, the same layout hftcap.books.LEVEL_DTYPE views for Books.book_raw. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include "py.h"
#include "snap.h"
#include "feed.h"

typedef struct {
	PyObject_HEAD
	struct hc_snap_table *t;
	PyObject *owner; /* keeps a borrowed table alive; NULL when owned */
	int busy;        /* a feed or consume is running */
} SnapTableObject;

static PyTypeObject SnapTableType;

static PyObject *snap_drops_dict(const uint64_t *drops)
{
	PyObject *d = PyDict_New();
	for (int i = 1; d && i < HC_SNAP_DROP__MAX; i++)
		if (hc_py_put_u64(d, hc_snap_drop_names[i], drops[i]) < 0)
			Py_CLEAR(d);
	return d;
}

/* ---- module functions ---- */

/* snap_convert(stream, levels) -> (bytes, stats): NASDAQ-layout delta stream -> snapshot stream. */
static PyObject *py_snap_convert(PyObject *mod, PyObject *args)
{
	Py_buffer buf;
	unsigned int levels;
	if (!PyArg_ParseTuple(args, "y*I", &buf, &levels))
		return NULL;
	if (levels < 1 || levels > HC_SNAP_MAX_LEVELS) {
		PyBuffer_Release(&buf);
		return PyErr_Format(PyExc_ValueError, "levels %u: expected 1 to %d", levels, HC_SNAP_MAX_LEVELS);
	}
	int64_t need;
	Py_BEGIN_ALLOW_THREADS
	need = hc_snap_convert_size(buf.buf, (size_t)buf.len, levels);
	Py_END_ALLOW_THREADS
	PyObject *out = need >= 0 ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need) : NULL;
	if (!out) {
		PyBuffer_Release(&buf);
		return need < 0 ? hc_py_errno((int)need, "hc_snap_convert_size") : NULL;
	}
	struct hc_snap_conv_stats st;
	int64_t n;
	Py_BEGIN_ALLOW_THREADS
	n = hc_snap_convert(buf.buf, (size_t)buf.len, levels, (uint8_t *)PyBytes_AS_STRING(out),
			    (size_t)need, &st);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&buf);
	if (n < 0) {
		Py_DECREF(out);
		return hc_py_errno((int)n, "hc_snap_convert");
	}
	PyObject *drops = PyDict_New();
	for (int i = 1; drops && i < HC_DROP__MAX; i++)
		if (st.book_drops[i] && hc_py_put_u64(drops, hc_drop_names[i], st.book_drops[i]) < 0)
			Py_CLEAR(drops);
	if (!drops) {
		Py_DECREF(out);
		return NULL;
	}
	return Py_BuildValue("(N{s:K,s:K,s:K,s:K,s:K,s:K,s:I,s:N})", out,
			     "records", st.records, "snapshots", st.snapshots, "passed", st.passed,
			     "tail_bytes", st.tail_bytes, "shares_clamped", st.shares_clamped,
			     "bytes_out", st.bytes_out, "levels", levels, "book_drops", drops);
}

/* Levels from a sequence of (price_e4, shares, orders). -1 with an exception. */
static int parse_levels(PyObject *o, struct hc_level_snap *out, uint32_t *n)
{
	PyObject *seq = PySequence_Fast(o, "levels must be a sequence of (price_e4, shares, orders)");
	if (!seq)
		return -1;
	Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
	if (k > HC_SNAP_MAX_LEVELS) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "at most %d levels per side", HC_SNAP_MAX_LEVELS);
		return -1;
	}
	for (Py_ssize_t i = 0; i < k; i++) {
		unsigned int price, orders;
		unsigned long long shares;
		if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "IKI", &price, &shares, &orders)) {
			Py_DECREF(seq);
			return -1;
		}
		out[i] = (struct hc_level_snap){ .price_e4 = price, .orders = orders, .shares = shares };
	}
	*n = (uint32_t)k;
	Py_DECREF(seq);
	return 0;
}

/* snap_encode(locate, tracking_number, timestamp_ns, levels, bids, asks) -> bytes of one Z. */
static PyObject *py_snap_encode(PyObject *mod, PyObject *args)
{
	unsigned int locate, tracking, levels;
	unsigned long long ts;
	PyObject *bo, *ao;
	if (!PyArg_ParseTuple(args, "IIKIOO", &locate, &tracking, &ts, &levels, &bo, &ao))
		return NULL;
	if (locate > 0xFFFF || tracking > 0xFFFF || ts >= (1ull << 48))
		return PyErr_Format(PyExc_ValueError, "locate and tracking number are u16, timestamp u48");
	struct hc_level_snap bids[HC_SNAP_MAX_LEVELS], asks[HC_SNAP_MAX_LEVELS];
	uint32_t nb, na;
	if (parse_levels(bo, bids, &nb) < 0 || parse_levels(ao, asks, &na) < 0)
		return NULL;
	uint8_t out[HC_SNAP_HDR_LEN + 2 * HC_SNAP_MAX_LEVELS * HC_SNAP_LEVEL_LEN];
	int n = hc_snap_encode(out, sizeof(out), (uint16_t)locate, (uint16_t)tracking, ts, levels,
			       bids, nb, asks, na, NULL);
	if (n < 0)
		return PyErr_Format(PyExc_ValueError, "levels %u: expected 1 to %d", levels, HC_SNAP_MAX_LEVELS);
	return PyBytes_FromStringAndSize((const char *)out, n);
}

static PyObject *levels_list(const struct hc_level_snap *l, uint32_t n)
{
	PyObject *list = PyList_New(n);
	for (uint32_t i = 0; list && i < n; i++) {
		PyObject *t = Py_BuildValue("(IKI)", l[i].price_e4, (unsigned long long)l[i].shares, l[i].orders);
		if (!t) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, i, t);
	}
	return list;
}

/* snap_decode(msg) -> dict; ValueError(reason) on a drop. */
static PyObject *py_snap_decode(PyObject *mod, PyObject *args)
{
	Py_buffer buf;
	if (!PyArg_ParseTuple(args, "y*", &buf))
		return NULL;
	struct hc_snap_msg *m = PyMem_Malloc(sizeof(*m));
	if (!m) {
		PyBuffer_Release(&buf);
		return PyErr_NoMemory();
	}
	int rc = hc_snap_decode(buf.buf, (uint32_t)(buf.len > UINT32_MAX ? UINT32_MAX : buf.len), m);
	PyBuffer_Release(&buf);
	PyObject *out = NULL;
	if (rc < 0)
		PyErr_Format(PyExc_ValueError, "%s", hc_snap_drop_names[-rc]);
	else
		out = Py_BuildValue("{s:s,s:I,s:I,s:K,s:I,s:N,s:N}", "type", "Z",
				    "stock_locate", (unsigned)m->stock_locate,
				    "tracking_number", (unsigned)m->tracking_number,
				    "timestamp_ns", (unsigned long long)m->timestamp_ns, "levels", m->levels,
				    "bids", levels_list(m->bids, m->n_bids), "asks", levels_list(m->asks, m->n_asks));
	PyMem_Free(m);
	return out;
}

/* ---- SnapTable ---- */

static int table_init(SnapTableObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { NULL };
	if (!PyArg_ParseTupleAndKeywords(args, kw, "", kwl))
		return -1;
	if (self->t) {
		PyErr_SetString(PyExc_RuntimeError, "SnapTable already initialised");
		return -1;
	}
	int rc = hc_snap_table_new(&self->t);
	if (rc < 0) {
		hc_py_errno(rc, "hc_snap_table_new");
		return -1;
	}
	return 0;
}

static void table_dealloc(SnapTableObject *self)
{
	if (self->owner)
		Py_DECREF(self->owner);
	else
		hc_snap_table_free(self->t);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *hc_py_snaps_wrap(struct hc_snap_table *t, PyObject *owner)
{
	SnapTableObject *o = (SnapTableObject *)SnapTableType.tp_alloc(&SnapTableType, 0);
	if (!o)
		return NULL;
	o->t = t;
	o->owner = owner ? owner : Py_None;
	Py_INCREF(o->owner);
	return (PyObject *)o;
}

static int ready(SnapTableObject *self, int feeding)
{
	if (!self->t) {
		PyErr_SetString(PyExc_RuntimeError, "SnapTable not initialised");
		return -1;
	}
	if (feeding && self->owner) {
		PyErr_SetString(PyExc_RuntimeError, "this table is fed by its owner (live capture)");
		return -1;
	}
	if (feeding && self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "a feed is already running on this table");
		return -1;
	}
	return 0;
}

/* feed(data) -> (records, applied): every record of a NASDAQ-layout buffer goes to the table
 * (anything but a well-formed Z is counted as a drop). GIL released. */
static PyObject *table_feed(SnapTableObject *self, PyObject *args)
{
	Py_buffer buf;
	if (!PyArg_ParseTuple(args, "y*", &buf))
		return NULL;
	if (ready(self, 1) < 0) {
		PyBuffer_Release(&buf);
		return NULL;
	}
	const uint8_t *m;
	uint32_t n;
	size_t off = 0;
	unsigned long long recs = 0, applied = 0;
	self->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	while (hc_nasdaq_next(buf.buf, (size_t)buf.len, &off, &m, &n)) {
		applied += hc_snap_table_feed(self->t, m, n) == 0;
		recs++;
	}
	Py_END_ALLOW_THREADS
	self->busy = 0;
	PyBuffer_Release(&buf);
	return Py_BuildValue("(KK)", recs, applied);
}

/* consume(packets, timing=False) -> dict: MoldUDP64 payloads through a fresh consumer (feed.c,
 * the live receive path's code) with fresh books and this table; offline, no timestamps
 * except the consumer's own (timing=True exercises the split decode/apply path). */
static PyObject *table_consume(SnapTableObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "packets", "timing", NULL };
	PyObject *pkts;
	int timing = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwl, &pkts, &timing) || ready(self, 1) < 0)
		return NULL;
	PyObject *seq;
	struct hc_consumer *c = hc_py_consumer_new(pkts, &seq);
	if (!c)
		return NULL;
	struct hc_books *b = NULL;
	PyObject *out = NULL, *msgs = NULL, *drops = NULL;
	int rc;
	if ((rc = hc_books_new(&b, 1 << 16)) < 0) {
		hc_py_errno(rc, "hc_books_new");
		goto done;
	}
	c->books = b;
	c->snaps = self->t;
	c->timing = timing;
	struct hc_pkt_times t = { 0 };
	self->busy = 1;
	for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
		Py_buffer pb;
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &pb, PyBUF_SIMPLE) < 0) {
			self->busy = 0;
			goto done;
		}
		if (timing)
			t.deq_tai_ns = 1; /* any stamp before now: dequeue_to_decode gets a sample */
		hc_consumer_packet(c, 0, pb.buf, (uint32_t)(pb.len > UINT32_MAX ? UINT32_MAX : pb.len), &t);
		PyBuffer_Release(&pb);
	}
	self->busy = 0;
	const struct hc_books_stats *bs = hc_books_stats(b);
	msgs = PyDict_New();
	drops = PyDict_New();
	for (int k = 0; msgs && k < 256; k++)
		if (bs->messages[k]) {
			char key[2] = { (char)k, 0 };
			if (hc_py_put_u64(msgs, key, bs->messages[k]) < 0)
				Py_CLEAR(msgs);
		}
	for (int k = 1; drops && k < HC_DROP__MAX; k++)
		if (bs->drops[k] && hc_py_put_u64(drops, hc_drop_names[k], bs->drops[k]) < 0)
			Py_CLEAR(drops);
	if (!msgs || !drops)
		goto done;
	struct hc_mold_stats *ms = &c->mold[0].st;
	out = Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:N}", "packets", c->packets, "bytes", c->bytes,
			    "messages", ms->messages, "gaps", ms->gaps,
			    "decode_to_book_samples", c->hists[HC_HOP_DECODE_TO_BOOK].count,
			    "dequeue_to_decode_samples", c->hists[HC_HOP_DEQUEUE_TO_DECODE].count,
			    "books_messages", msgs, "books_drops", drops);
	msgs = drops = NULL;
done:
	Py_XDECREF(msgs);
	Py_XDECREF(drops);
	hc_books_free(b);
	PyMem_Free(c);
	Py_DECREF(seq);
	return out;
}

static PyObject *table_stats(SnapTableObject *self, PyObject *unused)
{
	if (ready(self, 0) < 0)
		return NULL;
	const struct hc_snap_stats *st = hc_snap_table_stats(self->t);
	uint64_t drops[HC_SNAP_DROP__MAX];
	for (int i = 0; i < HC_SNAP_DROP__MAX; i++)
		drops[i] = __atomic_load_n(&st->drops[i], __ATOMIC_RELAXED);
	return Py_BuildValue("{s:K,s:K,s:N}",
			     "messages", (unsigned long long)__atomic_load_n(&st->messages, __ATOMIC_RELAXED),
			     "stocks", (unsigned long long)__atomic_load_n(&st->stocks, __ATOMIC_RELAXED),
			     "drops", snap_drops_dict(drops));
}

static PyObject *table_locates(SnapTableObject *self, PyObject *unused)
{
	if (ready(self, 0) < 0)
		return NULL;
	uint16_t *locs = PyMem_Malloc(65536 * sizeof(uint16_t));
	if (!locs)
		return PyErr_NoMemory();
	int n = hc_snap_table_locates(self->t, locs, 65536);
	PyObject *list = PyList_New(n);
	for (int i = 0; list && i < n; i++)
		PyList_SET_ITEM(list, i, PyLong_FromLong(locs[i]));
	PyMem_Free(locs);
	return list;
}

/* One read of a stock: levels (capped at HC_SNAP_MAX_LEVELS) and the entry's fields. */
struct table_rd {
	struct hc_level_snap bids[HC_SNAP_MAX_LEVELS], asks[HC_SNAP_MAX_LEVELS];
	uint32_t nb, na, sent;
	uint64_t ts, msgs;
};

static int table_read(SnapTableObject *self, PyObject *args, struct table_rd *r)
{
	unsigned int loc, levels = HC_SNAP_MAX_LEVELS;
	if (!PyArg_ParseTuple(args, "I|I", &loc, &levels) || ready(self, 0) < 0)
		return -1;
	if (levels > HC_SNAP_MAX_LEVELS)
		levels = HC_SNAP_MAX_LEVELS;
	if (loc > 65535 || hc_snap_table_get(self->t, (uint16_t)loc, levels, r->bids, &r->nb, r->asks,
					     &r->na, &r->sent, &r->ts, &r->msgs) < 0) {
		PyErr_Format(PyExc_KeyError, "stock locate %u has no snapshot", loc);
		return -1;
	}
	return 0;
}

static PyObject *table_book_raw(SnapTableObject *self, PyObject *args)
{
	struct table_rd r;
	if (table_read(self, args, &r) < 0)
		return NULL;
	return Py_BuildValue("(y#y#)", (char *)r.bids, (Py_ssize_t)(r.nb * sizeof(r.bids[0])),
			     (char *)r.asks, (Py_ssize_t)(r.na * sizeof(r.asks[0])));
}

static PyObject *table_info(SnapTableObject *self, PyObject *args)
{
	struct table_rd r;
	if (table_read(self, args, &r) < 0)
		return NULL;
	return Py_BuildValue("{s:I,s:K,s:K,s:I,s:I}", "levels", r.sent, "itch_ns",
			     (unsigned long long)r.ts, "messages", (unsigned long long)r.msgs,
			     "bid_levels", r.nb, "ask_levels", r.na);
}

static PyMethodDef table_methods[] = {
	{ "feed", (PyCFunction)table_feed, METH_VARARGS,
	  "feed(data) -> (records, applied): NASDAQ-layout records, each a Z (else a counted drop)." },
	{ "consume", (PyCFunction)(void (*)(void))table_consume, METH_VARARGS | METH_KEYWORDS,
	  "consume(packets, timing=False) -> dict: MoldUDP64 payloads through a fresh consumer + books." },
	{ "stats", (PyCFunction)table_stats, METH_NOARGS, "{messages, stocks, drops{reason: n}}." },
	{ "locates", (PyCFunction)table_locates, METH_NOARGS, "Locates with a snapshot, ascending." },
	{ "info", (PyCFunction)table_info, METH_VARARGS,
	  "info(locate) -> {levels, itch_ns, messages, bid_levels, ask_levels}; KeyError if none." },
	{ "book_raw", (PyCFunction)table_book_raw, METH_VARARGS,
	  "book_raw(locate, levels=32) -> (bids, asks) bytes of {u32 price_e4, u32 orders, u64 shares}." },
	{ NULL },
};

static PyTypeObject SnapTableType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "hftcap._core.SnapTable",
	.tp_basicsize = sizeof(SnapTableObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "SnapTable(): the last hftcap Book Snapshot 'Z' of every stock (not ITCH 5.0).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)table_init,
	.tp_dealloc = (destructor)table_dealloc,
	.tp_methods = table_methods,
};

static PyMethodDef snap_functions[] = {
	{ "snap_convert", py_snap_convert, METH_VARARGS,
	  "snap_convert(stream, levels) -> (bytes, stats): delta stream -> Book Snapshot stream." },
	{ "snap_encode", py_snap_encode, METH_VARARGS,
	  "snap_encode(locate, tracking_number, timestamp_ns, levels, bids, asks) -> bytes of one Z." },
	{ "snap_decode", py_snap_decode, METH_VARARGS, "snap_decode(msg) -> dict; ValueError(reason) on a drop." },
	{ NULL },
};

int hc_py_add_snap(PyObject *m)
{
	if (PyType_Ready(&SnapTableType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "SnapTable", (PyObject *)&SnapTableType) < 0)
		return -1;
	if (PyModule_AddFunctions(m, snap_functions) < 0 ||
	    PyModule_AddIntConstant(m, "SNAP_MAX_LEVELS", HC_SNAP_MAX_LEVELS) < 0)
		return -1;
	PyObject *names = PyTuple_New(HC_SNAP_DROP__MAX - 1);
	if (!names)
		return -1;
	for (int i = 1; i < HC_SNAP_DROP__MAX; i++)
		PyTuple_SET_ITEM(names, i - 1, PyUnicode_FromString(hc_snap_drop_names[i]));
	if (PyModule_AddObject(m, "SNAP_DROP_NAMES", names) < 0) {
		Py_DECREF(names);
		return -1;
	}
	return 0;
}
