/* floor.c: see floor.h. The loops touch only what open() prepared and never print. */
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include "floor.h"
#include "floor_shared.h"
#include "hc_time.h"
#include "hc_thread.h"
#include "floor.skel.h"

#define FL_FRAME_SIZE 2048u
/* The same UMEM and ring sizes as hftcap's (capture.c): 16 MiB, half in the fill ring, half for
 * the RX ring, so a preempted consumer loses packets in both or in neither. */
#define FL_FRAMES 8192u
#define FL_BATCH 64u
#define FL_PAYLOAD_OFF 42u    /* Ethernet 14 + IPv4 20 (the program accepts ihl 5 only) + UDP 8 */
#define FL_MAX_PAYLOAD 1472u

const char *const hc_floor_hop_names[HC_FLOOR_NHOPS] = {
	[HC_FLOOR_SEND_TO_XDP] = "send_to_xdp",
	[HC_FLOOR_XDP_TO_APP] = "xdp_to_app",
	[HC_FLOOR_STACK_TO_APP] = "stack_to_app",
	[HC_FLOOR_SEND_TO_APP] = "send_to_app",
};

struct hc_floor_rx {
	struct hc_floor_rx_cfg cfg;
	struct hc_floor_rx_stats st;
	struct hc_hist hists[HC_FLOOR_NHOPS];
	uint64_t next_seq;
	int64_t tai_offset_ns;
	/* XDP */
	struct floor_bpf *skel;
	int link_fd;
	void *umem_area;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	/* kernel socket */
	int fd;
	uint8_t buf[2048];
	uint8_t ctrl[256];
	pthread_t thread;
	int started, stop, reset;
};

static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline void hop(struct hc_floor_rx *r, enum hc_floor_hop h, uint64_t from, uint64_t to)
{
	if (to >= from)
		hc_hist_record(&r->hists[h], to - from);
	else
		r->st.negative[h]++;
}

/* The payload's sequence and send stamp; the reset request of a reader is honoured here. */
static inline uint64_t take(struct hc_floor_rx *r, const uint8_t *p)
{
	if (__atomic_load_n(&r->reset, __ATOMIC_ACQUIRE)) {
		for (int h = 0; h < HC_FLOOR_NHOPS; h++)
			hc_hist_reset(&r->hists[h]);
		memset(r->st.negative, 0, sizeof(r->st.negative));
		__atomic_store_n(&r->reset, 0, __ATOMIC_RELEASE);
	}
	uint64_t seq = get_le64(p);
	if (r->st.packets && seq > r->next_seq)
		r->st.seq_gaps += seq - r->next_seq;
	r->next_seq = seq + 1;
	r->st.packets++;
	return get_le64(p + 8);
}

/* ---- AF_XDP ---- */

static int xdp_open(struct hc_floor_rx *r, const char **stage)
{
	*stage = "bpf-load";
	r->skel = floor_bpf__open();
	if (!r->skel)
		return -errno;
	r->skel->rodata->group_be = r->cfg.group_be;
	r->skel->rodata->port_be = r->cfg.port_be;
	int err = floor_bpf__load(r->skel);
	if (err)
		return err < 0 ? err : -EINVAL;
	*stage = "umem";
	size_t size = (size_t)FL_FRAMES * FL_FRAME_SIZE;
	r->umem_area = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (r->umem_area == MAP_FAILED) {
		r->umem_area = NULL;
		return -errno;
	}
	struct xsk_umem_config ucfg = { .fill_size = FL_FRAMES / 2, .comp_size = 64,
					.frame_size = FL_FRAME_SIZE };
	/* libxdp 1.3.1 leaves cached_prod uninitialised: start from zeroed rings. */
	memset(&r->fill, 0, sizeof(r->fill));
	memset(&r->comp, 0, sizeof(r->comp));
	memset(&r->rx, 0, sizeof(r->rx));
	err = xsk_umem__create(&r->umem, r->umem_area, size, &r->fill, &r->comp, &ucfg);
	if (err) {
		r->umem = NULL;
		return err;
	}
	*stage = "xsk-bind";
	struct xsk_socket_config scfg = {
		.rx_size = FL_FRAMES / 2,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = r->cfg.zerocopy ? XDP_ZEROCOPY : XDP_COPY,
	};
	err = xsk_socket__create(&r->xsk, r->cfg.ifname, 0, r->umem, &r->rx, NULL, &scfg);
	if (err) {
		r->xsk = NULL;
		return err;
	}
	*stage = "fill-ring";
	uint32_t idx, n = FL_FRAMES / 2;
	if (xsk_ring_prod__reserve(&r->fill, n, &idx) != n)
		return -ENOSPC;
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&r->fill, idx + i) = (uint64_t)i * FL_FRAME_SIZE;
	xsk_ring_prod__submit(&r->fill, n);
	*stage = "xskmap";
	uint32_t q = 0;
	int fd = xsk_socket__fd(r->xsk);
	if (bpf_map_update_elem(bpf_map__fd(r->skel->maps.xsks), &q, &fd, BPF_ANY))
		return -errno;
	*stage = "xdp-attach";
	LIBBPF_OPTS(bpf_link_create_opts, lo);
	lo.flags = r->cfg.native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
	int prog_fd = bpf_program__fd(r->skel->progs.floor_xdp);
	r->link_fd = bpf_link_create(prog_fd, r->cfg.ifindex, BPF_XDP, &lo);
	if (r->link_fd < 0) {
		err = -errno;
		r->link_fd = -1;
		return err;
	}
	struct bpf_prog_info pi;
	uint32_t plen = sizeof(pi);
	memset(&pi, 0, sizeof(pi));
	if (!bpf_obj_get_info_by_fd(prog_fd, &pi, &plen))
		r->st.prog_id = pi.id;
	return 0;
}

