/* snap.c: hftcap's Book Snapshot 'Z' (see snap.h for the layout and the promises). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "snap.h"

#define UNLIKELY(x) __builtin_expect(!!(x), 0)

const char *const hc_snap_drop_names[HC_SNAP_DROP__MAX] = {
	[HC_SNAP_DROP_EMPTY] = "empty",
	[HC_SNAP_DROP_TRUNCATED] = "truncated",
	[HC_SNAP_DROP_BAD_LENGTH] = "bad_length",
	[HC_SNAP_DROP_BAD_LEVELS] = "bad_levels",
	[HC_SNAP_DROP_BAD_LEVEL] = "bad_level",
	[HC_SNAP_DROP_NOT_SNAPSHOT] = "not_snapshot",
	[HC_SNAP_DROP_NO_MEMORY] = "no_memory",
};

static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
	v = __builtin_bswap32(v);
	memcpy(p, &v, 4);
}
static inline void put48(uint8_t *p, uint64_t v)
{
	put16(p, (uint16_t)(v >> 32));
	put32(p + 2, (uint32_t)v);
}

/* ---- message ---- */

/* One side of N levels at p: the non-empty prefix into out; -BAD_LEVEL if malformed. */
static int decode_side(const uint8_t *p, uint32_t levels, struct hc_level_snap *out, uint32_t *n)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < levels; i++, p += HC_SNAP_LEVEL_LEN) {
		uint32_t price = hc_be32(p), shares = hc_be32(p + 4), orders = hc_be32(p + 8);
		if (shares == 0) {
			if (price | orders)
				return -HC_SNAP_DROP_BAD_LEVEL;
			continue;
		}
		if (k != i)
			return -HC_SNAP_DROP_BAD_LEVEL; /* a level after an empty one */
		out[k].price_e4 = price;
		out[k].orders = orders;
		out[k].shares = shares;
		k++;
	}
	*n = k;
	return 0;
}

int hc_snap_decode(const uint8_t *msg, uint32_t len, struct hc_snap_msg *out)
{
	if (len == 0)
		return -HC_SNAP_DROP_EMPTY;
	if (msg[0] != HC_SNAP_TYPE)
		return -HC_SNAP_DROP_NOT_SNAPSHOT;
	if (len < HC_SNAP_HDR_LEN)
		return -HC_SNAP_DROP_TRUNCATED;
	uint32_t levels = msg[11];
	if (levels == 0 || levels > HC_SNAP_MAX_LEVELS)
		return -HC_SNAP_DROP_BAD_LEVELS;
	uint32_t want = hc_snap_len(levels);
	if (len < want)
		return -HC_SNAP_DROP_TRUNCATED;
	if (len > want)
		return -HC_SNAP_DROP_BAD_LENGTH;
	out->stock_locate = hc_be16(msg + 1);
	out->tracking_number = hc_be16(msg + 3);
	out->timestamp_ns = hc_be48(msg + 5);
	out->levels = levels;
	const uint8_t *p = msg + HC_SNAP_HDR_LEN;
	int rc = decode_side(p, levels, out->bids, &out->n_bids);
	if (!rc)
		rc = decode_side(p + levels * HC_SNAP_LEVEL_LEN, levels, out->asks, &out->n_asks);
	return rc;
}

static uint32_t encode_side(uint8_t *p, uint32_t levels, const struct hc_level_snap *l, uint32_t n)
{
	uint32_t clamped = 0;
	if (n > levels)
		n = levels;
	for (uint32_t i = 0; i < n; i++, p += HC_SNAP_LEVEL_LEN) {
		uint64_t sh = l[i].shares;
		if (sh > UINT32_MAX) {
			sh = UINT32_MAX;
			clamped++;
		}
		put32(p, l[i].price_e4);
		put32(p + 4, (uint32_t)sh);
		put32(p + 8, l[i].orders);
	}
	memset(p, 0, (size_t)(levels - n) * HC_SNAP_LEVEL_LEN);
	return clamped;
}

