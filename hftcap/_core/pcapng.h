/* pcapng.h: `listen --write`. The data thread copies each packet with all its stamps into a
 * preallocated single-producer/single-consumer byte ring (hc_capring_put: a bounds check, a
 * header and one memcpy; a full ring is a counted capture drop, never a wait). A writer
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
enum { HC_CAPREC_FRAME = 1, HC_CAPREC_UDP = 2 };
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
	uint32_t recorded; /* the consumer recorded this packet in its hop histograms */
	uint64_t drops;    /* capture drops on this interface before this packet, cumulative */
	struct hc_pkt_times t;
	uint64_t dec_tai_ns, book_tai_ns, itch_ns;
	uint64_t pad;      /* header of 112 bytes: data[] 16-aligned for the streaming copy */
	uint8_t data[];
};
_Static_assert(sizeof(struct hc_caprec) == 112, "ring record header: 112 bytes, 16-aligned data");

struct hc_capring {
	uint8_t *buf;
	uint64_t size, mask;  /* size is a power of two */
	uint32_t snaplen;
	/* producer side: written by the data thread only */
	__attribute__((aligned(64))) uint64_t head_local; /* next free byte; not seen by the writer */
	uint64_t cached_tail;
	uint64_t seen[HC_PCAP_MAX_IF];  /* packets offered to the ring */
	uint64_t drops[HC_PCAP_MAX_IF]; /* of those, dropped: ring full */
	__attribute__((aligned(64))) uint64_t head; /* published by hc_capring_publish (release) */
	/* consumer side: written by the writer thread only */
	__attribute__((aligned(64))) uint64_t tail;
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
static inline void hc_capring_put(struct hc_capring *r, uint16_t iface, uint16_t kind,
				  const uint8_t *data, uint32_t len, uint32_t queue,
				  const struct hc_pkt_times *t, const struct hc_consumer *cons,
				  uint32_t src_ip_be, uint16_t src_port_be, uint32_t dst_ip_be,
				  uint16_t dst_port_be)
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
	struct hc_caprec h = {
		.size = (uint32_t)need, .iface = iface, .kind = kind, .caplen = caplen,
		.origlen = len, .queue = queue, .src_ip_be = src_ip_be, .dst_ip_be = dst_ip_be,
		.src_port_be = src_port_be, .dst_port_be = dst_port_be,
		.recorded = cons->out_dec_tai_ns != 0, .drops = r->drops[iface], .t = *t,
		.dec_tai_ns = cons->out_dec_tai_ns, .book_tai_ns = cons->out_book_tai_ns,
		.itch_ns = cons->out_itch_ns, .pad = 0,
	};
	hc_stream_copy(r->buf + off, (const uint8_t *)&h, sizeof(h));
	hc_stream_copy(r->buf + off + sizeof(h), data, caplen);
	r->head_local = head + need;
}

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
};

struct hc_pcapng_stats {
	uint64_t seen[HC_PCAP_MAX_IF], drops[HC_PCAP_MAX_IF];
	uint64_t written;         /* EPBs written, every file */
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
