/* py_join.c: hftcap._core.Join (the late-join buffer and the snapshot loader's side of the
 * books hand-over, join.h) and spin_build (the exchange's snapshot, spin.h). The loader calls
 * release the GIL. A Join is either armed on a live capture (Capture.arm_join, the books and
 * the ring belong to the capture's data thread) or standalone over a Books object, for tests,
 * where the caller plays the data thread with packet(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include "py.h"
#include "book.h"
#include "join.h"
#include "feed.h"
#include "spin.h"

typedef struct {
	PyObject_HEAD
	struct hc_join *j;
	struct hc_books *b;
	PyObject *owner;          /* the capture or Books keeping b (and, for a capture, j) alive */
	int owns_join;            /* standalone: j is freed here */
	struct hc_consumer *cons; /* standalone: the consumer (feed.c) the caller's packets go through */
	struct hc_soup_stats soup;
	int loading;              /* a load() is running without the GIL */
} JoinObject;

static PyTypeObject JoinType;

int hc_py_join_new(struct hc_join **j, unsigned long long capacity)
{
	int rc = hc_join_new(j, capacity);
	if (rc == -EINVAL)
		PyErr_SetString(PyExc_ValueError, "join buffer: 1024 to 16777216 messages");
	else if (rc)
		hc_py_errno(rc, "join buffer");
	return rc ? -1 : 0;
}

static int Join_init(JoinObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "capacity", "books", NULL };
	unsigned long long cap;
	PyObject *books;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "KO", kwl, &cap, &books))
		return -1;
	if (self->j) {
		PyErr_SetString(PyExc_RuntimeError, "Join already initialised");
		return -1;
	}
	struct hc_books *b = hc_py_books_ptr(books);
	if (!b)
		return -1;
	if (hc_py_join_new(&self->j, cap) < 0)
		return -1;
	self->cons = malloc(sizeof(*self->cons));
	if (!self->cons) {
		hc_join_free(self->j);
		self->j = NULL;
		PyErr_NoMemory();
		return -1;
	}
	hc_consumer_init(self->cons, 1, 0);
	self->cons->books = b;
	hc_consumer_attach_join(self->cons, self->j);
	self->owns_join = 1;
	self->b = b;
	self->owner = books;
	Py_INCREF(books);
	return 0;
}

PyObject *hc_py_join_wrap(struct hc_join *j, struct hc_books *b, PyObject *owner)
{
	JoinObject *o = (JoinObject *)JoinType.tp_alloc(&JoinType, 0);
	if (!o)
		return NULL;
	o->j = j;
	o->b = b;
	o->owner = owner;
	Py_INCREF(owner);
	return (PyObject *)o;
}

