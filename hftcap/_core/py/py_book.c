/* py_book.c: the Python face of the decoder, the books, the file readers and the generator.
 * Books owns (or, for live capture, borrows) a struct hc_books. Feeding releases the GIL and
 * works in chunks; snapshots go through the books' seqlocks, so they are safe while another
 * thread (a feed_file call or the capture consumer) applies messages. Bulk data (levels,
 * trades, BBO changes) is returned as bytes of C structs that hftcap/book/books.py views with numpy. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <time.h>
#include "py.h"
#include "book.h"
#include "files.h"
#include "gen.h"
#include "src.h"

typedef struct {
	PyObject_HEAD
	struct hc_books *b;
	PyObject *owner; /* keeps borrowed books alive; NULL when owned */
	int busy;        /* a feed is running */
} BooksObject;

static PyTypeObject BooksType;

static int books_init(BooksObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "expected_orders", "prefault", NULL };
	unsigned long long expected = 1u << 20;
	int prefault = 1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|Kp", kwl, &expected, &prefault))
		return -1;
	if (self->b) {
		PyErr_SetString(PyExc_RuntimeError, "Books already initialised");
		return -1;
	}
	int rc = prefault ? hc_books_new(&self->b, expected) : hc_books_new_lazy(&self->b, expected);
	if (rc < 0) {
		hc_py_errno(rc, "hc_books_new");
		return -1;
	}
	return 0;
}

static void books_dealloc(BooksObject *self)
{
	if (self->owner)
		Py_DECREF(self->owner);
	else
		hc_books_free(self->b);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *hc_py_books_wrap(struct hc_books *b, PyObject *owner)
{
	BooksObject *o = (BooksObject *)BooksType.tp_alloc(&BooksType, 0);
	if (!o)
		return NULL;
	o->b = b;
	o->owner = owner ? owner : Py_None;
	Py_INCREF(o->owner);
	return (PyObject *)o;
}

struct hc_books *hc_py_books_ptr(PyObject *o)
{
	if (!PyObject_TypeCheck(o, &BooksType) || !((BooksObject *)o)->b) {
		PyErr_SetString(PyExc_TypeError, "expected initialised hftcap._core.Books");
		return NULL;
	}
	return ((BooksObject *)o)->b;
}

static int ready(BooksObject *self, int feeding)
{
	if (!self->b) {
		PyErr_SetString(PyExc_RuntimeError, "Books not initialised");
		return -1;
	}
	if (feeding && self->owner) {
		PyErr_SetString(PyExc_RuntimeError, "these books are fed by their owner (live capture)");
		return -1;
	}
	if (feeding && self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "a feed is already running on these books");
		return -1;
	}
	return 0;
}

static PyObject *books_feed(BooksObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "data", "final", NULL };
	Py_buffer buf;
	int final = 1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|p", kwl, &buf, &final))
		return NULL;
	if (ready(self, 1) < 0) {
		PyBuffer_Release(&buf);
		return NULL;
	}
	size_t used;
	self->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	used = hc_feed_nasdaq(self->b, buf.buf, (size_t)buf.len, final);
	Py_END_ALLOW_THREADS
	self->busy = 0;
	PyBuffer_Release(&buf);
	return PyLong_FromSize_t(used);
}

/* Apply NASDAQ-layout records one by one, running the full consistency check after each.
 * Returns (records_applied, index_of_first_failure or -1, check_code). */
static PyObject *books_feed_checked(BooksObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "data", "allow_crossed", NULL };
	Py_buffer buf;
	int allow_crossed = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|p", kwl, &buf, &allow_crossed))
		return NULL;
	if (ready(self, 1) < 0) {
		PyBuffer_Release(&buf);
		return NULL;
	}
	const uint8_t *msg;
	uint32_t m;
	size_t off = 0;
	long long n = 0, bad = -1;
	int code = 0;
	self->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	while (hc_nasdaq_next(buf.buf, (size_t)buf.len, &off, &msg, &m)) {
		hc_books_feed_msg(self->b, msg, m);
		code = hc_books_check(self->b);
		if (code && !(allow_crossed && code == -1000)) {
			bad = n;
			break;
		}
		code = 0;
		n++;
	}
	Py_END_ALLOW_THREADS
	self->busy = 0;
	PyBuffer_Release(&buf);
	return Py_BuildValue("LLi", n, bad, code);
}

