/* capture.c: see capture.h. Setup and teardown in reverse order through labels; the
 * data-thread loops touch only preallocated memory and never print. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/ip.h>
#include <linux/net_tstamp.h>
#include <linux/sock_diag.h>
#include <linux/udp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include "capture.h"
#include "book.h"
#include "pcapng.h"
#include "snap.h"
#include "join.h"
#include "hc_time.h"
#include "hc_mem.h"
#include "hc_thread.h"
#include "xskpred.h"
#include "hftcap.skel.h"
#include "hftcap_hw.skel.h"

#ifndef BPF_F_XDP_DEV_BOUND_ONLY
#define BPF_F_XDP_DEV_BOUND_ONLY (1U << 6)
#endif
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

#define HC_FRAME_SHIFT 11
#define HC_FRAME_SIZE (1u << HC_FRAME_SHIFT)
#define HC_NUM_FRAMES 8192u
#define HC_COMP_SIZE 64u
#define HC_BATCH 64u
#define HC_WARM_STEPS 8 /* hc_books_warm steps per empty busy-poll round (--warm-books) */
#define HC_UDP_BUF 2048u

/* One AF_XDP socket with its own UMEM and rings: no shared-UMEM bookkeeping between queues. */
struct hc_xsk {
	void *umem_area;
	size_t umem_size;
	uint32_t frames;        /* in the UMEM: base + the capture's hold */
	uint32_t base;          /* half in the fill ring, half for the RX ring */
	uint32_t queue;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	/* listen --write: the frames the writer may still read (pcapng.h). The fill ring is
	 * topped up from its free ones, so it holds as many frames as without capture. */
	struct hc_caphold hold;
	/* Which frames the next descriptors carry, asked for as soon as the RX ring shows them */
	struct hc_xsk_pred pred;
};

struct hc_capture {
	struct hc_capture_cfg cfg;
	struct hc_capture_info info;
	struct hc_consumer cons;

	/* XDP path */
	struct hftcap_bpf *skel;
	struct hftcap_hw_bpf *skel_hw;
	struct bpf_program *prog;
	int stats_fd, xsks_fd, feeds_fd;
	int link_fd;
	struct hc_xsk xs[HC_MAX_QUEUES]; /* one AF_XDP socket (with its own UMEM) per bound queue */
	uint32_t nxs;

	/* kernel path: one socket per line (A lines first, then the B lines) */
	int udp_fd[2 * HC_MAX_FEEDS];
	uint32_t udp_feed[2 * HC_MAX_FEEDS];  /* the consumer's feed index (| HC_FEED_LINE_B) */
	uint32_t udp_group[2 * HC_MAX_FEEDS];
	uint16_t udp_port[2 * HC_MAX_FEEDS];
	uint32_t nudp;
	uint8_t *bufs;
	struct mmsghdr msgs[HC_BATCH];
	struct iovec iov[HC_BATCH];
	uint8_t ctrl[HC_BATCH][256];
	struct sockaddr_in src[HC_BATCH]; /* senders' addresses, for the capture writer */

	struct hc_capring *ring;          /* listen --write (pcapng.h); NULL = no capture */
	uint8_t *recov_buf;               /* with ring and recovery: replies are read here */

	pthread_t thread;
	int started;
	int stop;
	uint64_t io_errors;
	uint64_t thread_cpu_ns; /* CPU time of the data thread, read when it ends */
	int64_t tai_offset_ns;
};

