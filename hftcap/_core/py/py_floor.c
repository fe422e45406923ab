/* py_floor.c: the boundary of the floor (floor.h) and of BPF program run-time statistics
 * (bpfstats.h): hftcap._core.FloorReceiver, floor_send(), floor_stop(), floor_line(),
 * bpf_enable_stats(), bpf_prog_run_stats(). Coarse calls; the loops run with the GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include "py.h"
#include "floor.h"
#include "bpfstats.h"

typedef struct {
	PyObject_HEAD
	struct hc_floor_rx *rx;
} FloorRxObject;

static int FloorRx_init(FloorRxObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ifname", "ifindex", "kind", "group", "port", "cpu", "zerocopy",
				  "native", NULL };
	const char *ifname, *kind, *group;
	struct hc_floor_rx_cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	unsigned int port;
	cfg.cpu = -1;
	cfg.native = 1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "sissI|$ipp", kwlist, &ifname, &cfg.ifindex,
					 &kind, &group, &port, &cfg.cpu, &cfg.zerocopy, &cfg.native))
		return -1;
	if (!strcmp(kind, "xdp"))
		cfg.kind = HC_FLOOR_XDP;
	else if (!strcmp(kind, "kernel"))
		cfg.kind = HC_FLOOR_KERNEL;
	else {
		PyErr_Format(PyExc_ValueError, "kind: expected 'xdp' or 'kernel', got '%s'", kind);
		return -1;
	}
	struct in_addr a;
	if (strlen(ifname) >= IF_NAMESIZE || inet_pton(AF_INET, group, &a) != 1 || port > 65535) {
		PyErr_SetString(PyExc_ValueError, "bad interface name, group or port");
		return -1;
	}
	snprintf(cfg.ifname, sizeof(cfg.ifname), "%s", ifname);
	cfg.group_be = a.s_addr;
	cfg.port_be = htons((uint16_t)port);
	if (self->rx) {
		PyErr_SetString(PyExc_RuntimeError, "FloorReceiver already open");
		return -1;
	}
	const char *stage = "";
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_floor_rx_open(&cfg, &self->rx, &stage);
	Py_END_ALLOW_THREADS
	if (err) {
		self->rx = NULL;
		errno = -err;
		PyErr_SetFromErrnoWithFilename(PyExc_OSError, stage);
		return -1;
	}
	return 0;
}

static void FloorRx_release(FloorRxObject *self)
{
	struct hc_floor_rx *r = self->rx;
	self->rx = NULL;
	Py_BEGIN_ALLOW_THREADS
	hc_floor_rx_close(r);
	Py_END_ALLOW_THREADS
}

static void FloorRx_dealloc(FloorRxObject *self)
{
	if (self->rx)
		FloorRx_release(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_RX(self)                                                             \
	do {                                                                      \
		if (!(self)->rx) {                                                \
			PyErr_SetString(PyExc_ValueError, "FloorReceiver is closed"); \
			return NULL;                                              \
		}                                                                 \
	} while (0)

static PyObject *FloorRx_start(FloorRxObject *self, PyObject *unused)
{
	NEED_RX(self);
	int err = hc_floor_rx_start(self->rx);
	if (err)
		return hc_py_errno(err, "start");
	Py_RETURN_NONE;
}

static PyObject *FloorRx_stop(FloorRxObject *self, PyObject *unused)
{
	NEED_RX(self);
	Py_BEGIN_ALLOW_THREADS
	hc_floor_rx_stop(self->rx);
	Py_END_ALLOW_THREADS
	Py_RETURN_NONE;
}

static PyObject *FloorRx_close(FloorRxObject *self, PyObject *unused)
{
	if (self->rx)
		FloorRx_release(self);
	Py_RETURN_NONE;
}

static PyObject *FloorRx_reset(FloorRxObject *self, PyObject *unused)
{
	NEED_RX(self);
	hc_floor_rx_reset(self->rx);
	Py_RETURN_NONE;
}

static PyObject *FloorRx_hists(FloorRxObject *self, PyObject *unused)
{
	NEED_RX(self);
	return hc_py_hist_bytes(hc_floor_rx_hists(self->rx), HC_FLOOR_NHOPS);
}

static PyObject *FloorRx_stats(FloorRxObject *self, PyObject *unused)
{
	NEED_RX(self);
	struct hc_floor_rx_stats st;
	hc_floor_rx_stats(self->rx, &st);
	PyObject *neg = PyDict_New();
	if (!neg)
		return NULL;
	for (int h = 0; h < HC_FLOOR_NHOPS; h++) {
		PyObject *v = PyLong_FromUnsignedLongLong(st.negative[h]);
		if (!v || PyDict_SetItemString(neg, hc_floor_hop_names[h], v) < 0) {
			Py_XDECREF(v);
			Py_DECREF(neg);
			return NULL;
		}
		Py_DECREF(v);
	}
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:I,s:N}", "packets", st.packets, "bad", st.bad,
			     "unstamped", st.unstamped, "seq_gaps", st.seq_gaps, "io_errors",
			     st.io_errors, "prog_id", st.prog_id, "negative", neg);
}

static PyMethodDef FloorRx_methods[] = {
	{ "start", (PyCFunction)FloorRx_start, METH_NOARGS, "Start the receiving thread." },
	{ "stop", (PyCFunction)FloorRx_stop, METH_NOARGS, "Stop and join it." },
	{ "close", (PyCFunction)FloorRx_close, METH_NOARGS, "Stop, detach, free." },
	{ "reset", (PyCFunction)FloorRx_reset, METH_NOARGS, "Clear the histograms (warm-up)." },
	{ "hists", (PyCFunction)FloorRx_hists, METH_NOARGS, "Export records of the floor hops." },
	{ "stats", (PyCFunction)FloorRx_stats, METH_NOARGS, "Counters." },
	{ NULL },
};

static PyTypeObject FloorRxType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hftcap._core.FloorReceiver",
	.tp_basicsize = sizeof(FloorRxObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)FloorRx_init,
	.tp_dealloc = (destructor)FloorRx_dealloc,
	.tp_methods = FloorRx_methods,
	.tp_doc = "The floor's bare receiver (AF_XDP behind floor.bpf.c, or a kernel socket).",
};

static int floor_stop_flag;

/* floor_send(fd, packets, rate_pps, payload_len, max_seconds, spin_us) -> dict */
static PyObject *py_floor_send(PyObject *mod, PyObject *args)
{
	int fd;
	unsigned long long packets;
	double rate, max_s, spin_us;
	unsigned int payload;
	if (!PyArg_ParseTuple(args, "iKdIdd", &fd, &packets, &rate, &payload, &max_s, &spin_us))
		return NULL;
	if (!(max_s > 0) || max_s > 86400 || spin_us < 0) {
		PyErr_SetString(PyExc_ValueError, "max_seconds in (0, 86400], spin_us >= 0");
		return NULL;
	}
	struct hc_floor_tx_cfg cfg = { .packets = packets, .rate_pps = rate, .payload_len = payload,
				       .max_duration_ns = (uint64_t)(max_s * 1e9),
				       .spin_ns = (uint64_t)(spin_us * 1e3) };
	struct hc_floor_tx_stats *st = PyMem_Malloc(sizeof(*st));
	if (!st)
		return PyErr_NoMemory();
	__atomic_store_n(&floor_stop_flag, 0, __ATOMIC_RELAXED);
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_floor_send(fd, &cfg, st, &floor_stop_flag);
	Py_END_ALLOW_THREADS
	if (err) {
		PyMem_Free(st);
		if (err == -EINVAL) {
			PyErr_SetString(PyExc_ValueError, "packets >= 1, rate > 0, payload 16..1472 bytes");
			return NULL;
		}
		return hc_py_errno(err, "floor send");
	}
	PyObject *h = hc_py_hist_bytes(&st->stamp_to_return, 1);
	PyObject *r = h ? Py_BuildValue("{s:K,s:K,s:i,s:K,s:N}", "sent", st->sent, "errors",
					st->errors, "last_errno", st->last_errno, "elapsed_ns",
					st->elapsed_ns, "stamp_to_return", h)
			: NULL;
	PyMem_Free(st);
	return r;
}