int hc_snap_encode(uint8_t *out, size_t cap, uint16_t locate, uint16_t tracking, uint64_t ts_ns,
		   uint32_t levels, const struct hc_level_snap *bids, uint32_t nb,
		   const struct hc_level_snap *asks, uint32_t na, uint32_t *clamped)
{
	if (levels == 0 || levels > HC_SNAP_MAX_LEVELS)
		return -EINVAL;
	uint32_t len = hc_snap_len(levels);
	if (cap < len)
		return -ENOSPC;
	out[0] = HC_SNAP_TYPE;
	put16(out + 1, locate);
	put16(out + 3, tracking);
	put48(out + 5, ts_ns);
	out[11] = (uint8_t)levels;
	uint8_t *p = out + HC_SNAP_HDR_LEN;
	uint32_t c = encode_side(p, levels, bids, nb);
	c += encode_side(p + levels * HC_SNAP_LEVEL_LEN, levels, asks, na);
	if (clamped)
		*clamped = c;
	return (int)len;
}

/* ---- conversion ---- */

static inline int is_book_msg(const uint8_t *m, uint32_t len)
{
	if (len == 0)
		return 0;
	switch (m[0]) {
	case 'A': case 'F': case 'E': case 'C': case 'X': case 'D': case 'U':
		return len == hc_itch_len[m[0]];
	default:
		return 0;
	}
}

int64_t hc_snap_convert_size(const uint8_t *in, size_t len, uint32_t levels)
{
	if (levels == 0 || levels > HC_SNAP_MAX_LEVELS)
		return -EINVAL;
	size_t off = 0;
	int64_t out = 0;
	const uint8_t *m;
	uint32_t n;
	while (hc_nasdaq_next(in, len, &off, &m, &n))
		out += 2 + (is_book_msg(m, n) ? hc_snap_len(levels) : n);
	return out;
}

int64_t hc_snap_convert(const uint8_t *in, size_t len, uint32_t levels, uint8_t *out, size_t cap,
			struct hc_snap_conv_stats *st)
{
	memset(st, 0, sizeof(*st));
	int64_t need = hc_snap_convert_size(in, len, levels);
	if (need < 0)
		return need;
	if ((uint64_t)need > cap)
		return -ENOSPC;
	struct hc_books *b;
	int rc = hc_books_new(&b, 1 << 16);
	if (rc)
		return rc;
	struct hc_level_snap bids[HC_SNAP_MAX_LEVELS], asks[HC_SNAP_MAX_LEVELS];
	uint32_t zlen = hc_snap_len(levels);
	size_t off = 0, o = 0;
	const uint8_t *m;
	uint32_t n;
	while (hc_nasdaq_next(in, len, &off, &m, &n)) {
		st->records++;
		hc_books_feed_msg(b, m, n);
		if (!is_book_msg(m, n)) {
			memcpy(out + o, m - 2, 2 + (size_t)n);
			o += 2 + (size_t)n;
			st->passed++;
			continue;
		}
		uint16_t loc = hc_be16(m + 1);
		uint32_t nb = 0, na = 0, clamped = 0;
		if (hc_books_snapshot(b, loc, levels, bids, &nb, asks, &na) < 0)
			nb = na = 0; /* a stock the books never saw (its message was dropped) */
		put16(out + o, (uint16_t)zlen);
		hc_snap_encode(out + o + 2, zlen, loc, hc_be16(m + 3), hc_be48(m + 5), levels,
			       bids, nb, asks, na, &clamped);
		o += 2 + (size_t)zlen;
		st->snapshots++;
		st->shares_clamped += clamped;
	}
	st->tail_bytes = len - off;
	st->bytes_out = o;
	memcpy(st->book_drops, hc_books_stats(b)->drops, sizeof(st->book_drops));
	hc_books_free(b);
	return (int64_t)o;
}

/* ---- receiver table ---- */

struct hc_snap_stock {
	_Atomic uint32_t seq;     /* odd while the writer replaces this entry */
	uint32_t levels;          /* N of the last Z */
	uint32_t n_bids, n_asks;
	uint64_t itch_ns;
	uint64_t messages;
	struct hc_level_snap bids[HC_SNAP_MAX_LEVELS], asks[HC_SNAP_MAX_LEVELS];
};

struct hc_snap_table {
	struct hc_snap_stock *_Atomic stocks[65536];
	struct hc_snap_stats st;
	uint32_t npending;
	struct hc_snap_msg pending[HC_SNAP_PENDING];
};

int hc_snap_table_new(struct hc_snap_table **out)
{
	struct hc_snap_table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	*out = t;
	return 0;
}

