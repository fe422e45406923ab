/* py_clock.c: the consumer's stamp clock (hc_time.h) at the boundary: its calibration as a dict,
 * the pure fit maths for tests, and a timed run of packets through a consumer with either stamp
 * source. */
#include "py.h"
#include <errno.h>
#include "book.h"
#include "feed.h"
#include "hc_time.h"

PyObject *hc_py_clock_dict(const struct hc_clock *k)
{
	if (k->source != HC_STAMP_TSC)
		return Py_BuildValue("{s:s,s:s}", "source", "clock", "reads", "clock_gettime(CLOCK_TAI)");
	const struct hc_tsc_cal *c = &k->cal;
	double hz = c->mult ? 1e9 * (double)(1ull << HC_TSC_SHIFT) / (double)c->mult : 0;
	return Py_BuildValue("{s:s,s:s,s:d,s:K,s:K,s:K,s:L,s:K,s:K,s:K}", "source", "tsc",
			     "reads", "lfence; rdtsc, mapped to CLOCK_TAI by a fit re-checked between packets",
			     "tsc_hz", hz,
			     "start_error_ns", (unsigned long long)c->start_err_ns,
			     "pair_halfwidth_ns", (unsigned long long)__atomic_load_n(&c->pair_halfwidth_ns, __ATOMIC_RELAXED),
			     "checks", (unsigned long long)__atomic_load_n(&c->checks, __ATOMIC_RELAXED),
			     "last_error_ns", (long long)__atomic_load_n(&c->last_err_ns, __ATOMIC_RELAXED),
			     "max_abs_error_ns", (unsigned long long)__atomic_load_n(&c->max_abs_err_ns, __ATOMIC_RELAXED),
			     "check_every_ns", (unsigned long long)HC_TSC_CHECK_NS,
			     "rate_over_ns", (unsigned long long)(HC_TSC_CHECK_NS * (HC_TSC_PAIRS - 1)));
}

static int parse_source(const char *s, int *out)
{
	if (!strcmp(s, "tsc"))
		*out = HC_STAMP_TSC;
	else if (!strcmp(s, "clock"))
		*out = HC_STAMP_CLOCK;
	else if (!strcmp(s, "auto"))
		*out = HC_STAMP_AUTO;
	else {
		PyErr_Format(PyExc_ValueError, "stamp must be tsc, clock or auto, not %s", s);
		return -1;
	}
	return 0;
}

int hc_py_stamp_source(const char *s, int *out) { return parse_source(s, out); }

/* tsc_fit(tsc_a, tai_a, tsc_b, tai_b, readings) -> [tai of each reading on the fit]. */
static PyObject *py_tsc_fit(PyObject *mod, PyObject *args)
{
	unsigned long long ta, na, tb, nb;
	PyObject *rd;
	if (!PyArg_ParseTuple(args, "KKKKO", &ta, &na, &tb, &nb, &rd))
		return NULL;
	struct hc_tsc_cal k = { 0 };
	if (hc_tsc_fit(&k, ta, na, tb, nb)) {
		PyErr_SetString(PyExc_ValueError, "the second pair must be after the first");
		return NULL;
	}
	PyObject *seq = PySequence_Fast(rd, "readings must be a sequence of ints");
	if (!seq)
		return NULL;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	PyObject *out = PyList_New(n);
	for (Py_ssize_t i = 0; out && i < n; i++) {
		unsigned long long t = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
		if (PyErr_Occurred()) {
			Py_CLEAR(out);
			break;
		}
		PyList_SET_ITEM(out, i, PyLong_FromUnsignedLongLong(hc_tsc_to_ns(&k, t)));
	}
	Py_DECREF(seq);
	return out;
}

