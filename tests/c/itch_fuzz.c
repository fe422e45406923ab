/* itch_fuzz.c: hostile-input smoke test of the C data plane under ASan/UBSan (no Python).
 * Mutated generator streams through the NASDAQ-layout feed, mutated frames through the
 * Ethernet/IPv4/UDP/MoldUDP64 path, random pcap/pcapng files through the reader; checks the
 * books' invariants after each round and that nothing reads out of bounds. Build and run:
 *   cc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -Ihftcap/_core tests/c/itch_fuzz.c hftcap/_core/{itch,book,files,gen,mold}.c -lz -o /tmp/itch_fuzz
 *   /tmp/itch_fuzz /tmp/itch_fuzz.bin    # exit 0 and "ok" on success */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "files.h"
#include "gen.h"
static uint64_t s = 88172645463325252ull;
static uint64_t r(void){ s^=s<<13; s^=s>>7; s^=s<<17; return s; }
int main(int argc, char **argv){
	if (argc < 2) return 2;
	size_t cap = hc_gen_max_bytes(4, 200000), len; uint8_t *g = malloc(cap);
	if (hc_gen_fill(7, 4, 200000, g, cap, &len)) return 1;
	struct hc_books *b; hc_books_new(&b, 1024);
	for (int it = 0; it < 400; it++) {
		/* every 8th buffer is long enough for the pipelined loop of hc_books_feed_records */
		size_t n = it % 8 ? 1 + r() % 20000 : 70000 + r() % 400000, off = r() % (len - n);
		uint8_t *p = malloc(n); memcpy(p, g + off, n);
		for (int k = 0; k < (n > 20000 ? 400 : 20); k++) p[r() % n] = (uint8_t)r();
		hc_feed_nasdaq(b, p, n, 1);
		{ /* decode only: every complete record decoded or counted once, a partial tail once */
			uint64_t dr[HC_DROP__MAX] = { 0 }, recs = 0, sum = 0; size_t o2 = 0; const uint8_t *mm; uint32_t nn;
			uint64_t ok = hc_decode_nasdaq(p, n, dr);
			while (hc_nasdaq_next(p, n, &o2, &mm, &nn)) recs++;
			for (int i = 1; i < HC_DROP__MAX; i++) if (i != HC_DROP_FILE_TRUNCATED) sum += dr[i];
			if (ok + sum != recs || dr[HC_DROP_FILE_TRUNCATED] != (o2 < n)) { printf("decode-only count\n"); return 1; }
			/* each record again from a copy of exactly its length (ASan: the table-driven order
			 * decoder never reads past a message), same result; fields a type lacks are zero */
			o2 = 0;
			while (hc_nasdaq_next(p, n, &o2, &mm, &nn)) {
				struct hc_itch_msg m1, m2; memset(&m1, 0, sizeof m1); memset(&m2, 0, sizeof m2);
				uint8_t *cp = malloc(nn ? nn : 1); memcpy(cp, mm, nn);
				int r1 = hc_itch_decode(mm, nn, &m1), r2 = hc_itch_decode(cp, nn, &m2); free(cp);
				if (r1 != r2 || memcmp(&m1, &m2, sizeof m1)) { printf("decode differs on a copy\n"); return 1; }
				if (r1 == 0 && m1.type == 'E' && (m1.executed.printable || m1.executed.execution_price_e4)) { printf("E price\n"); return 1; }
				static const char zero4[4];
				if (r1 == 0 && m1.type == 'A' && memcmp(m1.add.attribution, zero4, 4)) { printf("A attribution\n"); return 1; }
			}
		}
		struct hc_mold mold; hc_mold_init(&mold);
		for (int k = 0; k < 50; k++) { size_t m = r() % (n < 1600 ? n : 1600); uint8_t *q = malloc(m ? m : 1); memcpy(q, p, m);
			if (m > 14) { q[12] = 8; q[13] = 0; } if (m > 23) { q[14] = 0x45; q[23] = 17; }
			hc_feed_frame(b, &mold, 1, q, m); free(q); }
		int c = hc_books_check(b); if (c && c != -1000) { printf("check %d\n", c); return 1; }
		free(p);
	}
	{ /* hc_mold_run (the reader's walk: one run per packet) against hc_mold_next, over one
	   * session's state: random sequence numbers near the next expected (overlaps, gaps,
	   * duplicates), heartbeats, end of session, lying counts and block lengths, trailing
	   * bytes, truncated and short datagrams, a session change now and then */
		struct hc_mold m1, m2; hc_mold_init(&m1); hc_mold_init(&m2);
		static uint8_t pk[640];
		for (int k = 0; k < 40000; k++) {
			memcpy(pk, r() % 100 ? "SESSION001" : "SESSION002", 10);
			uint64_t seq = m1.next + r() % 9; seq = seq > 4 ? seq - 4 : 1;
			uint32_t cnt = r() % 40 == 0 ? 0 : r() % 200 == 0 ? 0xffff : 1 + r() % 6;
			for (int i = 0; i < 8; i++) pk[10 + i] = (uint8_t)(seq >> (56 - 8 * i));
			pk[18] = (uint8_t)(cnt >> 8); pk[19] = (uint8_t)cnt;
			size_t L = 20, blocks = cnt < 0xffff ? cnt + r() % 3 : 0;
			for (size_t j = 0; j + 1 < blocks + 1; j++) {
				uint32_t bl = r() % 30, say = r() % 20 ? bl : bl + 1 + r() % 8;
				if (L + 2 + bl > sizeof pk - 8) break;
				pk[L] = (uint8_t)(say >> 8); pk[L + 1] = (uint8_t)say;
				for (uint32_t q = 0; q < bl; q++) pk[L + 2 + q] = (uint8_t)r();
				L += 2 + bl;
			}
			if (r() % 10 == 0) L += r() % 5;
			if (r() % 20 == 0) L = r() % (L + 1);
			struct hc_mold_iter i1, i2;
			int n1 = hc_mold_begin(&m1, pk, L, &i1), n2 = hc_mold_begin(&m2, pk, L, &i2);
			static uint8_t o1[sizeof pk], o2[sizeof pk]; size_t l1 = 0, l2 = 0;
			if (n1 > 0) { const uint8_t *mm; uint32_t nn;
				while (hc_mold_next(&m1, &i1, &mm, &nn)) { memcpy(o1 + l1, mm - 2, nn + 2); l1 += nn + 2; } }
			if (n2 > 0) { const uint8_t *run; size_t rl;
				if (hc_mold_run(&m2, &i2, &run, &rl)) { memcpy(o2, run, rl); l2 = rl; } }
			if (n1 != n2 || l1 != l2 || memcmp(o1, o2, l1) || memcmp(&m1.st, &m2.st, sizeof m1.st) ||
			    m1.next != m2.next) { printf("mold run differs at %d\n", k); return 1; }
		}
		if (!m1.st.duplicates || !m1.st.gaps || !m1.st.drop_truncated || !m1.st.drop_trailing ||
		    !m1.st.heartbeats || m1.st.sessions < 2) { printf("mold cases not reached\n"); return 1; }
	}
	/* random pcap / pcapng files */
	for (int it = 0; it < 200; it++) {
		const char *path = argv[1]; FILE *f = fopen(path, "wb");
		uint32_t magic = it & 1 ? 0xa1b2c3d4 : 0x0a0d0d0a; fwrite(&magic, 4, 1, f);
		size_t n = r() % 5000; for (size_t i = 0; i < n; i++) { uint8_t x = (r() % 4) ? (uint8_t)(r() % 40) : (uint8_t)r(); fputc(x, f); }
		fclose(f);
		struct hc_reader *rd; if (hc_reader_open(&rd, path)) return 2;
		while (hc_reader_step(rd, b, 1 << 20) > 0) ;
		hc_reader_close(rd);
	}
	const struct hc_books_stats *st = hc_books_stats(b);
	for (int i = 1; i < HC_DROP__MAX; i++) printf("%s=%lu ", hc_drop_names[i], st->drops[i]);
	printf("\nok\n"); hc_books_free(b); free(g); return 0;
}
