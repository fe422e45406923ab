/* py.h: registration hooks of the boundary files (each returns 0, or -1 with an exception). */
#ifndef HC_PY_H
#define HC_PY_H
#include <Python.h>

int hc_py_add_capture(PyObject *m);
int hc_py_add_sender(PyObject *m);
int hc_py_add_hist(PyObject *m);
int hc_py_add_floor(PyObject *m);

/* bytes holding n contiguous histograms' export records (hist.h layout), for snapshots. */
struct hc_hist;
PyObject *hc_py_hist_bytes(const struct hc_hist *hists, unsigned n);
int hc_py_add_book(PyObject *m);

struct hc_books;
/* A hftcap._core.Books view of books fed elsewhere (live capture): keeps `owner` alive, never
 * frees b, refuses feed calls. New reference, or NULL with an exception. */
PyObject *hc_py_books_wrap(struct hc_books *b, PyObject *owner);

int hc_py_add_snap(PyObject *m);
struct hc_snap_table;
/* A hftcap._core.SnapTable view of a table fed elsewhere (live capture): keeps `owner` alive,
 * never frees t, refuses feed calls. New reference, or NULL with an exception. */
PyObject *hc_py_snaps_wrap(struct hc_snap_table *t, PyObject *owner);

int hc_py_add_pcapng(PyObject *m);
int hc_py_add_replay(PyObject *m);
struct hc_pcapng;
/* The writer of a hftcap._core.PcapngWriter, or NULL with an exception. */
struct hc_pcapng *hc_py_pcapng_get(PyObject *o);

int hc_py_add_recovery(PyObject *m);
struct hc_recov;
struct hc_recov_cfg;
/* The settings dict of hftcap.feed.recovery into cfg; 0, or -1 with an exception. */
int hc_py_recov_cfg(PyObject *d, struct hc_recov_cfg *cfg);
/* The figures of a recovery (per feed and of its socket) as a dict. */
PyObject *hc_py_recov_report(const struct hc_recov *r, uint32_t nfeeds);
/* The books of a hftcap._core.Books (owned or a view), or NULL with TypeError. */
struct hc_books *hc_py_books_ptr(PyObject *o);

int hc_py_add_join(PyObject *m);
int hc_py_add_clock(PyObject *m);
struct hc_clock;
/* The stamp clock's source and calibration as a dict. New reference. */
PyObject *hc_py_clock_dict(const struct hc_clock *k);
/* "tsc" / "clock" / "auto" -> HC_STAMP_TSC / HC_STAMP_CLOCK / -1; 0, or -1 with ValueError. */
int hc_py_stamp_source(const char *s, int *out);
struct hc_join;
/* hc_join_new into *j (left as it was on failure); 0, or -1 with ValueError for a capacity out
 * of range, else OSError. */
int hc_py_join_new(struct hc_join **j, unsigned long long capacity);
/* A hftcap._core.Join over a capture's join and books: keeps `owner` alive. New reference. */
PyObject *hc_py_join_wrap(struct hc_join *j, struct hc_books *b, PyObject *owner);
struct hc_spin_stats;
/* The spin (hc_spin_build, GIL released) of the first n messages of stream[0, len) as bytes,
 * its figures in *st. New reference, or NULL with an exception. */
PyObject *hc_py_spin_bytes(const uint8_t *stream, size_t len, uint64_t n, uint64_t first_seq,
			   struct hc_spin_stats *st);

struct hc_consumer;
/* For the offline consume calls: *seq the packets as a PySequence_Fast and a fresh consumer of
 * one feed (hc_consumer_init(c, 1, 0)) to run them through. NULL with an exception (nothing to
 * release); else PyMem_Free(c) and Py_DECREF(*seq) when done. */
struct hc_consumer *hc_py_consumer_new(PyObject *pkts, PyObject **seq);

/* Raise OSError(errno) for a -errno from the core, with a short context string. */
static inline PyObject *hc_py_errno(int neg_errno, const char *what)
{
	errno = -neg_errno;
	PyErr_SetFromErrnoWithFilename(PyExc_OSError, what);
	return NULL;
}

/* d[k] = v as an int; 0, or -1 with an exception. */
static inline int hc_py_put_u64(PyObject *d, const char *k, uint64_t v)
{
	PyObject *o = PyLong_FromUnsignedLongLong(v);
	int r = o ? PyDict_SetItemString(d, k, o) : -1;
	Py_XDECREF(o);
	return r;
}
#endif
