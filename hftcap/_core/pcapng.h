/* pcapng.h: `listen --write`. The data thread puts each packet with all its stamps into a
 * preallocated single-producer/single-consumer byte ring and never waits (a full ring is a
 * counted capture drop). On the AF_XDP path it puts only a 128-byte descriptor (UMEM address,
 * length, stamps: hc_capring_put_xsk) and keeps the frame out of the fill ring until the
 * writer has copied it (the `released` count); a frame the data thread needs back before
 * that is returned anyway and the writer drops the packet (`forced`, a counted capture drop),
 * so the fill ring never starves. Elsewhere (kernel path, recovery replies) the record holds
 * a copy of the bytes (hc_capring_put). A writer
 * thread turns the records into pcapng Enhanced Packet Blocks (custom option with every
 * stamp), writes them in large chunks, writes Interface Statistics Blocks at each rotation
 * and at close, and writes each regular file as NAME.part renamed to NAME when complete.
 * The Section Header and Interface Description Blocks come from the control plane as bytes
 * (hftcap/receive/pcapng.py) and open every file. Functions return 0 or -errno. */
#ifndef HC_PCAPNG_H
#define HC_PCAPNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#include "feed.h"

/* Interfaces (IDB order in every file). Recovery replies (unicast re-request answers) go
 * on HC_PCAP_IF_RECOVERY with kind HC_CAPREC_UDP, once the control plane writes its IDB. */
enum { HC_PCAP_IF_FEED = 0, HC_PCAP_IF_RECOVERY = 1, HC_PCAP_MAX_IF = 4 };
/* What a record holds: a whole Ethernet frame (AF_XDP) or a UDP payload whose headers the
 * writer rebuilds from the addresses (kernel socket path). */
enum { HC_CAPREC_FRAME = 1, HC_CAPREC_UDP = 2, HC_CAPREC_XSK = 3 /* frame left in a UMEM */ };
#define HC_CAPRING_MAX_UMEM 64 /* HC_MAX_QUEUES: one UMEM per AF_XDP socket */
#define HC_CAPREC_XSK_SIZE 128u /* two whole cache lines */
/* Which stamp is the EPB timestamp; an IDB names its preferred one, a packet without it
 * falls back along xdp, sw, deq. Kept in the low bits of the stamps option's flags. */
enum { HC_TSRC_HW = 0, HC_TSRC_XDP = 1, HC_TSRC_SW = 2, HC_TSRC_DEQ = 3 };

#define HC_CAPREC_WRAP 0xffffffffu /* in .size: the rest of the ring is empty, go to offset 0 */
#define HC_PCAP_REBUILT_HDR 42u     /* Ethernet 14 + IPv4 20 + UDP 8 */

struct hc_caprec {
	uint32_t size;     /* bytes of the record incl. this header, multiple of 16 */
	uint16_t iface;
	uint16_t kind;
	uint32_t caplen;   /* bytes in data[] */
	uint32_t origlen;  /* bytes the packet had (frame, or UDP payload for HC_CAPREC_UDP) */
	uint32_t queue;
	uint32_t src_ip_be, dst_ip_be; /* HC_CAPREC_UDP only */
	uint16_t src_port_be, dst_port_be;
	uint16_t recorded; /* the consumer recorded this packet in its hop histograms */
	uint16_t xsk;      /* HC_CAPREC_XSK: which socket's UMEM (index into hc_capring.umem) */
	uint64_t drops;    /* capture drops on this interface before this packet, cumulative */
	struct hc_pkt_times t;
	uint64_t dec_tai_ns, book_tai_ns, itch_ns;
	uint64_t umem_addr; /* HC_CAPREC_XSK: the frame's data, offset in that UMEM; else 0.
			     * Header of 112 bytes: data[] 16-aligned for the streaming copy. */
	uint8_t data[];
};
_Static_assert(sizeof(struct hc_caprec) == 112, "ring record header: 112 bytes, 16-aligned data");
/* hc_capring_put_stamps and hc_capring_put_xsk write these offsets from registers */
_Static_assert(offsetof(struct hc_caprec, caplen) == 8 && offsetof(struct hc_caprec, queue) == 16 &&
	       offsetof(struct hc_caprec, src_ip_be) == 20 && offsetof(struct hc_caprec, dst_ip_be) == 24 &&
	       offsetof(struct hc_caprec, src_port_be) == 28 && offsetof(struct hc_caprec, dst_port_be) == 30 &&
	       offsetof(struct hc_caprec, recorded) == 32 && offsetof(struct hc_caprec, xsk) == 34 &&
	       offsetof(struct hc_caprec, drops) == 40 && offsetof(struct hc_caprec, t) == 48 &&
	       offsetof(struct hc_caprec, dec_tai_ns) == 80 && offsetof(struct hc_caprec, itch_ns) == 96 &&
	       offsetof(struct hc_caprec, umem_addr) == 104, "hc_caprec layout");