static PyObject *mold_dict(const struct hc_mold_stats *m)
{
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
		"packets", m->packets, "messages", m->messages, "heartbeats", m->heartbeats,
		"end_of_session", m->end_of_session, "gaps", m->gaps, "gap_events", m->gap_events,
		"duplicates", m->duplicates, "sessions", m->sessions, "drop_short", m->drop_short,
		"drop_truncated", m->drop_truncated, "drop_trailing", m->drop_trailing);
}

/* OSError(errno, text, path) for a reader error; a corrupt or truncated gzip stream says so,
 * with the decompressed offset where it was found. */
static void src_error(int rc, uint64_t at, PyObject *path)
{
	char msg[160];
	if (rc == -EBADMSG)
		snprintf(msg, sizeof(msg), "the gzip stream is corrupt (bad header, data or checksum "
			 "after %llu decompressed bytes)", (unsigned long long)at);
	else if (rc == -EPIPE)
		snprintf(msg, sizeof(msg), "the gzip stream is truncated (the file ends after %llu "
			 "decompressed bytes)", (unsigned long long)at);
	else {
		errno = -rc;
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		return;
	}
	PyObject *e = Py_BuildValue("(isO)", -rc, msg, path);
	if (e) {
		PyErr_SetObject(PyExc_OSError, e);
		Py_DECREF(e);
	}
}

/* feed_file(path, progress=None, chunk_bytes=8 MiB, meanwhile=None): the whole file into the
 * books. The replay runs on its own C thread (hc_filejob); this thread calls meanwhile() once
 * with the GIL (what the caller needs afterwards, e.g. an import, overlaps the replay), then
 * waits without the GIL in waits of at most 100 ms, taking signals between them, and calls
 * progress(bytes_done_on_disk) at the start and then at most every 100 ms. An exception from
 * either, or a signal's, stops the replay and is raised. */
static PyObject *books_feed_file(BooksObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "path", "progress", "chunk_bytes", "meanwhile", NULL };
	PyObject *path_obj, *progress = Py_None, *meanwhile = Py_None;
	Py_ssize_t chunk = 8 << 20;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|OnO", kwl, PyUnicode_FSConverter, &path_obj,
					 &progress, &chunk, &meanwhile))
		return NULL;
	if (ready(self, 1) < 0) {
		Py_DECREF(path_obj);
		return NULL;
	}
	const char *path = PyBytes_AS_STRING(path_obj);
	struct hc_reader *r = NULL;
	struct hc_filejob *job = NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hc_reader_open(&r, path);
	if (rc >= 0 && (rc = hc_filejob_start(&job, r, self->b, chunk > 0 ? (size_t)chunk : 0)) < 0)
		hc_reader_close(r);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		src_error(rc, 0, PyTuple_GET_ITEM(args, 0));
		Py_DECREF(path_obj);
		return NULL;
	}
	self->busy = 1;
	rc = 1;
	if (meanwhile != Py_None) {
		PyObject *res = PyObject_CallNoArgs(meanwhile);
		if (!res)
			rc = -EINTR;
		Py_XDECREF(res);
	}
	struct timespec last = { 0 }, now;
	while (rc > 0) {
		if (progress != Py_None) { /* at once, then at most every 100 ms */
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((now.tv_sec - last.tv_sec) * 1000000000LL + (now.tv_nsec - last.tv_nsec) >= 100000000LL) {
				last = now;
				PyObject *res = PyObject_CallFunction(progress, "K", (unsigned long long)hc_reader_offset(r));
				if (!res) {
					rc = -EINTR;
					break;
				}
				Py_DECREF(res);
			}
		}
		Py_BEGIN_ALLOW_THREADS
		rc = hc_filejob_wait(job, 100);
		Py_END_ALLOW_THREADS
		if (rc > 0 && PyErr_CheckSignals() < 0)
			rc = -EINTR;
	}
	Py_BEGIN_ALLOW_THREADS
	hc_filejob_free(job); /* stops it first when an exception cut the wait short */
	Py_END_ALLOW_THREADS
	self->busy = 0;
	PyObject *out = NULL;
	if (rc == -EINTR) {
		/* exception set by the signal handler or a callback */
	} else if (rc < 0) {
		src_error(rc, hc_reader_error_at(r), PyTuple_GET_ITEM(args, 0));
	} else {
		static const char *fmts[] = { "?", "nasdaq", "pcap", "pcapng" };
		PyObject *mold = mold_dict(hc_reader_mold(r));
		if (mold) {
			int gz = hc_reader_gzip(r);
			out = Py_BuildValue("{s:s,s:K,s:N,s:O,s:s}", "format", fmts[hc_reader_format(r)],
					    "bytes", (unsigned long long)hc_reader_offset(r), "mold", mold,
					    "gzip", gz ? Py_True : Py_False, "inflater", gz ? hc_src_inflater() : "none");
		}
	}
	hc_reader_close(r);
	Py_DECREF(path_obj);
	return out;
}

