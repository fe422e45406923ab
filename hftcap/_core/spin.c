/* spin.c: see spin.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "spin.h"
#include "book.h"
#include "hc_time.h"
#include "itch.h"

/* The F table: reference -> attribution of orders added by F (open addressing). */
struct fent { uint64_t ref; uint8_t mpid[4]; uint32_t used; };
struct ftab { struct fent *e; uint64_t mask; };

static inline uint64_t fhash(uint64_t ref) { return ref * 0x9E3779B97F4A7C15ull; }

static void ftab_put(struct ftab *t, uint64_t ref, const uint8_t *mpid)
{
	for (uint64_t i = fhash(ref) & t->mask;; i = (i + 1) & t->mask)
		if (!t->e[i].used || t->e[i].ref == ref) {
			t->e[i].used = 1;
			t->e[i].ref = ref;
			memcpy(t->e[i].mpid, mpid, 4);
			return;
		}
}

static const uint8_t *ftab_get(const struct ftab *t, uint64_t ref)
{
	for (uint64_t i = fhash(ref) & t->mask; t->e[i].used; i = (i + 1) & t->mask)
		if (t->e[i].ref == ref)
			return t->e[i].mpid;
	return NULL;
}

/* Last record of each kind per locate, as offset + 1 into the stream (0 = none). */
enum { K_R, K_H, K_Y, K_HQ, K_HB, K_HX, K_N };

struct out {
	uint8_t *p;
	size_t n;
	struct hc_spin_stats *st;
	const struct ftab *ft;
	uint8_t stock[8];
	uint16_t locate;
	uint64_t ts;
};