static void note_thread_cpu(struct hc_capture *c)
{
	struct timespec ts;
	if (!clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		c->thread_cpu_ns += (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}


/* ---- the existing XDP program on an interface ---- */

int hc_xdp_query(int ifindex, uint32_t *prog_id, int *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	int err = bpf_xdp_query(ifindex, 0, &q);
	if (err)
		return err < 0 ? err : -EINVAL;
	*prog_id = q.prog_id;
	*mode = q.attach_mode;
	return 0;
}

int hc_prog_name(uint32_t prog_id, char *name, size_t len)
{
	struct bpf_prog_info info;
	uint32_t ilen = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(prog_id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	int err = bpf_obj_get_info_by_fd(fd, &info, &ilen);
	close(fd);
	if (err)
		return -errno;
	snprintf(name, len, "%s", info.name);
	return 0;
}

/* ---- XDP program: device-bound with the kfunc when possible, else the plain one ---- */

static int load_program(struct hc_capture *c)
{
	int err;
	if (c->cfg.want_hw_ts) {
		c->skel_hw = hftcap_hw_bpf__open();
		if (!c->skel_hw) {
			err = -errno;
		} else {
			c->skel_hw->rodata->use_tai_clock = c->cfg.tai_clock;
			bpf_program__set_ifindex(c->skel_hw->progs.hftcap_xdp, c->cfg.ifindex);
			bpf_program__set_flags(c->skel_hw->progs.hftcap_xdp, BPF_F_XDP_DEV_BOUND_ONLY);
			err = hftcap_hw_bpf__load(c->skel_hw);
		}
		if (!err) {
			c->prog = c->skel_hw->progs.hftcap_xdp;
			c->stats_fd = bpf_map__fd(c->skel_hw->maps.stats);
			c->xsks_fd = bpf_map__fd(c->skel_hw->maps.xsks);
			c->feeds_fd = bpf_map__fd(c->skel_hw->maps.feeds);
			c->info.hw_program = 1;
			return 0;
		}
		c->info.hw_program_err = err < 0 ? err : -EINVAL;
		hftcap_hw_bpf__destroy(c->skel_hw);
		c->skel_hw = NULL;
	}
	c->skel = hftcap_bpf__open();
	if (!c->skel)
		return -errno;
	c->skel->rodata->use_tai_clock = c->cfg.tai_clock;
	err = hftcap_bpf__load(c->skel);
	if (err)
		return err < 0 ? err : -EINVAL;
	c->prog = c->skel->progs.hftcap_xdp;
	c->stats_fd = bpf_map__fd(c->skel->maps.stats);
	c->xsks_fd = bpf_map__fd(c->skel->maps.xsks);
	c->feeds_fd = bpf_map__fd(c->skel->maps.feeds);
	return 0;
}

static int attach_link(struct hc_capture *c)
{
	int modes[2], n = 0;
	if (c->cfg.xdp_mode == HC_XDPM_NATIVE || c->cfg.xdp_mode == HC_XDPM_AUTO)
		modes[n++] = HC_XDPM_NATIVE;
	if (c->cfg.xdp_mode == HC_XDPM_GENERIC || c->cfg.xdp_mode == HC_XDPM_AUTO)
		modes[n++] = HC_XDPM_GENERIC;
	int err = -EINVAL;
	for (int i = 0; i < n; i++) {
		LIBBPF_OPTS(bpf_link_create_opts, lo);
		lo.flags = modes[i] == HC_XDPM_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
		int fd = bpf_link_create(bpf_program__fd(c->prog), c->cfg.ifindex, BPF_XDP, &lo);
		if (fd >= 0) {
			c->link_fd = fd;
			c->info.xdp_mode = modes[i];
			struct bpf_prog_info pi;
			uint32_t plen = sizeof(pi);
			memset(&pi, 0, sizeof(pi));
			if (!bpf_obj_get_info_by_fd(bpf_program__fd(c->prog), &pi, &plen))
				c->info.prog_id = pi.id;
			return 0;
		}
		err = -errno;
		if (err == -EBUSY || err == -EEXIST)
			return err; /* someone else's program: never fall back over it */
	}
	return err;
}

static int xsk_open(struct hc_capture *c, struct hc_xsk *x, int zerocopy)
{
	struct xsk_umem_config ucfg = {
		.fill_size = x->base / 2,
		.comp_size = HC_COMP_SIZE,
		.frame_size = HC_FRAME_SIZE,
		.frame_headroom = 0,
		.flags = 0,
	};
	/* libxdp 1.3.1 leaves cached_prod uninitialised: start from zeroed rings. */
	memset(&x->fill, 0, sizeof(x->fill));
	memset(&x->comp, 0, sizeof(x->comp));
	memset(&x->rx, 0, sizeof(x->rx));
	int err = xsk_umem__create(&x->umem, x->umem_area, x->umem_size, &x->fill, &x->comp, &ucfg);
	if (err)
		return err;
	struct xsk_socket_config scfg = {
		.rx_size = x->base / 2,
		.tx_size = 0,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = 0,
		.bind_flags = XDP_USE_NEED_WAKEUP | (zerocopy ? XDP_ZEROCOPY : XDP_COPY),
	};
	err = xsk_socket__create(&x->xsk, c->cfg.ifname, x->queue, x->umem, &x->rx, NULL, &scfg);
	if (err) {
		xsk_umem__delete(x->umem);
		x->umem = NULL;
		x->xsk = NULL;
		return err;
	}
	return 0;
}

/* Put the frame at UMEM address addr in fill-ring entry idx, and tell the predictor: every
 * frame handed to the kernel goes through here, or its guesses go wrong. */
static inline void fill_put(struct hc_xsk *x, uint32_t idx, uint64_t addr)
{
	*xsk_ring_prod__fill_addr(&x->fill, idx) = addr;
	hc_xsk_pred_filled(&x->pred, addr, idx);
}

static int xsk_setup_one(struct hc_capture *c, struct hc_xsk *x, const char **stage)
{
	int err;
	*stage = "umem";
	x->umem_size = (size_t)x->frames * HC_FRAME_SIZE;
	/* Each packet lands in the next frame: with 4 KiB pages, every other packet's first read
	 * was a TLB miss (a two-level walk in a VM). */
	x->umem_area = hc_map_huge(x->umem_size, 1);
	if (!x->umem_area)
		return -errno;
	err = hc_xsk_pred_init(&x->pred, x->frames, HC_FRAME_SHIFT);
	if (err)
		return err;
	*stage = "xsk-bind";
	/* auto: zero-copy if the first queue takes it, and then the same for every queue */
	int zc = c->cfg.bind_mode == HC_BIND_ZEROCOPY ||
		 (c->cfg.bind_mode == HC_BIND_AUTO && (c->nxs == 0 || c->info.bind_mode == HC_BIND_ZEROCOPY));
	err = xsk_open(c, x, zc);
	if (err && zc && c->cfg.bind_mode == HC_BIND_AUTO && c->nxs == 0) {
		zc = 0;
		err = xsk_open(c, x, 0);
	}
	if (err)
		return err;
	c->info.bind_mode = zc ? HC_BIND_ZEROCOPY : HC_BIND_COPY;
	/* Hand half the frames to the kernel; the RX ring holds the other half. */
	uint32_t idx, nfill = x->base / 2;
	*stage = "fill-ring";
	if (xsk_ring_prod__reserve(&x->fill, nfill, &idx) != nfill)
		return -ENOSPC;
	for (uint32_t i = 0; i < nfill; i++)
		fill_put(x, idx + i, (uint64_t)i * HC_FRAME_SIZE);
	xsk_ring_prod__submit(&x->fill, nfill);

	int fd = xsk_socket__fd(x->xsk);
	if (c->cfg.poll_mode == HC_POLL_BUSY) {
		int one = 1, us = c->cfg.busy_poll_us, budget = HC_BATCH;
		/* Best effort: without NAPI (veth copy mode) these do nothing, and that is fine. */
		setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &us, sizeof(us));
		setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget, sizeof(budget));
	}
	*stage = "xskmap";
	uint32_t q = x->queue;
	if (bpf_map_update_elem(c->xsks_fd, &q, &fd, BPF_ANY))
		return -errno;
	return 0;
}

static int xsk_setup(struct hc_capture *c, const char **stage)
{
	uint32_t n = c->cfg.nqueues ? c->cfg.nqueues : 1;
	/* 16 MiB of frames for one queue; less each when many queues share the budget. */
	uint32_t frames = n == 1 ? HC_NUM_FRAMES : n <= 4 ? HC_NUM_FRAMES / 2 : HC_NUM_FRAMES / 4;
	/* listen --write: frames the writer may still be reading, shared out over the queues */
	uint32_t hold = c->cfg.capture_frames / n;
	for (uint32_t i = 0; i < n; i++) {
		struct hc_xsk *x = &c->xs[i];
		x->queue = c->cfg.nqueues ? c->cfg.queues[i] : c->cfg.queue;
		x->base = frames;
		x->frames = frames + hold;
		int err = xsk_setup_one(c, x, stage);
		c->nxs = i + 1; /* so close() releases a half-made one too */
		if (err)
			return err;
	}
	return 0;
}

static int feeds_setup(struct hc_capture *c)
{
	for (uint32_t i = 0; i < c->cfg.nfeeds; i++) {
		struct hc_feed_key k = { .group = c->cfg.group_be[i], .port = c->cfg.port_be[i], .pad = 0 };
		if (bpf_map_update_elem(c->feeds_fd, &k, &i, BPF_ANY))
			return -errno;
		if (!(c->cfg.ab_mask >> i & 1))
			continue;
		struct hc_feed_key kb = { .group = c->cfg.group_b_be[i], .port = c->cfg.port_b_be[i] };
		uint32_t v = i | HC_FEED_LINE_B;
		if (bpf_map_update_elem(c->feeds_fd, &kb, &v, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* ---- kernel socket path ---- */

static int udp_setup(struct hc_capture *c, const char **stage)
{
	*stage = "udp-buffers";
	c->bufs = aligned_alloc(64, (size_t)HC_BATCH * HC_UDP_BUF);
	if (!c->bufs)
		return -ENOMEM;
	for (uint32_t i = 0; i < HC_BATCH; i++) {
		c->iov[i].iov_base = c->bufs + (size_t)i * HC_UDP_BUF;
		c->iov[i].iov_len = HC_UDP_BUF;
		memset(&c->msgs[i], 0, sizeof(c->msgs[i]));
		c->msgs[i].msg_hdr.msg_iov = &c->iov[i];
		c->msgs[i].msg_hdr.msg_iovlen = 1;
		c->msgs[i].msg_hdr.msg_name = &c->src[i];
	}
	c->nudp = 0;
	for (uint32_t i = 0; i < c->cfg.nfeeds; i++) {
		c->udp_feed[c->nudp] = i;
		c->udp_group[c->nudp] = c->cfg.group_be[i];
		c->udp_port[c->nudp++] = c->cfg.port_be[i];
	}
	for (uint32_t i = 0; i < c->cfg.nfeeds; i++) {
		if (!(c->cfg.ab_mask >> i & 1))
			continue;
		c->udp_feed[c->nudp] = i | HC_FEED_LINE_B;
		c->udp_group[c->nudp] = c->cfg.group_b_be[i];
		c->udp_port[c->nudp++] = c->cfg.port_b_be[i];
	}
	for (uint32_t i = 0; i < c->nudp; i++) {
		*stage = "udp-socket";
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		c->udp_fd[i] = fd;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		int rcvbuf = c->cfg.rcvbuf > 0 ? c->cfg.rcvbuf : 16 << 20;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)))
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		*stage = "udp-bind";
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = c->udp_port[i],
					  .sin_addr.s_addr = c->udp_group[i] };
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
			return -errno;
		*stage = "udp-bindtodevice";
		if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, c->cfg.ifname, strlen(c->cfg.ifname)))
			return -errno;
		*stage = "igmp-join";
		struct ip_mreqn mr = { .imr_multiaddr.s_addr = c->udp_group[i],
				       .imr_ifindex = c->cfg.ifindex };
		if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)))
			return -errno;
		int ts = SOF_TIMESTAMPING_RX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE |
			 SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
		*stage = "so-timestamping";
		if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof(ts))) {
			ts = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
			if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof(ts)))
				return -errno;
		} else {
			c->info.hw_ts_socket = 1;
		}
		if (c->cfg.poll_mode == HC_POLL_BUSY) {
			int us = c->cfg.busy_poll_us, budget = HC_BATCH;
			setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &us, sizeof(us));
			setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one));
			setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget, sizeof(budget));
		}
	}
	return 0;
}

