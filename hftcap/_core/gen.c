/* gen.c: deterministic ITCH stream generator (see gen.h). */
#include <errno.h>
#include <math.h>
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

static struct rng rng_seed(uint64_t seed) /* splitmix64 seeds the xorshift state */
{
	uint64_t z = seed + 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return (struct rng){ (z ^ (z >> 31)) | 1 };
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

/* Frame + common header at *p (advanced past the message), stamped ts; returns the message start. */
static inline uint8_t *frame(uint8_t **p, uint64_t ts, char type, uint16_t len, uint16_t locate)
{
	uint8_t *m = *p + 2;
	put16(*p, len);
	*p += 2 + len;
	m[0] = (uint8_t)type;
	put16(m + 1, locate);
	put16(m + 3, 0);
	put16(m + 5, (uint16_t)(ts >> 32));
	put32(m + 7, (uint32_t)ts);
	return m;
}

static inline uint8_t *hdr(struct gen *g, char type, uint16_t len, uint16_t locate)
{
	g->ts += 1 + rnd_below(&g->r, 2000);
	return frame(&g->p, g->ts, type, len, locate);
}

static void sysevent(struct gen *g, char code)
{
	uint8_t *m = hdr(g, 'S', 12, 0);
	m[11] = (uint8_t)code;
}

/* The bodies (after the common header) of stock i's directory and trading-action records. */
static void stock_directory(uint8_t *m, const char sym[8], uint32_t i)
{
	memcpy(m + 11, sym, 8);
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

static void trading_action(uint8_t *m, const char sym[8])
{
	memcpy(m + 11, sym, 8);
	m[19] = 'T';
	m[20] = ' ';
	memcpy(m + 21, "    ", 4);
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

/* A ladder of `w` ticks: live orders per tick and side, best_bid 0 and best_ask w when none. */
static inline void ladder_add(uint16_t *cnt[2], uint32_t *best_bid, uint32_t *best_ask, uint8_t side,
			      uint32_t tick)
{
	cnt[side][tick]++;
	if (side == 0 && tick > *best_bid)
		*best_bid = tick;
	if (side == 1 && tick < *best_ask)
		*best_ask = tick;
}

static inline void ladder_del(uint16_t *cnt[2], uint32_t *best_bid, uint32_t *best_ask, uint32_t w,
			      uint8_t side, uint32_t tick)
{
	if (--cnt[side][tick])
		return;
	if (side == 0 && tick == *best_bid)
		while (*best_bid > 0 && !cnt[0][*best_bid])
			(*best_bid)--;
	if (side == 1 && tick == *best_ask)
		while (*best_ask < w && !cnt[1][*best_ask])
			(*best_ask)++;
}

static void book_add(struct gstock *s, uint8_t side, uint32_t tick)
{
	ladder_add(s->cnt, &s->best_bid, &s->best_ask, side, tick);
}

static void book_del(struct gstock *s, uint8_t side, uint32_t tick)
{
	ladder_del(s->cnt, &s->best_bid, &s->best_ask, W, side, tick);
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

static uint32_t pick_shares(struct rng *r)
{
	uint32_t u = rnd_below(r, 16);
	if (u < 12)
		return 100 * (1 + rnd_below(r, 10));
	if (u < 15)
		return 1 + rnd_below(r, 99);
	return 100 * (10 + rnd_below(r, 200));
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
	struct gorder o = { .ref = g->next_ref, .tick = tick, .shares = pick_shares(&g->r), .side = side };
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
			put32(m + 20, pick_shares(&g->r));
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
		struct gorder n = { .ref = g->next_ref++, .tick = tick, .shares = pick_shares(&g->r), .side = side };
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
	g.r = rng_seed(seed);
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
	for (uint32_t i = 0; i < n_stocks; i++)
		stock_directory(hdr(&g, 'R', 39, (uint16_t)(i + 1)), g.st[i].sym, i);
	for (uint32_t i = 0; i < n_stocks; i++)
		trading_action(hdr(&g, 'H', 25, (uint16_t)(i + 1)), g.st[i].sym);
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

/* ---- the "day" profile (see gen.h) ---- */
#define DW 4096u               /* ticks per stock ladder */
#define D_BUILD_MAX 1800000ull /* long-lived orders rested before the open */
#define D_GATEWAYS 2
#define D_BLOCK 1024u
#define D_DEEP_MAX 1900u       /* deepest resting order, ticks from the inside */

struct dorder { uint64_t ref; uint32_t tick, shares; uint8_t side; };

struct dpool { struct dorder *o; uint32_t n, cap; };

struct dstock {
	char sym[8];
	uint32_t base;                 /* price of tick 0, in ticks */
	uint32_t best_bid, best_ask;   /* best_bid 0: none; best_ask DW: none */
	struct dpool sh, lg;           /* short-lived (newest last) and long-lived orders */
	uint16_t *cnt[2];
};

struct dgen {
	struct rng r;
	uint8_t *p;
	uint64_t ts, ts_step, match, next_block;
	uint64_t gw_ref[D_GATEWAYS], gw_end[D_GATEWAYS];
	uint64_t long_live, long_target;
	struct dstock *st;
	uint32_t ns;
	uint32_t *alias_p, *alias_i;   /* Vose alias table of the Zipf weights */
};

static inline uint8_t *dhdr(struct dgen *g, char type, uint16_t len, uint16_t locate)
{
	g->ts += 1 + rnd_below(&g->r, (uint32_t)(2 * g->ts_step));
	return frame(&g->p, g->ts, type, len, locate);
}

static void dsysevent(struct dgen *g, char code)
{
	uint8_t *m = dhdr(g, 'S', 12, 0);
	m[11] = (uint8_t)code;
}

/* Next reference: a random gateway numbers its own block with strides 1-3 (mean 2.2). */
static uint64_t dref(struct dgen *g)
{
	uint32_t k = rnd_below(&g->r, D_GATEWAYS);
	if (g->gw_ref[k] >= g->gw_end[k]) {
		g->gw_ref[k] = g->next_block;
		g->gw_end[k] = g->next_block + D_BLOCK;
		g->next_block += D_BLOCK;
	}
	uint64_t ref = g->gw_ref[k];
	static const uint8_t stride[5] = { 1, 2, 2, 3, 3 };
	g->gw_ref[k] += stride[rnd_below(&g->r, 5)];
	return ref;
}

static uint32_t dstock_pick(struct dgen *g)
{
	uint32_t i = rnd_below(&g->r, g->ns);
	return (uint32_t)(rnd(&g->r) >> 32) < g->alias_p[i] ? i : g->alias_i[i];
}

/* Depth from the inside, in ticks, of a new short-lived order: median 1, p90 ~14. */
static uint32_t depth_short(struct dgen *g)
{
	uint32_t u = rnd_below(&g->r, 100);
	if (u < 38)
		return 0;
	if (u < 56)
		return 1;
	if (u < 70)
		return 2 + rnd_below(&g->r, 3);
	if (u < 82)
		return 5 + rnd_below(&g->r, 10);
	if (u < 93)
		return 15 + rnd_below(&g->r, 60);
	if (u < 99)
		return 75 + rnd_below(&g->r, 625);
	return 700 + rnd_below(&g->r, 1200);
}

/* Depth of a long-lived order: log-uniform in [1, D_DEEP_MAX] by octaves (integers only, so
 * the stream does not depend on libm). */
static uint32_t depth_long(struct dgen *g)
{
	uint32_t e = rnd_below(&g->r, 11), d = (1u << e) + rnd_below(&g->r, 1u << e);
	return d < D_DEEP_MAX ? d : D_DEEP_MAX;
}

/* A tick on `side` at depth d from that side's inside, never crossing or locking; 0: none. */
static uint32_t dtick(const struct dstock *s, uint8_t side, uint32_t d)
{
	if (side == 0) {
		uint32_t top = s->best_bid ? s->best_bid : (s->best_ask < DW ? s->best_ask - 1 : DW / 2);
		if (!d && s->best_bid && s->best_ask < DW && s->best_ask - s->best_bid > 1)
			top = s->best_bid + 1; /* improve the inside when the spread allows */
		uint32_t t = top > d ? top - d : 1;
		if (t >= s->best_ask)
			t = s->best_ask - 1;
		return t >= 1 ? t : 0;
	}
	uint32_t top = s->best_ask < DW ? s->best_ask : (s->best_bid ? s->best_bid + 1 : DW / 2);
	if (!d && s->best_bid && s->best_ask < DW && s->best_ask - s->best_bid > 1)
		top = s->best_ask - 1;
	uint32_t t = top + d < DW - 1 ? top + d : DW - 2;
	if (t <= s->best_bid)
		t = s->best_bid + 1;
	return t > s->best_bid && t < DW - 1 ? t : 0;
}

static void dbook_add(struct dstock *s, uint8_t side, uint32_t tick)
{
	ladder_add(s->cnt, &s->best_bid, &s->best_ask, side, tick);
}

static void dbook_del(struct dstock *s, uint8_t side, uint32_t tick)
{
	ladder_del(s->cnt, &s->best_bid, &s->best_ask, DW, side, tick);
}

static int dpush(struct dpool *q, struct dorder o)
{
	if (q->n == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 64;
		struct dorder *p = realloc(q->o, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		q->o = p;
		q->cap = cap;
	}
	q->o[q->n++] = o;
	return 0;
}

/* Rest a new order of s (ref from the gateways, or `ref` when nonzero) on `side` at depth d;
 * writes the A/F unless `u_old` is nonzero (then a U replacing u_old). 1: no room. */
static int dadd(struct dgen *g, struct dstock *s, uint16_t loc, uint8_t side, int lng, uint64_t u_old)
{
	uint32_t tick = dtick(s, side, lng ? depth_long(g) : depth_short(g));
	if (!tick || s->cnt[side][tick] == UINT16_MAX)
		return 1;
	struct dorder o = { .ref = dref(g), .tick = tick, .shares = pick_shares(&g->r), .side = side };
	if (u_old) {
		uint8_t *m = dhdr(g, 'U', 35, loc);
		put64(m + 11, u_old);
		put64(m + 19, o.ref);
		put32(m + 27, o.shares);
		put32(m + 31, (s->base + tick) * TICK_E4);
	} else {
		int f = rnd_below(&g->r, 10000) < 124; /* F: 0.55 of 44.15 % */
		uint8_t *m = dhdr(g, f ? 'F' : 'A', f ? 40 : 36, loc);
		put64(m + 11, o.ref);
		m[19] = side ? 'S' : 'B';
		put32(m + 20, o.shares);
		memcpy(m + 24, s->sym, 8);
		put32(m + 32, (s->base + tick) * TICK_E4);
		if (f)
			memcpy(m + 36, "GSCO", 4);
	}
	dbook_add(s, side, tick);
	if (lng)
		g->long_live++;
	return dpush(lng ? &s->lg : &s->sh, o) < 0 ? -ENOMEM : 0;
}

/* An order for D/U/E/X/C: usually one of the newest short-lived ones (so most orders die
 * young), sometimes a random short-lived one, and a long-lived one at the rate that keeps
 * their number near its target. Returns the pool and index, or NULL. */
static struct dpool *dpick(struct dgen *g, struct dstock *s, uint32_t *i)
{
	uint32_t lr = g->long_live > g->long_target ? 48 : 64;
	int lng = s->lg.n && (!s->sh.n || rnd_below(&g->r, lr) == 0);
	struct dpool *q = lng ? &s->lg : &s->sh;
	if (!q->n)
		return NULL;
	if (lng || rnd_below(&g->r, 16) == 0) {
		*i = rnd_below(&g->r, q->n);
	} else {
		uint32_t k = (uint32_t)__builtin_ctzll(rnd(&g->r) | (1ull << 40));
		*i = k < q->n ? q->n - 1 - k : 0;
	}
	return q;
}

static void dremove(struct dgen *g, struct dstock *s, struct dpool *q, uint32_t i)
{
	dbook_del(s, q->o[i].side, q->o[i].tick);
	if (q == &s->lg)
		g->long_live--;
	q->o[i] = q->o[--q->n];
}

static int dstep(struct dgen *g)
{
	uint32_t si = dstock_pick(g);
	struct dstock *s = &g->st[si];
	uint16_t loc = (uint16_t)(si + 1);
	uint32_t r = rnd_below(&g->r, 10000);
	if (r < 4415 || (r < 9801 && !s->sh.n && !s->lg.n)) { /* A, F */
		int lng = rnd_below(&g->r, 50) == 0;
		uint8_t side = (uint8_t)rnd_below(&g->r, 2);
		int rc = dadd(g, s, loc, side, lng, 0);
		if (rc == 1)
			rc = dadd(g, s, loc, side ^ 1, lng, 0);
		if (rc != 1)
			return rc;
		r = 9950; /* no room on either side: print a trade */
	}
	if (r >= 9801) {
		uint8_t *m;
		uint32_t mid = s->best_bid ? s->best_bid : DW / 2;
		if (r < 9951) { /* I */
			m = dhdr(g, 'I', 50, loc);
			put64(m + 11, 100ull * rnd_below(&g->r, 5000));
			put64(m + 19, 100ull * rnd_below(&g->r, 1000));
			m[27] = "BSNO"[rnd_below(&g->r, 4)];
			memcpy(m + 28, s->sym, 8);
			put32(m + 36, 0);
			put32(m + 40, 0);
			put32(m + 44, (s->base + mid) * TICK_E4);
			m[48] = 'C';
			m[49] = ' ';
		} else if (r < 9996) { /* P */
			m = dhdr(g, 'P', 44, loc);
			put64(m + 11, 0);
			m[19] = 'B';
			put32(m + 20, pick_shares(&g->r));
			memcpy(m + 24, s->sym, 8);
			put32(m + 32, (s->base + mid) * TICK_E4);
			put64(m + 36, ++g->match);
		} else if (r < 9997) { /* Q */
			m = dhdr(g, 'Q', 40, loc);
			put64(m + 11, 1000ull * (1 + rnd_below(&g->r, 5000)));
			memcpy(m + 19, s->sym, 8);
			put32(m + 27, (s->base + mid) * TICK_E4);
			put64(m + 31, ++g->match);
			m[39] = 'C';
		} else if (r < 9998) { /* Y */
			m = dhdr(g, 'Y', 20, loc);
			memcpy(m + 11, s->sym, 8);
			m[19] = rnd_below(&g->r, 2) ? '0' : '1';
		} else { /* L */
			m = dhdr(g, 'L', 26, loc);
			memcpy(m + 11, "NSDQ", 4);
			memcpy(m + 15, s->sym, 8);
			m[23] = 'N';
			m[24] = 'N';
			m[25] = 'A';
		}
		return 0;
	}
	uint32_t i;
	struct dpool *q = dpick(g, s, &i);
	struct dorder *o = &q->o[i];
	int lng = q == &s->lg;
	if (r < 8675 || (r >= 9693 && r < 9797 && o->shares < 2)) { /* D (and X of 1 share) */
		uint8_t *m = dhdr(g, 'D', 19, loc);
		put64(m + 11, o->ref);
		dremove(g, s, q, i);
	} else if (r < 9480) { /* U */
		uint64_t old = o->ref;
		uint8_t side = o->side;
		dremove(g, s, q, i);
		int rc = dadd(g, s, loc, side, lng, old);
		if (rc == 1) {
			uint8_t *m = dhdr(g, 'D', 19, loc);
			put64(m + 11, old);
			return 0;
		}
		return rc;
	} else if (r >= 9693 && r < 9797) { /* X */
		uint32_t c = 1 + rnd_below(&g->r, o->shares - 1);
		uint8_t *m = dhdr(g, 'X', 23, loc);
		put64(m + 11, o->ref);
		put32(m + 19, c);
		o->shares -= c;
	} else { /* E, C */
		int c = r >= 9797;
		uint32_t ex = o->shares;
		if (ex > 1 && rnd_below(&g->r, 2))
			ex = 1 + rnd_below(&g->r, ex - 1);
		uint8_t *m = dhdr(g, c ? 'C' : 'E', c ? 36 : 31, loc);
		put64(m + 11, o->ref);
		put32(m + 19, ex);
		put64(m + 23, ++g->match);
		if (c) {
			m[31] = 'Y';
			put32(m + 32, (s->base + o->tick) * TICK_E4);
		}
		if (ex == o->shares)
			dremove(g, s, q, i);
		else
			o->shares -= ex;
	}
	return 0;
}

/* Vose's alias method over weights (rank + 1)^-0.7: O(1) draws. */
static int dalias(struct dgen *g)
{
	uint32_t n = g->ns;
	double *w = malloc(n * sizeof(*w)), sum = 0;
	uint32_t *small = malloc(n * sizeof(*small)), *large = malloc(n * sizeof(*large));
	g->alias_p = malloc(n * sizeof(*g->alias_p));
	g->alias_i = malloc(n * sizeof(*g->alias_i));
	int rc = -ENOMEM;
	if (!w || !small || !large || !g->alias_p || !g->alias_i)
		goto out;
	for (uint32_t i = 0; i < n; i++)
		sum += w[i] = pow((double)(i + 1), -0.7);
	uint32_t ns = 0, nl = 0;
	for (uint32_t i = 0; i < n; i++) {
		w[i] = w[i] * n / sum;
		if (w[i] < 1.0)
			small[ns++] = i;
		else
			large[nl++] = i;
	}
	while (ns && nl) {
		uint32_t a = small[--ns], l = large[nl - 1];
		g->alias_p[a] = (uint32_t)(w[a] * 4294967295.0);
		g->alias_i[a] = l;
		w[l] -= 1.0 - w[a];
		if (w[l] < 1.0) {
			nl--;
			small[ns++] = l;
		}
	}
	while (nl)
		g->alias_p[large[--nl]] = UINT32_MAX, g->alias_i[large[nl]] = large[nl];
	while (ns)
		g->alias_p[small[--ns]] = UINT32_MAX, g->alias_i[small[ns]] = small[ns];
	rc = 0;
out:
	free(w);
	free(small);
	free(large);
	return rc;
}

/* Mean timestamp step (dhdr draws 1 + [0, 2 step)) that spreads n messages over span_ns. */
static uint64_t dstep_ns(uint64_t span_ns, uint64_t n)
{
	uint64_t v = n ? span_ns / n : 1;
	return v < 1 ? 1 : v > (1u << 30) ? (1u << 30) : v;
}

uint64_t hc_gen_day_min_messages(uint32_t n_stocks) { return 3ull * n_stocks + 16; }

size_t hc_gen_day_max_bytes(uint32_t n_stocks, uint64_t n_messages)
{
	return (size_t)n_messages * 52 + (size_t)n_stocks * 70 + 64;
}

int hc_gen_fill_day(uint64_t seed, uint32_t n_stocks, uint64_t n_messages, uint8_t *buf, size_t cap,
		    size_t *len)
{
	if (!n_stocks || n_stocks > HC_GEN_DAY_MAX_STOCKS ||
	    n_messages < hc_gen_day_min_messages(n_stocks) || cap < hc_gen_day_max_bytes(n_stocks, n_messages))
		return -EINVAL;
	uint64_t build = n_messages / 28 < D_BUILD_MAX ? n_messages / 28 : D_BUILD_MAX;
	uint64_t flow = n_messages - 2ull * n_stocks - 6 - build;
	struct dgen g = { .p = buf, .ts = 4ull * 3600 * 1000000000ull, .next_block = 1,
			  .ns = n_stocks, .long_target = build };
	g.r = rng_seed(seed);
	int rc = -ENOMEM;
	g.st = calloc(n_stocks, sizeof(*g.st));
	if (!g.st || dalias(&g) < 0)
		goto out;
	for (uint32_t i = 0; i < n_stocks; i++) {
		struct dstock *s = &g.st[i];
		ticker(i, s->sym);
		s->base = rnd_below(&g.r, 20000);
		s->best_ask = DW;
		s->cnt[0] = calloc(DW, sizeof(uint16_t));
		s->cnt[1] = calloc(DW, sizeof(uint16_t));
		if (!s->cnt[0] || !s->cnt[1])
			goto out;
	}
	g.ts_step = 1000;
	dsysevent(&g, 'O');
	for (uint32_t i = 0; i < n_stocks; i++)
		stock_directory(dhdr(&g, 'R', 39, (uint16_t)(i + 1)), g.st[i].sym, i);
	for (uint32_t i = 0; i < n_stocks; i++)
		trading_action(dhdr(&g, 'H', 25, (uint16_t)(i + 1)), g.st[i].sym);
	dsysevent(&g, 'S');
	/* pre-open: 4:00 + ~0.1 s of directory, then up to 9:30 resting the long-lived orders */
	g.ts_step = dstep_ns((34200ull - 14400ull) * 1000000000ull, build);
	uint64_t built = 0;
	for (uint64_t k = 0; k < 4 * build && built < build; k++) { /* a full tick writes nothing */
		uint32_t si = dstock_pick(&g);
		int ra = dadd(&g, &g.st[si], (uint16_t)(si + 1), (uint8_t)rnd_below(&g.r, 2), 1, 0);
		if (ra < 0)
			goto out;
		built += ra == 0;
	}
	flow += build - built;
	if (g.ts < 34200ull * 1000000000ull)
		g.ts = 34200ull * 1000000000ull;
	dsysevent(&g, 'Q');
	g.ts_step = dstep_ns((57600ull - 34200ull) * 1000000000ull, flow);
	for (uint64_t k = 0; k < flow; k++)
		if (dstep(&g) < 0)
			goto out;
	dsysevent(&g, 'M');
	dsysevent(&g, 'E');
	dsysevent(&g, 'C');
	*len = (size_t)(g.p - buf);
	rc = 0;
out:
	for (uint32_t i = 0; g.st && i < n_stocks; i++) {
		free(g.st[i].sh.o);
		free(g.st[i].lg.o);
		free(g.st[i].cnt[0]);
		free(g.st[i].cnt[1]);
	}
	free(g.st);
	free(g.alias_p);
	free(g.alias_i);
	return rc;
}