static void put_packet(struct out *o, const uint8_t *msg, uint32_t len)
{
	o->p[o->n] = (uint8_t)((len + 1) >> 8);
	o->p[o->n + 1] = (uint8_t)(len + 1);
	o->p[o->n + 2] = 'S';
	memcpy(o->p + o->n + 3, msg, len);
	o->n += 3 + len;
	o->st->packets++;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void emit_order(void *ctx, int side, uint32_t price_e4, uint64_t ref, uint32_t shares)
{
	struct out *o = ctx;
	uint8_t m[40];
	const uint8_t *mpid = o->ft->e ? ftab_get(o->ft, ref) : NULL;
	m[0] = mpid ? 'F' : 'A';
	put_be(m + 1, o->locate, 2);
	put_be(m + 3, 0, 2);
	put_be(m + 5, o->ts, 6);
	put_be(m + 11, ref, 8);
	m[19] = side ? 'S' : 'B';
	put_be(m + 20, shares, 4);
	memcpy(m + 24, o->stock, 8);
	put_be(m + 32, price_e4, 4);
	if (mpid) {
		memcpy(m + 36, mpid, 4);
		o->st->attributed++;
	}
	put_packet(o, m, mpid ? 40 : 36);
	o->st->orders++;
}

void hc_glimpse_end(uint8_t out[HC_GLIMPSE_END_LEN], uint64_t next_seq)
{
	out[0] = HC_GLIMPSE_END;
	memset(out + 1, ' ', 20);
	for (int i = 20; i >= 1; i--) {
		out[i] = (uint8_t)('0' + next_seq % 10);
		next_seq /= 10;
		if (!next_seq)
			break;
	}
}

int hc_glimpse_end_parse(const uint8_t *p, uint32_t len, uint64_t *next_seq)
{
	if (len != HC_GLIMPSE_END_LEN || p[0] != HC_GLIMPSE_END)
		return -EINVAL;
	int i = 1, digits = 0;
	uint64_t v = 0;
	while (i < HC_GLIMPSE_END_LEN && p[i] == ' ')
		i++;
	for (; i < HC_GLIMPSE_END_LEN && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
		if (v > (UINT64_MAX >> 1) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	for (; i < HC_GLIMPSE_END_LEN; i++)
		if (p[i] != ' ')
			return -EINVAL;
	if (!digits || v == 0 || v > (UINT64_MAX >> 1))
		return -EINVAL;
	*next_seq = v;
	return 0;
}

int hc_spin_build(const uint8_t *stream, size_t len, uint64_t n, uint64_t first_seq,
		  uint8_t **out, size_t *out_len, struct hc_spin_stats *st)
{
	uint64_t t0 = hc_now_mono_ns();
	memset(st, 0, sizeof(*st));
	size_t off = 0, last = 0, sys = 0;
	uint64_t adds = 0, nf = 0;
	size_t *at = calloc((size_t)65536 * K_N, sizeof(size_t));
	if (!at)
		return -ENOMEM;
	/* Pass 1: the prefix's end, where the state messages are, how many adds. */
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *msg;
		uint32_t ml;
		if (!hc_nasdaq_next(stream, len, &off, &msg, &ml)) {
			free(at);
			return -EINVAL;
		}
		size_t mo = (size_t)(msg - stream);
		last = mo + 1;
		if (!ml || ml < 3)
			continue;
		uint16_t loc = hc_be16(msg + 1);
		switch (msg[0]) {
		case 'S': if (ml == 12) sys = mo + 1; break;
		case 'R': if (ml == 39) at[loc * K_N + K_R] = mo + 1; break;
		case 'H': if (ml == 25) at[loc * K_N + K_H] = mo + 1; break;
		case 'Y': if (ml == 20) at[loc * K_N + K_Y] = mo + 1; break;
		case 'h':
			if (ml == 21) {
				char c = (char)msg[19];
				int k = c == 'Q' ? K_HQ : c == 'B' ? K_HB : c == 'X' ? K_HX : -1;
				if (k >= 0)
					at[loc * K_N + k] = mo + 1;
			}
			break;
		case 'A': adds++; break;
		case 'F': adds++; nf++; break;
		case 'U': adds++; break;
		}
	}
	size_t plen = off;
	struct ftab ft = { NULL, 0 };
	if (nf) {
		uint64_t cap = 16;
		while (cap < 2 * nf)
			cap *= 2;
		ft.e = calloc(cap, sizeof(*ft.e));
		ft.mask = cap - 1;
		if (!ft.e) {
			free(at);
			return -ENOMEM;
		}
		off = 0;
		for (uint64_t i = 0; i < n; i++) {
			const uint8_t *msg;
			uint32_t ml;
			hc_nasdaq_next(stream, len, &off, &msg, &ml);
			if (ml == 40 && msg[0] == 'F')
				ftab_put(&ft, hc_be64(msg + 11), msg + 36);
		}
	}
	struct hc_books *b;
	int rc = hc_books_new(&b, adds < 1024 ? 1024 : adds);
	if (rc) {
		free(ft.e);
		free(at);
		return rc;
	}
	hc_books_feed_records(b, stream, plen);
	st->replayed = n;
	uint16_t *locs = malloc(65536 * sizeof(*locs));
	size_t cap = 3 + 12 + 3 + HC_GLIMPSE_END_LEN;
	int nl = locs ? hc_books_locates(b, locs, 65536) : 0;
	cap += (size_t)hc_books_stats(b)->orders_live * (3 + 40) + (size_t)nl * (3 + 39 + 3 + 25 + 3 + 20 + 3 * (3 + 21));
	struct out o = { .p = locs ? malloc(cap) : NULL, .st = st, .ft = &ft };
	if (!o.p) {
		free(locs);
		hc_books_free(b);
		free(ft.e);
		free(at);
		return -ENOMEM;
	}
	o.ts = last && hc_be16(stream + last - 3) >= 11 ? hc_be48(stream + last - 1 + 5) : 0;
	if (sys)
		put_packet(&o, stream + sys - 1, 12);
	static const uint32_t klen[K_N] = { 39, 25, 20, 21, 21, 21 };
	for (int i = 0; i < nl; i++) {
		uint16_t loc = locs[i];
		for (int k = 0; k < K_N; k++)
			if (at[loc * K_N + k])
				put_packet(&o, stream + at[loc * K_N + k] - 1, klen[k]);
		if (at[loc * K_N + K_R])
			memcpy(o.stock, stream + at[loc * K_N + K_R] - 1 + 11, 8);
		else
			memset(o.stock, ' ', 8);
		o.locate = loc;
		if (hc_books_walk(b, loc, emit_order, &o) == -ENOMEM) { /* its index: the one allocation */
			free(o.p);
			free(locs);
			hc_books_free(b);
			free(ft.e);
			free(at);
			return -ENOMEM;
		}
	}
	st->stocks = (uint64_t)nl;
	st->next_seq = first_seq + n;
	uint8_t g[HC_GLIMPSE_END_LEN];
	hc_glimpse_end(g, st->next_seq);
	put_packet(&o, g, HC_GLIMPSE_END_LEN);
	st->bytes = o.n;
	free(locs);
	hc_books_free(b);
	free(ft.e);
	free(at);
	*out = o.p;
	*out_len = o.n;
	st->build_ns = hc_now_mono_ns() - t0;
	return 0;
}