static PyObject *books_stats(BooksObject *self, PyObject *unused)
{
	if (ready(self, 0) < 0)
		return NULL;
	const struct hc_books_stats *st = hc_books_stats(self->b);
	PyObject *msgs = PyDict_New(), *drops = PyDict_New(), *v;
	if (!msgs || !drops)
		goto fail;
	for (int t = 0; t < 256; t++)
		if (st->messages[t] || hc_itch_len[t]) {
			char k[2] = { (char)t, 0 };
			v = PyLong_FromUnsignedLongLong(st->messages[t]);
			if (!v || PyDict_SetItemString(msgs, k, v) < 0)
				goto fail_v;
			Py_DECREF(v);
		}
	for (int i = 1; i < HC_DROP__MAX; i++) {
		v = PyLong_FromUnsignedLongLong(st->drops[i]);
		if (!v || PyDict_SetItemString(drops, hc_drop_names[i], v) < 0)
			goto fail_v;
		Py_DECREF(v);
	}
	return Py_BuildValue("{s:N,s:N,s:K,s:K,s:K,s:K}", "messages", msgs, "drops", drops,
			     "orders_live", st->orders_live, "orders_peak", st->orders_peak,
			     "broken_trades", st->broken_trades, "bbo_changes", st->bbo_changes);
fail_v:
	Py_XDECREF(v);
fail:
	Py_XDECREF(msgs);
	Py_XDECREF(drops);
	return NULL;
}

/* {locate: count} of every locate with unknown-reference drops (seen as a stock or not). */
static PyObject *books_unknown_refs(BooksObject *self, PyObject *unused)
{
	if (ready(self, 0) < 0)
		return NULL;
	PyObject *d = PyDict_New();
	for (uint32_t loc = 0; d && loc < 65536; loc++) {
		uint64_t n = hc_books_unknown_refs(self->b, (uint16_t)loc);
		if (!n)
			continue;
		PyObject *k = PyLong_FromUnsignedLong(loc), *v = PyLong_FromUnsignedLongLong(n);
		if (!k || !v || PyDict_SetItem(d, k, v) < 0)
			Py_CLEAR(d);
		Py_XDECREF(k);
		Py_XDECREF(v);
	}
	return d;
}