/* ---- the data thread ---- */

/* Find the UDP payload in an Ethernet frame the XDP program already matched. */
static inline const uint8_t *udp_payload(const uint8_t *f, uint32_t len, uint32_t *plen)
{
	const uint8_t *end = f + len;
	const uint8_t *p = f + sizeof(struct ethhdr);
	if (p > end)
		return NULL;
	uint16_t proto = (uint16_t)(f[12] << 8 | f[13]);
	for (int i = 0; i < 2 && (proto == ETH_P_8021Q || proto == ETH_P_8021AD); i++) {
		if (p + 4 > end)
			return NULL;
		proto = (uint16_t)(p[2] << 8 | p[3]);
		p += 4;
	}
	if (proto != ETH_P_IP || p + sizeof(struct iphdr) > end)
		return NULL;
	uint32_t ihl = (uint32_t)(p[0] & 0x0f) * 4;
	if (ihl < sizeof(struct iphdr) || p + ihl + sizeof(struct udphdr) > end)
		return NULL;
	const uint8_t *u = p + ihl;
	uint32_t ulen = (uint32_t)(u[4] << 8 | u[5]);
	if (ulen < sizeof(struct udphdr) || u + ulen > end)
		return NULL;
	*plen = ulen - sizeof(struct udphdr);
	return u + sizeof(struct udphdr);
}

