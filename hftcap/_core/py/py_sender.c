/* py_sender.c: hftcap._core.Sender, the boundary of the MoldUDP64 publisher (sender.h).
 * Coarse calls only: construct from a whole NASDAQ-layout stream, run(fd) / serve(fd, s) with
 * the GIL released (they may run in two threads at once), build() for tests, stop(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include "py.h"
#include "sender.h"
#include "spin.h"

typedef struct {
	PyObject_HEAD
	struct hc_sender *s;
	int running;  /* run() or build() in progress (one at a time) */
	int serving;
	int line_b;
	double max_seconds;
} SenderObject;

static const char *const pace_names[] = { "none", "packets", "messages", "file", NULL };
static const char *const clock_names[] = { "tai-midnight", "utc-midnight", "file", NULL };
static const char *const stop_names[] = { "done", "max_time", "stopped", "buffer_full" };

static int name_index(const char *const *names, const char *v, const char *what)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(names[i], v))
			return i;
	PyErr_Format(PyExc_ValueError, "%s: unknown name '%s'", what, v);
	return -1;
}

static int Sender_init(SenderObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "stream", "session", "first_seq", "messages_per_packet",
				  "max_payload", "pace", "rate", "speed", "clock", "loss", "dup",
				  "reorder", "seed", "max_packets", "max_seconds",
				  "heartbeat_interval", "eos_count", "eos_interval", "spin_us",
				  "line_b", "loss_b", "dup_b", "reorder_b", "seed_b", "outage_b_start",
				  "outage_b_seconds", NULL };
	Py_buffer stream;
	const char *session = "HFTCAP0001", *pace = "none", *clock = "tai-midnight";
	Py_ssize_t session_len = 10;
	unsigned long long first_seq = 1, seed = 1, max_packets = 0;
	unsigned int k = 1, max_payload = HC_SEND_MAX_PAYLOAD_DEFAULT, eos_count = 3;
	double rate = 0, speed = 1, loss = 0, dup = 0, reorder = 0, max_seconds = 60,
	       hb = 1.0, eos_interval = 0.0, spin_us = 50;
	int line_b = 0;
	double loss_b = 0, dup_b = 0, reorder_b = 0, out_start = 0, out_len = 0;
	unsigned long long seed_b = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|$y#KIIsddsdddKKddIddpdddKdd", kwlist, &stream,
					 &session, &session_len, &first_seq, &k, &max_payload,
					 &pace, &rate, &speed, &clock, &loss, &dup, &reorder, &seed,
					 &max_packets, &max_seconds, &hb, &eos_count, &eos_interval,
					 &spin_us, &line_b, &loss_b, &dup_b, &reorder_b, &seed_b,
					 &out_start, &out_len))
		return -1;
	struct hc_send_cfg c = { 0 };
	int err = -1;
	if (session_len > HC_SEND_SESSION_LEN) {
		PyErr_Format(PyExc_ValueError, "session: expected at most 10 bytes, got %zd",
			     session_len);
		goto out;
	}
	memset(c.session, ' ', sizeof(c.session)); /* alpha: space-padded */
	memcpy(c.session, session, (size_t)session_len);
	if (!(max_seconds > 0) || max_seconds > 86400 || hb < 0 || eos_interval < 0 ||
	    eos_interval > 1 || spin_us < 0) {
		PyErr_SetString(PyExc_ValueError, "max_seconds must be in (0, 86400], heartbeat_interval"
				" >= 0, eos_interval in [0, 1], spin_us >= 0");
		goto out;
	}
	c.first_seq = first_seq;
	c.msgs_per_packet = k;
	c.max_payload_bytes = max_payload;
	if ((c.pace = name_index(pace_names, pace, "pace")) < 0)
		goto out;
	if ((c.clock = name_index(clock_names, clock, "clock")) < 0)
		goto out;
	c.rate = rate;
	c.speed = speed;
	c.loss = loss;
	c.dup = dup;
	c.reorder = reorder;
	c.seed = seed;
	c.max_packets = max_packets;
	c.max_duration_ns = (uint64_t)(max_seconds * 1e9);
	c.heartbeat_interval_ns = (uint64_t)(hb * 1e9);
	c.eos_count = eos_count;
	c.eos_interval_ns = (uint64_t)(eos_interval * 1e9);
	c.spin_ns = spin_us > 0 ? (uint64_t)(spin_us * 1e3) : 1;
	if (!(out_start >= 0) || !(out_len >= 0) || out_start > 86400 || out_len > 86400) {
		PyErr_SetString(PyExc_ValueError, "outage_b_start and outage_b_seconds must be in [0, 86400]");
		goto out;
	}
	c.line_b = line_b;
	c.loss_b = loss_b;
	c.dup_b = dup_b;
	c.reorder_b = reorder_b;
	c.seed_b = seed_b;
	c.outage_b_start_ns = (uint64_t)(out_start * 1e9);
	c.outage_b_ns = (uint64_t)(out_len * 1e9);
	if (self->s) {
		PyErr_SetString(PyExc_RuntimeError, "Sender already initialised");
		goto out;
	}
	int r;
	Py_BEGIN_ALLOW_THREADS
	r = hc_sender_open(&self->s, stream.buf, (size_t)stream.len, &c);
	Py_END_ALLOW_THREADS
	if (r == -EINVAL) {
		PyErr_Format(PyExc_ValueError, "invalid sender configuration or stream: a record of "
			     "the NASDAQ layout runs past the end (%zd bytes), or a parameter is out "
			     "of range", stream.len);
		goto out;
	}
	if (r == -EMSGSIZE) {
		PyErr_Format(PyExc_ValueError, "a message does not fit one packet of %u bytes",
			     max_payload);
		goto out;
	}
	if (r < 0) {
		hc_py_errno(r, "sender open");
		goto out;
	}
	self->max_seconds = max_seconds;
	self->line_b = line_b;
	err = 0;
