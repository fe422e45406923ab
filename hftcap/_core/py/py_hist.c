/* py_hist.c: the histogram boundary. `Histogram` (for tests and tools: bulk record of a uint64
 * buffer with the GIL released, counts exposed through the buffer protocol without copying),
 * `hist_geometry()` (bucket bounds so Python computes percentiles from any exported counts),
 * `hist_export()` and the C helper hc_py_hist_bytes() for the consumer's snapshot. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "hist.h"
#include "py.h"

typedef struct {
	PyObject_HEAD
	int busy; /* a record() with the GIL released is running: no other access */
	struct hc_hist h;
} HistObject;

static PyTypeObject Hist_Type;

static int hist_check_idle(HistObject *self)
{
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "histogram is being recorded by another thread");
		return -1;
	}
	return 0;
}

static PyObject *Hist_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {NULL};
	if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Histogram", kwlist))
		return NULL;
	HistObject *self = (HistObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	hc_hist_init(&self->h);
	return (PyObject *)self;
}

/* An 8-byte unsigned native-order item: 'Q', or 'L' where long is 8 bytes. */
static int format_is_u64(const Py_buffer *b)
{
	const char *f = b->format ? b->format : "B";
	if (*f == '@' || *f == '=' || (*f == '<' && PY_LITTLE_ENDIAN) || (*f == '>' && PY_BIG_ENDIAN))
		f++;
	return b->itemsize == 8 && f[1] == '\0' && (f[0] == 'Q' || (f[0] == 'L' && sizeof(long) == 8));
}

static PyObject *Hist_record(HistObject *self, PyObject *arg)
{
	Py_buffer b;
	if (hist_check_idle(self) < 0)
		return NULL;
	if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
		return NULL;
	if (!format_is_u64(&b)) {
		PyErr_Format(PyExc_TypeError,
			     "record() expects a contiguous buffer of uint64 ('Q'), got format '%s' "
			     "itemsize %zd", b.format ? b.format : "B", b.itemsize);
		PyBuffer_Release(&b);
		return NULL;
	}
	const uint64_t *v = b.buf;
	Py_ssize_t n = b.len / 8;
	self->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	for (Py_ssize_t i = 0; i < n; i++)
		hc_hist_record(&self->h, v[i]);
	Py_END_ALLOW_THREADS
	self->busy = 0;
	PyBuffer_Release(&b);
	return PyLong_FromSsize_t(n);
}

static PyObject *Hist_record_value(HistObject *self, PyObject *arg)
{
	if (hist_check_idle(self) < 0)
		return NULL;
	unsigned long long v = PyLong_AsUnsignedLongLong(arg);
	if (v == (unsigned long long)-1 && PyErr_Occurred())
		return NULL;
	hc_hist_record(&self->h, v);
	Py_RETURN_NONE;
}

static PyObject *Hist_reset(HistObject *self, PyObject *unused)
{
	if (hist_check_idle(self) < 0)
		return NULL;
	hc_hist_reset(&self->h);
	Py_RETURN_NONE;
}

static PyObject *Hist_merge(HistObject *self, PyObject *arg)
{
	if (!PyObject_TypeCheck(arg, &Hist_Type)) {
		PyErr_Format(PyExc_TypeError, "merge() expects a Histogram, got %.80s",
			     Py_TYPE(arg)->tp_name);
		return NULL;
	}
	if (hist_check_idle(self) < 0 || hist_check_idle((HistObject *)arg) < 0)
		return NULL;
	hc_hist_merge(&self->h, &((HistObject *)arg)->h);
	Py_RETURN_NONE;
}

static PyObject *Hist_to_bytes(HistObject *self, PyObject *unused)
{
	if (hist_check_idle(self) < 0)
		return NULL;
	return hc_py_hist_bytes(&self->h, 1);
}

