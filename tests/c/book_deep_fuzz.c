/* book_deep_fuzz.c: the day-scale feed loop of hc_books_feed_records (past 64 stocks, with
 * its look-ahead hints for old orders in the table and for the level an add joins) under
 * ASan/UBSan, no Python.
 *  1. A day-profile stream fed as one buffer into books sized for 1,024 orders (a 2,048-
 *     reference window: most live orders are old ones in the table, which grows many times
 *     inside the buffer) gives the same books, order by order, as the same stream applied one
 *     message at a time (hc_books_feed_msg: no look-ahead) into books sized for 1 M orders.
 *  2. Mutated day buffers long enough for the deep loop (unknown locates, references far
 *     above or below the window, wrong lengths): invariants hold, nothing reads out of bounds.
 * Build and run: cc -std=gnu11 -O1 -g -fsanitize=address,undefined -Ihftcap/_core \
 *   tests/c/book_deep_fuzz.c hftcap/_core/{itch,book,gen,mold}.c -lm -o /tmp/bdf && /tmp/bdf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "book.h"
#include "gen.h"

static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint64_t r(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

struct digest { uint64_t h, n; };
static void walk_fn(void *ctx, int side, uint32_t price_e4, uint64_t ref, uint32_t shares)
{
	struct digest *d = ctx;
	uint64_t v[4] = { (uint64_t)side, price_e4, ref, shares };
	for (int i = 0; i < 4; i++)
		d->h = (d->h ^ v[i]) * 0x100000001B3ull;
	d->n++;
}

/* The first order with more than one share (to execute 1 of) and another live order of the
 * same stock (to delete). */
struct pick { uint16_t loc; int side; uint32_t price; uint64_t ref, other; };
static void pick_fn(void *ctx, int side, uint32_t price_e4, uint64_t ref, uint32_t shares)
{
	struct pick *p = ctx;
	if (!p->ref && shares > 1) {
		p->ref = ref;
		p->side = side;
		p->price = price_e4;
	} else if (p->ref && !p->other) {
		p->other = ref;
	}
}
static void put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static int book_digest(struct hc_books *b, struct digest *d, uint32_t *max_levels)
{
	uint16_t locs[65536];
	int n = hc_books_locates(b, locs, 65536);
	for (int i = 0; i < n; i++) {
		d->h = (d->h ^ locs[i]) * 0x100000001B3ull;
		if (hc_books_walk(b, locs[i], walk_fn, d) < 0)
			return -1;
		struct hc_stock_info si;
		hc_books_stock_info(b, locs[i], &si);
		if (si.bid_levels > *max_levels) *max_levels = si.bid_levels;
		if (si.ask_levels > *max_levels) *max_levels = si.ask_levels;
	}
	return n;
}