out:
	PyBuffer_Release(&stream);
	return err;
}

static void Sender_dealloc(SenderObject *self)
{
	hc_sender_close(self->s);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

#define SET_U64(d, st, f)                                                                  \
	do {                                                                               \
		PyObject *v_ = PyLong_FromUnsignedLongLong((st)->f);                       \
		if (!v_ || PyDict_SetItemString(d, #f, v_) < 0) {                          \
			Py_XDECREF(v_);                                                    \
			Py_DECREF(d);                                                      \
			return NULL;                                                       \
		}                                                                          \
		Py_DECREF(v_);                                                             \
	} while (0)

static PyObject *send_stats_dict(const struct hc_send_stats *st, int clock)
{
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	SET_U64(d, st, data_packets);
	SET_U64(d, st, packets_sent);
	SET_U64(d, st, messages_sent);
	SET_U64(d, st, bytes_sent);
	SET_U64(d, st, lost_packets);
	SET_U64(d, st, lost_messages);
	SET_U64(d, st, duplicated_packets);
	SET_U64(d, st, reordered_packets);
	SET_U64(d, st, heartbeats_sent);
	SET_U64(d, st, eos_sent);
	SET_U64(d, st, send_errors);
	SET_U64(d, st, first_seq);
	SET_U64(d, st, next_seq);
	SET_U64(d, st, first_stamp_itch_ns);
	SET_U64(d, st, last_stamp_itch_ns);
	SET_U64(d, st, elapsed_ns);
	SET_U64(d, st, late_max_ns);
	SET_U64(d, st, batches);
	SET_U64(d, st, outage_packets);
	PyObject *e = PyLong_FromLong(st->last_errno);
	PyObject *r = PyUnicode_FromString(stop_names[st->stop_reason]);
	PyObject *c = PyUnicode_FromString(clock_names[clock]);
	if (!e || !r || !c || PyDict_SetItemString(d, "last_errno", e) < 0 ||
	    PyDict_SetItemString(d, "stop_reason", r) < 0 ||
	    PyDict_SetItemString(d, "clock", c) < 0) {
		Py_XDECREF(e);
		Py_XDECREF(r);
		Py_XDECREF(c);
		Py_DECREF(d);
		return NULL;
	}
	Py_DECREF(e);
	Py_DECREF(r);
	Py_DECREF(c);
	return d;
}

static PyObject *serve_stats_dict(const struct hc_serve_stats *st)
{
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	SET_U64(d, st, requests);
	SET_U64(d, st, replies);
	SET_U64(d, st, reply_messages);
	SET_U64(d, st, bad_request);
	SET_U64(d, st, wrong_session);
	SET_U64(d, st, unknown_range);
	SET_U64(d, st, send_errors);
	PyObject *e = PyLong_FromLong(st->last_errno);
	if (!e || PyDict_SetItemString(d, "last_errno", e) < 0) {
		Py_XDECREF(e);
		Py_DECREF(d);
		return NULL;
	}
	Py_DECREF(e);
	return d;
}

static int check_open(SenderObject *self)
{
	if (!self->s) {
		PyErr_SetString(PyExc_RuntimeError, "Sender not initialised");
		return -1;
	}
	return 0;
}

PyDoc_STRVAR(run_doc, "run(fd, fd_b=None) -> dict\n\nSend the whole schedule on a connected UDP socket "
	     "(GIL released), and on fd_b the B line (line_b=True). Returns the counters (the B "
	     "line's under 'line_b'); raises OSError if nothing could be sent.");
static PyObject *Sender_run(SenderObject *self, PyObject *args)
{
	PyObject *arg, *argb = Py_None;
	if (check_open(self) < 0 || !PyArg_ParseTuple(args, "O|O", &arg, &argb))
		return NULL;
	int fd = PyObject_AsFileDescriptor(arg);
	if (fd < 0)
		return NULL;
	int fd_b = argb == Py_None ? -1 : PyObject_AsFileDescriptor(argb);
	if (argb != Py_None && fd_b < 0)
		return NULL;
	if (self->running) {
		PyErr_SetString(PyExc_RuntimeError, "Sender is already running");
		return NULL;
	}
	struct hc_send_stats st, st_b;
	int r;
	self->running = 1;
	Py_BEGIN_ALLOW_THREADS
	r = hc_sender_run2(self->s, fd, fd_b, &st, fd_b >= 0 ? &st_b : NULL);
	Py_END_ALLOW_THREADS
	self->running = 0;
	if (r == -EBADF && fd_b >= 0) {
		PyErr_SetString(PyExc_ValueError, "fd_b needs a Sender made with line_b=True");
		return NULL;
	}
	if (r < 0)
		return hc_py_errno(r, "sendmmsg");
	PyObject *d = send_stats_dict(&st, hc_sender_clock(self->s));
	if (d && fd_b >= 0) {
		PyObject *db = send_stats_dict(&st_b, hc_sender_clock(self->s));
		if (!db || PyDict_SetItemString(d, "line_b", db) < 0) {
			Py_XDECREF(db);
			Py_DECREF(d);
			return NULL;
		}
		Py_DECREF(db);
	}
	PyObject *h = d ? hc_py_hist_bytes(hc_sender_send_hist(self->s), 1) : NULL;
	if (!h || PyDict_SetItemString(d, "stamp_to_send_return", h) < 0) {
		Py_XDECREF(h);
		Py_XDECREF(d);
		return NULL;
	}
	Py_DECREF(h);
	return d;
}

PyDoc_STRVAR(build_doc, "build(capacity) -> (bytes, dict)\n\nRun the schedule without a socket "
	     "or waiting; records of <u64 LE deadline_ns><u32 LE length><datagram>.");
static PyObject *Sender_build(SenderObject *self, PyObject *arg)
{
	if (check_open(self) < 0)
		return NULL;
	Py_ssize_t cap = PyLong_AsSsize_t(arg);
	if (cap < 0) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, "capacity must be >= 0");
		return NULL;
	}
	if (self->running) {
		PyErr_SetString(PyExc_RuntimeError, "Sender is already running");
		return NULL;
	}
	PyObject *out = PyBytes_FromStringAndSize(NULL, cap);
	if (!out)
		return NULL;
	struct hc_send_stats st, st_b;
	size_t used = 0;
	int64_t n;
	self->running = 1;
	Py_BEGIN_ALLOW_THREADS
	n = hc_sender_build2(self->s, (uint8_t *)PyBytes_AS_STRING(out), (size_t)cap, &used, &st, &st_b);
	Py_END_ALLOW_THREADS
	self->running = 0;
	if (n < 0) {
		Py_DECREF(out);
		return hc_py_errno((int)n, "sender build");
	}
	if (_PyBytes_Resize(&out, (Py_ssize_t)used) < 0)
		return NULL;
	PyObject *d = send_stats_dict(&st, hc_sender_clock(self->s));
	if (!d) {
		Py_DECREF(out);
		return NULL;
	}
	if (self->line_b) {
		PyObject *db = send_stats_dict(&st_b, hc_sender_clock(self->s));
		if (!db || PyDict_SetItemString(d, "line_b", db) < 0) {
			Py_XDECREF(db);
			Py_DECREF(d);
			Py_DECREF(out);
			return NULL;
		}
		Py_DECREF(db);
	}
	return Py_BuildValue("(NN)", out, d);
}