struct hc_capring {
	uint8_t *buf;
	uint64_t size, mask;  /* size is a power of two */
	uint32_t snaplen;
	/* producer side: written by the data thread only */
	__attribute__((aligned(64))) uint64_t head_local; /* next free byte; not seen by the writer */
	uint64_t cached_tail;
	uint64_t seen[HC_PCAP_MAX_IF];  /* packets offered to the ring */
	uint64_t drops[HC_PCAP_MAX_IF]; /* of those, dropped: ring full */
	uint64_t pushed;                /* records put (sequence of the next one) */
	__attribute__((aligned(64))) uint64_t head; /* published by hc_capring_publish (release) */
	uint64_t forced; /* records < forced may have had their frame taken back: the writer drops
			  * them. Stored (release) before the frame goes to the fill ring. */
	/* consumer side: written by the writer thread only */
	__attribute__((aligned(64))) uint64_t tail;
	uint64_t released;              /* records the writer is done with (release) */
	uint64_t late[HC_PCAP_MAX_IF];  /* XSK records dropped: the frame was taken back first */
	/* set before the data thread starts, read by the writer */
	__attribute__((aligned(64))) const uint8_t *umem[HC_CAPRING_MAX_UMEM];
};

/* Copy n bytes to 16-aligned dst with non-temporal stores: the ring is written once and read
 * by the writer thread's core, so the data thread neither reads the lines for ownership nor
 * evicts its own working set (UMEM, books) for them. Never reads past src + n. */
static inline void hc_stream_copy(uint8_t *dst, const uint8_t *src, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm_stream_si128((__m128i *)(dst + i), _mm_loadu_si128((const __m128i *)(src + i)));
	if (i < n) {
		uint8_t tail[16] __attribute__((aligned(16))) = { 0 };
		memcpy(tail, src + i, n - i);
		_mm_stream_si128((__m128i *)(dst + i), _mm_load_si128((const __m128i *)tail));
	}
}

/* Copy one packet in. Data thread only; no allocation, no lock, no system call. The writer
 * sees it after the next hc_capring_publish (once per drained batch: the line holding head
 * then moves between the cores once per batch, not once per packet). */
static inline void hc_capring_put_stamps(struct hc_capring *r, uint16_t iface, uint16_t kind,
					 const uint8_t *data, uint32_t len, uint32_t queue,
					 const struct hc_pkt_times *t, int recorded, uint64_t dec_tai_ns,
					 uint64_t book_tai_ns, uint64_t itch_ns, uint32_t src_ip_be,
					 uint16_t src_port_be, uint32_t dst_ip_be, uint16_t dst_port_be)
{
	uint32_t room = r->snaplen;
	if (kind == HC_CAPREC_UDP)
		room = room > HC_PCAP_REBUILT_HDR ? room - HC_PCAP_REBUILT_HDR : 0;
	uint32_t caplen = len < room ? len : room;
	uint64_t need = (sizeof(struct hc_caprec) + caplen + 15) & ~15ull;
	uint64_t head = r->head_local, off = head & r->mask, to_end = r->size - off;
	uint64_t total = to_end < need ? to_end + need : need;
	r->seen[iface]++;
	if (head + total - r->cached_tail > r->size) {
		r->cached_tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
		if (head + total - r->cached_tail > r->size) {
			r->drops[iface]++;
			return;
		}
	}
	if (to_end < need) {
		*(uint32_t *)(r->buf + off) = HC_CAPREC_WRAP;
		head += to_end;
		off = 0;
	}
	/* The header from registers (as hc_capring_put_xsk: no store-forwarding stall) */
	__m128i *o = (__m128i *)(r->buf + off);
	_mm_stream_si128(o + 0, _mm_set_epi64x((long long)((uint64_t)len << 32 | caplen),
					       (long long)(need | (uint64_t)iface << 32 | (uint64_t)kind << 48)));
	_mm_stream_si128(o + 1, _mm_set_epi64x((long long)(dst_ip_be | (uint64_t)src_port_be << 32 |
							   (uint64_t)dst_port_be << 48),
					       (long long)(queue | (uint64_t)src_ip_be << 32)));
	_mm_stream_si128(o + 2, _mm_set_epi64x((long long)r->drops[iface], (long long)(recorded != 0)));
	_mm_stream_si128(o + 3, _mm_set_epi64x((long long)t->xdp_tai_ns, (long long)t->hw_ns));
	_mm_stream_si128(o + 4, _mm_set_epi64x((long long)t->deq_tai_ns, (long long)t->sw_tai_ns));
	_mm_stream_si128(o + 5, _mm_set_epi64x((long long)book_tai_ns, (long long)dec_tai_ns));
	_mm_stream_si128(o + 6, _mm_set_epi64x(0, (long long)itch_ns));
	hc_stream_copy(r->buf + off + sizeof(struct hc_caprec), data, caplen);
	r->head_local = head + need;
	r->pushed++;
}

