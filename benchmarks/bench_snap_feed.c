/* bench_snap_feed.c: the consumer's cost (feed.c: MoldUDP64 -> decode -> books or Book
 * Snapshot table, hop timing on) per message for a generated delta stream and the same stream
 * converted to hftcap Book Snapshots 'Z', in memory, no network, no Python. Build it against a
 * chosen feed.c to compare consumer versions on the delta path:
 *   cc -std=gnu11 -O3 -D_GNU_SOURCE -Ihftcap/_core -Ixdp benchmarks/bench_snap_feed.c \
 *      hftcap/_core/{feed,snap,book,itch,mold,hist,gen,join,spin}.c -lm -o /tmp/bench_snap_feed
 *   /tmp/bench_snap_feed [messages=2000000] [stocks=16] [k=4] [levels=5] [runs=7]
 * Prints the median over runs (alternating delta and snapshot) of wall time per message
 * (CLOCK_MONOTONIC around the whole packet loop, fresh books each run). Never gates CI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "feed.h"
#include "book.h"
#include "snap.h"
#include "gen.h"
#include "hc_time.h"

struct pkts { uint8_t *buf; size_t *off; uint32_t *len; size_t n; uint64_t msgs; };

static void packetize(const uint8_t *s, size_t len, uint32_t k, struct pkts *p)
{
	p->buf = malloc(len + (len / 4 + 1) * 20);
	p->off = malloc((len / 4 + 1) * sizeof(size_t));
	p->len = malloc((len / 4 + 1) * sizeof(uint32_t));
	p->n = 0;
	p->msgs = 0;
	size_t i = 0, o = 0;
	uint64_t seq = 1;
	while (i + 2 <= len) {
		size_t start = o;
		uint32_t cnt = 0;
		o += 20;
		while (cnt < k && i + 2 <= len) {
			uint32_t m = (uint32_t)(s[i] << 8 | s[i + 1]);
			memcpy(p->buf + o, s + i, 2 + m);
			o += 2 + m;
			i += 2 + m;
			cnt++;
		}
		memcpy(p->buf + start, "BENCHSNAP0", 10);
		for (int b = 0; b < 8; b++)
			p->buf[start + 10 + b] = (uint8_t)(seq >> (56 - 8 * b));
		p->buf[start + 18] = (uint8_t)(cnt >> 8);
		p->buf[start + 19] = (uint8_t)cnt;
		seq += cnt;
		p->msgs += cnt;
		p->off[p->n] = start;
		p->len[p->n++] = (uint32_t)(o - start);
	}
}

static double run(const struct pkts *p)
{
	struct hc_consumer *c = malloc(sizeof(*c));
	hc_consumer_init(c, 1, 0);
	hc_books_new(&c->books, 1 << 20);
	hc_snap_table_new(&c->snaps);
	c->timing = 1;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (size_t i = 0; i < p->n; i++) {
		struct hc_pkt_times t = { .deq_tai_ns = hc_now_tai_ns() };
		hc_consumer_packet(c, 0, p->buf + p->off[i], p->len[i], &t);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (c->mold[0].st.messages != p->msgs)
		fprintf(stderr, "delivered %llu of %llu\n", (unsigned long long)c->mold[0].st.messages,
			(unsigned long long)p->msgs);
	hc_books_free(c->books);
	hc_snap_table_free(c->snaps);
	free(c);
	return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)p->msgs;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
	uint32_t stocks = argc > 2 ? (uint32_t)atoi(argv[2]) : 16, k = argc > 3 ? (uint32_t)atoi(argv[3]) : 4;
	uint32_t levels = argc > 4 ? (uint32_t)atoi(argv[4]) : 5;
	int runs = argc > 5 ? atoi(argv[5]) : 7;
	if (runs < 1 || runs > 64)
		return 2;
	size_t cap = hc_gen_max_bytes(stocks, n), len;
	uint8_t *g = malloc(cap);
	if (hc_gen_fill(7, stocks, n, g, cap, &len))
		return 1;
	int64_t zl = hc_snap_convert_size(g, len, levels);
	if (zl < 0)
		return 1;
	uint8_t *z = malloc((size_t)zl);
	struct hc_snap_conv_stats st;
	if (hc_snap_convert(g, len, levels, z, (size_t)zl, &st) != zl)
		return 1;
	struct pkts pd, pz;
	packetize(g, len, k, &pd);
	packetize(z, (size_t)zl, k, &pz);
	double d[64], s[64];
	for (int r = 0; r < runs; r++) {
		d[r] = run(&pd);
		s[r] = run(&pz);
	}
	qsort(d, runs, sizeof(double), cmp);
	qsort(s, runs, sizeof(double), cmp);
	printf("{\"messages\": %llu, \"stocks\": %u, \"k\": %u, \"levels\": %u, \"runs\": %d, "
	       "\"delta_bytes\": %zu, \"snapshot_bytes\": %lld, \"delta_packets\": %zu, \"snapshot_packets\": %zu, "
	       "\"delta_ns_per_msg_median\": %.2f, \"delta_ns_per_msg_min\": %.2f, "
	       "\"snapshot_ns_per_msg_median\": %.2f, \"snapshot_ns_per_msg_min\": %.2f, "
	       "\"clock\": \"CLOCK_MONOTONIC wall time around the packet loop\"}\n",
	       (unsigned long long)n, stocks, k, levels, runs, len, (long long)zl, pd.n, pz.n,
	       d[runs / 2], d[0], s[runs / 2], s[0]);
	return 0;
}