static PyObject *py_floor_stop(PyObject *mod, PyObject *unused)
{
	__atomic_store_n(&floor_stop_flag, 1, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

static PyObject *py_bpf_enable_stats(PyObject *mod, PyObject *unused)
{
	int fd = hc_bpf_enable_stats();
	if (fd < 0)
		return hc_py_errno(fd, "BPF_ENABLE_STATS");
	return PyLong_FromLong(fd);
}

static PyObject *py_bpf_prog_run_stats(PyObject *mod, PyObject *args)
{
	unsigned int id;
	if (!PyArg_ParseTuple(args, "I", &id))
		return NULL;
	uint64_t ns = 0, cnt = 0;
	int err = hc_bpf_prog_run_stats(id, &ns, &cnt);
	if (err)
		return hc_py_errno(err, "bpf prog info");
	return Py_BuildValue("(KK)", (unsigned long long)ns, (unsigned long long)cnt);
}

/* floor_line(cpu_a, cpu_b, batches, per_batch, max_seconds) -> (list of batch ns, complete) */
static PyObject *py_floor_line(PyObject *mod, PyObject *args)
{
	struct hc_floor_line_cfg cfg;
	double max_s;
	if (!PyArg_ParseTuple(args, "iiIId", &cfg.cpu_a, &cfg.cpu_b, &cfg.batches, &cfg.per_batch, &max_s))
		return NULL;
	if (!(max_s > 0) || max_s > 600 || !cfg.batches || cfg.batches > 100000 || !cfg.per_batch ||
	    cfg.per_batch > 1000000 || cfg.cpu_a == cfg.cpu_b) {
		PyErr_SetString(PyExc_ValueError,
				"two different CPUs, batches 1..100000, per_batch 1..1000000, max_seconds in (0, 600]");
		return NULL;
	}
	cfg.max_ns = (uint64_t)(max_s * 1e9);
	uint64_t *ns = PyMem_Malloc((size_t)cfg.batches * sizeof(*ns));
	if (!ns)
		return PyErr_NoMemory();
	uint32_t done = 0;
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = hc_floor_line(&cfg, ns, &done);
	Py_END_ALLOW_THREADS
	if (err && !(err == -ETIMEDOUT && done)) {
		PyMem_Free(ns);
		errno = -err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	PyObject *list = PyList_New(done);
	for (uint32_t i = 0; list && i < done; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(ns[i]);
		if (!v) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, i, v);
	}
	PyMem_Free(ns);
	if (!list)
		return NULL;
	return Py_BuildValue("(NO)", list, err ? Py_False : Py_True);
}

static PyMethodDef floor_funcs[] = {
	{ "floor_send", py_floor_send, METH_VARARGS,
	  "floor_send(fd, packets, rate_pps, payload_len, max_seconds, spin_us) -> dict" },
	{ "floor_stop", py_floor_stop, METH_NOARGS, "Ask floor_send to return (any thread)." },
	{ "bpf_enable_stats", py_bpf_enable_stats, METH_NOARGS,
	  "bpf_enable_stats() -> fd; BPF run-time statistics stay on until it is closed" },
	{ "bpf_prog_run_stats", py_bpf_prog_run_stats, METH_VARARGS,
	  "bpf_prog_run_stats(prog_id) -> (run_time_ns, run_cnt)" },
	{ "floor_line", py_floor_line, METH_VARARGS,
	  "floor_line(cpu_a, cpu_b, batches, per_batch, max_seconds) -> ([batch ns], complete): "
	  "a cache line bounced between two CPUs (floor.h)" },
	{ NULL },
};

int hc_py_add_floor(PyObject *m)
{
	if (PyType_Ready(&FloorRxType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "FloorReceiver", (PyObject *)&FloorRxType) < 0)
		return -1;
	if (PyModule_AddFunctions(m, floor_funcs) < 0)
		return -1;
	PyObject *names = PyTuple_New(HC_FLOOR_NHOPS);
	if (!names)
		return -1;
	for (int h = 0; h < HC_FLOOR_NHOPS; h++)
		PyTuple_SET_ITEM(names, h, PyUnicode_FromString(hc_floor_hop_names[h]));
	if (PyModule_AddObject(m, "FLOOR_HOP_NAMES", names) < 0) {
		Py_DECREF(names);
		return -1;
	}
	return 0;
}