static PyObject *books_symbols(BooksObject *self, PyObject *unused)
{
	if (ready(self, 0) < 0)
		return NULL;
	uint16_t *locs = PyMem_Malloc(65536 * sizeof(uint16_t));
	if (!locs)
		return PyErr_NoMemory();
	int n = hc_books_locates(self->b, locs, 65536);
	PyObject *list = PyList_New(0);
	for (int i = 0; list && i < n; i++) {
		struct hc_stock_info inf;
		if (hc_books_stock_info(self->b, locs[i], &inf) < 0)
			continue;
		PyObject *t = Py_BuildValue("(Is)", (unsigned)locs[i], inf.symbol);
		if (!t || PyList_Append(list, t) < 0) {
			Py_XDECREF(t);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(t);
	}
	PyMem_Free(locs);
	return list;
}

static PyObject *books_info(BooksObject *self, PyObject *args)
{
	unsigned int loc;
	if (!PyArg_ParseTuple(args, "I", &loc) || ready(self, 0) < 0)
		return NULL;
	struct hc_stock_info i;
	if (loc > 65535 || hc_books_stock_info(self->b, (uint16_t)loc, &i) < 0) {
		PyErr_Format(PyExc_KeyError, "stock locate %u not seen", loc);
		return NULL;
	}
	char ts[2] = { i.trading_state, 0 }, rs[2] = { i.reg_sho_action, 0 };
	char mc[2] = { i.market_category, 0 }, au[2] = { i.authenticity, 0 };
	char hq[4] = { i.halted_markets[0] ? i.halted_markets[0] : '-',
		       i.halted_markets[1] ? i.halted_markets[1] : '-',
		       i.halted_markets[2] ? i.halted_markets[2] : '-', 0 };
	return Py_BuildValue("{s:I,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:I,s:K,s:K,s:K,s:K,s:K,s:K,s:I,s:I,s:O,s:O,s:K}",
		"locate", (unsigned)i.locate, "symbol", i.symbol, "market_category", mc,
		"authenticity", au, "trading_state", ts, "round_lot_size", i.round_lot_size,
		"reg_sho_action", rs, "operational_halts_QBX", hq,
		"last_trade_price_e4", i.last_trade_price_e4, "last_itch_ns", i.last_itch_ns,
		"volume", i.volume, "trades", i.trades, "broken_trades", i.broken_trades,
		"messages", i.messages, "orders_live", i.orders_live, "bid_levels", i.bid_levels,
		"ask_levels", i.ask_levels, "incomplete", i.incomplete ? Py_True : Py_False,
		"suspect", i.suspect ? Py_True : Py_False,
		"unknown_refs", (unsigned long long)i.unknown_refs);
}

static PyObject *books_book_raw(BooksObject *self, PyObject *args)
{
	unsigned int loc, levels = 10;
	if (!PyArg_ParseTuple(args, "I|I", &loc, &levels) || ready(self, 0) < 0)
		return NULL;
	if (levels > 1u << 20)
		levels = 1u << 20;
	if (loc > 65535) {
		PyErr_Format(PyExc_KeyError, "stock locate %u out of range", loc);
		return NULL;
	}
	size_t sz = (size_t)(levels ? levels : 1) * sizeof(struct hc_level_snap);
	struct hc_level_snap *bids = PyMem_Malloc(sz), *asks = PyMem_Malloc(sz);
	PyObject *out = NULL;
	uint32_t nb = 0, na = 0;
	if (!bids || !asks) {
		PyErr_NoMemory();
		goto done;
	}
	if (hc_books_snapshot(self->b, (uint16_t)loc, levels, bids, &nb, asks, &na) < 0) {
		PyErr_Format(PyExc_KeyError, "stock locate %u not seen", loc);
		goto done;
	}
	out = Py_BuildValue("(y#y#)", (char *)bids, (Py_ssize_t)(nb * sizeof(*bids)),
			    (char *)asks, (Py_ssize_t)(na * sizeof(*asks)));
done:
	PyMem_Free(bids);
	PyMem_Free(asks);
	return out;
}

static PyObject *books_trades_raw(BooksObject *self, PyObject *args)
{
	unsigned int loc, n = HC_TRADES_RING;
	if (!PyArg_ParseTuple(args, "I|I", &loc, &n) || ready(self, 0) < 0)
		return NULL;
	struct hc_trade t[HC_TRADES_RING];
	int k = loc > 65535 ? -ENOENT : hc_books_trades(self->b, (uint16_t)loc, n, t);
	if (k < 0) {
		PyErr_Format(PyExc_KeyError, "stock locate %u not seen", loc);
		return NULL;
	}
	return PyBytes_FromStringAndSize((char *)t, (Py_ssize_t)k * (Py_ssize_t)sizeof(t[0]));
}

static PyObject *books_record_bbo(BooksObject *self, PyObject *args)
{
	PyObject *what;
	if (!PyArg_ParseTuple(args, "O", &what) || ready(self, 1) < 0)
		return NULL;
	if (PyUnicode_Check(what)) {
		Py_ssize_t n;
		const char *s = PyUnicode_AsUTF8AndSize(what, &n);
		if (!s)
			return NULL;
		if (n < 1 || n > 8)
			return PyErr_Format(PyExc_ValueError, "symbol must be 1..8 characters");
		hc_books_record_bbo_symbol(self->b, s);
		Py_RETURN_NONE;
	}
	long loc = PyLong_AsLong(what);
	if (loc == -1 && PyErr_Occurred())
		return NULL;
	if (loc < -1 || loc > 65535)
		return PyErr_Format(PyExc_ValueError, "locate out of range");
	hc_books_record_bbo(self->b, (int)loc);
	Py_RETURN_NONE;
}

static PyObject *books_bbo_raw(BooksObject *self, PyObject *unused)
{
	if (ready(self, 1) < 0)
		return NULL;
	size_t n;
	const struct hc_bbo_change *c = hc_books_bbo_changes(self->b, &n);
	return PyBytes_FromStringAndSize((const char *)c, (Py_ssize_t)(n * sizeof(*c)));
}

static PyObject *books_level_orders(BooksObject *self, PyObject *args)
{
	unsigned int loc, price;
	int side;
	if (!PyArg_ParseTuple(args, "IiI", &loc, &side, &price) || ready(self, 1) < 0)
		return NULL;
	int n = loc > 65535 ? -ENOENT : hc_books_level_orders(self->b, (uint16_t)loc, side, price, NULL, NULL, 0);
	if (n == -ENOENT)
		return PyList_New(0);
	if (n < 0) /* -ENOMEM, or -EIO: the level's count and its orders disagree */
		return PyErr_Format(PyExc_RuntimeError, "level_orders: %s", strerror(-n));
	uint64_t *refs = PyMem_Malloc((size_t)(n + 1) * 8);
	uint32_t *sh = PyMem_Malloc((size_t)(n + 1) * 4);
	PyObject *list = NULL;
	if (!refs || !sh) {
		PyErr_NoMemory();
		goto done;
	}
	n = hc_books_level_orders(self->b, (uint16_t)loc, side, price, refs, sh, n);
	if (n < 0) {
		PyErr_Format(PyExc_RuntimeError, "level_orders: %s", strerror(-n));
		goto done;
	}
	list = PyList_New(n);
	for (int i = 0; list && i < n; i++)
		PyList_SET_ITEM(list, i, Py_BuildValue("(KI)", (unsigned long long)refs[i], sh[i]));
done:
	PyMem_Free(refs);
	PyMem_Free(sh);
	return list;
}

static PyObject *books_check(BooksObject *self, PyObject *unused)
{
	if (ready(self, 1) < 0)
		return NULL;
	return PyLong_FromLong(hc_books_check(self->b));
}

static PyMethodDef books_methods[] = {
	{ "feed", (PyCFunction)(void (*)(void))books_feed, METH_VARARGS | METH_KEYWORDS,
	  "feed(data, final=True) -> bytes consumed. NASDAQ file layout; GIL released." },
	{ "feed_checked", (PyCFunction)(void (*)(void))books_feed_checked, METH_VARARGS | METH_KEYWORDS,
	  "feed_checked(data, allow_crossed=False) -> (applied, first_bad_index or -1, code)." },
	{ "feed_file", (PyCFunction)(void (*)(void))books_feed_file, METH_VARARGS | METH_KEYWORDS,
	  "feed_file(path, progress=None, chunk_bytes=8MiB, meanwhile=None) -> dict(format, bytes, mold): "
	  "replayed on its own thread; meanwhile() runs on this one." },
	{ "stats", (PyCFunction)books_stats, METH_NOARGS, "Counters: messages by type, drops by reason." },
	{ "symbols", (PyCFunction)books_symbols, METH_NOARGS, "[(locate, symbol)] for every stock seen." },
	{ "unknown_refs", (PyCFunction)books_unknown_refs, METH_NOARGS,
	  "{locate: unknown-reference drops} for every locate with some (a stock seen or not)." },
	{ "info", (PyCFunction)books_info, METH_VARARGS, "info(locate) -> dict of per-stock state." },
	{ "book_raw", (PyCFunction)books_book_raw, METH_VARARGS,
	  "book_raw(locate, levels) -> (bids, asks) bytes of {u32 price_e4, u32 orders, u64 shares}." },
	{ "trades_raw", (PyCFunction)books_trades_raw, METH_VARARGS,
	  "trades_raw(locate, n) -> bytes of {u64 itch_ns, u64 shares, u32 price_e4, u32 pad}, oldest first." },
	{ "record_bbo", (PyCFunction)books_record_bbo, METH_VARARGS, "record_bbo(locate or symbol): record BBO changes of one stock; -1 stops." },
	{ "bbo_raw", (PyCFunction)books_bbo_raw, METH_NOARGS,
	  "bytes of {u64 itch_ns, u32 bid_price_e4, u32 ask_price_e4, u64 bid_shares, u64 ask_shares}." },
	{ "level_orders", (PyCFunction)books_level_orders, METH_VARARGS,
	  "level_orders(locate, side 0 bid / 1 ask, price_e4) -> [(ref, shares)] in queue order." },
	{ "check", (PyCFunction)books_check, METH_NOARGS, "Full consistency check: 0, -1000 crossed, <0 broken." },
	{ NULL },
};

static PyTypeObject BooksType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "hftcap._core.Books",
	.tp_basicsize = sizeof(BooksObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Books(expected_orders=1<<20, prefault=True): order books for every stock of an ITCH 5.0 "
		  "stream. prefault=False leaves the big tables to be faulted in where first written "
		  "(an offline replay).",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)books_init,
	.tp_dealloc = (destructor)books_dealloc,
	.tp_methods = books_methods,
};