/* Once the RX ring's producer shows new descriptors, the descriptors' line and the lines of the
 * frames they are foreseen to carry (xskpred.h: metadata + the last frame's length) are asked
 * for at once, so the frames' cross-CPU misses overlap the descriptor's instead of following
 * it. always_inline: as a call, GCC (-O2 and up) finds a function of loads and prefetches pure
 * and drops the call, since its result is unused. */
#define HC_PF_RX 4u
static inline __attribute__((always_inline)) void prefetch_rx(const struct hc_xsk *x,
							      uint32_t idx_rx, uint32_t n)
{
	const struct hc_xsk_pred *p = &x->pred;
	uint32_t k = n < HC_PF_RX ? n : HC_PF_RX;
	uint32_t span = sizeof(struct hc_xdp_meta) + (p->len < 512 ? p->len : 512);
	__builtin_prefetch(xsk_ring_cons__rx_desc(&x->rx, idx_rx), 0, 3);
	for (uint32_t i = 0; i < k; i++) {
		uint32_t g = hc_xsk_pred_guess(p, idx_rx + i);
		uint64_t a = ((uint64_t)g << HC_FRAME_SHIFT) + p->off;
		if (g >= p->nframes || a < sizeof(struct hc_xdp_meta))
			continue;
		const uint8_t *f = (const uint8_t *)x->umem_area + a - sizeof(struct hc_xdp_meta);
		for (uint32_t o = 0; o < span; o += 64)
			__builtin_prefetch(f + o, 0, 3);
	}
}

/* Take what one socket's RX ring holds (up to a batch) through the consumer; frames go back
 * to the fill ring at once. Returns the number of descriptors taken. */