static void *xdp_loop(void *arg)
{
	struct hc_floor_rx *r = arg;
	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		uint32_t idx_rx, idx_fq;
		/* A plain spin, as hftcap's busy loop: no PAUSE, which under KVM's pause-loop exiting
		 * hands the vCPU back to the host. */
		uint32_t n = xsk_ring_cons__peek(&r->rx, FL_BATCH, &idx_rx);
		if (!n)
			continue;
		for (uint32_t i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&r->rx, idx_rx + i);
			uint64_t deq = hc_now_tai_ns();
			uint64_t addr = xsk_umem__add_offset_to_addr(d->addr);
			uint8_t *frame = xsk_umem__get_data(r->umem_area, addr);
			struct hc_floor_meta *m = (void *)(frame - sizeof(*m));
			if (d->len < FL_PAYLOAD_OFF + HC_FLOOR_HDR_LEN) {
				r->st.bad++;
			} else {
				uint64_t sent = take(r, frame + FL_PAYLOAD_OFF);
				hop(r, HC_FLOOR_SEND_TO_APP, sent, deq);
				if (m->magic == HC_FLOOR_MAGIC) {
					hop(r, HC_FLOOR_SEND_TO_XDP, sent, m->xdp_tai_ns);
					hop(r, HC_FLOOR_XDP_TO_APP, m->xdp_tai_ns, deq);
				} else {
					r->st.unstamped++;
				}
			}
			m->magic = 0; /* a frame the program could not stamp must not show an old stamp */
		}
		/* frames back after the stamps: the reserve may miss on the kernel's consumer index */
		while (xsk_ring_prod__reserve(&r->fill, n, &idx_fq) != n)
			;
		for (uint32_t i = 0; i < n; i++)
			*xsk_ring_prod__fill_addr(&r->fill, idx_fq + i) =
				xsk_umem__extract_addr(xsk_ring_cons__rx_desc(&r->rx, idx_rx + i)->addr);
		xsk_ring_prod__submit(&r->fill, n);
		xsk_ring_cons__release(&r->rx, n);
	}
	return NULL;
}

/* ---- kernel socket ---- */

static int udp_open(struct hc_floor_rx *r, const char **stage)
{
	*stage = "udp-socket";
	r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (r->fd < 0)
		return -errno;
	int one = 1;
	setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	*stage = "udp-bind";
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = r->cfg.port_be,
				  .sin_addr.s_addr = r->cfg.group_be };
	if (bind(r->fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	*stage = "udp-bindtodevice";
	if (setsockopt(r->fd, SOL_SOCKET, SO_BINDTODEVICE, r->cfg.ifname, strlen(r->cfg.ifname)))
		return -errno;
	*stage = "igmp-join";
	struct ip_mreqn mr = { .imr_multiaddr.s_addr = r->cfg.group_be, .imr_ifindex = r->cfg.ifindex };
	if (setsockopt(r->fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)))
		return -errno;
	*stage = "so-timestamping";
	int ts = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
	if (setsockopt(r->fd, SOL_SOCKET, SO_TIMESTAMPING, &ts, sizeof(ts)))
		return -errno;
	return 0;
}