/* ---- module functions ---- */

#define A1(f) do { char _c[2] = { m.f, 0 }; if (set_str(d, #f, _c, 1) < 0) goto fail; } while (0)
#define AN(f) do { if (set_str(d, #f, m.f, sizeof(m.f)) < 0) goto fail; } while (0)
#define U(f) do { if (hc_py_put_u64(d, #f, (unsigned long long)m.f) < 0) goto fail; } while (0)

static int set_str(PyObject *d, const char *k, const char *s, Py_ssize_t n)
{
	PyObject *v = PyUnicode_DecodeLatin1(s, n, NULL);
	int rc = v ? PyDict_SetItemString(d, k, v) : -1;
	Py_XDECREF(v);
	return rc;
}

/* itch_decode(msg) -> dict of the spec's fields (snake_case); ValueError(reason) on a drop. */
static PyObject *py_itch_decode(PyObject *mod, PyObject *args)
{
	Py_buffer buf;
	if (!PyArg_ParseTuple(args, "y*", &buf))
		return NULL;
	struct hc_itch_msg msg;
	int rc = hc_itch_decode(buf.buf, (uint32_t)(buf.len > UINT32_MAX ? UINT32_MAX : buf.len), &msg);
	PyBuffer_Release(&buf);
	if (rc < 0)
		return PyErr_Format(PyExc_ValueError, "%s", hc_drop_names[-rc]);
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	char ty[2] = { (char)msg.type, 0 };
	if (set_str(d, "type", ty, 1) < 0 || hc_py_put_u64(d, "stock_locate", msg.stock_locate) < 0 ||
	    hc_py_put_u64(d, "tracking_number", msg.tracking_number) < 0 ||
	    hc_py_put_u64(d, "timestamp_ns", msg.timestamp_ns) < 0)
		goto fail;
	switch (msg.type) {
	case 'S': { __auto_type m = msg.system_event; A1(event_code); break; }
	case 'R': { __auto_type m = msg.stock_directory;
		AN(stock); A1(market_category); A1(financial_status_indicator); U(round_lot_size);
		A1(round_lots_only); A1(issue_classification); AN(issue_sub_type); A1(authenticity);
		A1(short_sale_threshold_indicator); A1(ipo_flag); A1(luld_reference_price_tier);
		A1(etp_flag); U(etp_leverage_factor); A1(inverse_indicator); break; }
	case 'H': { __auto_type m = msg.trading_action; AN(stock); A1(trading_state); A1(reserved); AN(reason); break; }
	case 'Y': { __auto_type m = msg.reg_sho; AN(stock); A1(reg_sho_action); break; }
	case 'L': { __auto_type m = msg.participant_position; AN(mpid); AN(stock);
		A1(primary_market_maker); A1(market_maker_mode); A1(market_participant_state); break; }
	case 'V': { __auto_type m = msg.mwcb_decline; U(level1_e8); U(level2_e8); U(level3_e8); break; }
	case 'W': { __auto_type m = msg.mwcb_status; A1(breached_level); break; }
	case 'K': { __auto_type m = msg.ipo_quoting; AN(stock); U(ipo_quotation_release_time_s);
		A1(ipo_quotation_release_qualifier); U(ipo_price_e4); break; }
	case 'J': { __auto_type m = msg.luld_collar; AN(stock); U(auction_collar_reference_price_e4);
		U(upper_auction_collar_price_e4); U(lower_auction_collar_price_e4); U(auction_collar_extension); break; }
	case 'h': { __auto_type m = msg.operational_halt; AN(stock); A1(market_code); A1(operational_halt_action); break; }
	case 'A': case 'F': { __auto_type m = msg.add; U(order_reference_number); A1(buy_sell_indicator);
		U(shares); AN(stock); U(price_e4); if (msg.type == 'F') AN(attribution); break; }
	case 'E': case 'C': { __auto_type m = msg.executed; U(order_reference_number); U(executed_shares);
		U(match_number); if (msg.type == 'C') { A1(printable); U(execution_price_e4); } break; }
	case 'X': { __auto_type m = msg.cancel; U(order_reference_number); U(canceled_shares); break; }
	case 'D': { __auto_type m = msg.del; U(order_reference_number); break; }
	case 'U': { __auto_type m = msg.replace; U(original_order_reference_number);
		U(new_order_reference_number); U(shares); U(price_e4); break; }
	case 'P': { __auto_type m = msg.trade; U(order_reference_number); A1(buy_sell_indicator); U(shares);
		AN(stock); U(price_e4); U(match_number); break; }
	case 'Q': { __auto_type m = msg.cross_trade; U(shares); AN(stock); U(cross_price_e4); U(match_number);
		A1(cross_type); break; }
	case 'B': { __auto_type m = msg.broken_trade; U(match_number); break; }
	case 'I': { __auto_type m = msg.noii; U(paired_shares); U(imbalance_shares); A1(imbalance_direction);
		AN(stock); U(far_price_e4); U(near_price_e4); U(current_reference_price_e4); A1(cross_type);
		A1(price_variation_indicator); break; }
	case 'N': { __auto_type m = msg.rpii; AN(stock); A1(interest_flag); break; }
	case 'O': { __auto_type m = msg.dlcr; AN(stock); A1(open_eligibility_status);
		U(minimum_allowable_price_e4); U(maximum_allowable_price_e4); U(near_execution_price_e4);
		U(near_execution_time); U(lower_price_range_collar_e4); U(upper_price_range_collar_e4); break; }
	}
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

/* decode_only(data) -> (messages_decoded, {reason: count}); NASDAQ layout, GIL released. */
static PyObject *py_decode_only(PyObject *mod, PyObject *args)
{
	Py_buffer buf;
	if (!PyArg_ParseTuple(args, "y*", &buf))
		return NULL;
	uint64_t drops[HC_DROP__MAX] = { 0 }, n;
	Py_BEGIN_ALLOW_THREADS
	n = hc_decode_nasdaq(buf.buf, (size_t)buf.len, drops);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&buf);
	PyObject *d = PyDict_New();
	for (int i = 1; d && i < HC_DROP__MAX; i++)
		if (drops[i] && hc_py_put_u64(d, hc_drop_names[i], drops[i]) < 0)
			Py_CLEAR(d);
	return d ? Py_BuildValue("(KN)", (unsigned long long)n, d) : NULL;
}

