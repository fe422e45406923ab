/* py_pcapng.c: hftcap._core.PcapngWriter, the boundary of the capture writer (pcapng.h).
 * The control plane builds the SHB and IDBs (hftcap/receive/pcapng.py), picks file names and
 * asks for rotations; a Capture copies packets into the writer's ring once set_writer() is
 * called. Close the writer only after the capture's data thread has stopped. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "py.h"
#include <sched.h>
#include <time.h>
#include "pcapng.h"

typedef struct {
	PyObject_HEAD
	struct hc_pcapng *w;
	int closed;
	uint8_t *fake_umem;      /* bench_put_xsk's frames, read by the writer: freed after it */
} WriterObject;

static int Writer_init(WriterObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "path", "header", "ts_sources", "ring_bytes", "snaplen",
				  "file_size", "part", "flush_ms", "writer_cpu", NULL };
	const char *path;
	Py_buffer hdr;
	PyObject *srcs;
	unsigned long long ring = 256ull << 20, fsize = 0;
	unsigned int snaplen = 262144, flush_ms = 100;
	int part = 1, writer_cpu = -1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "sy*O|KIKpIi", kwlist, &path, &hdr, &srcs, &ring,
					 &snaplen, &fsize, &part, &flush_ms, &writer_cpu))
		return -1;
	struct hc_pcapng_cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	PyObject *seq = PySequence_Fast(srcs, "ts_sources must be a sequence of ints");
	if (!seq) {
		PyBuffer_Release(&hdr);
		return -1;
	}
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	if (n < 1 || n > HC_PCAP_MAX_IF) {
		Py_DECREF(seq);
		PyBuffer_Release(&hdr);
		PyErr_Format(PyExc_ValueError, "between 1 and %d interfaces", HC_PCAP_MAX_IF);
		return -1;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
		if (v < HC_TSRC_HW || v > HC_TSRC_DEQ) {
			Py_DECREF(seq);
			PyBuffer_Release(&hdr);
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_ValueError, "bad timestamp source %ld", v);
			return -1;
		}
		cfg.ts_source[i] = (uint8_t)v;
	}
	Py_DECREF(seq);
	cfg.nifaces = (uint32_t)n;
	cfg.header = hdr.buf;
	cfg.header_len = (size_t)hdr.len;
	cfg.ring_bytes = ring;
	cfg.snaplen = snaplen;
	cfg.file_size = fsize;
	cfg.part = part;
	cfg.flush_ms = flush_ms;
	cfg.writer_cpu = writer_cpu;
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_pcapng_open(&cfg, path, &self->w);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&hdr);
	if (err) {
		self->w = NULL;
		hc_py_errno(err, path);
		return -1;
	}
	return 0;
}

static void Writer_dealloc(WriterObject *self)
{
	if (self->w) {
		Py_BEGIN_ALLOW_THREADS
		hc_pcapng_free(self->w);
		Py_END_ALLOW_THREADS
	}
	free(self->fake_umem);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_W(self)                                                              \
	do {                                                                      \
		if (!(self)->w || (self)->closed) {                               \
			PyErr_SetString(PyExc_ValueError, "writer is closed");   \
			return NULL;                                              \
		}                                                                 \
	} while (0)

static PyObject *Writer_set_next(WriterObject *self, PyObject *args)
{
	const char *path;
	if (!PyArg_ParseTuple(args, "s", &path))
		return NULL;
	NEED_W(self);
	int err = hc_pcapng_set_next(self->w, path);
	if (err)
		return hc_py_errno(err, path);
	Py_RETURN_NONE;
}

static PyObject *Writer_rotate(WriterObject *self, PyObject *args)
{
	const char *path;
	if (!PyArg_ParseTuple(args, "s", &path))
		return NULL;
	NEED_W(self);
	uint64_t taken = 0;
	int err = hc_pcapng_rotate(self->w, path, &taken);
	if (err)
		return hc_py_errno(err, path);
	return PyLong_FromUnsignedLongLong(taken);
}

static PyObject *Writer_stats(WriterObject *self, PyObject *unused)
{
	if (!self->w) {
		PyErr_SetString(PyExc_ValueError, "writer is closed");
		return NULL;
	}
	struct hc_pcapng_stats st;
	hc_pcapng_stats(self->w, &st);
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:I,s:i}",
			     "feed_written", (unsigned long long)st.written_if[HC_PCAP_IF_FEED],
			     "seen", (unsigned long long)st.seen[HC_PCAP_IF_FEED],
			     "capture_drops", (unsigned long long)st.drops[HC_PCAP_IF_FEED],
			     "capture_late", (unsigned long long)st.late[HC_PCAP_IF_FEED],
			     "recovery_written", (unsigned long long)st.written_if[HC_PCAP_IF_RECOVERY],
			     "recovery_seen", (unsigned long long)st.seen[HC_PCAP_IF_RECOVERY],
			     "recovery_capture_drops", (unsigned long long)st.drops[HC_PCAP_IF_RECOVERY],
			     "written", (unsigned long long)st.written,
			     "bytes", (unsigned long long)st.bytes,
			     "files_done", (unsigned long long)st.files_done,
			     "rotations_late", (unsigned long long)st.rotations_late,
			     "names_taken", (unsigned long long)st.names_taken,
			     "names_queued", st.names_queued, "error", st.error);
}