int main(void)
{
	const uint32_t stocks = 300;
	const uint64_t msgs = 400000;
	size_t cap = hc_gen_day_max_bytes(stocks, msgs), len;
	uint8_t *g = malloc(cap);
	if (!g || hc_gen_fill_day(3, stocks, msgs, g, cap, &len)) {
		printf("gen failed\n");
		return 1;
	}
	/* 1. one buffer, small books (deep loop, table) == message by message, big books */
	struct hc_books *a, *m;
	if (hc_books_new(&a, 1024) || hc_books_new(&m, 1u << 20))
		return 1;
	size_t used = hc_books_feed_records(a, g, len);
	size_t off = 0;
	const uint8_t *msg;
	uint32_t n;
	uint64_t count = 0;
	while (hc_nasdaq_next(g, len, &off, &msg, &n)) {
		hc_books_feed_msg(m, msg, n);
		count++;
	}
	if (used != len || count != msgs) {
		printf("consumed %zu of %zu, %lu messages\n", used, len, (unsigned long)count);
		return 1;
	}
	const struct hc_books_stats *sa = hc_books_stats(a), *sm = hc_books_stats(m);
	uint64_t drops = 0;
	for (int i = 1; i < HC_DROP__MAX; i++) {
		drops += sa->drops[i];
		if (sa->drops[i] != sm->drops[i]) {
			printf("drops %s: %lu vs %lu\n", hc_drop_names[i], sa->drops[i], sm->drops[i]);
			return 1;
		}
	}
	struct digest da = { 0xcbf29ce484222325ull, 0 }, dm = da;
	uint32_t lv_a = 0, lv_m = 0;
	int na = book_digest(a, &da, &lv_a), nm = book_digest(m, &dm, &lv_m);
	if (drops || na != nm || na <= 64 || da.h != dm.h || da.n != dm.n || da.n != sa->orders_live ||
	    sa->orders_peak != sm->orders_peak || hc_books_check(a) || hc_books_check(m)) {
		printf("books differ: drops %lu stocks %d/%d orders %lu/%lu live %lu digest %lx/%lx\n",
		       (unsigned long)drops, na, nm, (unsigned long)da.n, (unsigned long)dm.n,
		       (unsigned long)sa->orders_live, (unsigned long)da.h, (unsigned long)dm.h);
		return 1;
	}
	/* the small books held most live orders outside their window, and some side outgrew its
	 * first 64 level slots (the add-level hint reads idx[] of a grown array too) */
	if (sa->orders_peak < 4 * 2048 || lv_a <= 64) {
		printf("stream too mild: peak %lu, max levels %u\n", (unsigned long)sa->orders_peak, lv_a);
		return 1;
	}
	/* 1b. message by message into small books (pool, table and level arrays grow), with
	 * hc_books_warm steps between messages (listen --warm-books): prefetch only, so the same
	 * books as without; ASan: it reads nothing outside the live arrays, across growths */
	struct hc_books *w;
	if (hc_books_new(&w, 1024))
		return 1;
	off = 0;
	count = 0;
	while (hc_nasdaq_next(g, len, &off, &msg, &n)) {
		hc_books_feed_msg(w, msg, n);
		hc_books_warm(w, 1 + (uint32_t)(count++ % 13));
	}
	struct digest dw = { 0xcbf29ce484222325ull, 0 };
	uint32_t lv_w = 0;
	int nw = book_digest(w, &dw, &lv_w);
	if (nw != nm || dw.h != dm.h || dw.n != dm.n || hc_books_check(w)) {
		printf("warmed books differ: stocks %d/%d orders %lu/%lu\n", nw, nm, (unsigned long)dw.n,
		       (unsigned long)dm.n);
		return 1;
	}
	/* 1c. the walk's index (sorted once, reused while no order is added or removed) after
	 * each kind of change, against books built afresh from the same messages: a partial
	 * execution (index kept, shares read live), a delete, an add at the back of a level */
	uint8_t extra[3][40];
	uint32_t extra_len[3] = { 31, 19, 36 };
	memset(extra, 0, sizeof(extra));
	struct pick pk = { 0 };
	uint16_t plocs[65536];
	int npl = hc_books_locates(w, plocs, 65536);
	for (int i = 0; i < npl && !pk.other; i++) {
		pk = (struct pick){ .loc = plocs[i] };
		hc_books_walk(w, plocs[i], pick_fn, &pk);
	}
	if (!pk.other) {
		printf("no order with more than one share to execute\n");
		return 1;
	}
	extra[0][0] = 'E'; /* 1 share of pk.ref */
	put_be(extra[0] + 1, pk.loc, 2);
	put_be(extra[0] + 11, pk.ref, 8);
	put_be(extra[0] + 19, 1, 4);
	extra[1][0] = 'D'; /* pk.other */
	put_be(extra[1] + 1, pk.loc, 2);
	put_be(extra[1] + 11, pk.other, 8);
	extra[2][0] = 'A'; /* a new order at pk.ref's price and side: behind it in the queue */
	put_be(extra[2] + 1, pk.loc, 2);
	put_be(extra[2] + 11, 0x7000000000000000ull, 8);
	extra[2][19] = pk.side ? 'S' : 'B';
	put_be(extra[2] + 20, 77, 4);
	memset(extra[2] + 24, ' ', 8);
	put_be(extra[2] + 32, pk.price, 4);
	for (int k = 0; k < 3; k++) {
		if (hc_books_feed_msg(w, extra[k], extra_len[k])) {
			printf("extra message %d refused\n", k);
			return 1;
		}
		struct hc_books *f;
		if (hc_books_new(&f, 1u << 20))
			return 1;
		off = 0;
		while (hc_nasdaq_next(g, len, &off, &msg, &n))
			hc_books_feed_msg(f, msg, n);
		for (int j = 0; j <= k; j++)
			hc_books_feed_msg(f, extra[j], extra_len[j]);
		struct digest d1 = { 0xcbf29ce484222325ull, 0 }, d2 = d1;
		uint32_t l1 = 0, l2 = 0;
		book_digest(w, &d1, &l1);
		book_digest(f, &d2, &l2);
		if (d1.h != d2.h || d1.n != d2.n || d1.h == dw.h || hc_books_check(w)) {
			printf("walk after extra message %d: %lu orders vs %lu afresh\n", k,
			       (unsigned long)d1.n, (unsigned long)d2.n);
			return 1;
		}
		hc_books_free(f);
	}
	hc_books_clear(w);
	hc_books_warm(w, 1000); /* after a clear: nothing live, the cursor wraps */
	struct digest dc = { 0xcbf29ce484222325ull, 0 };
	uint32_t lc = 0;
	book_digest(w, &dc, &lc);
	if (dc.n || hc_books_stats(w)->orders_live || hc_books_check(w)) {
		printf("clear left %lu orders\n", (unsigned long)dc.n);
		return 1;
	}
	hc_books_free(w);
	hc_books_free(m);
	printf("same books: %d stocks, %lu live orders (peak %lu), max %u levels a side\n", na,
	       (unsigned long)da.n, (unsigned long)sa->orders_peak, lv_a);

	/* 2. mutated buffers through the deep loop, into the same (small) books */
	for (int it = 0; it < 60; it++) {
		size_t k = 70000 + r() % 600000, o = r() % (len - k);
		uint8_t *p = malloc(k);
		memcpy(p, g + o, k);
		for (int j = 0; j < 300; j++) {
			size_t at = r() % k;
			switch (r() % 4) {
			case 0: p[at] = (uint8_t)r(); break;                  /* any byte */
			case 1: if (at + 8 <= k) memset(p + at, 0xff, 8); break; /* huge reference */
			case 2: if (at + 2 <= k) { p[at] = (uint8_t)r(); p[at + 1] = (uint8_t)r(); } break; /* locate */
			default: if (at + 8 <= k) memset(p + at, 0, 8); break; /* low reference */
			}
		}
		hc_books_feed_records(a, p, k);
		hc_books_warm(a, 1 + (uint32_t)(r() % 5000));
		int c = hc_books_check(a);
		if (c && c != -1000) {
			printf("check %d after mutated buffer %d\n", c, it);
			return 1;
		}
		free(p);
	}
	printf("ok stocks=%u live=%lu\n", hc_books_stats(a)->orders_live > 0 ? (unsigned)na : 0,
	       (unsigned long)hc_books_stats(a)->orders_live);
	hc_books_free(a);
	free(g);
	return 0;
}