/* generate(seed, n_stocks, n_messages, day=False) -> bytes (NASDAQ layout, deterministic);
 * day: the "day" profile of gen.h. */
static PyObject *py_generate(PyObject *mod, PyObject *args)
{
	unsigned long long seed, n_messages;
	unsigned int n_stocks;
	int day = 0;
	if (!PyArg_ParseTuple(args, "KIK|p", &seed, &n_stocks, &n_messages, &day))
		return NULL;
	uint32_t max_stocks = day ? HC_GEN_DAY_MAX_STOCKS : HC_GEN_MAX_STOCKS;
	uint64_t min_messages = day ? hc_gen_day_min_messages(n_stocks) : 2ull * n_stocks + 3;
	if (!n_stocks || n_stocks > max_stocks || n_messages < min_messages || n_messages > (1ull << 36))
		return PyErr_Format(PyExc_ValueError, "need 1 <= n_stocks <= %u and %s <= n_messages",
				    max_stocks, day ? "3*n_stocks+16" : "2*n_stocks+3");
	size_t cap = day ? hc_gen_day_max_bytes(n_stocks, n_messages) : hc_gen_max_bytes(n_stocks, n_messages);
	size_t len = 0;
	PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
	if (!out)
		return NULL;
	int rc;
	uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
	Py_BEGIN_ALLOW_THREADS
	rc = day ? hc_gen_fill_day(seed, n_stocks, n_messages, p, cap, &len) :
		   hc_gen_fill(seed, n_stocks, n_messages, p, cap, &len);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		Py_DECREF(out);
		return hc_py_errno(rc, "hc_gen_fill");
	}
	if (_PyBytes_Resize(&out, (Py_ssize_t)len) < 0)
		return NULL;
	return out;
}