static PyObject *Hist_index(PyObject *cls, PyObject *arg)
{
	unsigned long long v = PyLong_AsUnsignedLongLong(arg);
	if (v == (unsigned long long)-1 && PyErr_Occurred())
		return NULL;
	return PyLong_FromUnsignedLong(hc_hist_index(v));
}

static PyObject *Hist_counts(HistObject *self, void *closure)
{
	return PyMemoryView_FromObject((PyObject *)self);
}

#define HIST_U64_GETTER(name, expr)                                                        \
	static PyObject *Hist_get_##name(HistObject *self, void *closure)                 \
	{                                                                                  \
		return PyLong_FromUnsignedLongLong(expr);                                  \
	}
HIST_U64_GETTER(count, self->h.count)
HIST_U64_GETTER(sum, self->h.sum_ns)
HIST_U64_GETTER(overflow, self->h.counts[HC_HIST_OVERFLOW])

static PyObject *Hist_get_min(HistObject *self, void *closure)
{
	if (!self->h.count)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(self->h.min_ns);
}

static PyObject *Hist_get_max(HistObject *self, void *closure)
{
	if (!self->h.count)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(self->h.max_ns);
}

/* Buffer protocol: the counts array, read-only, format 'Q', shape (HC_HIST_BUCKETS,). */
static int Hist_getbuffer(HistObject *self, Py_buffer *view, int flags)
{
	static Py_ssize_t shape = HC_HIST_BUCKETS;
	static Py_ssize_t stride = sizeof(uint64_t);
	if (flags & PyBUF_WRITABLE) {
		PyErr_SetString(PyExc_BufferError, "Histogram counts are read-only");
		view->obj = NULL;
		return -1;
	}
	view->obj = Py_NewRef(self);
	view->buf = self->h.counts;
	view->len = sizeof(self->h.counts);
	view->readonly = 1;
	view->itemsize = sizeof(uint64_t);
	view->format = (flags & PyBUF_FORMAT) ? "Q" : NULL;
	view->ndim = 1;
	view->shape = (flags & PyBUF_ND) ? &shape : NULL;
	view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &stride : NULL;
	view->suboffsets = NULL;
	view->internal = NULL;
	return 0;
}

static PyBufferProcs Hist_as_buffer = {
	.bf_getbuffer = (getbufferproc)Hist_getbuffer,
};

static PyMethodDef Hist_methods[] = {
	{"record", (PyCFunction)Hist_record, METH_O,
	 "record(buf) -> n: record every uint64 (ns) of a contiguous buffer, GIL released."},
	{"record_value", (PyCFunction)Hist_record_value, METH_O, "record_value(v_ns): one value."},
	{"reset", (PyCFunction)Hist_reset, METH_NOARGS, "Empty the histogram."},
	{"merge", (PyCFunction)Hist_merge, METH_O, "merge(other): add other's samples to this one."},
	{"to_bytes", (PyCFunction)Hist_to_bytes, METH_NOARGS,
	 "The export record (header words count, min_ns, max_ns, sum_ns, then the counts)."},
	{"index", (PyCFunction)Hist_index, METH_O | METH_CLASS,
	 "Histogram.index(v_ns) -> bucket index of a value."},
	{NULL},
};

static PyGetSetDef Hist_getset[] = {
	{"counts", (getter)Hist_counts, NULL, "memoryview of the counts (uint64, no copy)", NULL},
	{"count", (getter)Hist_get_count, NULL, "samples recorded", NULL},
	{"min", (getter)Hist_get_min, NULL, "smallest sample (ns) or None", NULL},
	{"max", (getter)Hist_get_max, NULL, "largest sample (ns) or None", NULL},
	{"sum", (getter)Hist_get_sum, NULL, "sum of the in-range samples (ns)", NULL},
	{"overflow", (getter)Hist_get_overflow, NULL, "samples above 10 s", NULL},
	{NULL},
};