static void Join_dealloc(JoinObject *self)
{
	if (self->owns_join)
		hc_join_free(self->j);
	free(self->cons);
	Py_XDECREF(self->owner);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_JOIN(self)                                                         \
	do {                                                                    \
		if (!(self)->j) {                                               \
			PyErr_SetString(PyExc_RuntimeError, "Join not initialised"); \
			return NULL;                                            \
		}                                                               \
	} while (0)

static const char *state_name(int s)
{
	switch (s) {
	case HC_JOIN_BUFFERING: return "buffering";
	case HC_JOIN_READY: return "ready";
	case HC_JOIN_LIVE: return "live";
	case HC_JOIN_BEHIND: return "behind";
	case HC_JOIN_HOLE: return "hole";
	}
	return "unknown";
}

static PyObject *Join_get_state(JoinObject *self, void *c)
{
	NEED_JOIN(self);
	return PyUnicode_FromString(state_name(hc_join_state(self->j)));
}

static PyObject *Join_stats(JoinObject *self, PyObject *unused)
{
	NEED_JOIN(self);
	const struct hc_join_stats *s = hc_join_stats(self->j);
	const struct hc_soup_stats *q = &self->soup;
	PyObject *d = PyDict_New(), *soup = PyDict_New();
	if (!d || !soup)
		goto fail;
#define U(dict, name, v) if (hc_py_put_u64(dict, name, __atomic_load_n(&(v), __ATOMIC_RELAXED))) goto fail
	U(d, "buffered", s->buffered); U(d, "overwritten", s->overwritten);
	U(d, "oversize", s->oversize); U(d, "applied", s->applied);
	U(d, "discarded", s->discarded); U(d, "splices", s->splices); U(d, "behind", s->behind);
	U(d, "stale", s->stale);
	U(d, "first_seq", s->first_seq); U(d, "snapshot_next", s->snapshot_next);
	U(d, "armed_ns", s->armed_ns); U(d, "first_packet_ns", s->first_packet_ns);
	U(d, "ready_ns", s->ready_ns); U(d, "live_ns", s->live_ns);
	U(d, "loads", s->loads); U(d, "clears", s->clears);
	U(d, "load_messages", s->load_messages); U(d, "load_bytes", s->load_bytes);
	U(d, "load_start_ns", s->load_start_ns); U(d, "load_end_ns", s->load_end_ns);
	U(d, "rearms", s->rearms); U(d, "restores", s->restores);
	U(d, "restore_ns_last", s->restore_ns_last); U(d, "restore_ns_max", s->restore_ns_max);
	U(d, "restore_ns_sum", s->restore_ns_sum); U(d, "lost_after_n", s->lost_after_n);
	U(d, "lost_upto", s->lost_upto); U(d, "holes", s->holes);
	U(d, "holes_filled", s->holes_filled); U(d, "holes_failed", s->holes_failed);
	U(d, "hole_messages", s->hole_messages); U(d, "hole_first", s->hole_first);
	U(d, "hole_end", s->hole_end); U(d, "hole_next", s->hole_next);
	U(soup, "packets", q->packets); U(soup, "sequenced", q->sequenced);
	U(soup, "heartbeats", q->heartbeats); U(soup, "debug", q->debug);
	U(soup, "unsequenced", q->unsequenced); U(soup, "bad_length", q->bad_length);
	U(soup, "unknown_type", q->unknown_type); U(soup, "end_of_session", q->end_of_session);
	U(soup, "bad_end", q->bad_end); U(soup, "oversize", q->oversize);
#undef U
	if (hc_py_put_u64(d, "capacity", hc_join_capacity(self->j)) ||
	    PyDict_SetItemString(d, "state", PyUnicode_FromString(state_name(hc_join_state(self->j)))) ||
	    PyDict_SetItemString(d, "soup", soup))
		goto fail;
	Py_DECREF(soup);
	return d;
fail:
	Py_XDECREF(d);
	Py_XDECREF(soup);
	return NULL;
}

static PyObject *Join_load_begin(JoinObject *self, PyObject *unused)
{
	NEED_JOIN(self);
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hc_join_load_begin(self->j, self->b);
	Py_END_ALLOW_THREADS
	if (rc)
		return hc_py_errno(rc, "snapshot load (the data thread owns the books)");
	Py_RETURN_NONE;
}

/* load(buffer) -> (result, used, next_seq): result 0 more, 1 end of snapshot, 2 close. */
static PyObject *Join_load(JoinObject *self, PyObject *arg)
{
	NEED_JOIN(self);
	Py_buffer v;
	if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE))
		return NULL;
	int st = hc_join_state(self->j);
	if ((st != HC_JOIN_BUFFERING && st != HC_JOIN_BEHIND) || self->loading) {
		PyBuffer_Release(&v);
		return hc_py_errno(-EBUSY, "snapshot load (the data thread owns the books)");
	}
	size_t used = 0;
	uint64_t next = 0;
	int r;
	self->loading = 1;
	Py_BEGIN_ALLOW_THREADS
	r = hc_soup_load(self->j, self->b, &self->soup, v.buf, (size_t)v.len, &used, &next);
	Py_END_ALLOW_THREADS
	self->loading = 0;
	PyBuffer_Release(&v);
	return Py_BuildValue("inK", r, (Py_ssize_t)used, (unsigned long long)next);
}

static PyObject *Join_hand_over(JoinObject *self, PyObject *arg)
{
	NEED_JOIN(self);
	unsigned long long n = PyLong_AsUnsignedLongLong(arg);
	if (PyErr_Occurred())
		return NULL;
	int rc = hc_join_hand_over(self->j, n);
	if (rc)
		return hc_py_errno(rc, "snapshot hand-over");
	Py_RETURN_NONE;
}

/* Standalone only: play the data thread for one downstream packet (feed.c's consumer, no hop
 * timing). Returns True when the join buffered it, False when it went to the books. */
static PyObject *Join_packet(JoinObject *self, PyObject *arg)
{
	NEED_JOIN(self);
	if (!self->owns_join) {
		PyErr_SetString(PyExc_RuntimeError, "this join belongs to a capture's data thread");
		return NULL;
	}
	Py_buffer v;
	if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE))
		return NULL;
	uint64_t before = hc_join_stats(self->j)->buffered;
	struct hc_pkt_times t = { 0 };
	hc_consumer_packet(self->cons, 0, v.buf, (uint32_t)v.len, &t);
	PyBuffer_Release(&v);
	return PyBool_FromLong(hc_join_stats(self->j)->buffered != before);
}