/* read_file(path, max_messages=0) -> bytes: a NASDAQ-layout file (plain, or gzip inflated
 * on the reader's thread), whole or its first max_messages complete records; a partial last
 * record is left out. GIL released. */
static PyObject *py_read_file(PyObject *mod, PyObject *args)
{
	PyObject *path_obj;
	unsigned long long max_messages = 0;
	if (!PyArg_ParseTuple(args, "O&|K", PyUnicode_FSConverter, &path_obj, &max_messages))
		return NULL;
	struct hc_src *s = NULL;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, rec_end, scan = 0;
	uint64_t n = 0;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hc_src_open(&s, PyBytes_AS_STRING(path_obj));
	const uint8_t *p;
	size_t k;
	while (rc >= 0 && (rc = hc_src_next(s, &p, &k)) > 0) {
		if (len + k > cap) {
			size_t nc = cap ? cap : (64u << 20);
			while (nc < len + k)
				nc *= 2;
			uint8_t *q = realloc(buf, nc);
			if (!q) {
				rc = -ENOMEM;
				break;
			}
			buf = q;
			cap = nc;
		}
		memcpy(buf + len, p, k);
		len += k;
		const uint8_t *msg;
		uint32_t m;
		while (max_messages && n < max_messages && hc_nasdaq_next(buf, len, &scan, &msg, &m))
			n++;
		if (max_messages && n == max_messages)
			break;
	}
	rec_end = max_messages ? scan : len;
	Py_END_ALLOW_THREADS
	PyObject *out = NULL;
	if (rc < 0)
		src_error(rc, s ? hc_src_out_bytes(s) : 0, PyTuple_GET_ITEM(args, 0));
	else
		out = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)rec_end);
	hc_src_close(s);
	free(buf);
	Py_DECREF(path_obj);
	return out;
}

