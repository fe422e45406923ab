/* snap_fuzz.c: hostile-input smoke test of hftcap's Book Snapshot path under ASan/UBSan (no
 * Python). A generated stream converted to snapshots is cut into MoldUDP64 packets whose bytes
 * are then mutated (type bytes, N, lengths, levels) and fed to the consumer (feed.c) with books
 * and a snapshot table, with and without hop timing; every Z applied or counted as a drop,
 * nothing read out of bounds. Build and run:
 *   cc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
 *      -Ihftcap/_core -Ixdp tests/c/snap_fuzz.c hftcap/_core/{feed,snap,book,itch,mold,hist,gen,join,spin}.c \
 *      -o /tmp/snap_fuzz && /tmp/snap_fuzz    # exit 0 and "ok" on success */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "feed.h"
#include "book.h"
#include "snap.h"
#include "gen.h"

static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint64_t r(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

int main(void)
{
	size_t cap = hc_gen_max_bytes(4, 50000), len;
	uint8_t *g = malloc(cap);
	if (hc_gen_fill(3, 4, 50000, g, cap, &len))
		return 1;
	int64_t zl = hc_snap_convert_size(g, len, 5);
	uint8_t *z = malloc((size_t)zl);
	struct hc_snap_conv_stats st;
	if (zl < 0 || hc_snap_convert(g, len, 5, z, (size_t)zl, &st) != zl)
		return 1;
	struct hc_consumer *c = malloc(sizeof(*c));
	uint64_t applied = 0, dropped = 0;
	for (int timing = 0; timing < 2; timing++) {
		hc_consumer_init(c, 1, 0);
		c->timing = timing;
		if (hc_books_new(&c->books, 1024) || hc_snap_table_new(&c->snaps))
			return 1;
		size_t off = 0;
		uint64_t seq = 1;
		while (off + 2 <= (size_t)zl) {
			/* 1..8 records into a heap buffer of exactly the packet's size */
			size_t start = off;
			uint32_t cnt = 0, want = 1 + (uint32_t)(r() % 8);
			while (cnt < want && off + 2 <= (size_t)zl) {
				off += 2 + (size_t)(z[off] << 8 | z[off + 1]);
				cnt++;
			}
			size_t body = off - start, n = 20 + body;
			uint8_t *p = malloc(n);
			memcpy(p, "SNAPFUZZ01", 10);
			for (int b = 0; b < 8; b++)
				p[10 + b] = (uint8_t)(seq >> (56 - 8 * b));
			p[18] = (uint8_t)(cnt >> 8);
			p[19] = (uint8_t)cnt;
			memcpy(p + 20, z + start, body);
			seq += cnt;
			for (int k = (int)(r() % 4); k > 0; k--) {
				size_t at = 20 + r() % body;
				switch (r() % 4) {
				case 0: p[at] = 'Z'; break;                /* a Z where there was none */
				case 1: p[at] = (uint8_t)(r() % 64); break; /* N-sized values */
				case 2: p[at] = 0; break;                   /* empty levels, short lengths */
				default: p[at] = (uint8_t)r();
				}
			}
			size_t cut = r() % 5 == 0 ? r() % n : n;      /* datagram cut anywhere */
			hc_consumer_packet(c, 0, p, (uint32_t)cut, &(struct hc_pkt_times){ 0 });
			free(p);
		}
		const struct hc_snap_stats *ss = hc_snap_table_stats(c->snaps);
		applied += ss->messages;
		for (int i = 1; i < HC_SNAP_DROP__MAX; i++)
			dropped += ss->drops[i];
		int chk = hc_books_check(c->books);
		if (chk && chk != -1000) {
			printf("books check %d\n", chk);
			return 1;
		}
		hc_books_free(c->books);
		hc_snap_table_free(c->snaps);
	}
	free(c);
	free(z);
	free(g);
	if (!applied || !dropped) {
		printf("nothing exercised: applied %llu dropped %llu\n", (unsigned long long)applied,
		       (unsigned long long)dropped);
		return 1;
	}
	printf("ok: %llu snapshots applied, %llu dropped\n", (unsigned long long)applied,
	       (unsigned long long)dropped);
	return 0;
}
