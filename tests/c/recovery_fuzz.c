/* recovery_fuzz.c: gap recovery (recovery.c, lab mode: requests recorded, no socket) under
 * ASan/UBSan. Live packets with random loss, duplicates, reordering, lying counts, truncation
 * and flipped bytes; every request answered by a server model from the stream, some answers
 * mutated (cut, lying count, wrong session, unknown source, trailing bytes, sent twice, never).
 * Every datagram is an exact-size heap copy, so ASan sees any read past it. At the end, with
 * the clock run out: nothing missing, missing = late + recovered + lost exactly, and the books
 * consistent. Prints "ok ..." and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "book.h"
#include "feed.h"
#include "gen.h"
#include "recovery.h"

static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

static void put_hdr(uint8_t *p, const char *sess, uint64_t seq, uint32_t count)
{
	memcpy(p, sess, 10);
	for (int i = 0; i < 8; i++)
		p[10 + i] = (uint8_t)(seq >> (56 - 8 * i));
	p[18] = (uint8_t)(count >> 8);
	p[19] = (uint8_t)count;
}

/* pkt = a packet of the stream's messages [first, first + *count), the count cut at its last
 * (total; offs[seq]: message seq's offset in g); returns the packet's length. */
static size_t put_msgs(uint8_t *pkt, const uint8_t *g, const uint64_t *offs, uint32_t total,
		       uint64_t first, uint32_t *count)
{
	if (first + *count - 1 > total)
		*count = (uint32_t)(total - first + 1);
	size_t body = offs[first + *count] - offs[first];
	put_hdr(pkt, "FUZZSESS01", first, *count);
	memcpy(pkt + 20, g + offs[first], body);
	return 20 + body;
}

static void deliver_live(struct hc_consumer *c, const uint8_t *p, size_t n, uint64_t now)
{
	uint8_t *h = malloc(n ? n : 1);
	memcpy(h, p, n);
	struct hc_pkt_times t = { .deq_tai_ns = now };
	hc_consumer_packet(c, 0, h, (uint32_t)n, &t);
	free(h);
}

static void deliver_reply(struct hc_recov *r, struct hc_consumer *c, const uint8_t *p, size_t n,
			  uint32_t ip, uint16_t port, uint64_t now)
{
	uint8_t *h = malloc(n ? n : 1);
	memcpy(h, p, n);
	hc_recov_reply(r, c, h, (uint32_t)n, ip, port, now);
	free(h);
}

int main(void)
{
	const uint32_t nmsg = 60000;
	size_t cap = hc_gen_max_bytes(6, nmsg), len;
	uint8_t *g = malloc(cap);
	uint64_t *offs = malloc(sizeof(uint64_t) * (nmsg + 2));
	if (!g || !offs || hc_gen_fill(5, 6, nmsg, g, cap, &len))
		return 1;
	uint32_t total = 0;
	for (size_t o = 0; o + 2 <= len; total++) { /* offs[seq] = offset of message seq */
		offs[total + 1] = o;
		o += 2 + ((uint32_t)g[o] << 8 | g[o + 1]);
	}
	offs[total + 1] = len;

	struct hc_recov_cfg cfg = { .nservers = 1, .reorder_buffer = 1024, .gap_timeout_ns = 1000000,
				    .request_timeout_ns = 5000000, .request_max = 64,
				    .max_outstanding = 4, .request_retries = 2, .lab = 1 };
	const uint32_t ip = htonl(0x0a000001);
	const uint16_t port = htons(26401);
	cfg.server_ip_be[0] = ip;
	cfg.server_port_be[0] = port;
	struct hc_consumer *c = calloc(1, sizeof(*c));
	hc_consumer_init(c, 1, 0);
	if (hc_books_new(&c->books, 4096) || hc_recov_new(&c->recov, &cfg, 1))
		return 1;
	struct hc_recov *r = c->recov;

	static uint8_t pkt[2048], held[2048];
	static uint32_t srv[4096];
	static uint8_t reqs[4096][20];
	size_t held_len = 0;
	uint32_t answered = 0;
	uint64_t now = 1000000, seq = 1;
	while (seq <= total) {
		uint32_t k = 1 + rnd() % 12;
		size_t plen = put_msgs(pkt, g, offs, total, seq, &k);
		int what = (int)(rnd() % 32);
		if (what == 0)
			pkt[19] += 1 + rnd() % 50; /* a count that lies */
		else if (what == 1)
			plen = rnd() % plen; /* truncated anywhere */
		now += rnd() % 50000;
		if (seq == 1 || what > 3) {
			if (what == 4 && !held_len) { /* reordered: sent after the next one */
				memcpy(held, pkt, plen);
				held_len = plen;
			} else {
				deliver_live(c, pkt, plen, now);
				if (what == 5)
					deliver_live(c, pkt, plen, now); /* duplicated */
				if (held_len && what != 4) {
					deliver_live(c, held, held_len, now);
					held_len = 0;
				}
			}
		} /* what 2, 3: lost */
		seq += k;
		/* The server: answer each new request, sometimes badly. */
		uint32_t n = hc_recov_sent(r, srv, reqs, 4096);
		for (; answered < n; answered++) {
			uint64_t first = 0;
			for (int i = 0; i < 8; i++)
				first = first << 8 | reqs[answered][10 + i];
			uint32_t want = (uint32_t)reqs[answered][18] << 8 | reqs[answered][19];
			uint32_t m = want < 20 ? want : 20; /* one datagram's worth */
			if (first < 1 || first > total || want == 0)
				continue;
			size_t rl = put_msgs(pkt, g, offs, total, first, &m);
			int bad = (int)(rnd() % 16);
			if (bad == 0)
				continue; /* never answered */
			if (bad == 1)
				rl = rnd() % rl;
			else if (bad == 2)
				pkt[19] += 1;
			else if (bad == 3)
				memcpy(pkt, "OTHERSESS0", 10);
			else if (bad == 4)
				pkt[rl++] = 0;
			deliver_reply(r, c, pkt, rl, bad == 5 ? ip + 1 : ip, port, now + 200000);
			if (bad == 6)
				deliver_reply(r, c, pkt, rl, ip, port, now + 300000);
		}
		hc_recov_tick(r, c, now);
	}
	for (int i = 0; i < 100000 && hc_recov_active(r); i++) { /* run the clock out */
		now += 1000000;
		hc_recov_tick(r, c, now);
	}
	const struct hc_recov_stats *st = hc_recov_stats(r, 0);
	if (hc_recov_active(r)) {
		printf("still missing at the end\n");
		return 1;
	}
	if (st->messages_missing != st->messages_late + st->messages_recovered + st->messages_lost) {
		printf("accounting: missing %llu != late %llu + recovered %llu + lost %llu\n",
		       (unsigned long long)st->messages_missing, (unsigned long long)st->messages_late,
		       (unsigned long long)st->messages_recovered, (unsigned long long)st->messages_lost);
		return 1;
	}
	int chk = hc_books_check(c->books);
	if (chk && chk != -1000) {
		printf("books inconsistent: %d\n", chk);
		return 1;
	}
	printf("ok missing=%llu late=%llu recovered=%llu lost=%llu requests=%llu malformed=%llu\n",
	       (unsigned long long)st->messages_missing, (unsigned long long)st->messages_late,
	       (unsigned long long)st->messages_recovered, (unsigned long long)st->messages_lost,
	       (unsigned long long)st->requests_sent,
	       (unsigned long long)hc_recov_stats(r, 1)->drop_malformed);
	hc_recov_free(r);
	hc_books_free(c->books);
	free(c);
	free(offs);
	free(g);
	return 0;
}