/* stamp_clock(source) -> calibration dict of a fresh clock (what listen would use). */
static PyObject *py_stamp_clock(PyObject *mod, PyObject *args)
{
	const char *s = "auto";
	if (!PyArg_ParseTuple(args, "|s", &s))
		return NULL;
	int src;
	if (parse_source(s, &src) < 0)
		return NULL;
	struct hc_clock k;
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_clock_init(&k, src);
	Py_END_ALLOW_THREADS
	if (err)
		return hc_py_errno(err, "stamp clock");
	return hc_py_clock_dict(&k);
}

/* consume_timed(packets, books, stamp) -> {packets, messages, samples: {hop: count}, clock}:
 * MoldUDP64 payloads through a consumer with timing on, feed 0, into `books` (a Books), each
 * packet stamped at its "dequeue" with the chosen source, as the receive loop does. */
static PyObject *py_consume_timed(PyObject *mod, PyObject *args)
{
	PyObject *pkts, *bo;
	const char *s;
	if (!PyArg_ParseTuple(args, "OOs", &pkts, &bo, &s))
		return NULL;
	int src;
	if (parse_source(s, &src) < 0)
		return NULL;
	struct hc_books *b = hc_py_books_ptr(bo);
	if (!b)
		return NULL;
	PyObject *seq;
	struct hc_consumer *c = hc_py_consumer_new(pkts, &seq);
	if (!c)
		return NULL;
	int err = hc_clock_init(&c->clk, src);
	if (err) {
		PyMem_Free(c);
		Py_DECREF(seq);
		return hc_py_errno(err, "stamp clock");
	}
	c->books = b;
	c->timing = 1;
	PyObject *out = NULL;
	for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
		Py_buffer pb;
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &pb, PyBUF_SIMPLE) < 0)
			goto done;
		struct hc_pkt_times t = { 0 };
		t.deq_tai_ns = hc_stamp_tai_ns(&c->clk);
		hc_consumer_packet(c, 0, pb.buf, (uint32_t)(pb.len > UINT32_MAX ? UINT32_MAX : pb.len), &t);
		PyBuffer_Release(&pb);
		hc_clock_check(&c->clk, 1);
	}
	PyObject *samples = PyDict_New();
	for (int h = 0; samples && h < HC_NHOPS; h++) {
		PyObject *v = PyLong_FromUnsignedLongLong(c->hists[h].count);
		if (!v || PyDict_SetItemString(samples, hc_hop_names[h], v) < 0)
			Py_CLEAR(samples);
		Py_XDECREF(v);
	}
	PyObject *negative = PyLong_FromUnsignedLongLong(c->negative[HC_HOP_DEQUEUE_TO_DECODE] +
							 c->negative[HC_HOP_DECODE_TO_BOOK]);
	PyObject *clk = hc_py_clock_dict(&c->clk);
	if (samples && negative && clk)
		out = Py_BuildValue("{s:K,s:K,s:O,s:O,s:O}", "packets", c->packets,
				    "messages", c->mold[0].st.messages, "samples", samples,
				    "negative", negative, "clock", clk);
	Py_XDECREF(samples);
	Py_XDECREF(negative);
	Py_XDECREF(clk);
done:
	PyMem_Free(c);
	Py_DECREF(seq);
	return out;
}

static PyMethodDef clock_funcs[] = {
	{ "tsc_fit", py_tsc_fit, METH_VARARGS,
	  "tsc_fit(tsc_a, tai_a, tsc_b, tai_b, readings) -> TAI ns of each TSC reading on the fit "
	  "through the two pairs (the calibration maths, for tests)" },
	{ "stamp_clock", py_stamp_clock, METH_VARARGS,
	  "stamp_clock(source='auto') -> the calibration of a fresh stamp clock (tsc, clock or auto)" },
	{ "consume_timed", py_consume_timed, METH_VARARGS,
	  "consume_timed(packets, books, stamp) -> counts of a timed consumer run into books" },
	{ NULL },
};

int hc_py_add_clock(PyObject *m)
{
	if (PyModule_AddFunctions(m, clock_funcs) < 0)
		return -1;
	return PyModule_AddIntConstant(m, "TSC_INVARIANT", hc_tsc_invariant());
}