static void *udp_loop(void *arg)
{
	struct hc_floor_rx *r = arg;
	struct iovec iov = { .iov_base = r->buf, .iov_len = sizeof(r->buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		mh.msg_control = r->ctrl;
		mh.msg_controllen = sizeof(r->ctrl);
		ssize_t n = recvmsg(r->fd, &mh, MSG_DONTWAIT);
		uint64_t deq = hc_now_tai_ns();
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				r->st.io_errors++;
			continue;
		}
		if ((size_t)n < HC_FLOOR_HDR_LEN) {
			r->st.bad++;
			continue;
		}
		uint64_t sent = take(r, r->buf);
		hop(r, HC_FLOOR_SEND_TO_APP, sent, deq);
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPING) {
				const struct timespec *t = (const void *)CMSG_DATA(cm);
				uint64_t sw = (uint64_t)t[0].tv_sec * 1000000000ull + (uint64_t)t[0].tv_nsec;
				if (sw)
					hop(r, HC_FLOOR_STACK_TO_APP, sw + (uint64_t)r->tai_offset_ns, deq);
			}
		}
	}
	return NULL;
}

/* ---- lifecycle ---- */

int hc_floor_rx_open(const struct hc_floor_rx_cfg *cfg, struct hc_floor_rx **out,
		     const char **stage)
{
	*stage = "config";
	if (cfg->kind != HC_FLOOR_XDP && cfg->kind != HC_FLOOR_KERNEL)
		return -EINVAL;
	*stage = "alloc";
	struct hc_floor_rx *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	r->fd = -1;
	r->link_fd = -1;
	for (int h = 0; h < HC_FLOOR_NHOPS; h++)
		hc_hist_init(&r->hists[h]);
	struct timex tx = { 0 };
	if (adjtimex(&tx) >= 0)
		r->tai_offset_ns = (int64_t)tx.tai * 1000000000ll;
	int err = cfg->kind == HC_FLOOR_XDP ? xdp_open(r, stage) : udp_open(r, stage);
	if (err) {
		hc_floor_rx_close(r);
		return err;
	}
	*out = r;
	return 0;
}

int hc_floor_rx_start(struct hc_floor_rx *r)
{
	if (r->started)
		return -EALREADY;
	__atomic_store_n(&r->stop, 0, __ATOMIC_RELAXED);
	int err = pthread_create(&r->thread, NULL, r->cfg.kind == HC_FLOOR_XDP ? xdp_loop : udp_loop, r);
	if (err)
		return -err;
	if (r->cfg.cpu >= 0 && (err = hc_pin_thread(r->thread, r->cfg.cpu)) < 0) {
		__atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
		pthread_join(r->thread, NULL);
		return err;
	}
	r->started = 1;
	return 0;
}

void hc_floor_rx_stop(struct hc_floor_rx *r)
{
	if (!r->started)
		return;
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
	pthread_join(r->thread, NULL);
	r->started = 0;
}