static PyTypeObject Hist_Type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "hftcap._core.Histogram",
	.tp_basicsize = sizeof(HistObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Histogram(): a fixed-size latency histogram (see hftcap/_core/hist.h).",
	.tp_new = Hist_new,
	.tp_methods = Hist_methods,
	.tp_getset = Hist_getset,
	.tp_as_buffer = &Hist_as_buffer,
};

PyObject *hc_py_hist_bytes(const struct hc_hist *hists, unsigned n)
{
	PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n * sizeof(struct hc_hist));
	if (!out)
		return NULL;
	long w = hc_hist_export(hists, n, (uint64_t *)PyBytes_AS_STRING(out),
				(size_t)n * HC_HIST_RECORD_WORDS);
	if (w < 0) {
		Py_DECREF(out);
		return hc_py_errno((int)w, "hist export");
	}
	return out;
}

static PyObject *py_hist_export(PyObject *mod, PyObject *arg)
{
	PyObject *seq = PySequence_Fast(arg, "hist_export() expects a sequence of Histogram");
	if (!seq)
		return NULL;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	const struct hc_hist **ptrs = PyMem_Malloc((n ? n : 1) * sizeof(*ptrs));
	PyObject *out = NULL;
	if (!ptrs) {
		PyErr_NoMemory();
		goto out_seq;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
		if (!PyObject_TypeCheck(o, &Hist_Type)) {
			PyErr_Format(PyExc_TypeError, "hist_export() item %zd is %.80s, not Histogram",
				     i, Py_TYPE(o)->tp_name);
			goto out_ptrs;
		}
		if (hist_check_idle((HistObject *)o) < 0)
			goto out_ptrs;
		ptrs[i] = &((HistObject *)o)->h;
	}
	out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(struct hc_hist));
	if (!out)
		goto out_ptrs;
	long w = hc_hist_export_ptrs(ptrs, (unsigned)n, (uint64_t *)PyBytes_AS_STRING(out),
				     (size_t)n * HC_HIST_RECORD_WORDS);
	if (w < 0) {
		Py_CLEAR(out);
		hc_py_errno((int)w, "hist export");
	}
out_ptrs:
	PyMem_Free(ptrs);
out_seq:
	Py_DECREF(seq);
	return out;
}

static PyObject *py_hist_geometry(PyObject *mod, PyObject *unused)
{
	uint64_t low[HC_HIST_BUCKETS], high[HC_HIST_BUCKETS];
	for (unsigned i = 0; i < HC_HIST_BUCKETS; i++) {
		low[i] = hc_hist_bucket_low(i);
		high[i] = hc_hist_bucket_high(i);
	}
	return Py_BuildValue("{s:I,s:I,s:I,s:I,s:K,s:I,s:I,s:(ssss),s:y#,s:y#}",
			     "sub_bucket_bits", HC_HIST_SUB_BITS,
			     "buckets", HC_HIST_BUCKETS,
			     "overflow_index", HC_HIST_OVERFLOW,
			     "last_regular_index", HC_HIST_LAST_REGULAR,
			     "max_ns", (unsigned long long)HC_HIST_MAX_NS,
			     "header_words", HC_HIST_HEADER_WORDS,
			     "record_words", HC_HIST_RECORD_WORDS,
			     "header_fields", "count", "min_ns", "max_ns", "sum_ns",
			     "low", (const char *)low, (Py_ssize_t)sizeof(low),
			     "high", (const char *)high, (Py_ssize_t)sizeof(high));
}

static PyMethodDef hist_functions[] = {
	{"hist_geometry", py_hist_geometry, METH_NOARGS,
	 "Bucket geometry: dict with low/high (native uint64 bytes; high exclusive), sizes, layout."},
	{"hist_export", py_hist_export, METH_O,
	 "hist_export([Histogram, ...]) -> bytes: their export records back to back."},
	{NULL},
};

int hc_py_add_hist(PyObject *m)
{
	if (PyType_Ready(&Hist_Type) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Histogram", (PyObject *)&Hist_Type) < 0)
		return -1;
	return PyModule_AddFunctions(m, hist_functions);
}