/* A packet the consumer has just taken: its stamps are the consumer's outputs. */
static inline void hc_capring_put(struct hc_capring *r, uint16_t iface, uint16_t kind,
				  const uint8_t *data, uint32_t len, uint32_t queue,
				  const struct hc_pkt_times *t, const struct hc_consumer *cons,
				  uint32_t src_ip_be, uint16_t src_port_be, uint32_t dst_ip_be,
				  uint16_t dst_port_be)
{
	hc_capring_put_stamps(r, iface, kind, data, len, queue, t, cons->out_dec_tai_ns != 0,
			      cons->out_dec_tai_ns, cons->out_book_tai_ns, cons->out_itch_ns,
			      src_ip_be, src_port_be, dst_ip_be, dst_port_be);
}

/* Put a descriptor of a frame left in UMEM r->umem[xsk] at umem_addr (AF_XDP path, feed
 * interface). Returns the record's sequence + 1 (the value `released` must pass before the
 * frame may be reused), or 0 when the ring is full (a counted drop: reuse the frame now). */
static inline uint64_t hc_capring_put_xsk(struct hc_capring *r, uint16_t xsk, uint64_t umem_addr,
					  uint32_t len, uint32_t queue, const struct hc_pkt_times *t,
					  const struct hc_consumer *cons)
{
	const uint64_t need = HC_CAPREC_XSK_SIZE;
	uint64_t head = r->head_local, off = head & r->mask, to_end = r->size - off;
	uint64_t total = to_end < need ? to_end + need : need;
	r->seen[HC_PCAP_IF_FEED]++;
	if (head + total - r->cached_tail > r->size) {
		r->cached_tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
		if (head + total - r->cached_tail > r->size) {
			r->drops[HC_PCAP_IF_FEED]++;
			return 0;
		}
	}
	if (to_end < need) {
		*(uint32_t *)(r->buf + off) = HC_CAPREC_WRAP;
		head += to_end;
		off = 0;
	}
	/* Built in registers, not on the stack: 16-byte loads of a struct just written field by
	 * field would miss store forwarding. Layout: struct hc_caprec (offsets checked below). */
	uint32_t caplen = len < r->snaplen ? len : r->snaplen;
	__m128i *o = (__m128i *)(r->buf + off);
	_mm_stream_si128(o + 0, _mm_set_epi64x((long long)((uint64_t)len << 32 | caplen),
					       (long long)(need | (uint64_t)HC_PCAP_IF_FEED << 32 |
							   (uint64_t)HC_CAPREC_XSK << 48)));
	_mm_stream_si128(o + 1, _mm_set_epi64x(0, (long long)queue));
	_mm_stream_si128(o + 2, _mm_set_epi64x((long long)r->drops[HC_PCAP_IF_FEED],
					       (long long)((cons->out_dec_tai_ns != 0) | (uint32_t)xsk << 16)));
	_mm_stream_si128(o + 3, _mm_set_epi64x((long long)t->xdp_tai_ns, (long long)t->hw_ns));
	_mm_stream_si128(o + 4, _mm_set_epi64x((long long)t->deq_tai_ns, (long long)t->sw_tai_ns));
	_mm_stream_si128(o + 5, _mm_set_epi64x((long long)cons->out_book_tai_ns,
					       (long long)cons->out_dec_tai_ns));
	_mm_stream_si128(o + 6, _mm_set_epi64x((long long)umem_addr, (long long)cons->out_itch_ns));
	_mm_stream_si128(o + 7, _mm_setzero_si128());
	r->head_local = head + need;
	return ++r->pushed;
}

/* The AF_XDP frames user space owns while --write runs, one per socket, in the order received:
 * [tail, rel) are free (the writer has copied them, or they were never captured), [rel, head)
 * wait for the writer; need[] is the `released` count each waits for (0 = free). */
struct hc_caphold {
	uint64_t *addr, *need;
	uint64_t mask, tail, rel, head;
};

static inline void hc_caphold_push(struct hc_caphold *h, uint64_t addr, uint64_t need)
{
	uint64_t i = h->head++ & h->mask;
	h->addr[i] = addr;
	h->need[i] = need;
}

