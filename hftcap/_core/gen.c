/* gen.c: deterministic ITCH stream generator (see gen.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "gen.h"

#define W 4096u         /* price ladder per stock, in $0.01 ticks ($0.01 .. $40.95) */
#define TICK_E4 100u
#define TARGET_LIVE 800u /* live orders per stock the flow hovers around */

struct rng { uint64_t s; };
static inline uint64_t rnd(struct rng *r) /* xorshift64* */
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1Dull;
}
static inline uint32_t rnd_below(struct rng *r, uint32_t n) /* uniform in [0, n) */
{
	return (uint32_t)(((rnd(r) >> 32) * (uint64_t)n) >> 32);
}

struct gorder { uint64_t ref; uint32_t tick, shares; uint8_t side; };

struct gstock {
	char sym[8];
	uint32_t mid, best_bid, best_ask; /* best_bid 0: none; best_ask W: none */
	struct gorder *o;
	uint32_t n, cap;
	uint16_t *cnt[2];                 /* live orders per tick and side */
};

struct gen {
	struct rng r;
	uint8_t *p;
	uint64_t ts, next_ref, match;
	struct gstock *st;
	uint32_t ns;
};

static inline void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }

/* Frame + common header; returns the message start. */
static inline uint8_t *hdr(struct gen *g, char type, uint16_t len, uint16_t locate)
{
	uint8_t *m = g->p + 2;
	put16(g->p, len);
	g->p += 2 + len;
	g->ts += 1 + rnd_below(&g->r, 2000);
	m[0] = (uint8_t)type;
	put16(m + 1, locate);
	put16(m + 3, 0);
	put16(m + 5, (uint16_t)(g->ts >> 32));
	put32(m + 7, (uint32_t)g->ts);
	return m;
}

static void sysevent(struct gen *g, char code)
{
	uint8_t *m = hdr(g, 'S', 12, 0);
	m[11] = (uint8_t)code;
}

static void ticker(uint32_t i, char sym[8])
{
	memset(sym, ' ', 8);
	uint32_t k = i / 2, len = (i & 1) ? 4 : 3, mod = (i & 1) ? 456976u : 17576u;
	uint64_t mul = (i & 1) ? 104729u : 7919u; /* primes, so k -> v is a bijection mod 26^len */
	uint32_t v = (uint32_t)(((uint64_t)k * mul + 1234u) % mod);
	for (int j = (int)len - 1; j >= 0; j--) {
		sym[j] = (char)('A' + v % 26);
		v /= 26;
	}
}

static inline uint32_t order_price(uint32_t tick) { return tick * TICK_E4; }

static void book_add(struct gstock *s, uint8_t side, uint32_t tick)
{
	s->cnt[side][tick]++;
	if (side == 0 && tick > s->best_bid)
		s->best_bid = tick;
	if (side == 1 && tick < s->best_ask)
		s->best_ask = tick;
}

static void book_del(struct gstock *s, uint8_t side, uint32_t tick)
{
	if (--s->cnt[side][tick])
		return;
	if (side == 0 && tick == s->best_bid)
		while (s->best_bid > 0 && !s->cnt[0][s->best_bid])
			s->best_bid--;
	if (side == 1 && tick == s->best_ask)
		while (s->best_ask < W && !s->cnt[1][s->best_ask])
			s->best_ask++;
}

/* A resting price for a new order on `side`, never crossing or locking the other side.
 * Returns 0 when there is no room. */
static uint32_t pick_tick(struct gen *g, struct gstock *s, uint8_t side)
{
	uint32_t off = 1 + rnd_below(&g->r, 4);
	if (rnd_below(&g->r, 16) == 0)
		off += rnd_below(&g->r, 40);
	if (side == 0) {
		uint32_t t = s->mid > off ? s->mid - off : 1;
		if (t >= s->best_ask)
			t = s->best_ask - 1;
		return t >= 1 ? t : 0;
	}
	uint32_t t = s->mid + off;
	if (t <= s->best_bid)
		t = s->best_bid + 1;
	if (t > W - 2)
		t = W - 2;
	return t > s->best_bid ? t : 0;
}

static uint32_t pick_shares(struct gen *g)
{
	uint32_t r = rnd_below(&g->r, 16);
	if (r < 12)
		return 100 * (1 + rnd_below(&g->r, 10));
	if (r < 15)
		return 1 + rnd_below(&g->r, 99);
	return 100 * (10 + rnd_below(&g->r, 200));
}

