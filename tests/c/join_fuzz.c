/* join_fuzz.c: the late-join path alone under ASan/UBSan (no Python, no sockets).
 * 1. Round trips: a generated stream; the exchange's spin (spin.c) of a random prefix; a live
 *    feed buffered in the join ring from a random point before the prefix's end (join.c); the
 *    spin fed to the SoupBinTCP loader in random chunk sizes; hand-over, splice, the rest of the
 *    feed live. The books must equal a full replay, level by level, and pass hc_books_check.
 *    A ring too small, or a join starting after N, must end `behind`, never wrong books.
 * 2. Hostile framing: the same spin with random bytes mutated (lengths, types, G) in random
 *    chunks: every call returns MORE, END or CLOSE, nothing is read out of bounds.
 * 3. Holes and restores: a join whose ring starts after N asks its hook for the hole; the
 *    hole's messages come (some twice or out of order, ignored), or stop short (BEHIND); a
 *    LIVE join re-armed by a loss (hc_consumer_lost) restores from a newer spin: books equal,
 *    no longer suspect.
 * Prints "ok <round trips> <behind> <closes> <holes> <restores>" and exits 0. Build: see tests/unit/test_core_asan.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "book.h"
#include "gen.h"
#include "join.h"
#include "feed.h"
#include "spin.h"

static uint64_t s = 0x2545F4914F6CDD1Dull;
static uint64_t r(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* Offsets of every record of a NASDAQ-layout stream. */
static size_t *index_stream(const uint8_t *p, size_t len, uint64_t *n)
{
	size_t *at = malloc(sizeof(size_t) * (len / 3 + 1)), off = 0;
	const uint8_t *m;
	uint32_t ml;
	*n = 0;
	while (at[*n] = off, hc_nasdaq_next(p, len, &off, &m, &ml))
		(*n)++;
	return at;
}

/* One MoldUDP64 packet of records [a, e) (0-based) with sequence a + 1 into the consumer
 * (feed.c), which buffers it in its join or applies it. */
static void send_packet(struct hc_consumer *c, const uint8_t *g, const size_t *at, uint64_t a,
			uint64_t e, int *live_out)
{
	size_t body = at[e] - at[a];
	uint8_t *p = malloc(20 + body);
	memcpy(p, "JOINFUZZ01", 10);
	for (int k = 0; k < 8; k++)
		p[10 + k] = (uint8_t)((a + 1) >> (56 - 8 * k));
	p[18] = (uint8_t)((e - a) >> 8);
	p[19] = (uint8_t)(e - a);
	memcpy(p + 20, g + at[a], body);
	uint64_t before = hc_join_stats(c->join)->buffered;
	struct hc_pkt_times t = { 0 };
	t.deq_tai_ns = 1;
	hc_consumer_packet(c, 0, p, (uint32_t)(20 + body), &t);
	if (hc_join_stats(c->join)->buffered == before)
		*live_out = 1;
	free(p);
}

static struct { int calls; uint64_t first, end; int refuse; } hole;
static int hole_hook(void *ctx, uint64_t first, uint64_t end)
{
	(void)ctx;
	hole.calls++;
	hole.first = first;
	hole.end = end;
	return hole.refuse ? -107 : 0;
}

/* The whole spin of the first k records into the loader at once; returns N. */
static uint64_t load_spin(struct hc_join *j, struct hc_books *b, const uint8_t *g, size_t len,
			  uint64_t k)
{
	uint8_t *spin;
	size_t slen, used;
	struct hc_spin_stats st;
	struct hc_soup_stats ss = { 0 };
	uint64_t next = 0;
	if (hc_spin_build(g, len, k, 1, &spin, &slen, &st))
		FAIL("spin");
	if (hc_join_load_begin(j, b))
		FAIL("load_begin: state %d", hc_join_state(j));
	if (hc_soup_load(j, b, &ss, spin, slen, &used, &next) != HC_SOUP_END || next != k + 1)
		FAIL("spin load");
	free(spin);
	return next;
}

/* spin[0, slen) into the loader in random TCP segments of 1..maxseg bytes, the leftovers kept
 * in buf (room for slen); returns the last result, *left the bytes it did not take. */
