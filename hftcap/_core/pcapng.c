/* pcapng.c: see pcapng.h. The writer thread is the ring's only consumer; its mutex guards
 * only what the control plane hands over (next file name, rotate request, stop, the
 * AF_XDP counter source), never the ring. Block layouts: draft-ietf-opsawg-pcapng-06. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "pcapng.h"
#include "hc_thread.h"
#include "hc_time.h"

#define CHUNK (1u << 20)          /* write in chunks of 1 MiB */
#define OBUF (CHUNK + (512u << 10)) /* a chunk plus the largest block (snaplen <= 256 KiB) */
#define PEN 32473u                /* see DESIGN.md "pcapng custom options" */
#define OPT_CUSTOM_BIN 2989u
#define STAMPS_VERSION 1u
#define STAMPS_LEN (4u + 4u + 7u * 8u) /* PEN, flags, seven u64 */
#define ISB_COUNTERS_LEN (4u + 4u + 5u * 8u)

struct hc_pcapng {
	struct hc_pcapng_cfg cfg;
	uint8_t *header;
	struct hc_capring ring;
	uint8_t *obuf;
	size_t olen;
	int fd;
	int is_stdout;
	char path[PATH_MAX];     /* current file's final name */
	uint64_t file_bytes;     /* in the current file, incl. buffered */
	int late;                /* a size rotation is due and waits for a name */
	uint64_t last_drops[HC_PCAP_MAX_IF];
	uint64_t start_ns;

	pthread_t thread;
	int started;
	pthread_mutex_t mu;      /* guards the fields below */
	char next[HC_PCAP_NEXT][PATH_MAX]; /* FIFO of names for size rotations */
	uint32_t next_head, next_n;
	char rot[PATH_MAX];
	int want_rotate;
	int stop;
	hc_xsk_drops_fn xsk_fn;
	void *xsk_arg;
	struct hc_pcapng_stats st; /* written by the writer; read under mu */
};

static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
/* pcapng 64-bit timestamps: high word first, each in the section's byte order. */
static inline void put_ts(uint8_t *p, uint64_t ns)
{
	put32(p, (uint32_t)(ns >> 32));
	put32(p + 4, (uint32_t)ns);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void set_error(struct hc_pcapng *w, int err)
{
	pthread_mutex_lock(&w->mu);
	if (!w->st.error)
		w->st.error = err;
	pthread_mutex_unlock(&w->mu);
}

static int flush(struct hc_pcapng *w)
{
	if (!w->olen || w->fd < 0)
		return 0;
	int err = write_all(w->fd, w->obuf, w->olen);
	pthread_mutex_lock(&w->mu);
	w->st.bytes += w->olen;
	pthread_mutex_unlock(&w->mu);
	w->olen = 0;
	if (err)
		set_error(w, err);
	return err;
}

static int open_file(struct hc_pcapng *w, const char *path)
{
	if (strlen(path) + 6 > sizeof(w->path))
		return -ENAMETOOLONG;
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->file_bytes = 0;
	w->late = 0;
	if (!strcmp(path, "-")) {
		w->fd = STDOUT_FILENO;
		w->is_stdout = 1;
	} else {
		char tmp[PATH_MAX + 8];
		snprintf(tmp, sizeof(tmp), "%s%s", path, w->cfg.part ? ".part" : "");
		/* no O_TRUNC without .part: a FIFO or device is written as it is */
		int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC | (w->cfg.part ? O_TRUNC : 0), 0644);
		if (fd < 0)
			return -errno;
		w->fd = fd;
	}
	memcpy(w->obuf + w->olen, w->header, w->cfg.header_len);
	w->olen += w->cfg.header_len;
	w->file_bytes += w->cfg.header_len;
	return 0;
}

