/* bench_live_path.c: the live consumer's own part of a packet, dequeue -> book updated, with no
 * network: the real hc_consumer_packet (feed.c: MoldUDP64 sequencing, the fused decode + apply,
 * the hop stamps and histograms) over MoldUDP64 packets of k messages of the generator's basic
 * stream (8 stocks, the same as `hftcap bench`'s exchange stream shape). Per packet: touch
 * `pollute` KiB of an unrelated 64 MiB buffer (the rest of the machine evicting the books; 0 =
 * hot), copy the packet into a "frame", stamp the dequeue as the receive loop does, run the
 * consumer. The stamp sources alternate in blocks of 1,000 packets (tsc, clock, tsc, ...) and
 * each gets its own p50 / p99 of dequeue_to_decode, decode_to_book and their sum, from the
 * consumer's own stamps (the recorded hops). Each source has a consumer and books of its own,
 * and each is fed every packet (so both books stay the whole stream and are compared at the
 * end); a packet counts for the source whose block it falls in.
 *
 * Build from the repository root (needs the core objects):
 *   cc -std=gnu11 -O3 -D_GNU_SOURCE -Ihftcap/_core -Ixdp benchmarks/bench_live_path.c \
 *      hftcap/_core/{feed,mold,itch,book,hist,snap,join,spin,recovery,gen,tsc}.c -lm -o /tmp/blp
 *   (bash brace expansion)
 *   taskset -c 1 /tmp/blp [packets=200000] [k=4] [pollute_kib=0] [stocks=16]
 * Numbers on a shared or virtual machine are noisy: read p50, and compare in the same run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "book.h"
#include "feed.h"
#include "gen.h"
#include "hc_time.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

struct side {
	const char *name;
	struct hc_consumer *c;
	uint64_t *dd, *db, *sum;
	uint64_t n;
};

static void report(struct side *s)
{
	qsort(s->dd, s->n, 8, cmp_u64);
	qsort(s->db, s->n, 8, cmp_u64);
	qsort(s->sum, s->n, 8, cmp_u64);
	printf("%-5s n=%lu  dequeue_to_decode p50 %lu p99 %lu | decode_to_book p50 %lu p99 %lu | "
	       "dequeue->book p50 %lu p99 %lu ns\n", s->name, s->n, s->dd[s->n / 2], s->dd[s->n * 99 / 100],
	       s->db[s->n / 2], s->db[s->n * 99 / 100], s->sum[s->n / 2], s->sum[s->n * 99 / 100]);
}

int main(int argc, char **argv)
{
	uint64_t packets = argc > 1 ? strtoull(argv[1], NULL, 0) : 200000;
	uint32_t k = argc > 2 ? (uint32_t)atoi(argv[2]) : 4;
	size_t pollute = (argc > 3 ? strtoull(argv[3], NULL, 0) : 0) << 10;
	uint32_t stocks = argc > 4 ? (uint32_t)atoi(argv[4]) : 16;
	if (k < 1 || k > 32)
		k = 4;
	uint64_t nmsg = packets * k;
	size_t cap = hc_gen_max_bytes(stocks, nmsg);
	uint8_t *file = malloc(cap);
	size_t flen = 0;
	if (!file || hc_gen_fill(7, stocks, nmsg, file, cap, &flen))
		return fprintf(stderr, "generate failed\n"), 1;

	struct side sd[2] = { { "tsc" }, { "clock" } };
	for (int i = 0; i < 2; i++) {
		sd[i].c = calloc(1, sizeof(struct hc_consumer));
		hc_consumer_init(sd[i].c, 1, 0);
		if (hc_clock_init(&sd[i].c->clk, i == 0 ? HC_STAMP_TSC : HC_STAMP_CLOCK) ||
		    hc_books_new(&sd[i].c->books, 1 << 20))
			return fprintf(stderr, "init failed (tsc not invariant?)\n"), 1;
		sd[i].c->timing = 1;
		sd[i].dd = malloc(packets * 8);
		sd[i].db = malloc(packets * 8);
		sd[i].sum = malloc(packets * 8);
	}
	size_t junk_n = 64u << 20;
	uint8_t *junk = malloc(junk_n);
	memset(junk, 1, junk_n);
	volatile uint64_t sink = 0;
	uint8_t pkt[2048], frame[2048];
	size_t o = 0, jo = 0;
	uint64_t seq = 1;
	for (uint64_t pk = 0; pk < packets && o + 2 <= flen; pk++) {
		memcpy(pkt, "BENCH00001", 10);
		uint32_t len = HC_MOLD_HDR, m = 0;
		while (m < k && o + 2 <= flen) {
			uint32_t n = (uint32_t)(file[o] << 8 | file[o + 1]);
			if (len + 2 + n > sizeof(pkt))
				break;
			memcpy(pkt + len, file + o, 2 + n);
			len += 2 + n;
			o += 2 + n;
			m++;
		}
		put64(pkt + 10, seq);
		pkt[18] = (uint8_t)(m >> 8);
		pkt[19] = (uint8_t)m;
		seq += m;
		int timed = (int)((pk / 1000) & 1); /* which source's block */
		for (int i = 0; i < 2; i++) {
			struct side *s = &sd[i];
			for (size_t j = 0; j < pollute; j += 64, jo = (jo + 64) % junk_n)
				sink += junk[jo];
			memcpy(frame, pkt, len);
			struct hc_pkt_times t = { 0 };
			t.deq_tai_ns = hc_stamp_tai_ns(&s->c->clk);
			hc_consumer_packet(s->c, 0, frame, len, &t);
			hc_clock_check(&s->c->clk, 1);
			if (i == timed && s->c->out_dec_tai_ns) {
				s->dd[s->n] = s->c->out_dec_tai_ns - t.deq_tai_ns;
				s->db[s->n] = s->c->out_book_tai_ns - s->c->out_dec_tai_ns;
				s->sum[s->n] = s->c->out_book_tai_ns - t.deq_tai_ns;
				s->n++;
			}
		}
	}
	printf("%lu packets of %u messages, %u stocks, %zu KiB touched before each packet\n", packets, k,
	       stocks, pollute >> 10);
	for (int i = 0; i < 2; i++)
		report(&sd[i]);
	const struct hc_tsc_cal *cal = &sd[0].c->clk.cal;
	printf("tsc fit: %.6f MHz, %lu checks, worst |fit - CLOCK_TAI| %lu ns, pair half-width %lu ns\n",
	       1e3 * (double)(1ull << HC_TSC_SHIFT) / (double)cal->mult, cal->checks, cal->max_abs_err_ns,
	       cal->pair_halfwidth_ns);
	int same = hc_books_stats(sd[0].c->books)->orders_live == hc_books_stats(sd[1].c->books)->orders_live;
	printf("books: %s live orders (%lu)\n", same ? "same" : "DIFFERENT",
	       hc_books_stats(sd[0].c->books)->orders_live);
	return same ? 0 : 1;
}
