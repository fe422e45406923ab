#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "py.h"
int hc_py_add_capture(PyObject *m) { return 0; }