static inline uint32_t xsk_drain(struct hc_capture *c, struct hc_xsk *x, int busy)
{
	uint32_t idx_rx, idx_fq;
	uint32_t n = xsk_ring_cons__peek(&x->rx, HC_BATCH, &idx_rx);
	if (!n)
		return 0;
	struct hc_capring *ring = c->ring;
	const uint16_t xi = (uint16_t)(x - c->xs);
	prefetch_rx(x, idx_rx, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx_rx + i);
		uint64_t addr = xsk_umem__add_offset_to_addr(d->addr);
		const uint8_t *frame = xsk_umem__get_data(x->umem_area, addr);
		struct hc_pkt_times t = { 0 };
		t.deq_tai_ns = hc_stamp_tai_ns(&c->cons.clk);
		const struct hc_xdp_meta *m = (const void *)(frame - sizeof(*m));
		if (i < HC_PF_RX) {
			int hit = hc_xsk_pred_seen(&x->pred, idx_rx + i, addr, d->len);
			c->cons.xsk_foreseen += (uint64_t)hit;
			c->cons.xsk_not_foreseen += (uint64_t)!hit;
		}
		/* Another CPU (or the NIC) has just written the frame: ask for all its lines at once
		 * (prefetch_rx asked for the ones it foresaw), so their misses overlap instead of
		 * following the parse one by one. */
		for (uint32_t o = 0; o < d->len + sizeof(*m); o += 64)
			__builtin_prefetch((const uint8_t *)m + o, 0, 3);
		uint32_t feed = 0;
		if (m->magic == HC_META_MAGIC) {
			feed = m->feed;
			if (m->flags & HC_META_XDP_TAI)
				t.xdp_tai_ns = m->xdp_ns;
			if (m->flags & HC_META_HW_VALID)
				t.hw_ns = m->rx_hw_ns;
		} else {
			feed = UINT32_MAX;
		}
		uint32_t plen;
		const uint8_t *p = udp_payload(frame, d->len, &plen);
		if (p) {
			hc_consumer_packet(&c->cons, feed, p, plen, &t);
		} else {
			c->cons.drop_bad_frame++;
			c->cons.out_dec_tai_ns = 0;
		}
		if (ring) /* the frame stays ours until the writer has copied it (pcapng.h) */
			hc_caphold_push(&x->hold, xsk_umem__extract_addr(d->addr),
					hc_capring_put_xsk(ring, xi, addr, d->len, x->queue, &t, &c->cons));
	}
	/* The frames go back after the books are updated: reserving reads the fill ring's consumer
	 * index, which the kernel has just written on another CPU (a cache miss per batch). The
	 * fill ring has room for every frame we hold: this cannot spin long. */
	while (xsk_ring_prod__reserve(&x->fill, n, &idx_fq) != n)
		;
	if (ring) {
		hc_caphold_reclaim(&x->hold, ring, n);
		for (uint32_t i = 0; i < n; i++)
			fill_put(x, idx_fq + i, hc_caphold_take(&x->hold));
	} else {
		for (uint32_t i = 0; i < n; i++)
			fill_put(x, idx_fq + i,
				 xsk_umem__extract_addr(xsk_ring_cons__rx_desc(&x->rx, idx_rx + i)->addr));
	}
	xsk_ring_prod__submit(&x->fill, n);
	xsk_ring_cons__release(&x->rx, n);
	if (ring)
		hc_capring_publish(ring);
	if (!busy && xsk_ring_prod__needs_wakeup(&x->fill))
		recvfrom(xsk_socket__fd(x->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
	return n;
}

/* ---- recovery's socket and timers, serviced by the data thread (recovery.h) ---- */

#define HC_IDLE_WAIT_NS 100000000ull

#define HC_RECOV_CAP_BUF 65536u

/* With --write, recovery.c's tap: each reply also put into the capture ring on
 * HC_PCAP_IF_RECOVERY (its headers rebuilt from the addresses; IP_PKTINFO gives the local
 * one). Stamp: the dequeue time (the recvmsg return), the IDB's clock. */
static void recov_tap_put(void *arg, const struct msghdr *mh, size_t n, uint64_t now)
{
	struct hc_capture *c = arg;
	const struct sockaddr_in *from = mh->msg_name;
	uint32_t dst = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR((struct msghdr *)mh, cm))
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO)
			dst = ((const struct in_pktinfo *)CMSG_DATA(cm))->ipi_addr.s_addr;
	struct sockaddr_in self;
	socklen_t sl = sizeof(self);
	if (getsockname(hc_recov_fd(c->cons.recov), (struct sockaddr *)&self, &sl))
		self.sin_port = 0;
	uint32_t got_len = n > HC_RECOV_CAP_BUF ? HC_RECOV_CAP_BUF : (uint32_t)n;
	struct hc_pkt_times t = { .deq_tai_ns = now };
	hc_capring_put_stamps(c->ring, HC_PCAP_IF_RECOVERY, HC_CAPREC_UDP, c->recov_buf, got_len, 0,
			      &t, 0, 0, 0, UINT64_MAX, from->sin_addr.s_addr, from->sin_port, dst,
			      self.sin_port);
}

/* Not inlined: the rx loops keep a call here, as when it held its own copy of the loop. */
__attribute__((noinline)) static void recov_drain_capture(struct hc_capture *c, struct hc_recov *r)
{
	if (hc_recov_fd(r) < 0)
		return;
	uint8_t ctrl[CMSG_SPACE(sizeof(struct in_pktinfo))];
	const struct hc_recov_tap tap = { .buf = c->recov_buf, .cap = HC_RECOV_CAP_BUF, .ctrl = ctrl,
					  .ctrl_len = sizeof(ctrl), .fn = recov_tap_put, .arg = c };
	hc_recov_drain_tap(r, &c->cons, &tap);
	hc_capring_publish(c->ring);
}

/* Replies are read while something is missing (or when poll saw them); timers run then too.
 * The timers run at `before`, a time taken before the receive sockets were last read: a gap
 * is then asked for (or lost) only if no line's copy had arrived by its deadline, however
 * long the thread was preempted between reading the A and the B line. */
static inline void recov_service(struct hc_capture *c, int sock_ready, uint64_t before)
{
	struct hc_recov *r = c->cons.recov;
	if (!r)
		return;
	int active = hc_recov_active(r);
	if ((sock_ready || active) && c->recov_buf)
		recov_drain_capture(c, r);
	else if (sock_ready || active)
		hc_recov_drain_socket(r, &c->cons);
	if (active || hc_recov_active(r))
		hc_recov_tick(r, &c->cons, before);
}
static inline uint64_t recov_now(struct hc_capture *c)
{
	return c->cons.recov ? hc_now_tai_ns() : 0;
}

/* How long the wakeup-mode poll may sleep: until the next recovery timer at most. */
static inline struct timespec wait_for(struct hc_capture *c)
{
	uint64_t ns = HC_IDLE_WAIT_NS;
	struct hc_recov *r = c->cons.recov;
	if (r && hc_recov_active(r)) {
		uint64_t t = hc_recov_next_timer_ns(r, hc_now_tai_ns());
		if (t < ns)
			ns = t;
	}
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull),
				  .tv_nsec = (long)(ns % 1000000000ull) };
}