PyDoc_STRVAR(serve_doc, "serve(fd, seconds) -> dict\n\nAnswer MoldUDP64 re-requests on a bound "
	     "UDP socket until `seconds` passed or stop() (GIL released).");
static PyObject *Sender_serve(SenderObject *self, PyObject *args)
{
	PyObject *fobj;
	double seconds;
	if (check_open(self) < 0 || !PyArg_ParseTuple(args, "Od", &fobj, &seconds))
		return NULL;
	int fd = PyObject_AsFileDescriptor(fobj);
	if (fd < 0)
		return NULL;
	if (!(seconds >= 0) || seconds > 86400) {
		PyErr_SetString(PyExc_ValueError, "seconds must be in [0, 86400]");
		return NULL;
	}
	if (self->serving) {
		PyErr_SetString(PyExc_RuntimeError, "Sender is already serving");
		return NULL;
	}
	struct hc_serve_stats st = { 0 };
	int r;
	self->serving = 1;
	Py_BEGIN_ALLOW_THREADS
	r = hc_sender_serve(self->s, fd, (uint64_t)(seconds * 1e9), &st);
	Py_END_ALLOW_THREADS
	self->serving = 0;
	if (r < 0)
		return hc_py_errno(r, "re-request server");
	return serve_stats_dict(&st);
}

