"""The sender core alone under AddressSanitizer and UBSan: a C harness compiled with the test
drives hc_sender_open/build/reply/run with random streams (truncated at random bytes, lying
lengths), random configurations, requests of every length and tiny reply buffers, and a real
run over an AF_UNIX datagram socketpair; any out-of-bounds access or UB aborts it."""
from __future__ import annotations

from sanitized import build_and_run
from bounds import bound

HARNESS = r"""
#include "sender.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)rs; }

static int fds[2];
static volatile int done;
static void *drain(void *a) { char b[70000]; long n = 0; while (!done) if (recv(fds[1], b, sizeof b, MSG_DONTWAIT) > 0) n++; return (void *)n; }

int main(void)
{
	int opened = 0, rejected = 0;
	for (int it = 0; it < 400; it++) {
		size_t n = rnd() % 300, len = 0;
		uint8_t *buf = malloc(n * 70 + 1);
		for (size_t i = 0; i < n; i++) {
			uint32_t m = rnd() % 60;
			buf[len] = 0; buf[len + 1] = (uint8_t)m;
			for (uint32_t j = 0; j < m; j++) buf[len + 2 + j] = (uint8_t)rnd();
			len += 2 + m;
		}
		if (len && rnd() % 4 == 0) len = rnd() % len;            /* truncated anywhere */
		if (len > 2 && rnd() % 8 == 0) buf[0] = (uint8_t)rnd();   /* a lying length */
		uint8_t *copy = malloc(len ? len : 1);                   /* exact size: ASan sees overruns */
		memcpy(copy, buf, len);
		struct hc_send_cfg c = {0};
		memcpy(c.session, "ABCDEFGHIJ", 10);
		c.first_seq = 1 + rnd() % 5; c.msgs_per_packet = 1 + rnd() % 40;
		c.max_payload_bytes = rnd() % 2 ? 0 : 82 + rnd() % 300;
		c.pace = rnd() % 4; c.rate = 1e6; c.speed = 1000.0; c.clock = rnd() % 3;
		c.loss = (rnd() % 3) * 0.2; c.dup = (rnd() % 3) * 0.2; c.reorder = (rnd() % 3) * 0.3;
		c.seed = it; c.max_packets = rnd() % 3 ? 0 : rnd() % 50;
		c.heartbeat_interval_ns = rnd() % 2 ? 1000000 : 0; c.eos_count = rnd() % 4;
		c.max_duration_ns = it % 40 == 0 ? 200000000ull : 100000000000ull; /* runs: 0.2 s */
		struct hc_sender *s;
		int r = hc_sender_open(&s, copy, len, &c);
		if (r < 0) {
			if (r != -EINVAL && r != -EMSGSIZE) return 3;
			rejected++;
			free(copy); free(buf);
			continue;
		}
		opened++;
		size_t cap = rnd() % 2 ? rnd() % 5000 : len * 4 + 100000;
		uint8_t *out = malloc(cap + 1);
		size_t used;
		struct hc_send_stats st;
		if (hc_sender_build(s, out, cap, &used, &st) < 0 || used > cap) return 4;
		for (int q = 0; q < 60; q++) {
			size_t rl = q < 21 ? (size_t)q : 20;                /* every request length */
			uint8_t *req = malloc(rl + 1);
			memcpy(req, "ABCDEFGHIJ", rl < 10 ? rl : 10);
			for (size_t j = 10; j < rl; j++) req[j] = (uint8_t)rnd();
			if (rl >= 18) { memset(req + 10, 0, 7); req[17] = (uint8_t)(rnd() % 300); }
			size_t rc = rnd() % 2 ? 2000 : rnd() % 100;
			uint8_t *rep = malloc(rc ? rc : 1);
			struct hc_serve_stats ss = {0};
			int rr = hc_sender_reply(s, req, rl, rep, rc, &ss);
			if (rr > (int)rc) return 5;
			if (rl != 20 && rr > 0) return 6;
			free(rep); free(req);
		}
		if (it % 40 == 0) {  /* a real run, over a socketpair */
			socketpair(AF_UNIX, SOCK_DGRAM, 0, fds);
			int sz = 1 << 22; setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
			done = 0;
			pthread_t t; pthread_create(&t, 0, drain, 0);
			if (hc_sender_run(s, fds[0], &st) < 0 && st.packets_sent) return 7;
			done = 1; pthread_join(t, NULL);
			close(fds[0]); close(fds[1]);
		}
		hc_sender_close(s); free(out); free(copy); free(buf);
	}
	printf("opened %d rejected %d\n", opened, rejected);
	return opened > 50 && rejected > 50 ? 0 : 8;
}
"""


def test_sender_core_under_asan_ubsan(tmp_path):
    run = build_and_run(tmp_path, HARNESS, ["sender", "hist"], libs=["-lpthread"], timeout=bound(120))
    assert run.stdout.startswith("opened ")