static void *xdp_loop(void *arg)
{
	struct hc_capture *c = arg;
	struct pollfd pfd[HC_MAX_QUEUES + 1];
	const uint32_t nx = c->nxs;
	const int busy = c->cfg.poll_mode == HC_POLL_BUSY;
	for (uint32_t i = 0; i < nx; i++) {
		pfd[i].fd = xsk_socket__fd(c->xs[i].xsk);
		pfd[i].events = POLLIN;
	}
	/* The re-request socket: its replies are unicast, passed to the kernel by the program. */
	const uint32_t np = nx + (c->cons.recov != NULL);
	if (c->cons.recov) {
		pfd[nx].fd = hc_recov_fd(c->cons.recov);
		pfd[nx].events = POLLIN;
	}

	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&c->cons.done, __ATOMIC_RELAXED)) {
		uint32_t got = 0;
		uint64_t before = recov_now(c);
		for (uint32_t i = 0; i < nx; i++)
			got += xsk_drain(c, &c->xs[i], busy);
		recov_service(c, busy && !got, before);
		hc_clock_check(&c->cons.clk, !got);
		if (got)
			continue;
		hc_consumer_idle(&c->cons);
		if (!busy) {
			struct timespec ts = wait_for(c);
			int r = ppoll(pfd, np, &ts, NULL);
			if (r < 0 && errno != EINTR)
				c->io_errors++;
			if (r > 0 && np > nx && (pfd[nx].revents & POLLIN))
				recov_service(c, 1, hc_now_tai_ns());
		} else {
			for (uint32_t i = 0; i < nx; i++)
				if (xsk_ring_prod__needs_wakeup(&c->xs[i].fill))
					recvfrom(pfd[i].fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			/* --warm-books: the rings were empty; a few steps of keeping the books in cache
			 * (not while a late join's loader owns the books) */
			if (c->cfg.warm_books && c->cons.books &&
			    (!c->cons.join || hc_join_state(c->cons.join) == HC_JOIN_LIVE))
				hc_books_warm(c->cons.books, HC_WARM_STEPS);
		}
	}
	note_thread_cpu(c);
	return NULL;
}

static inline uint64_t ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000ull + (uint64_t)t->tv_nsec;
}

static void udp_drain(struct hc_capture *c, uint32_t sock)
{
	const uint32_t feed = c->udp_feed[sock];
	for (uint32_t i = 0; i < HC_BATCH; i++) {
		c->msgs[i].msg_hdr.msg_control = c->ctrl[i];
		c->msgs[i].msg_hdr.msg_controllen = sizeof(c->ctrl[i]);
		c->msgs[i].msg_hdr.msg_flags = 0;
		c->msgs[i].msg_hdr.msg_namelen = sizeof(c->src[i]);
	}
	int n = recvmmsg(c->udp_fd[sock], c->msgs, HC_BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0) {
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			c->io_errors++;
		return;
	}
	uint64_t ret_ns = hc_stamp_tai_ns(&c->cons.clk);
	for (int i = 0; i < n; i++) {
		struct hc_pkt_times t = { 0 };
		t.deq_tai_ns = ret_ns;
		struct msghdr *mh = &c->msgs[i].msg_hdr;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPING) {
				const struct timespec *ts = (const void *)CMSG_DATA(cm);
				uint64_t sw = ts_ns(&ts[0]);
				if (sw)
					t.sw_tai_ns = sw + (uint64_t)c->tai_offset_ns;
				t.hw_ns = ts_ns(&ts[2]);
			}
		}
		hc_consumer_packet(&c->cons, feed, c->iov[i].iov_base, c->msgs[i].msg_len, &t);
		if (c->ring)
			hc_capring_put(c->ring, HC_PCAP_IF_FEED, HC_CAPREC_UDP, c->iov[i].iov_base,
				       c->msgs[i].msg_len, 0, &t, &c->cons, c->src[i].sin_addr.s_addr,
				       c->src[i].sin_port, c->udp_group[sock], c->udp_port[sock]);
		if (__atomic_load_n(&c->cons.done, __ATOMIC_RELAXED))
			break;
	}
	if (c->ring)
		hc_capring_publish(c->ring);
}

static void *udp_loop(void *arg)
{
	struct hc_capture *c = arg;
	struct pollfd pfd[2 * HC_MAX_FEEDS + 1];
	const uint32_t nf = c->nudp; /* every line's socket */
	for (uint32_t i = 0; i < nf; i++) {
		pfd[i].fd = c->udp_fd[i];
		pfd[i].events = POLLIN;
	}
	const uint32_t np = nf + (c->cons.recov != NULL);
	if (c->cons.recov) {
		pfd[nf].fd = hc_recov_fd(c->cons.recov);
		pfd[nf].events = POLLIN;
	}
	const int busy = c->cfg.poll_mode == HC_POLL_BUSY;
	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&c->cons.done, __ATOMIC_RELAXED)) {
		hc_consumer_idle(&c->cons);
		hc_clock_check(&c->cons.clk, 1); /* between recvmmsg batches */
		if (busy) {
			uint64_t before = recov_now(c);
			for (uint32_t i = 0; i < nf; i++)
				udp_drain(c, i);
			recov_service(c, 1, before);
			continue;
		}
		struct timespec ts = wait_for(c);
		int r = ppoll(pfd, np, &ts, NULL);
		/* ppoll reported every socket that had data by now: the timers' time */
		uint64_t before = recov_now(c);
		if (r < 0) {
			if (errno != EINTR)
				c->io_errors++;
			continue;
		}
		for (uint32_t i = 0; i < nf && r > 0; i++)
			if (pfd[i].revents & POLLIN)
				udp_drain(c, i);
		recov_service(c, r > 0 && np > nf && (pfd[nf].revents & POLLIN), before);
	}
	note_thread_cpu(c);
	return NULL;
}