static int push_order(struct gstock *s, struct gorder o)
{
	if (s->n == s->cap) {
		uint32_t cap = s->cap ? s->cap * 2 : 1024;
		struct gorder *p = realloc(s->o, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->o = p;
		s->cap = cap;
	}
	s->o[s->n++] = o;
	book_add(s, o.side, o.tick);
	return 0;
}

static void drop_order(struct gstock *s, uint32_t i)
{
	book_del(s, s->o[i].side, s->o[i].tick);
	s->o[i] = s->o[--s->n];
}

/* Index of a live order, biased to the top of the book (better of two picks). */
static uint32_t pick_order(struct gen *g, struct gstock *s)
{
	uint32_t a = rnd_below(&g->r, s->n), b = rnd_below(&g->r, s->n);
	const struct gorder *x = &s->o[a], *y = &s->o[b];
	if (x->side != y->side)
		return a;
	int ybetter = x->side == 0 ? y->tick > x->tick : y->tick < x->tick;
	return ybetter ? b : a;
}

static int emit_add(struct gen *g, struct gstock *s, uint16_t loc)
{
	uint8_t side = (uint8_t)rnd_below(&g->r, 2);
	uint32_t tick = pick_tick(g, s, side);
	if (!tick) {
		side ^= 1;
		tick = pick_tick(g, s, side);
		if (!tick)
			return 1; /* no room: caller emits something else */
	}
	if (s->cnt[side][tick] == UINT16_MAX)
		return 1;
	struct gorder o = { .ref = g->next_ref, .tick = tick, .shares = pick_shares(g), .side = side };
	g->next_ref += 1 + (rnd_below(&g->r, 4) == 0);
	int f = rnd_below(&g->r, 10) == 0;
	uint8_t *m = hdr(g, f ? 'F' : 'A', f ? 40 : 36, loc);
	put64(m + 11, o.ref);
	m[19] = side ? 'S' : 'B';
	put32(m + 20, o.shares);
	memcpy(m + 24, s->sym, 8);
	put32(m + 32, order_price(tick));
	if (f)
		memcpy(m + 36, "GSCO", 4);
	return push_order(s, o);
}

static int step(struct gen *g)
{
	/* skewed choice of stock: index 0 is the most active */
	uint32_t u = rnd_below(&g->r, 1u << 16);
	uint32_t si = (uint32_t)(((uint64_t)u * u * g->ns) >> 32);
	struct gstock *s = &g->st[si];
	uint16_t loc = (uint16_t)(si + 1);

	if (rnd_below(&g->r, 16) == 0) { /* mid drift, kept strictly inside the spread */
		uint32_t mid = s->mid + (rnd_below(&g->r, 2) ? 1 : -1);
		if (mid > s->best_bid && mid < s->best_ask && mid > 100 && mid < W - 100)
			s->mid = mid;
	}
	uint32_t r = rnd_below(&g->r, 1000);
	uint32_t add_thr = s->n < TARGET_LIVE ? 520 : 250;
	if (s->n < 2 || r < add_thr) {
		int rc = emit_add(g, s, loc);
		if (rc <= 0)
			return rc;
		if (!s->n)
			r = 990; /* nothing can be added or touched: print a trade */
		else
			r = add_thr; /* fall through to a delete */
	}
	if (r >= 990) {
		if (r == 999) { /* cross */
			uint8_t *m = hdr(g, 'Q', 40, loc);
			put64(m + 11, 1000ull * (1 + rnd_below(&g->r, 5000)));
			memcpy(m + 19, s->sym, 8);
			put32(m + 27, order_price(s->mid));
			put64(m + 31, ++g->match);
			m[39] = rnd_below(&g->r, 2) ? 'O' : 'C';
		} else {
			uint8_t *m = hdr(g, 'P', 44, loc);
			put64(m + 11, 0);
			m[19] = 'B';
			put32(m + 20, pick_shares(g));
			memcpy(m + 24, s->sym, 8);
			put32(m + 32, order_price(s->mid));
			put64(m + 36, ++g->match);
		}
		return 0;
	}
	uint32_t i = pick_order(g, s);
	struct gorder *o = &s->o[i];
	uint32_t span = r - add_thr, rest = 990 - add_thr; /* remaining mix, scaled */
	uint32_t q = span * 100 / rest; /* 0..99 */
	if (q < 40) { /* D */
		uint8_t *m = hdr(g, 'D', 19, loc);
		put64(m + 11, o->ref);
		drop_order(s, i);
	} else if (q < 55) { /* X */
		if (o->shares < 2) {
			uint8_t *m = hdr(g, 'D', 19, loc);
			put64(m + 11, o->ref);
			drop_order(s, i);
			return 0;
		}
		uint32_t c = 1 + rnd_below(&g->r, o->shares - 1);
		uint8_t *m = hdr(g, 'X', 23, loc);
		put64(m + 11, o->ref);
		put32(m + 19, c);
		o->shares -= c;
	} else if (q < 72) { /* U */
		uint8_t side = o->side;
		uint64_t old = o->ref;
		drop_order(s, i);
		uint32_t tick = pick_tick(g, s, side);
		if (!tick || s->cnt[side][tick] == UINT16_MAX) {
			uint8_t *m = hdr(g, 'D', 19, loc);
			put64(m + 11, old);
			return 0;
		}
		struct gorder n = { .ref = g->next_ref++, .tick = tick, .shares = pick_shares(g), .side = side };
		uint8_t *m = hdr(g, 'U', 35, loc);
		put64(m + 11, old);
		put64(m + 19, n.ref);
		put32(m + 27, n.shares);
		put32(m + 31, order_price(tick));
		return push_order(s, n);
	} else { /* E, some C */
		int c = q >= 94;
		uint32_t ex = o->shares;
		if (ex > 1 && rnd_below(&g->r, 2))
			ex = 1 + rnd_below(&g->r, ex - 1);
		uint8_t *m = hdr(g, c ? 'C' : 'E', c ? 36 : 31, loc);
		put64(m + 11, o->ref);
		put32(m + 19, ex);
		put64(m + 23, ++g->match);
		if (c) {
			m[31] = rnd_below(&g->r, 10) ? 'Y' : 'N';
			put32(m + 32, order_price(o->tick) + TICK_E4 * rnd_below(&g->r, 2));
		}
		if (ex == o->shares)
			drop_order(s, i);
		else
			o->shares -= ex;
	}
	return 0;
}

size_t hc_gen_max_bytes(uint32_t n_stocks, uint64_t n_messages)
{
	return (size_t)n_messages * 46 + (size_t)n_stocks * 70 + 64;
}

int hc_gen_fill(uint64_t seed, uint32_t n_stocks, uint64_t n_messages, uint8_t *buf, size_t cap,
		size_t *len)
{
	if (!n_stocks || n_stocks > HC_GEN_MAX_STOCKS || n_messages < 2ull * n_stocks + 3 ||
	    cap < hc_gen_max_bytes(n_stocks, n_messages))
		return -EINVAL;
	struct gen g = { .p = buf, .ts = 34200ull * 1000000000ull, .next_ref = 1, .ns = n_stocks };
	uint64_t z = seed + 0x9E3779B97F4A7C15ull; /* splitmix64 seeds the xorshift state */
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	g.r.s = (z ^ (z >> 31)) | 1;
	int rc = -ENOMEM;
	g.st = calloc(n_stocks, sizeof(*g.st));
	if (!g.st)
		return -ENOMEM;
	for (uint32_t i = 0; i < n_stocks; i++) {
		struct gstock *s = &g.st[i];
		ticker(i, s->sym);
		s->mid = 500 + rnd_below(&g.r, 3000);
		s->best_bid = 0;
		s->best_ask = W;
		s->cnt[0] = calloc(W, sizeof(uint16_t));
		s->cnt[1] = calloc(W, sizeof(uint16_t));
		if (!s->cnt[0] || !s->cnt[1])
			goto out;
	}
	sysevent(&g, 'O');
	for (uint32_t i = 0; i < n_stocks; i++) {
		uint8_t *m = hdr(&g, 'R', 39, (uint16_t)(i + 1));
		memcpy(m + 11, g.st[i].sym, 8);
		m[19] = "QGS"[i % 3];
		m[20] = 'N';
		put32(m + 21, 100);
		m[25] = 'N';
		m[26] = 'C';
		memcpy(m + 27, "  ", 2);
		m[29] = 'P';
		m[30] = 'N';
		m[31] = 'N';
		m[32] = i % 5 ? '2' : '1';
		m[33] = 'N';
		put32(m + 34, 0);
		m[38] = 'N';
	}
	for (uint32_t i = 0; i < n_stocks; i++) {
		uint8_t *m = hdr(&g, 'H', 25, (uint16_t)(i + 1));
		memcpy(m + 11, g.st[i].sym, 8);
		m[19] = 'T';
		m[20] = ' ';
		memcpy(m + 21, "    ", 4);
	}
	sysevent(&g, 'Q');
	for (uint64_t k = 2ull * n_stocks + 3; k < n_messages; k++)
		if (step(&g) < 0)
			goto out;
	sysevent(&g, 'C');
	*len = (size_t)(g.p - buf);
	rc = 0;
out:
	for (uint32_t i = 0; i < n_stocks; i++) {
		free(g.st[i].o);
		free(g.st[i].cnt[0]);
		free(g.st[i].cnt[1]);
	}
	free(g.st);
	return rc;
}
