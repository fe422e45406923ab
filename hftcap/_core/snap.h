/* snap.h: hftcap's Book Snapshot message 'Z' (hftcap's own; NOT part of ITCH 5.0), the
 * delta -> snapshot stream conversion, and the receiver's table of the last snapshot of each
 * stock.
 *
 * Wire layout (big-endian, no padding; fixed length 12 + 24 N for N levels per side):
 *
 *   off  len  field
 *   0    1    Message Type          'Z'
 *   1    2    Stock Locate          u16   (as ITCH50.md section 2)
 *   3    2    Tracking Number       u16
 *   5    6    Timestamp             ts48, ns since midnight
 *   11   1    Levels per side N     u8, 1..HC_SNAP_MAX_LEVELS
 *   12   12N  N bid levels, best (highest price) first
 *   12+12N 12N N ask levels, best (lowest price) first
 *   level: Price u32 P4 | Shares u32 | Orders u32
 *
 * The first 11 bytes are the ITCH common header, so framing (MoldUDP64 blocks, NASDAQ file
 * records), sequencing and the sender's send-time stamping at offset 5 work unchanged. A side
 * with fewer than N levels is padded with empty levels, all 12 bytes zero; an empty level is
 * never followed by a non-empty one. Shares above 2^32-1 at one level are written as 2^32-1
 * (counted by the converter). A receiver replaces the stock's top N levels per side with the
 * message's: each Z is a complete picture of the top of that stock's book.
 *
 * Conversion (hc_snap_convert): the delta stream runs through an hc_books instance; every
 * well-formed book message (A F E C X D U) is replaced, in place, by one Z of its stock
 * locate carrying the top N levels after the message is applied and the message's tracking
 * number and timestamp. So the snapshot stream has exactly as many messages (updates) as
 * the delta stream, and published at the same message rate it carries the same updates per
 * second: every update re-sends the top levels of the changed stock, whether or not the top
 * N moved. Every other record (S, R, H, P, Q, I, ..., malformed or unknown ones) is copied
 * unchanged, so a receiver still learns symbols, states and trades.
 *
 * Receiver (struct hc_snap_table): one entry per stock locate, created on its first Z,
 * replaced by each Z under a per-stock seqlock (one writer, readers never block it). Decode
 * (hc_snap_table_stage: checks and parses into a pending slot) and apply
 * (hc_snap_table_commit) are separate so the consumer's decode/book hops stay meaningful.
 * Malformed Z are counted by reason and never read past their framing length. */
#ifndef HC_SNAP_H
#define HC_SNAP_H

#include <stdint.h>
#include <stddef.h>
#include "book.h"

#define HC_SNAP_TYPE 'Z'
#define HC_SNAP_HDR_LEN 12       /* ITCH common header (11) + N (1) */
#define HC_SNAP_LEVEL_LEN 12     /* price u32 + shares u32 + orders u32 */
#define HC_SNAP_MAX_LEVELS 32    /* 12 + 24 * 32 = 780 bytes: one Z always fits a 1400-byte packet */
#define HC_SNAP_PENDING 64       /* decoded, not yet applied Z per table (a packet holds <= 37) */

static inline uint32_t hc_snap_len(uint32_t levels)
{
	return HC_SNAP_HDR_LEN + 2 * levels * HC_SNAP_LEVEL_LEN;
}

enum hc_snap_drop {
	HC_SNAP_DROP_EMPTY = 1,    /* zero-length block */
	HC_SNAP_DROP_TRUNCATED,    /* shorter than the header, or than 12 + 24 N */
	HC_SNAP_DROP_BAD_LENGTH,   /* longer than 12 + 24 N */
	HC_SNAP_DROP_BAD_LEVELS,   /* N = 0 or N > HC_SNAP_MAX_LEVELS */
	HC_SNAP_DROP_BAD_LEVEL,    /* an empty level with fields set, or a level after an empty one */
	HC_SNAP_DROP_NOT_SNAPSHOT, /* type byte is not 'Z' */
	HC_SNAP_DROP_NO_MEMORY,    /* a new stock's entry could not be allocated */
	HC_SNAP_DROP__MAX
};
extern const char *const hc_snap_drop_names[HC_SNAP_DROP__MAX]; /* [0] is NULL */

