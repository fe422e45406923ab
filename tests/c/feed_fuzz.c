/* feed_fuzz.c: the live consumer (MoldUDP64 -> ITCH -> books -> hop histograms) under
 * ASan/UBSan with hostile packets: generated messages cut into packets with random counts
 * (some lying), random truncation, random byte flips, duplicates, gaps. Checks that every
 * packet is counted, that the books stay consistent, and that nothing reads out of bounds.
 *   cc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Ixdp \
 *      -Ihftcap/_core tests/c/feed_fuzz.c hftcap/_core/{feed,mold,itch,book,files,gen,hist,snap,join,spin}.c \
 *      -lz -o /tmp/feed_fuzz && /tmp/feed_fuzz      # prints "ok ..." and exits 0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "book.h"
#include "feed.h"
#include "gen.h"

static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

int main(void)
{
	size_t cap = hc_gen_max_bytes(6, 100000), len;
	uint8_t *g = malloc(cap);
	if (!g || hc_gen_fill(3, 6, 100000, g, cap, &len))
		return 1;
	struct hc_consumer *c = calloc(1, sizeof(*c));
	hc_consumer_init(c, 2, 0);
	c->timing = 1;
	c->itch_epoch_tai_ns = 1;
	if (hc_books_new(&c->books, 4096))
		return 1;
	uint8_t pkt[2048];
	uint64_t seq = 1, sent = 0;
	size_t off = 0;
	while (off + 2 <= len) {
		/* Up to 12 records from the stream: they are already MoldUDP64 blocks. */
		size_t start = off;
		uint32_t k = 0, want = 1 + rnd() % 12;
		while (k < want && off + 2 <= len) {
			uint32_t n = (uint32_t)g[off] << 8 | g[off + 1];
			if (off + 2 + n > len || off + 2 + n - start > sizeof(pkt) - 20)
				break;
			off += 2 + n;
			k++;
		}
		if (!k)
			break;
		size_t body = off - start;
		memcpy(pkt, "FUZZSESS01", 10);
		uint64_t sq = seq;
		uint32_t count = k;
		int what = (int)(rnd() % 16);
		if (what == 0)
			count += 1 + rnd() % 100; /* a count that lies */
		else if (what == 1)
			sq += 1 + rnd() % 5; /* a gap */
		else if (what == 2)
			sq = seq > 10 ? seq - 10 : 1; /* old or overlapping */
		for (int i = 0; i < 8; i++)
			pkt[10 + i] = (uint8_t)(sq >> (56 - 8 * i));
		pkt[18] = (uint8_t)(count >> 8);
		pkt[19] = (uint8_t)count;
		memcpy(pkt + 20, g + start, body);
		size_t plen = 20 + body;
		if (what == 3)
			plen = rnd() % plen; /* truncated anywhere, even inside the header */
		if (what == 4)
			for (int i = 0; i < 4; i++)
				pkt[20 + rnd() % body] = (uint8_t)rnd(); /* flipped bytes */
		/* An exact-size heap copy, so ASan sees any read past the datagram. */
		uint8_t *h = malloc(plen ? plen : 1);
		memcpy(h, pkt, plen);
		struct hc_pkt_times t = { .deq_tai_ns = 1000, .xdp_tai_ns = 900, .sw_tai_ns = 0, .hw_ns = 0 };
		hc_consumer_packet(c, (uint32_t)(rnd() % 3), h, (uint32_t)plen, &t); /* feed 2 is out of range */
		free(h);
		seq += k;
		sent++;
	}
	int chk = hc_books_check(c->books);
	if (chk && chk != -1000) {
		printf("books inconsistent: %d\n", chk);
		return 1;
	}
	if (c->packets + c->drop_bad_feed != sent) {
		printf("packets %llu + bad feed %llu != sent %llu\n", (unsigned long long)c->packets,
		       (unsigned long long)c->drop_bad_feed, (unsigned long long)sent);
		return 1;
	}
	printf("ok packets=%llu bad_feed=%llu samples=%llu\n", (unsigned long long)c->packets,
	       (unsigned long long)c->drop_bad_feed,
	       (unsigned long long)c->hists[HC_HOP_DEQUEUE_TO_DECODE].count);
	hc_books_free(c->books);
	free(c);
	free(g);
	return 0;
}