static size_t isb(struct hc_pcapng *w, uint8_t *p, uint32_t iface, uint64_t now)
{
	struct hc_xsk_drops xd = { 0 };
	pthread_mutex_lock(&w->mu);
	if (iface == HC_PCAP_IF_FEED && w->xsk_fn)
		w->xsk_fn(w->xsk_arg, &xd);
	pthread_mutex_unlock(&w->mu);
	uint64_t written = w->st.written_if[iface];
	uint64_t seen = __atomic_load_n(&w->ring.seen[iface], __ATOMIC_RELAXED);
	uint64_t drops = __atomic_load_n(&w->ring.drops[iface], __ATOMIC_RELAXED) + w->ring.late[iface];
	uint64_t kdrop = xd.rx_dropped + xd.rx_ring_full + xd.rx_fill_ring_empty_descs + xd.socket_drops;
	size_t o = 20;
	put32(p, 5);
	put32(p + 8, iface);
	put_ts(p + 12, now);
	/* isb_starttime 2, isb_endtime 3, isb_ifrecv 4, isb_osdrop 7, isb_usrdeliv 8 */
	const uint16_t codes[5] = { 2, 3, 4, 7, 8 };
	const uint64_t vals[5] = { w->start_ns, now, seen, drops + kdrop, written };
	for (int i = 0; i < 5; i++) {
		put16(p + o, codes[i]);
		put16(p + o + 2, 8);
		if (i < 2)
			put_ts(p + o + 4, vals[i]);
		else
			put64(p + o + 4, vals[i]);
		o += 12;
	}
	/* hftcap's breakdown of isb_osdrop (DESIGN.md): capture ring, then XDP_STATISTICS */
	put16(p + o, OPT_CUSTOM_BIN);
	put16(p + o + 2, ISB_COUNTERS_LEN);
	put32le(p + o + 4, PEN);
	put32le(p + o + 8, 2u << 24 | STAMPS_VERSION << 8);
	put64le(p + o + 12, seen);
	put64le(p + o + 20, drops);
	put64le(p + o + 28, xd.rx_dropped);
	put64le(p + o + 36, xd.rx_ring_full);
	put64le(p + o + 44, xd.rx_fill_ring_empty_descs);
	o += 4 + ISB_COUNTERS_LEN;
	put32(p + o, 0); /* opt_endofopt */
	o += 4;
	put32(p + 4, (uint32_t)o + 4);
	put32(p + o, (uint32_t)o + 4);
	return o + 4;
}

/* ISBs, flush, close, rename .part to the final name. */
static int finish_file(struct hc_pcapng *w)
{
	if (w->fd < 0)
		return 0;
	uint64_t now = hc_now_tai_ns();
	for (uint32_t i = 0; i < w->cfg.nifaces; i++)
		w->olen += isb(w, w->obuf + w->olen, i, now);
	int err = flush(w);
	if (w->is_stdout)
		return err;
	if (!err && fdatasync(w->fd) && errno != EINVAL && errno != EROFS)
		err = -errno;
	if (close(w->fd) && !err)
		err = -errno;
	w->fd = -1;
	if (!err && w->cfg.part) {
		char tmp[PATH_MAX + 8];
		snprintf(tmp, sizeof(tmp), "%s.part", w->path);
		if (rename(tmp, w->path))
			err = -errno;
	}
	pthread_mutex_lock(&w->mu);
	if (err && !w->st.error)
		w->st.error = err;
	if (!err)
		w->st.files_done++;
	pthread_mutex_unlock(&w->mu);
	return err;
}

static int rotate_to(struct hc_pcapng *w, const char *path)
{
	int err = finish_file(w);
	if (!err)
		err = open_file(w, path);
	if (err)
		set_error(w, err);
	return err;
}

static inline uint64_t stamp_of(const struct hc_caprec *r, int src, uint32_t *used)
{
	const uint64_t v[4] = { r->t.hw_ns, r->t.xdp_tai_ns, r->t.sw_tai_ns, r->t.deq_tai_ns };
	for (int s = src; s < 4; s++) {
		if (v[s]) {
			*used = (uint32_t)s;
			return v[s];
		}
	}
	*used = HC_TSRC_DEQ;
	return r->t.deq_tai_ns;
}