static int load_segments(struct hc_join *j, struct hc_books *b, struct hc_soup_stats *ss,
			 const uint8_t *spin, size_t slen, uint8_t *buf, size_t maxseg, size_t *left,
			 uint64_t *next)
{
	size_t off = 0, have = 0, used;
	int res = HC_SOUP_MORE;
	while (res == HC_SOUP_MORE && off < slen) {
		size_t chunk = 1 + r() % maxseg;
		if (chunk > slen - off)
			chunk = slen - off;
		memcpy(buf + have, spin + off, chunk);
		have += chunk;
		off += chunk;
		res = hc_soup_load(j, b, ss, buf, have, &used, next);
		if (used > have)
			FAIL("used past the buffer");
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	*left = have;
	return res;
}

static void same(struct hc_books *x, struct hc_books *y)
{
	static struct hc_level_snap xb[4096], xa[4096], yb[4096], ya[4096];
	uint16_t locs[64];
	int n = hc_books_locates(x, locs, 64);
	for (int i = 0; i < n; i++) {
		uint32_t nxb, nxa, nyb, nya;
		if (hc_books_snapshot(x, locs[i], 4096, xb, &nxb, xa, &nxa) ||
		    hc_books_snapshot(y, locs[i], 4096, yb, &nyb, ya, &nya))
			FAIL("locate %u missing", locs[i]);
		if (nxb != nyb || nxa != nya || memcmp(xb, yb, nxb * sizeof(*xb)) ||
		    memcmp(xa, ya, nxa * sizeof(*xa)))
			FAIL("locate %u differs", locs[i]);
	}
	int c = hc_books_check(y);
	if (c && c != -1000)
		FAIL("check %d", c);
}

int main(void)
{
	size_t cap = hc_gen_max_bytes(4, 30000), len;
	uint8_t *g = malloc(cap);
	if (hc_gen_fill(9, 4, 30000, g, cap, &len))
		return 1;
	uint64_t nmsg;
	size_t *at = index_stream(g, len, &nmsg);
	struct hc_books *full;
	hc_books_new(&full, 1024);
	hc_books_feed_records(full, g, len);
	int trips = 0, behind = 0, closes = 0;
	struct hc_consumer *c = malloc(sizeof(*c));

	for (int round = 0; round < 40; round++) {
		uint64_t k = 100 + r() % (nmsg - 200);             /* prefix in the spin */
		uint64_t start = r() % (k + 50);                   /* first buffered (0-based) */
		uint64_t ringcap = round % 5 == 4 ? 1024 : 65536;  /* sometimes too small */
		uint8_t *spin;
		size_t slen;
		struct hc_spin_stats st;
		if (hc_spin_build(g, len, k, 1, &spin, &slen, &st))
			FAIL("spin");
		struct hc_books *b;
		struct hc_join *j;
		hc_books_new(&b, 1024);
		hc_join_new(&j, ringcap);
		hc_consumer_init(c, 1, 0);
		c->books = b;
		c->join = j;
		c->timing = round & 1; /* buffered messages must never become samples */
		int live = 0;
		uint64_t i = start, stop = k + 20 + r() % 2000;
		if (stop > nmsg)
			stop = nmsg;
		for (; i < stop;) { /* buffered while the spin is on its way */
			uint64_t e = i + 1 + r() % 8;
			if (e > stop)
				e = stop;
			send_packet(c, g, at, i, e, &live);
			i = e;
		}
		if (live)
			FAIL("live before the hand-over");
		struct hc_soup_stats ss = { 0 };
		if (hc_join_load_begin(j, b))
			FAIL("load_begin");
		uint64_t next = 0;
		uint8_t *buf = malloc(slen);
		size_t have;
		int res = load_segments(j, b, &ss, spin, slen, buf, 3000, &have, &next);
		if (res != HC_SOUP_END || next != k + 1 || have)
			FAIL("round %d: load result %d next %llu", round, res, (unsigned long long)next);
		uint64_t samples = c->hists[HC_HOP_DECODE_TO_BOOK].count;
		if (samples)
			FAIL("round %d: %llu samples while buffering", round, (unsigned long long)samples);
		hc_join_hand_over(j, next);
		hc_consumer_idle(c);
		int state = hc_join_state(j);
		if (state == HC_JOIN_BEHIND) {
			if (start <= k && ringcap >= stop - start)
				FAIL("round %d: behind although the ring held N", round);
			behind++;
		} else if (state == HC_JOIN_LIVE) {
			if (start > k)
				FAIL("round %d: live although the ring started after N", round);
			for (; i < nmsg;) {
				uint64_t e = i + 1 + r() % 8;
				if (e > nmsg)
					e = nmsg;
				send_packet(c, g, at, i, e, &live);
				i = e;
			}
			same(full, b);
			trips++;
		} else {
			FAIL("state %d", state);
		}
		/* Hostile: mutate the spin and feed it into the (re-owned or fresh) loader. */
		struct hc_join *h;
		struct hc_books *hb;
		hc_books_new(&hb, 1024);
		hc_join_new(&h, 1024);
		hc_join_load_begin(h, hb);
		for (int q = (int)(1 + r() % 8); q > 0; q--)
			spin[r() % slen] = (uint8_t)r();
		res = load_segments(h, hb, &ss, spin, slen, buf, 5000, &have, &next);
		closes += res == HC_SOUP_CLOSE;
		free(buf);
		free(spin);
		hc_join_free(h);
		hc_books_free(hb);
		hc_join_free(j);
		hc_books_free(b);
	}
	int holes = 0, restores = 0;
	for (int round = 0; round < 30; round++) {
		struct hc_books *b;
		struct hc_join *j;
		hc_books_new(&b, 1024);
		hc_join_new(&j, 65536);
		hc_consumer_init(c, 1, 0);
		c->books = b;
		c->join = j;
		struct hc_join_hooks hk = { .ctx = NULL, .hole = hole_hook };
		hc_join_set_hooks(j, &hk);
		memset(&hole, 0, sizeof(hole));
		hole.refuse = round % 7 == 6;
		int live = 0, full_hole = round % 3 != 2;
		uint64_t k = 500 + r() % 5000, start = k + 1 + r() % 300, i = start;
		uint64_t stop = start + 1 + r() % 500;
		for (; i < stop;) {
			uint64_t e = i + 1 + r() % 8;
			send_packet(c, g, at, i, e > stop ? stop : e, &live);
			i = e > stop ? stop : e;
		}
		uint64_t n = load_spin(j, b, g, len, k);
		hc_join_hand_over(j, n);
		hc_consumer_idle(c);
		if (hole.refuse) {
			if (hc_join_state(j) != HC_JOIN_BEHIND || hole.calls != 1)
				FAIL("round %d: a refused hole must end behind", round);
			goto next_round;
		}
		if (hc_join_state(j) != HC_JOIN_HOLE || hole.first != k + 1 || hole.end != start + 1)
			FAIL("round %d: hole [%llu, %llu) state %d", round, (unsigned long long)hole.first,
			     (unsigned long long)hole.end, hc_join_state(j));
		holes++;
		uint64_t upto = full_hole ? start : k + r() % (start - k); /* 0-based records [k, upto) */
		for (uint64_t q = k; q < upto; q++) {
			const uint8_t *m;
			uint32_t ml;
			size_t off = at[q];
			hc_nasdaq_next(g, len, &off, &m, &ml);
			hc_join_hole_msg(j, b, q + 1, m, ml);
			if (r() % 16 == 0) /* again, and one from further on: both ignored */
				hc_join_hole_msg(j, b, q + 1, m, ml), hc_join_hole_msg(j, b, q + 3, m, ml);
			if (r() % 64 == 0 && i < nmsg) { /* the live feed goes on meanwhile */
				send_packet(c, g, at, i, i + 1, &live);
				i++;
			}
		}
		hc_join_hole_done(j, b, full_hole);
		if (!full_hole) {
			if (hc_join_state(j) != HC_JOIN_BEHIND)
				FAIL("round %d: a short hole must end behind", round);
			goto next_round;
		}
		if (hc_join_state(j) != HC_JOIN_LIVE || live)
			FAIL("round %d: not live after the hole", round);
		/* A loss while LIVE: records [x, y) never come; the join is re-armed at y + 1 */
		uint64_t x = i + r() % 200, y = x + 1 + r() % 20;
		if (y + 600 >= nmsg)
			goto next_round;
		for (; i < x; i++)
			send_packet(c, g, at, i, i + 1, &live);
		hc_books_mark_suspect(b);
		hc_consumer_lost(c, &c->mold[0], y + 1);
		if (hc_join_state(j) != HC_JOIN_BUFFERING)
			FAIL("round %d: not re-armed", round);
		for (i = y; i < y + 300; i++)
			send_packet(c, g, at, i, i + 1, &live);
		hc_join_hand_over(j, load_spin(j, b, g, len, y + r() % 250));
		hc_consumer_idle(c);
		if (hc_join_state(j) != HC_JOIN_LIVE || hc_join_stats(j)->restores != 1)
			FAIL("round %d: not restored (state %d)", round, hc_join_state(j));
		for (; i < nmsg; i += 4)
			send_packet(c, g, at, i, i + 4 > nmsg ? nmsg : i + 4, &live);
		same(full, b);
		struct hc_stock_info si;
		uint16_t loc;
		if (hc_books_locates(b, &loc, 1) < 1 || hc_books_stock_info(b, loc, &si) || si.suspect)
			FAIL("round %d: still suspect after the restore", round);
		restores++;
next_round:
		hc_join_free(j);
		hc_books_free(b);
	}
	uint64_t v;
	const uint8_t bad[][21] = { "G                    ", "G 12 3               ", "Gx                   ",
				    "G99999999999999999999" };
	for (int q = 0; q < 4; q++)
		if (hc_glimpse_end_parse(bad[q], 21, &v) == 0)
			FAIL("bad G %d parsed", q);
	uint8_t gm[21];
	hc_glimpse_end(gm, 1234567);
	if (hc_glimpse_end_parse(gm, 21, &v) || v != 1234567)
		FAIL("G round trip");
	hc_books_free(full);
	free(c);
	free(at);
	free(g);
	if (trips < 10 || behind < 2 || holes < 10 || restores < 5)
		FAIL("too few cases: %d trips, %d behind, %d holes, %d restores", trips, behind, holes,
		     restores);
	printf("ok %d %d %d %d %d\n", trips, behind, closes, holes, restores);
	return 0;
}