static PyObject *Join_poll(JoinObject *self, PyObject *unused)
{
	NEED_JOIN(self);
	if (!self->owns_join) {
		PyErr_SetString(PyExc_RuntimeError, "this join belongs to a capture's data thread");
		return NULL;
	}
	hc_consumer_idle(self->cons);
	Py_RETURN_NONE;
}

/* Standalone only: as the data thread after a gap declared lost, hand the books back to the
 * loader (a snapshot below what was applied will be refused). */
static PyObject *Join_rearm(JoinObject *self, PyObject *unused)
{
	NEED_JOIN(self);
	if (!self->owns_join) {
		PyErr_SetString(PyExc_RuntimeError, "this join belongs to a capture's data thread");
		return NULL;
	}
	hc_join_rearm(self->j, self->cons->mold[0].next);
	Py_RETURN_NONE;
}

static PyMethodDef Join_methods[] = {
	{ "rearm", (PyCFunction)Join_rearm, METH_NOARGS, "Standalone: back to buffering (restore)." },
	{ "stats", (PyCFunction)Join_stats, METH_NOARGS, "Ring, splice and loader counters." },
	{ "load_begin", (PyCFunction)Join_load_begin, METH_NOARGS,
	  "Start a spin (clears the books if they hold anything)." },
	{ "load", (PyCFunction)Join_load, METH_O,
	  "load(bytes) -> (result, used, next_seq): SoupBinTCP packets after Login Accepted." },
	{ "hand_over", (PyCFunction)Join_hand_over, METH_O,
	  "hand_over(next_seq): give the books to the data thread." },
	{ "packet", (PyCFunction)Join_packet, METH_O, "Standalone: one downstream packet." },
	{ "poll", (PyCFunction)Join_poll, METH_NOARGS, "Standalone: splice if handed over." },
	{ NULL },
};

static PyGetSetDef Join_getset[] = {
	{ "state", (getter)Join_get_state, NULL, "buffering, ready, live, behind or hole", NULL },
	{ NULL },
};

static PyTypeObject JoinType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hftcap._core.Join",
	.tp_basicsize = sizeof(JoinObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Join(capacity, books): a late-join buffer and snapshot loader (join.h).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Join_init,
	.tp_dealloc = (destructor)Join_dealloc,
	.tp_methods = Join_methods,
	.tp_getset = Join_getset,
};

PyObject *hc_py_spin_bytes(const uint8_t *stream, size_t len, uint64_t n, uint64_t first_seq,
			   struct hc_spin_stats *st)
{
	uint8_t *out = NULL;
	size_t olen = 0;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hc_spin_build(stream, len, n, first_seq, &out, &olen, st);
	Py_END_ALLOW_THREADS
	if (rc)
		return hc_py_errno(rc, "snapshot spin");
	PyObject *b = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)olen);
	free(out);
	return b;
}

/* spin_build(stream, n, first_seq) -> (bytes, stats): the exchange's snapshot (spin.h) of the
 * first n messages. The GIL is released: the live sender keeps running. */
static PyObject *py_spin_build(PyObject *mod, PyObject *args)
{
	Py_buffer v;
	unsigned long long n, first;
	if (!PyArg_ParseTuple(args, "y*KK", &v, &n, &first))
		return NULL;
	struct hc_spin_stats st;
	PyObject *b = hc_py_spin_bytes(v.buf, (size_t)v.len, n, first, &st);
	PyBuffer_Release(&v);
	if (!b)
		return NULL;
	return Py_BuildValue("N{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", b, "replayed",
			     (unsigned long long)st.replayed, "orders", (unsigned long long)st.orders,
			     "attributed", (unsigned long long)st.attributed, "stocks",
			     (unsigned long long)st.stocks, "packets", (unsigned long long)st.packets,
			     "bytes", (unsigned long long)st.bytes, "next_seq",
			     (unsigned long long)st.next_seq, "build_ns", (unsigned long long)st.build_ns);
}

static PyMethodDef join_functions[] = {
	{ "spin_build", py_spin_build, METH_VARARGS,
	  "spin_build(stream, n, first_seq) -> (SoupBinTCP bytes, stats)" },
	{ NULL },
};

int hc_py_add_join(PyObject *m)
{
	if (PyType_Ready(&JoinType) < 0 || PyModule_AddObjectRef(m, "Join", (PyObject *)&JoinType) < 0)
		return -1;
	return PyModule_AddFunctions(m, join_functions);
}