static PyObject *Writer_close(WriterObject *self, PyObject *unused)
{
	if (!self->w || self->closed)
		Py_RETURN_NONE;
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_pcapng_close(self->w);
	Py_END_ALLOW_THREADS
	self->closed = 1;
	if (err)
		return hc_py_errno(err, "capture file");
	Py_RETURN_NONE;
}

/* The arguments (n, frame_len) of the bench_put calls, and the writer's ring; NULL with an
 * exception. */
static struct hc_capring *bench_ring(WriterObject *self, PyObject *args, unsigned long long *n,
				     unsigned int *flen)
{
	if (!PyArg_ParseTuple(args, "KI", n, flen))
		return NULL;
	NEED_W(self);
	if (*flen < 42 || *flen > 2048) {
		PyErr_SetString(PyExc_ValueError, "frame_len 42..2048");
		return NULL;
	}
	return hc_pcapng_ring(self->w);
}

/* bench_put(n, frame_len) -> ns: n hc_capring_put calls of one synthetic frame from this
 * thread (GIL released) while the writer thread drains, published every 64 as the data thread
 * does; this thread's CPU ns (CLOCK_THREAD_CPUTIME_ID) for all n, so preemption by the host
 * or other processes is not counted. For benchmarks/bench_capture_write.py only. */
static PyObject *Writer_bench_put(WriterObject *self, PyObject *args)
{
	unsigned long long n;
	unsigned int flen;
	struct hc_capring *r = bench_ring(self, args, &n, &flen);
	if (!r)
		return NULL;
	uint8_t frame[2048];
	memset(frame, 0xab, sizeof(frame));
	struct hc_consumer *cons = PyMem_Calloc(1, sizeof(*cons));
	if (!cons)
		return PyErr_NoMemory();
	struct timespec a, b;
	Py_BEGIN_ALLOW_THREADS
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for (unsigned long long i = 0; i < n; i++) {
		struct hc_pkt_times t = { .xdp_tai_ns = i + 1, .deq_tai_ns = i + 2 };
		cons->out_dec_tai_ns = i + 3;
		hc_capring_put(r, HC_PCAP_IF_FEED, HC_CAPREC_FRAME, frame, flen, 0, &t, cons, 0, 0, 0, 0);
		if ((i & 63) == 63) /* the data thread publishes once per batch of up to 64 */
			hc_capring_publish(r);
	}
	hc_capring_publish(r);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	Py_END_ALLOW_THREADS
	PyMem_Free(cons);
	return PyLong_FromLongLong((long long)(b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec));
}

/* bench_put_xsk(n, frame_len) -> ns: what the AF_XDP data thread does per packet with
 * --write, n times: a 128-byte descriptor into the ring (hc_capring_put_xsk), the frame into
 * the hold queue, and per batch of 64 the reclaim of 64 free frames and the publish, while the
 * writer thread copies the frames out of a UMEM of 8192 + 8192 2-KiB frames (as listen's
 * default). This thread's CPU ns (CLOCK_THREAD_CPUTIME_ID) for all n. Benchmark only. */
