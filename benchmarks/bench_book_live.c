/* bench_book_live.c: the books' two paths on one NASDAQ-layout ITCH file, no Python.
 *
 *   offline  hc_books_feed_records over the whole in-memory file (ns/msg, wall time)
 *   live     what feed.c does per MoldUDP64 packet when hops are timed: decode the packet's
 *            messages with hc_itch_decode into an array, take CLOCK_TAI, hc_books_apply each,
 *            take CLOCK_TAI (the decode_to_book hop, so one clock read is included). Between
 *            packets it reads `pollute` KiB of an unrelated 64 MiB buffer, standing in for
 *            the rest of the capture loop and other processes evicting the book from cache
 *            (0: the book stays hot). Reports p50 to p99.99 and the max per packet over `packets`
 *            packets (the far tail holds the host's preemptions too).
 * Build from the repository root and run (a generated file: see benchmarks/bench_book.py):
 *   cc -std=gnu11 -O3 -D_GNU_SOURCE -Ihftcap/_core benchmarks/bench_book_live.c \
 *      hftcap/_core/book.c hftcap/_core/itch.c -o /tmp/bench_book_live
 *   taskset -c 1 /tmp/bench_book_live FILE [packets=200000] [msgs_per_packet=4] [pollute_kib=256]
 * Numbers on a shared or virtual machine are noisy; run it alternately with what you compare. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "book.h"

static uint64_t now_ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [packets] [msgs_per_packet] [pollute_kib]\n", argv[0]);
		return 2;
	}
	uint64_t packets = argc > 2 ? strtoull(argv[2], NULL, 0) : 200000;
	uint32_t per = argc > 3 ? (uint32_t)atoi(argv[3]) : 4;
	size_t pollute = (argc > 4 ? strtoull(argv[4], NULL, 0) : 256) << 10;
	FILE *f = fopen(argv[1], "rb");
	if (!f || fseek(f, 0, SEEK_END))
		return perror(argv[1]), 1;
	size_t n = (size_t)ftell(f);
	rewind(f);
	uint8_t *p = malloc(n ? n : 1);
	if (!p || fread(p, 1, n, f) != n)
		return perror("read"), 1;
	fclose(f);
	if (per < 1 || per > 64)
		per = 4;
	uint64_t msgs = 0;
	for (size_t o = 0; o + 2 <= n; o += 2 + (size_t)(p[o] << 8 | p[o + 1]))
		msgs++;

	struct hc_books *b;
	if (hc_books_new(&b, 1 << 20))
		return 1;
	uint64_t t = now_ns(CLOCK_MONOTONIC);
	hc_books_feed_records(b, p, n);
	t = now_ns(CLOCK_MONOTONIC) - t;
	printf("offline  %lu messages: %.2f ns/msg (CLOCK_MONOTONIC wall, one call), %lu live orders\n",
	       msgs, (double)t / (double)msgs, hc_books_stats(b)->orders_live);
	hc_books_free(b);

	size_t junk_n = 64u << 20;
	uint8_t *junk = malloc(junk_n);
	uint64_t *lat = malloc(packets * sizeof(*lat));
	if (!junk || !lat || hc_books_new(&b, 1 << 20))
		return 1;
	memset(junk, 1, junk_n);
	struct hc_itch_msg dec[64];
	volatile uint64_t sink = 0;
	size_t o = 0, jo = 0;
	uint64_t k = 0, applied = 0;
	while (k < packets && o + 2 <= n) {
		uint32_t m = 0;
		while (m < per && o + 2 <= n) {
			uint32_t len = (uint32_t)(p[o] << 8 | p[o + 1]);
			if (o + 2 + len > n)
				break;
			if (hc_itch_decode(p + o + 2, len, &dec[m]) == 0)
				m++;
			o += 2 + (size_t)len;
		}
		if (!m)
			break;
		uint64_t t0 = now_ns(CLOCK_TAI);
		for (uint32_t i = 0; i < m; i++)
			hc_books_apply(b, &dec[i]);
		lat[k++] = now_ns(CLOCK_TAI) - t0;
		applied += m;
		for (size_t j = 0; j < pollute; j += 64, jo = (jo + 64) % junk_n)
			sink += junk[jo];
	}
	qsort(lat, k, sizeof(*lat), cmp_u64);
	printf("live     %lu packets of %u messages (%lu applied), %zu KiB touched between packets: "
	       "decode_to_book p50 %lu ns, p90 %lu ns, p99 %lu ns, p99.9 %lu ns, p99.99 %lu ns, max %lu "
	       "ns per packet (CLOCK_TAI, one read included; the far tail also holds the host's "
	       "preemptions)\n", k, per, applied, pollute >> 10, lat[k / 2], lat[k * 9 / 10],
	       lat[k * 99 / 100], lat[k * 999 / 1000], lat[k * 9999 / 10000], lat[k - 1]);
	hc_books_free(b);
	free(lat);
	free(junk);
	free(p);
	return 0;
}