PyDoc_STRVAR(reply_doc, "reply(request) -> (bytes | None, dict)\n\nThe reply the re-request "
	     "server would send to one request datagram (None: no reply), and its counters.");
static PyObject *Sender_reply(SenderObject *self, PyObject *arg)
{
	if (check_open(self) < 0)
		return NULL;
	Py_buffer req;
	if (PyObject_GetBuffer(arg, &req, PyBUF_SIMPLE) < 0)
		return NULL;
	struct hc_serve_stats st = { 0 };
	uint8_t out[HC_SEND_MAX_PAYLOAD_LIMIT];
	int n = hc_sender_reply(self->s, req.buf, (size_t)req.len, out, sizeof(out), &st);
	PyBuffer_Release(&req);
	PyObject *d = serve_stats_dict(&st);
	if (!d)
		return NULL;
	if (n <= 0)
		return Py_BuildValue("(ON)", Py_None, d);
	return Py_BuildValue("(y#N)", out, (Py_ssize_t)n, d);
}

static PyObject *Sender_stop(SenderObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	hc_sender_stop(self->s);
	Py_RETURN_NONE;
}

PyDoc_STRVAR(stream_doc, "stream() -> bytes\n\nA copy of the stream as last sent (stamped).");
static PyObject *Sender_stream(SenderObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	size_t len;
	const uint8_t *p = hc_sender_stream(self->s, &len);
	return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
}

PyDoc_STRVAR(spin_doc, "spin() -> (bytes, stats)\n\nThe GLIMPSE-style snapshot (spin.h) of every message "
	     "published so far, as SoupBinTCP packets; built without the GIL, beside run().");
static PyObject *Sender_spin(SenderObject *self, PyObject *unused)
{
	if (check_open(self) < 0)
		return NULL;
	uint64_t first, n = hc_sender_published(self->s, &first);
	size_t len;
	const uint8_t *p = hc_sender_stream(self->s, &len);
	struct hc_spin_stats st;
	PyObject *b = hc_py_spin_bytes(p, len, n, first, &st);
	if (!b)
		return NULL;
	return Py_BuildValue("N{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", b, "replayed",
			     (unsigned long long)st.replayed, "orders", (unsigned long long)st.orders,
			     "attributed", (unsigned long long)st.attributed, "stocks",
			     (unsigned long long)st.stocks, "bytes", (unsigned long long)st.bytes,
			     "next_seq", (unsigned long long)st.next_seq, "build_ns",
			     (unsigned long long)st.build_ns);
}

PyDoc_STRVAR(lost_doc, "lost(line=0) -> [(first_seq, count)]\n\nThe messages the last run dropped "
	     "on a line (0 = A, 1 = B; injected loss and the B outage), as runs of sequence numbers.");
