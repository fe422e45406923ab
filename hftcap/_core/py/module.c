/* module.c: hftcap._core, the boundary between the Python control plane and the C data
 * plane. Each py_*.c file adds its types and functions through an hc_py_add_* call here. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "py.h"

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, "hftcap._core", "hftcap's C data plane.", -1, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *m = PyModule_Create(&core_module);
	if (!m)
		return NULL;
	if (hc_py_add_capture(m) < 0 || hc_py_add_book(m) < 0 || hc_py_add_hist(m) < 0 ||
	    hc_py_add_sender(m) < 0 || hc_py_add_snap(m) < 0 ||
	    hc_py_add_pcapng(m) < 0 || hc_py_add_replay(m) < 0 || hc_py_add_floor(m) < 0 ||
	    hc_py_add_join(m) < 0 || hc_py_add_recovery(m) < 0 || hc_py_add_clock(m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