/* ---- lifecycle ---- */

int hc_capture_open(const struct hc_capture_cfg *cfg, struct hc_capture **out, const char **stage)
{
	int err;
	*stage = "config";
	if (cfg->nfeeds == 0 || cfg->nfeeds > HC_MAX_FEEDS || cfg->queue >= HC_MAX_QUEUES ||
	    cfg->nqueues > HC_MAX_QUEUES)
		return -EINVAL;
	for (uint32_t i = 0; i < cfg->nqueues; i++)
		if (cfg->queues[i] >= HC_MAX_QUEUES)
			return -EINVAL;
	*stage = "alloc";
	struct hc_capture *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	c->link_fd = -1;
	for (int i = 0; i < 2 * HC_MAX_FEEDS; i++)
		c->udp_fd[i] = -1;
	hc_consumer_init(&c->cons, cfg->nfeeds, cfg->max_packets);
	c->cons.timing = cfg->timing;
	c->cons.phc_is_tai = cfg->phc_is_tai;
	c->cons.itch_epoch_tai_ns = cfg->itch_epoch_tai_ns;
	*stage = "stamp-clock";
	err = hc_clock_init(&c->cons.clk, cfg->stamp);
	if (err)
		goto fail;
	if (cfg->ab_mask && !cfg->recovery) { /* the lines are merged by recovery.c */
		*stage = "config";
		err = -EINVAL;
		goto fail;
	}
	if (cfg->recovery) {
		*stage = "recovery";
		c->cfg.recov.ab_mask = cfg->ab_mask;
		err = hc_recov_new(&c->cons.recov, &c->cfg.recov, cfg->nfeeds);
		if (err)
			goto fail;
	}
	if (cfg->books) {
		*stage = "books";
		err = hc_books_new(&c->cons.books, cfg->expected_orders);
		if (err)
			goto fail;
		err = hc_snap_table_new(&c->cons.snaps); /* hftcap Book Snapshots (snap.h) */
		if (err)
			goto fail;
	}
	struct timex tx = { 0 };
	if (adjtimex(&tx) >= 0)
		c->info.tai_offset_s = tx.tai;
	c->tai_offset_ns = (int64_t)c->info.tai_offset_s * 1000000000ll;

	if (cfg->path == HC_PATH_KERNEL) {
		err = udp_setup(c, stage);
		if (err)
			goto fail;
		*out = c;
		return 0;
	}
	*stage = "xdp-query";
	uint32_t existing = 0;
	int mode = 0;
	err = hc_xdp_query(cfg->ifindex, &existing, &mode);
	if (err)
		goto fail;
	if (existing) {
		*stage = "xdp-busy";
		err = -EBUSY;
		goto fail;
	}
	*stage = "bpf-load";
	err = load_program(c);
	if (err)
		goto fail;
	*stage = "feed-map";
	err = feeds_setup(c);
	if (err)
		goto fail;
	err = xsk_setup(c, stage);
	if (err)
		goto fail;
	*stage = "xdp-attach";
	err = attach_link(c);
	if (err)
		goto fail;
	*out = c;
	return 0;
fail:
	hc_capture_close(c);
	return err;
}

int hc_capture_start(struct hc_capture *c)
{
	if (c->started)
		return -EALREADY;
	__atomic_store_n(&c->stop, 0, __ATOMIC_RELAXED);
	int err = pthread_create(&c->thread, NULL,
				 c->cfg.path == HC_PATH_KERNEL ? udp_loop : xdp_loop, c);
	if (err)
		return -err;
	if (c->cfg.cpu >= 0 && (err = hc_pin_thread(c->thread, c->cfg.cpu)) < 0) {
		__atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
		pthread_join(c->thread, NULL);
		return err;
	}
	c->started = 1;
	return 0;
}

void hc_capture_stop(struct hc_capture *c)
{
	if (!c->started)
		return;
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
	pthread_join(c->thread, NULL);
	c->started = 0;
}

int hc_capture_done(struct hc_capture *c)
{
	return __atomic_load_n(&c->cons.done, __ATOMIC_ACQUIRE);
}

void hc_capture_close(struct hc_capture *c)
{
	if (!c)
		return;
	hc_capture_stop(c);
	if (c->link_fd >= 0)
		close(c->link_fd); /* the kernel detaches the program with the last link reference */
	for (uint32_t i = 0; i < c->nxs; i++) {
		struct hc_xsk *x = &c->xs[i];
		if (x->xsk)
			xsk_socket__delete(x->xsk);
		if (x->umem)
			xsk_umem__delete(x->umem);
		if (x->umem_area)
			munmap(x->umem_area, x->umem_size);
		free(x->hold.addr);
		free(x->hold.need);
		hc_xsk_pred_free(&x->pred);
	}
	free(c->recov_buf);
	if (c->skel)
		hftcap_bpf__destroy(c->skel);
	if (c->skel_hw)
		hftcap_hw_bpf__destroy(c->skel_hw);
	for (int i = 0; i < 2 * HC_MAX_FEEDS; i++)
		if (c->udp_fd[i] >= 0)
			close(c->udp_fd[i]);
	free(c->bufs);
	if (c->cons.books)
		hc_books_free(c->cons.books);
	hc_snap_table_free(c->cons.snaps);
	hc_recov_free(c->cons.recov);
	free(c);
}