struct hc_snap_msg {
	uint16_t stock_locate, tracking_number;
	uint64_t timestamp_ns;   /* ns since midnight (itch_ns domain) */
	uint32_t levels;         /* N per side as sent */
	uint32_t n_bids, n_asks; /* non-empty levels (a prefix of the N) */
	struct hc_level_snap bids[HC_SNAP_MAX_LEVELS], asks[HC_SNAP_MAX_LEVELS];
};

/* Decode one framed Z. 0 or -HC_SNAP_DROP_*; reads at most len bytes. */
int hc_snap_decode(const uint8_t *msg, uint32_t len, struct hc_snap_msg *out);

/* Encode one Z with `levels` per side from nb bids / na asks (best first; levels beyond them
 * are written empty, beyond `levels` ignored). Returns the bytes written, -EINVAL (levels 0
 * or too many) or -ENOSPC. *clamped (may be NULL) gets the levels whose shares were clamped. */
int hc_snap_encode(uint8_t *out, size_t cap, uint16_t locate, uint16_t tracking, uint64_t ts_ns,
		   uint32_t levels, const struct hc_level_snap *bids, uint32_t nb,
		   const struct hc_level_snap *asks, uint32_t na, uint32_t *clamped);

/* ---- delta stream -> snapshot stream ---- */
struct hc_snap_conv_stats {
	uint64_t records;        /* complete records read */
	uint64_t snapshots;      /* Z written: one per well-formed A F E C X D U */
	uint64_t passed;         /* records copied unchanged */
	uint64_t tail_bytes;     /* bytes after the last complete record (not copied) */
	uint64_t shares_clamped; /* levels written with shares clamped to 2^32-1 */
	uint64_t bytes_out;
	uint64_t book_drops[HC_DROP__MAX]; /* the converting books' drops (a valid stream has none) */
};

/* Exact output size of hc_snap_convert for this input, or -EINVAL for bad levels. */
int64_t hc_snap_convert_size(const uint8_t *in, size_t len, uint32_t levels);
/* Convert a NASDAQ-layout delta stream to a NASDAQ-layout snapshot stream (see above).
 * Returns the bytes written, -EINVAL, -ENOSPC (cap below hc_snap_convert_size) or -ENOMEM. */
int64_t hc_snap_convert(const uint8_t *in, size_t len, uint32_t levels, uint8_t *out, size_t cap,
			struct hc_snap_conv_stats *st);

/* ---- receiver: the last snapshot of every stock ---- */
struct hc_snap_stats {
	uint64_t messages;                   /* Z applied */
	uint64_t drops[HC_SNAP_DROP__MAX];
	uint64_t stocks;                     /* entries created */
};

struct hc_snap_table;

int hc_snap_table_new(struct hc_snap_table **out);
void hc_snap_table_free(struct hc_snap_table *t);
/* Writer (one thread). stage: decode msg into the next pending slot (applying the pending
 * ones first when all slots are used); 0 or -reason, counted. commit: apply the pending ones
 * in order. feed = stage + commit. */
int hc_snap_table_stage(struct hc_snap_table *t, const uint8_t *msg, uint32_t len);
void hc_snap_table_commit(struct hc_snap_table *t);
int hc_snap_table_feed(struct hc_snap_table *t, const uint8_t *msg, uint32_t len);
const struct hc_snap_stats *hc_snap_table_stats(const struct hc_snap_table *t);

/* Readers (any thread, seqlock). Levels best first, at most `levels` per side; -ENOENT for a
 * stock without a Z yet. */
int hc_snap_table_get(struct hc_snap_table *t, uint16_t locate, uint32_t levels,
		      struct hc_level_snap *bids, uint32_t *n_bids,
		      struct hc_level_snap *asks, uint32_t *n_asks, uint32_t *sent_levels,
		      uint64_t *itch_ns, uint64_t *messages);
/* Locates with a snapshot, ascending; returns the count (writes at most cap). */
int hc_snap_table_locates(struct hc_snap_table *t, uint16_t *out, int cap);

#endif
