/* py_replay.c: hftcap._core.replay(fd, schedule, speed, max_s) and replay_stop(): the boundary
 * of replay.c. The GIL is released while sending; replay_stop() (e.g. from a signal handler's
 * thread) ends a running replay. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "py.h"
#include "replay.h"

static int replay_stop_flag;

static PyObject *py_replay(PyObject *mod, PyObject *args)
{
	int fd;
	Py_buffer b;
	double speed, max_s;
	if (!PyArg_ParseTuple(args, "iy*dd", &fd, &b, &speed, &max_s))
		return NULL;
	if (!(speed > 0) || !(max_s > 0)) {
		PyBuffer_Release(&b);
		PyErr_SetString(PyExc_ValueError, "speed and max_s must be > 0");
		return NULL;
	}
	if (hc_replay_count(b.buf, (size_t)b.len) < 0) {
		PyBuffer_Release(&b);
		PyErr_SetString(PyExc_ValueError, "malformed replay schedule");
		return NULL;
	}
	struct hc_replay_stats st;
	int r;
	__atomic_store_n(&replay_stop_flag, 0, __ATOMIC_RELAXED);
	Py_BEGIN_ALLOW_THREADS
	r = hc_replay_run(fd, b.buf, (size_t)b.len, speed, (uint64_t)(max_s * 1e9), &replay_stop_flag, &st);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&b);
	if (r < 0)
		return hc_py_errno(r, "sendmmsg");
	return Py_BuildValue("{s:K,s:K,s:K,s:i,s:K,s:K,s:K,s:O}", "packets_sent",
			     (unsigned long long)st.packets_sent, "bytes_sent",
			     (unsigned long long)st.bytes_sent, "send_errors",
			     (unsigned long long)st.send_errors, "last_errno", st.last_errno,
			     "elapsed_ns", (unsigned long long)st.elapsed_ns, "late_max_ns",
			     (unsigned long long)st.late_max_ns, "batches", (unsigned long long)st.batches,
			     "stopped", st.stopped ? Py_True : Py_False);
}

static PyObject *py_replay_stop(PyObject *mod, PyObject *unused)
{
	__atomic_store_n(&replay_stop_flag, 1, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

static PyMethodDef replay_funcs[] = {
	{ "replay", py_replay, METH_VARARGS,
	  "replay(fd, schedule, speed, max_s) -> stats: send recorded datagrams at their pace / speed" },
	{ "replay_stop", py_replay_stop, METH_NOARGS, "End a running replay()." },
	{ NULL },
};

int hc_py_add_replay(PyObject *m)
{
	return PyModule_AddFunctions(m, replay_funcs);
}