const struct hc_capture_info *hc_capture_info(struct hc_capture *c) { return &c->info; }
const struct hc_consumer *hc_capture_consumer(struct hc_capture *c) { return &c->cons; }
struct hc_books *hc_capture_books(struct hc_capture *c) { return c->cons.books; }
struct hc_recov *hc_capture_recov(struct hc_capture *c) { return c->cons.recov; }
const struct hc_clock *hc_capture_clock(struct hc_capture *c) { return &c->cons.clk; }

int hc_capture_set_join(struct hc_capture *c, struct hc_join *j)
{
	if (!c->cons.books)
		return -EINVAL;
	hc_consumer_attach_join(&c->cons, j);
	return 0;
}

struct hc_books *hc_capture_take_books(struct hc_capture *c)
{
	hc_capture_stop(c);
	struct hc_books *b = c->cons.books;
	c->cons.books = NULL;
	return b;
}
struct hc_snap_table *hc_capture_snaps(struct hc_capture *c) { return c->cons.snaps; }

struct hc_snap_table *hc_capture_take_snaps(struct hc_capture *c)
{
	hc_capture_stop(c);
	struct hc_snap_table *t = c->cons.snaps;
	c->cons.snaps = NULL;
	return t;
}
uint64_t hc_capture_io_errors(struct hc_capture *c) { return c->io_errors; }

void hc_capture_reset_hists(struct hc_capture *c)
{
	__atomic_store_n(&c->cons.reset_hists, 1, __ATOMIC_RELEASE);
}
uint64_t hc_capture_thread_cpu_ns(struct hc_capture *c) { return c->thread_cpu_ns; }

int hc_capture_set_ring(struct hc_capture *c, struct hc_capring *ring)
{
	if (c->started)
		return -EBUSY;
	if (c->ring)
		return -EALREADY;
	if (c->nxs > HC_CAPRING_MAX_UMEM)
		return -E2BIG;
	if (c->cons.recov && hc_recov_fd(c->cons.recov) >= 0) {
		int one = 1;
		if (setsockopt(hc_recov_fd(c->cons.recov), IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)))
			return -errno;
		c->recov_buf = malloc(HC_RECOV_CAP_BUF);
		if (!c->recov_buf)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < c->nxs; i++) {
		struct hc_xsk *x = &c->xs[i];
		/* every frame the fill ring was not given: free to start with */
		uint64_t spare = x->frames - x->base / 2, cap = 1;
		while (cap < spare + HC_BATCH)
			cap <<= 1;
		struct hc_caphold *h = &x->hold;
		h->addr = calloc(cap, sizeof(*h->addr));
		h->need = calloc(cap, sizeof(*h->need));
		if (!h->addr || !h->need)
			return -ENOMEM; /* hc_capture_close frees them */
		for (uint64_t k = 0; k < spare; k++)
			h->addr[k] = (uint64_t)(x->base / 2 + k) * HC_FRAME_SIZE;
		h->mask = cap - 1;
		h->tail = 0;
		h->rel = h->head = spare;
		ring->umem[i] = x->umem_area;
	}
	c->ring = ring;
	return 0;
}

int hc_capture_xsk_drops(void *arg, struct hc_xsk_drops *out)
{
	struct hc_capture *c = arg;
	memset(out, 0, sizeof(*out));
	if (c->cfg.path == HC_PATH_KERNEL) {
		for (uint32_t i = 0; i < c->cfg.nfeeds; i++) {
			uint32_t mi[SK_MEMINFO_VARS];
			socklen_t len = sizeof(mi);
			memset(mi, 0, sizeof(mi));
			if (c->udp_fd[i] < 0)
				continue;
			if (getsockopt(c->udp_fd[i], SOL_SOCKET, SO_MEMINFO, mi, &len))
				return -errno;
			if (len > SK_MEMINFO_DROPS * sizeof(uint32_t))
				out->socket_drops += mi[SK_MEMINFO_DROPS];
		}
		return 0;
	}
	for (uint32_t i = 0; i < c->nxs; i++) {
		struct xdp_statistics st;
		socklen_t len = sizeof(st);
		memset(&st, 0, sizeof(st));
		if (getsockopt(xsk_socket__fd(c->xs[i].xsk), SOL_XDP, XDP_STATISTICS, &st, &len))
			return -errno;
		out->rx_dropped += st.rx_dropped;
		out->rx_ring_full += st.rx_ring_full;
		out->rx_fill_ring_empty_descs += st.rx_fill_ring_empty_descs;
	}
	return 0;
}

int hc_capture_xdp_stats(struct hc_capture *c, uint64_t out[HC_XDP_NSTATS])
{
	memset(out, 0, sizeof(uint64_t) * HC_XDP_NSTATS);
	if (c->cfg.path != HC_PATH_XDP || c->stats_fd < 0)
		return 0;
	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	uint64_t vals[ncpu];
	for (uint32_t k = 0; k < HC_XDP_NSTATS; k++) {
		if (bpf_map_lookup_elem(c->stats_fd, &k, vals))
			return -errno;
		for (int i = 0; i < ncpu; i++)
			out[k] += vals[i];
	}
	return 0;
}