#define BENCH_FRAMES 16384u
static PyObject *Writer_bench_put_xsk(WriterObject *self, PyObject *args)
{
	unsigned long long n;
	unsigned int flen;
	struct hc_capring *r = bench_ring(self, args, &n, &flen);
	if (!r)
		return NULL;
	if (!self->fake_umem) {
		self->fake_umem = aligned_alloc(4096, (size_t)BENCH_FRAMES * 2048);
		if (!self->fake_umem)
			return PyErr_NoMemory();
		memset(self->fake_umem, 0xab, (size_t)BENCH_FRAMES * 2048);
		r->umem[0] = self->fake_umem;
	}
	struct hc_consumer *cons = PyMem_Calloc(1, sizeof(*cons));
	const uint64_t spare = BENCH_FRAMES - 4096, cap = 16384;
	struct hc_caphold h = { .addr = PyMem_Calloc(cap, 8), .need = PyMem_Calloc(cap, 8), .mask = cap - 1 };
	uint64_t *ring_slots = PyMem_Calloc(4096, 8); /* stands in for the fill/RX rings */
	if (!cons || !h.addr || !h.need || !ring_slots) {
		PyMem_Free(cons);
		PyMem_Free(h.addr);
		PyMem_Free(h.need);
		PyMem_Free(ring_slots);
		return PyErr_NoMemory();
	}
	for (uint64_t k = 0; k < 4096; k++)
		ring_slots[k] = k * 2048;
	for (uint64_t k = 0; k < spare; k++)
		h.addr[k] = (4096 + k) * 2048;
	h.rel = h.head = spare;
	/* Start when the writer has caught up, so one burst's cost is not the last one's. The fake
	 * frames are never written again: the writer may read them while or after this returns. */
	struct timespec a, b;
	uint64_t slot = 0;
	Py_BEGIN_ALLOW_THREADS
	while (__atomic_load_n(&r->released, __ATOMIC_ACQUIRE) != r->pushed)
		sched_yield();
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for (unsigned long long i = 0; i < n;) {
		unsigned long long m = n - i < 64 ? n - i : 64;
		for (unsigned long long j = 0; j < m; j++, i++) {
			struct hc_pkt_times t = { .xdp_tai_ns = i + 1, .deq_tai_ns = i + 2 };
			cons->out_dec_tai_ns = i + 3;
			uint64_t addr = ring_slots[(slot + j) & 4095];
			hc_caphold_push(&h, addr, hc_capring_put_xsk(r, 0, addr, flen, 0, &t, cons));
		}
		hc_caphold_reclaim(&h, r, (uint32_t)m);
		for (unsigned long long j = 0; j < m; j++)
			ring_slots[(slot + j) & 4095] = hc_caphold_take(&h);
		slot += m;
		hc_capring_publish(r);
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	Py_END_ALLOW_THREADS
	PyMem_Free(cons);
	PyMem_Free(h.addr);
	PyMem_Free(h.need);
	PyMem_Free(ring_slots);
	return PyLong_FromLongLong((long long)(b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec));
}

static PyObject *Writer_ring_bytes(WriterObject *self, void *closure)
{
	if (!self->w)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(hc_pcapng_ring(self->w)->size);
}

static PyGetSetDef Writer_getset[] = {
	{ "ring_bytes", (getter)Writer_ring_bytes, NULL, "The ring's size (a power of two).", NULL },
	{ NULL },
};

static PyMethodDef Writer_methods[] = {
	{ "set_next", (PyCFunction)Writer_set_next, METH_VARARGS,
	  "set_next(path): queue a name for a later size rotation (FIFO of 16)." },
	{ "rotate", (PyCFunction)Writer_rotate, METH_VARARGS,
	  "rotate(path) -> names_taken: rotate now, empty the queue." },
	{ "stats", (PyCFunction)Writer_stats, METH_NOARGS, "Counters snapshot." },
	{ "bench_put", (PyCFunction)Writer_bench_put, METH_VARARGS,
	  "bench_put(n, frame_len) -> ns for n ring puts from this thread (benchmark only)." },
	{ "bench_put_xsk", (PyCFunction)Writer_bench_put_xsk, METH_VARARGS,
	  "bench_put_xsk(n, frame_len) -> ns for n AF_XDP descriptor puts with the frame hold (benchmark only)." },
	{ "close", (PyCFunction)Writer_close, METH_NOARGS,
	  "Drain the ring, write the ISBs, close and rename (after the capture stopped)." },
	{ NULL },
};

static PyTypeObject WriterType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hftcap._core.PcapngWriter",
	.tp_basicsize = sizeof(WriterObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Writer_init,
	.tp_dealloc = (destructor)Writer_dealloc,
	.tp_methods = Writer_methods,
	.tp_getset = Writer_getset,
	.tp_doc = "The pcapng capture writer: a ring the data thread fills and a writer thread.",
};

struct hc_pcapng *hc_py_pcapng_get(PyObject *o)
{
	if (!PyObject_TypeCheck(o, &WriterType)) {
		PyErr_SetString(PyExc_TypeError, "expected a PcapngWriter");
		return NULL;
	}
	WriterObject *w = (WriterObject *)o;
	if (!w->w || w->closed) {
		PyErr_SetString(PyExc_ValueError, "writer is closed");
		return NULL;
	}
	return w->w;
}

int hc_py_add_pcapng(PyObject *m)
{
	if (PyType_Ready(&WriterType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "PcapngWriter", (PyObject *)&WriterType) < 0)
		return -1;
	if (PyModule_AddIntConstant(m, "PCAPNG_PEN", 32473) < 0)
		return -1;
	return 0;
}