static PyObject *Sender_lost(SenderObject *self, PyObject *args)
{
	int line = 0;
	if (check_open(self) < 0 || !PyArg_ParseTuple(args, "|i", &line))
		return NULL;
	size_t cap = (size_t)hc_sender_packets(self->s) + 1;
	uint64_t(*runs)[2] = PyMem_Malloc(cap * sizeof(*runs));
	if (!runs)
		return PyErr_NoMemory();
	size_t n = hc_sender_lost_runs(self->s, line, runs, cap);
	PyObject *l = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; l && i < n; i++)
		PyList_SET_ITEM(l, (Py_ssize_t)i, Py_BuildValue("(KK)", (unsigned long long)runs[i][0],
							     (unsigned long long)runs[i][1]));
	PyMem_Free(runs);
	return l;
}

static PyObject *Sender_get_messages(SenderObject *self, void *c)
{
	return check_open(self) < 0 ? NULL : PyLong_FromUnsignedLongLong(hc_sender_messages(self->s));
}

static PyObject *Sender_get_packets(SenderObject *self, void *c)
{
	return check_open(self) < 0 ? NULL : PyLong_FromUnsignedLongLong(hc_sender_packets(self->s));
}

static PyMethodDef Sender_methods[] = {
	{ "run", (PyCFunction)Sender_run, METH_VARARGS, run_doc },
	{ "lost", (PyCFunction)Sender_lost, METH_VARARGS, lost_doc },
	{ "build", (PyCFunction)Sender_build, METH_O, build_doc },
	{ "serve", (PyCFunction)Sender_serve, METH_VARARGS, serve_doc },
	{ "reply", (PyCFunction)Sender_reply, METH_O, reply_doc },
	{ "stop", (PyCFunction)Sender_stop, METH_NOARGS, "Ask run() and serve() to return." },
	{ "stream", (PyCFunction)Sender_stream, METH_NOARGS, stream_doc },
	{ "spin", (PyCFunction)Sender_spin, METH_NOARGS, spin_doc },
	{ NULL },
};

static PyGetSetDef Sender_getset[] = {
	{ "messages", (getter)Sender_get_messages, NULL, "messages in the stream", NULL },
	{ "packets", (getter)Sender_get_packets, NULL, "data packets the stream is cut into", NULL },
	{ NULL },
};

static PyTypeObject SenderType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "hftcap._core.Sender",
	.tp_basicsize = sizeof(SenderObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "MoldUDP64 publisher of one NASDAQ-layout ITCH stream (see sender.h).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Sender_init,
	.tp_dealloc = (destructor)Sender_dealloc,
	.tp_methods = Sender_methods,
	.tp_getset = Sender_getset,
};

static PyObject *py_stream_count(PyObject *mod, PyObject *args)
{
	Py_buffer b;
	unsigned int maxp = HC_SEND_MAX_PAYLOAD_DEFAULT;
	if (!PyArg_ParseTuple(args, "y*|I", &b, &maxp))
		return NULL;
	int64_t n = hc_stream_count(b.buf, (size_t)b.len, maxp);
	PyBuffer_Release(&b);
	if (n == -EINVAL)
		return PyErr_Format(PyExc_ValueError, "not NASDAQ layout: a record runs past the end");
	if (n == -EMSGSIZE)
		return PyErr_Format(PyExc_ValueError, "a message does not fit one packet of %u bytes",
				    maxp);
	return PyLong_FromLongLong(n);
}

static PyObject *py_send_deadline_ns(PyObject *mod, PyObject *args)
{
	const char *pace;
	double rate;
	unsigned long long pkt, msgs;
	if (!PyArg_ParseTuple(args, "sdKK", &pace, &rate, &pkt, &msgs))
		return NULL;
	int p = name_index(pace_names, pace, "pace");
	if (p < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(hc_send_deadline_ns(p, rate, pkt, msgs));
}

static PyMethodDef sender_functions[] = {
	{ "stream_count", py_stream_count, METH_VARARGS,
	  "stream_count(buf, max_payload=1400) -> messages in a NASDAQ-layout buffer" },
	{ "send_deadline_ns", py_send_deadline_ns, METH_VARARGS,
	  "send_deadline_ns(pace, rate, pkt_index, msgs_before) -> ns after the start" },
	{ NULL },
};

int hc_py_add_sender(PyObject *m)
{
	if (PyType_Ready(&SenderType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Sender", (PyObject *)&SenderType) < 0)
		return -1;
	if (PyModule_AddFunctions(m, sender_functions) < 0)
		return -1;
	return 0;
}