/* Make n frames free: those the writer is done with, else (it is behind) the oldest it has not
 * copied yet, whose packets it then drops (forced, stored before the caller hands the frames
 * to the kernel). Then take them with hc_caphold_take. Needs head - tail >= n. */
static inline void hc_caphold_reclaim(struct hc_caphold *h, struct hc_capring *r, uint32_t n)
{
	const uint64_t rel = __atomic_load_n(&r->released, __ATOMIC_ACQUIRE);
	while (h->rel != h->head && h->need[h->rel & h->mask] <= rel)
		h->rel++;
	if (h->rel - h->tail < n) {
		uint64_t forced = r->forced;
		while (h->rel - h->tail < n) {
			uint64_t need = h->need[h->rel++ & h->mask];
			if (need > forced)
				forced = need;
		}
		__atomic_store_n(&r->forced, forced, __ATOMIC_RELEASE);
	}
}

static inline uint64_t hc_caphold_take(struct hc_caphold *h) { return h->addr[h->tail++ & h->mask]; }

static inline void hc_capring_publish(struct hc_capring *r)
{
	if (r->head_local != r->head) {
		_mm_sfence(); /* the streaming stores are weakly ordered: complete them before head */
		__atomic_store_n(&r->head, r->head_local, __ATOMIC_RELEASE);
	}
}

/* The AF_XDP socket counters (XDP_STATISTICS) the ISB reports, summed over the sockets. */
struct hc_xsk_drops {
	uint64_t rx_dropped, rx_ring_full, rx_fill_ring_empty_descs;
	uint64_t socket_drops; /* kernel path: the feed sockets' drops (SO_MEMINFO) */
};
typedef int (*hc_xsk_drops_fn)(void *arg, struct hc_xsk_drops *out);

struct hc_pcapng_cfg {
	const uint8_t *header;    /* SHB + IDBs, written at the start of every file */
	size_t header_len;
	uint32_t nifaces;         /* IDBs in header */
	uint8_t ts_source[HC_PCAP_MAX_IF]; /* HC_TSRC_* preferred per interface */
	uint64_t ring_bytes;      /* rounded down to a power of two, at least 64 KiB */
	uint32_t snaplen;
	uint64_t file_size;       /* rotate before a packet once a file holds this many bytes; 0 = never */
	int part;                 /* write PATH.part, rename to PATH when complete */
	uint32_t flush_ms;        /* flush a non-empty chunk at least this often */
	int writer_cpu;           /* pin the writer thread to this CPU; -1 = not pinned */
};

struct hc_pcapng_stats {
	uint64_t seen[HC_PCAP_MAX_IF];
	uint64_t drops[HC_PCAP_MAX_IF]; /* every capture drop: ring full + late */
	uint64_t late[HC_PCAP_MAX_IF];  /* of those, frames taken back before the writer read them */
	uint64_t written;         /* EPBs written, every file */
	uint64_t written_if[HC_PCAP_MAX_IF]; /* of those, per interface */
	uint64_t bytes;           /* bytes written, every file */
	uint64_t files_done;      /* files complete (closed and renamed) */
	uint64_t rotations_late;  /* size rotations due with no next name queued yet */
	uint64_t names_taken;     /* queued names size rotations used, since the start */
	uint32_t names_queued;    /* queued names not used yet */
	int error;                /* -errno of the first write/open/rename failure; writing stops */
};

struct hc_pcapng;

/* Open the first file (path "-" = stdout, never .part) and start the writer thread. */
int hc_pcapng_open(const struct hc_pcapng_cfg *cfg, const char *path, struct hc_pcapng **out);
struct hc_capring *hc_pcapng_ring(struct hc_pcapng *w);
/* Where the ISB's AF_XDP counters come from; fn = NULL stops asking (before the sockets go). */
void hc_pcapng_set_xsk_drops(struct hc_pcapng *w, hc_xsk_drops_fn fn, void *arg);
/* Queue a name for a later size rotation (FIFO of HC_PCAP_NEXT; -ENOSPC when full): the
 * control plane keeps it topped up, so rotations never wait for it. */
#define HC_PCAP_NEXT 16
int hc_pcapng_set_next(struct hc_pcapng *w, const char *path);
/* Rotate to path at once (time rotation) and empty the queue; *taken = names_taken then. */
int hc_pcapng_rotate(struct hc_pcapng *w, const char *path, uint64_t *taken);
void hc_pcapng_stats(struct hc_pcapng *w, struct hc_pcapng_stats *out);
/* Drain the ring (the producer must have stopped), write the ISB, close, rename; join. */
int hc_pcapng_close(struct hc_pcapng *w);
void hc_pcapng_free(struct hc_pcapng *w);

#endif