static uint16_t ip_csum(const uint8_t *h)
{
	uint32_t s = 0;
	for (int i = 0; i < 20; i += 2)
		s += (uint32_t)(h[i] << 8 | h[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* The Ethernet/IPv4/UDP headers of a datagram a socket received: destination MAC the
 * group's multicast MAC (zero for unicast, e.g. recovery replies), source MAC zero (the
 * socket does not see it), TTL 1, IP id 0, UDP checksum 0. */
static void rebuild_headers(uint8_t *p, const struct hc_caprec *r)
{
	const uint8_t *g = (const uint8_t *)&r->dst_ip_be;
	const uint8_t dmac[6] = { 0x01, 0x00, 0x5e, (uint8_t)(g[1] & 0x7f), g[2], g[3] };
	if ((g[0] & 0xf0) == 0xe0)
		memcpy(p, dmac, 6);
	else
		memset(p, 0, 6);
	memset(p + 6, 0, 6);
	p[12] = 0x08;
	p[13] = 0x00;
	uint8_t *ip = p + 14;
	uint16_t tot = (uint16_t)(20 + 8 + r->origlen);
	ip[0] = 0x45;
	ip[1] = 0;
	ip[2] = (uint8_t)(tot >> 8);
	ip[3] = (uint8_t)tot;
	memset(ip + 4, 0, 4);
	ip[8] = 1;
	ip[9] = 17;
	ip[10] = ip[11] = 0;
	memcpy(ip + 12, &r->src_ip_be, 4);
	memcpy(ip + 16, &r->dst_ip_be, 4);
	uint16_t c = ip_csum(ip);
	ip[10] = (uint8_t)(c >> 8);
	ip[11] = (uint8_t)c;
	uint8_t *u = ip + 20;
	uint16_t ulen = (uint16_t)(8 + r->origlen);
	memcpy(u, &r->src_port_be, 2);
	memcpy(u + 2, &r->dst_port_be, 2);
	u[4] = (uint8_t)(ulen >> 8);
	u[5] = (uint8_t)ulen;
	u[6] = u[7] = 0;
}

/* One EPB at p for record r (sequence seq); 0 when it is not written: an XSK record whose
 * frame the data thread took back before (or while) it was copied. */
static size_t epb(struct hc_pcapng *w, uint8_t *p, const struct hc_caprec *r, uint64_t seq)
{
	uint32_t iface = r->iface < w->cfg.nifaces ? r->iface : 0;
	uint32_t used;
	uint64_t ts = stamp_of(r, w->cfg.ts_source[iface], &used);
	uint32_t caplen = r->caplen, origlen = r->origlen;
	uint8_t *d = p + 28;
	if (r->kind == HC_CAPREC_UDP) {
		rebuild_headers(d, r);
		memcpy(d + HC_PCAP_REBUILT_HDR, r->data, caplen);
		caplen += HC_PCAP_REBUILT_HDR;
		origlen += HC_PCAP_REBUILT_HDR;
		if (caplen > w->cfg.snaplen)
			caplen = w->cfg.snaplen;
	} else if (r->kind == HC_CAPREC_XSK) {
		const uint8_t *umem = r->xsk < HC_CAPRING_MAX_UMEM ? w->ring.umem[r->xsk] : NULL;
		if (!umem)
			return 0;
		memcpy(d, umem + r->umem_addr, caplen);
		/* Seqlock-style: the copy counts only if the frame was still ours after it. The data
		 * thread stores forced (release) before the frame goes back to the fill ring. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&w->ring.forced, __ATOMIC_ACQUIRE) > seq) {
			__atomic_store_n(&w->ring.late[iface], w->ring.late[iface] + 1, __ATOMIC_RELAXED);
			return 0;
		}
	} else {
		memcpy(d, r->data, caplen);
	}
	put32(p, 6);
	put32(p + 8, iface);
	put_ts(p + 12, ts);
	put32(p + 20, caplen);
	put32(p + 24, origlen);
	size_t o = 28 + caplen;
	while (o & 3)
		p[o++] = 0;
	put16(p + o, 2); /* epb_flags: inbound, multicast */
	put16(p + o + 2, 4);
	put32(p + o + 4, 0x9u);
	o += 8;
	if (r->kind != HC_CAPREC_UDP) { /* epb_queue; a kernel socket does not know it */
		put16(p + o, 6);
		put16(p + o + 2, 4);
		put32(p + o + 4, r->queue);
		o += 8;
	}
	uint64_t all = r->drops + w->ring.late[iface];
	uint64_t dc = all - w->last_drops[iface];
	w->last_drops[iface] = all;
	if (dc) { /* epb_dropcount, only when non-zero */
		put16(p + o, 4);
		put16(p + o + 2, 8);
		put64(p + o + 4, dc);
		o += 12;
	}
	put16(p + o, OPT_CUSTOM_BIN); /* every stamp of the packet, fixed little-endian */
	put16(p + o + 2, STAMPS_LEN);
	put32le(p + o + 4, PEN);
	put32le(p + o + 8, 1u << 24 | STAMPS_VERSION << 8 | (r->recorded ? 0x10u : 0) | used);
	const uint64_t v[7] = { r->t.hw_ns, r->t.xdp_tai_ns, r->t.sw_tai_ns, r->t.deq_tai_ns,
				r->dec_tai_ns, r->book_tai_ns, r->itch_ns };
	for (int i = 0; i < 7; i++)
		put64le(p + o + 12 + 8 * i, v[i]);
	o += 4 + STAMPS_LEN;
	put32(p + o, 0);
	o += 4;
	put32(p + 4, (uint32_t)o + 4);
	put32(p + o, (uint32_t)o + 4);
	return o + 4;
}

static void *writer_loop(void *arg)
{
	struct hc_pcapng *w = arg;
	struct hc_capring *r = &w->ring;
	uint64_t last_flush = hc_now_tai_ns();
	const uint64_t flush_ns = (uint64_t)w->cfg.flush_ms * 1000000ull;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		int stop = w->stop, rot = w->want_rotate, broken = w->st.error != 0;
		char path[PATH_MAX];
		if (rot) {
			memcpy(path, w->rot, sizeof(path));
			w->want_rotate = 0;
		}
		pthread_mutex_unlock(&w->mu);
		if (rot && !broken) {
			rotate_to(w, path);
			last_flush = hc_now_tai_ns();
		}
		uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		uint64_t tail = r->tail, seq = r->released;
		uint32_t n = 0;
		while (tail != head) {
			uint64_t off = tail & r->mask;
			const struct hc_caprec *rec = (const void *)(r->buf + off);
			if (rec->size == HC_CAPREC_WRAP) {
				tail += r->size - off;
				continue;
			}
			if (w->cfg.file_size && w->file_bytes >= w->cfg.file_size && !w->is_stdout) {
				pthread_mutex_lock(&w->mu);
				int have = w->next_n != 0;
				if (have) {
					memcpy(path, w->next[w->next_head], sizeof(path));
					w->next_head = (w->next_head + 1) % HC_PCAP_NEXT;
					w->next_n--;
					w->st.names_taken++;
				} else if (!w->late) {
					w->late = 1; /* one late rotation, however many packets wait */
					w->st.rotations_late++;
				}
				broken = w->st.error != 0;
				pthread_mutex_unlock(&w->mu);
				if (have && !broken)
					rotate_to(w, path);
			}
			if (w->fd >= 0) {
				size_t b = epb(w, w->obuf + w->olen, rec, seq);
				if (b) {
					uint32_t ifc = rec->iface < w->cfg.nifaces ? rec->iface : 0;
					w->olen += b;
					w->file_bytes += b;
					__atomic_store_n(&w->st.written, w->st.written + 1, __ATOMIC_RELAXED);
					__atomic_store_n(&w->st.written_if[ifc], w->st.written_if[ifc] + 1,
							 __ATOMIC_RELAXED);
				}
			}
			tail += rec->size;
			seq++;
			if (++n % 64 == 0) {
				__atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
				__atomic_store_n(&r->released, seq, __ATOMIC_RELEASE);
			}
			if (w->olen >= CHUNK) {
				flush(w);
				last_flush = hc_now_tai_ns();
			}
		}
		__atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
		__atomic_store_n(&r->released, seq, __ATOMIC_RELEASE);
		uint64_t now = hc_now_tai_ns();
		if (w->olen && (now - last_flush >= flush_ns || stop)) {
			flush(w);
			last_flush = now;
		}
		if (stop && __atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == tail)
			break;
		if (!n && !stop) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	finish_file(w);
	return NULL;
}

int hc_pcapng_open(const struct hc_pcapng_cfg *cfg, const char *path, struct hc_pcapng **out)
{
	if (!cfg->header_len || cfg->nifaces == 0 || cfg->nifaces > HC_PCAP_MAX_IF ||
	    cfg->snaplen == 0 || cfg->snaplen > 262144 || cfg->header_len > 65536)
		return -EINVAL;
	struct hc_pcapng *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->cfg = *cfg;
	w->fd = -1;
	pthread_mutex_init(&w->mu, NULL);
	int err = -ENOMEM;
	w->header = malloc(cfg->header_len);
	w->obuf = malloc(OBUF);
	if (!w->header || !w->obuf)
		goto fail;
	memcpy(w->header, cfg->header, cfg->header_len);
	w->cfg.header = w->header;
	uint64_t size = 1ull << 16;
	while (size * 2 <= cfg->ring_bytes)
		size *= 2;
	/* Populated up front: the data thread never takes a page fault on the ring. */
	void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
			 -1, 0);
	if (buf == MAP_FAILED) {
		err = -errno;
		goto fail;
	}
	w->ring.buf = buf;
	w->ring.size = size;
	w->ring.mask = size - 1;
	w->ring.snaplen = cfg->snaplen;
	w->start_ns = hc_now_tai_ns();
	err = open_file(w, path);
	if (err)
		goto fail;
	err = -pthread_create(&w->thread, NULL, writer_loop, w);
	if (err)
		goto fail;
	w->started = 1;
	pthread_setname_np(w->thread, "hftcap-writer");
	if (cfg->writer_cpu >= 0 && (err = hc_pin_thread(w->thread, cfg->writer_cpu)) < 0) {
		hc_pcapng_close(w);
		goto fail;
	}
	*out = w;
	return 0;
fail:
	if (w->fd >= 0 && !w->is_stdout)
		close(w->fd);
	w->fd = -1;
	hc_pcapng_free(w);
	return err;
}

struct hc_capring *hc_pcapng_ring(struct hc_pcapng *w) { return &w->ring; }

void hc_pcapng_set_xsk_drops(struct hc_pcapng *w, hc_xsk_drops_fn fn, void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->xsk_fn = fn;
	w->xsk_arg = arg;
	pthread_mutex_unlock(&w->mu);
}

int hc_pcapng_set_next(struct hc_pcapng *w, const char *path)
{
	if (strlen(path) + 6 > PATH_MAX)
		return -ENAMETOOLONG;
	int err = 0;
	pthread_mutex_lock(&w->mu);
	if (w->next_n == HC_PCAP_NEXT) {
		err = -ENOSPC;
	} else {
		snprintf(w->next[(w->next_head + w->next_n) % HC_PCAP_NEXT], PATH_MAX, "%s", path);
		w->next_n++;
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

int hc_pcapng_rotate(struct hc_pcapng *w, const char *path, uint64_t *taken)
{
	if (strlen(path) + 6 > PATH_MAX)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&w->mu);
	snprintf(w->rot, sizeof(w->rot), "%s", path);
	w->want_rotate = 1;
	w->next_n = 0;
	*taken = w->st.names_taken;
	pthread_mutex_unlock(&w->mu);
	return 0;
}

void hc_pcapng_stats(struct hc_pcapng *w, struct hc_pcapng_stats *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->st;
	out->names_queued = w->next_n;
	pthread_mutex_unlock(&w->mu);
	out->written = __atomic_load_n(&w->st.written, __ATOMIC_RELAXED);
	for (int i = 0; i < HC_PCAP_MAX_IF; i++)
		out->written_if[i] = __atomic_load_n(&w->st.written_if[i], __ATOMIC_RELAXED);
	for (int i = 0; i < HC_PCAP_MAX_IF; i++) {
		out->seen[i] = __atomic_load_n(&w->ring.seen[i], __ATOMIC_RELAXED);
		out->late[i] = __atomic_load_n(&w->ring.late[i], __ATOMIC_RELAXED);
		out->drops[i] = __atomic_load_n(&w->ring.drops[i], __ATOMIC_RELAXED) + out->late[i];
	}
}

int hc_pcapng_close(struct hc_pcapng *w)
{
	if (!w->started)
		return 0;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	w->started = 0;
	pthread_mutex_lock(&w->mu);
	int err = w->st.error;
	pthread_mutex_unlock(&w->mu);
	return err;
}

void hc_pcapng_free(struct hc_pcapng *w)
{
	if (!w)
		return;
	hc_pcapng_close(w);
	if (w->ring.buf)
		munmap(w->ring.buf, w->ring.size);
	free(w->obuf);
	free(w->header);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