static PyObject *py_inflater(PyObject *mod, PyObject *unused)
{
	return PyUnicode_FromString(hc_src_inflater());
}

static PyObject *py_drop_names(PyObject *mod, PyObject *unused)
{
	PyObject *l = PyList_New(0);
	for (int i = 1; l && i < HC_DROP__MAX; i++) {
		PyObject *s = PyUnicode_FromString(hc_drop_names[i]);
		if (!s || PyList_Append(l, s) < 0) {
			Py_XDECREF(s);
			Py_CLEAR(l);
			break;
		}
		Py_DECREF(s);
	}
	return l;
}

static PyMethodDef book_functions[] = {
	{ "itch_decode", py_itch_decode, METH_VARARGS, "itch_decode(msg) -> dict; ValueError(reason) on a drop." },
	{ "decode_only", py_decode_only, METH_VARARGS, "decode_only(data) -> (decoded, drops); no books." },
	{ "generate", py_generate, METH_VARARGS, "generate(seed, n_stocks, n_messages, day=False) -> bytes." },
	{ "drop_names", py_drop_names, METH_NOARGS, "Drop reason names, in enum order." },
	{ "read_file", py_read_file, METH_VARARGS, "read_file(path, max_messages=0) -> bytes (NASDAQ layout, plain or gzip)." },
	{ "inflater", (PyCFunction)(void (*)(void))py_inflater, METH_NOARGS, "The gzip inflater of this build: 'isa-l' or 'zlib'." },
	{ NULL },
};

int hc_py_add_book(PyObject *m)
{
	if (PyType_Ready(&BooksType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Books", (PyObject *)&BooksType) < 0)
		return -1;
	if (PyModule_AddFunctions(m, book_functions) < 0)
		return -1;
	return 0;
}