void hc_snap_table_free(struct hc_snap_table *t)
{
	if (!t)
		return;
	for (int i = 0; i < 65536; i++)
		free(t->stocks[i]);
	free(t);
}

static void apply(struct hc_snap_table *t, const struct hc_snap_msg *m)
{
	struct hc_snap_stock *s = atomic_load_explicit(&t->stocks[m->stock_locate], memory_order_relaxed);
	if (UNLIKELY(!s)) {
		s = calloc(1, sizeof(*s)); /* once per stock, like hc_books' stock entries */
		if (!s) {
			t->st.drops[HC_SNAP_DROP_NO_MEMORY]++;
			return;
		}
		t->st.stocks++;
		atomic_store_explicit(&t->stocks[m->stock_locate], s, memory_order_release);
	}
	atomic_store_explicit(&s->seq, atomic_load_explicit(&s->seq, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	s->levels = m->levels;
	s->n_bids = m->n_bids;
	s->n_asks = m->n_asks;
	s->itch_ns = m->timestamp_ns;
	s->messages++;
	memcpy(s->bids, m->bids, m->n_bids * sizeof(m->bids[0]));
	memcpy(s->asks, m->asks, m->n_asks * sizeof(m->asks[0]));
	atomic_store_explicit(&s->seq, atomic_load_explicit(&s->seq, memory_order_relaxed) + 1,
			      memory_order_release);
	t->st.messages++;
}

void hc_snap_table_commit(struct hc_snap_table *t)
{
	for (uint32_t i = 0; i < t->npending; i++)
		apply(t, &t->pending[i]);
	t->npending = 0;
}

int hc_snap_table_stage(struct hc_snap_table *t, const uint8_t *msg, uint32_t len)
{
	if (UNLIKELY(t->npending == HC_SNAP_PENDING))
		hc_snap_table_commit(t);
	int rc = hc_snap_decode(msg, len, &t->pending[t->npending]);
	if (UNLIKELY(rc)) {
		t->st.drops[-rc]++;
		return rc;
	}
	t->npending++;
	return 0;
}

int hc_snap_table_feed(struct hc_snap_table *t, const uint8_t *msg, uint32_t len)
{
	int rc = hc_snap_table_stage(t, msg, len);
	hc_snap_table_commit(t);
	return rc;
}

const struct hc_snap_stats *hc_snap_table_stats(const struct hc_snap_table *t) { return &t->st; }

int hc_snap_table_get(struct hc_snap_table *t, uint16_t locate, uint32_t levels,
		      struct hc_level_snap *bids, uint32_t *n_bids,
		      struct hc_level_snap *asks, uint32_t *n_asks, uint32_t *sent_levels,
		      uint64_t *itch_ns, uint64_t *messages)
{
	struct hc_snap_stock *s = atomic_load_explicit(&t->stocks[locate], memory_order_acquire);
	if (!s)
		return -ENOENT;
	uint32_t v;
	do {
		while ((v = atomic_load_explicit(&s->seq, memory_order_acquire)) & 1) {
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#endif
		}
		uint32_t nb = *(volatile uint32_t *)&s->n_bids, na = *(volatile uint32_t *)&s->n_asks;
		/* clamp before copying: a torn read must not index past the arrays (retried below) */
		nb = nb < levels ? nb : levels;
		na = na < levels ? na : levels;
		nb = nb < HC_SNAP_MAX_LEVELS ? nb : HC_SNAP_MAX_LEVELS;
		na = na < HC_SNAP_MAX_LEVELS ? na : HC_SNAP_MAX_LEVELS;
		memcpy(bids, s->bids, nb * sizeof(*bids));
		memcpy(asks, s->asks, na * sizeof(*asks));
		*n_bids = nb;
		*n_asks = na;
		if (sent_levels)
			*sent_levels = s->levels;
		if (itch_ns)
			*itch_ns = s->itch_ns;
		if (messages)
			*messages = s->messages;
		atomic_thread_fence(memory_order_acquire);
	} while (atomic_load_explicit(&s->seq, memory_order_relaxed) != v);
	return 0;
}

int hc_snap_table_locates(struct hc_snap_table *t, uint16_t *out, int cap)
{
	int n = 0;
	for (int i = 0; i < 65536; i++)
		if (atomic_load_explicit(&t->stocks[i], memory_order_acquire)) {
			if (n < cap)
				out[n] = (uint16_t)i;
			n++;
		}
	return n;
}