void hc_floor_rx_close(struct hc_floor_rx *r)
{
	if (!r)
		return;
	hc_floor_rx_stop(r);
	if (r->link_fd >= 0)
		close(r->link_fd);
	if (r->xsk)
		xsk_socket__delete(r->xsk);
	if (r->umem)
		xsk_umem__delete(r->umem);
	if (r->umem_area)
		munmap(r->umem_area, (size_t)FL_FRAMES * FL_FRAME_SIZE);
	if (r->skel)
		floor_bpf__destroy(r->skel);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

void hc_floor_rx_reset(struct hc_floor_rx *r) { __atomic_store_n(&r->reset, 1, __ATOMIC_RELEASE); }
const struct hc_hist *hc_floor_rx_hists(const struct hc_floor_rx *r) { return r->hists; }
void hc_floor_rx_stats(const struct hc_floor_rx *r, struct hc_floor_rx_stats *st) { *st = r->st; }

/* ---- sender ---- */

static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int hc_floor_send(int fd, const struct hc_floor_tx_cfg *cfg, struct hc_floor_tx_stats *st,
		  const int *stop)
{
	if (fd < 0)
		return -EBADF;
	if (!cfg->packets || !(cfg->rate_pps > 0) || cfg->payload_len < HC_FLOOR_HDR_LEN ||
	    cfg->payload_len > FL_MAX_PAYLOAD || !cfg->max_duration_ns)
		return -EINVAL;
	uint8_t pkt[FL_MAX_PAYLOAD];
	memset(pkt, 0, sizeof(pkt));
	st->sent = st->errors = 0;
	st->last_errno = 0;
	hc_hist_init(&st->stamp_to_return);
	const double period = 1e9 / cfg->rate_pps;
	const uint64_t start = mono_ns(), limit = start + cfg->max_duration_ns;
	uint64_t last = start;
	for (uint64_t i = 0; i < cfg->packets; i++) {
		uint64_t t = start + (uint64_t)((double)i * period);
		for (;;) { /* sleep, then spin the last spin_ns */
			uint64_t now = mono_ns();
			if (now >= t || now >= limit || __atomic_load_n(stop, __ATOMIC_RELAXED))
				break;
			if (t - now > cfg->spin_ns) {
				uint64_t to = t - cfg->spin_ns;
				struct timespec ts = { .tv_sec = (time_t)(to / 1000000000ull),
						       .tv_nsec = (long)(to % 1000000000ull) };
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			} else {
				cpu_relax();
			}
		}
		if (mono_ns() >= limit || __atomic_load_n(stop, __ATOMIC_RELAXED))
			break;
		memcpy(pkt, &i, 8);
		uint64_t stamp = hc_now_tai_ns();
		memcpy(pkt + 8, &stamp, 8);
		ssize_t r = send(fd, pkt, cfg->payload_len, 0);
		uint64_t back = hc_now_tai_ns();
		if (r < 0) {
			st->errors++;
			st->last_errno = errno;
		} else {
			st->sent++;
			hc_hist_record(&st->stamp_to_return, back - stamp);
		}
		last = mono_ns();
	}
	st->elapsed_ns = last - start;
	return st->sent || !st->errors ? 0 : -st->last_errno;
}

/* ---- a cache line between two CPUs (hc_floor_line) ---- */

struct line_run {
	_Alignas(64) _Atomic uint64_t ping; /* written on cpu_b, read on cpu_a */
	char pad0[56];
	_Alignas(64) _Atomic uint64_t pong; /* written on cpu_a, read on cpu_b */
	char pad1[56];
	_Alignas(64) _Atomic int stop;
	_Atomic int ready;
	const struct hc_floor_line_cfg *cfg;
	uint64_t *batch_ns;
	uint32_t done;
	int err;
};

/* Spin until *v == want, or stop; checks the clock only after a long fruitless spin (a
 * round trip is well under a microsecond), so the trips it times carry no clock read. */
static int line_wait(struct line_run *r, _Atomic uint64_t *v, uint64_t want, uint64_t limit)
{
	for (uint32_t n = 1;; n++) {
		if (atomic_load_explicit(v, memory_order_acquire) == want)
			return 0;
		if (!(n & 4095) && (atomic_load_explicit(&r->stop, memory_order_relaxed) || mono_ns() >= limit))
			return -ETIMEDOUT;
	}
}

static void *line_peer(void *arg) /* cpu_a: answers every ping */
{
	struct line_run *r = arg;
	int err = hc_pin_thread(pthread_self(), r->cfg->cpu_a);
	atomic_store(&r->ready, err ? err : 1);
	if (err)
		return NULL;
	uint64_t limit = mono_ns() + r->cfg->max_ns;
	for (uint64_t i = 1;; i++) {
		if (line_wait(r, &r->ping, i, limit) < 0)
			return NULL;
		atomic_store_explicit(&r->pong, i, memory_order_release);
	}
}

static void *line_timer(void *arg) /* cpu_b: pings and times */
{
	struct line_run *r = arg;
	const struct hc_floor_line_cfg *c = r->cfg;
	if ((r->err = hc_pin_thread(pthread_self(), c->cpu_b)) < 0)
		return NULL;
	uint64_t limit = mono_ns() + c->max_ns, seq = 0;
	int ready;
	while (!(ready = atomic_load(&r->ready)))
		if (mono_ns() >= limit) {
			r->err = -ETIMEDOUT;
			return NULL;
		}
	if (ready < 0) {
		r->err = ready;
		return NULL;
	}
	for (uint32_t b = 0; b <= c->batches; b++) { /* batch 0 warms up */
		uint64_t t0 = mono_ns();
		for (uint32_t i = 0; i < c->per_batch; i++) {
			atomic_store_explicit(&r->ping, ++seq, memory_order_release);
			if (line_wait(r, &r->pong, seq, limit) < 0) {
				r->err = -ETIMEDOUT;
				return NULL;
			}
		}
		uint64_t t1 = mono_ns();
		if (b)
			r->batch_ns[r->done++] = t1 - t0;
	}
	return NULL;
}

int hc_floor_line(const struct hc_floor_line_cfg *cfg, uint64_t *batch_ns, uint32_t *done)
{
	*done = 0;
	if (cfg->cpu_a == cfg->cpu_b || cfg->cpu_a < 0 || cfg->cpu_b < 0 || cfg->cpu_a >= CPU_SETSIZE ||
	    cfg->cpu_b >= CPU_SETSIZE || !cfg->batches || !cfg->per_batch || !cfg->max_ns)
		return -EINVAL;
	struct line_run *r = aligned_alloc(64, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->batch_ns = batch_ns;
	pthread_t peer, timer;
	int err = -pthread_create(&peer, NULL, line_peer, r);
	if (err) {
		free(r);
		return err;
	}
	err = -pthread_create(&timer, NULL, line_timer, r);
	if (!err) {
		pthread_join(timer, NULL);
		err = r->err;
	}
	atomic_store(&r->stop, 1);
	pthread_join(peer, NULL);
	*done = r->done;
	free(r);
	return err;
}
