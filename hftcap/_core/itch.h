/* itch.h: NASDAQ TotalView-ITCH 5.0 decoder (../../shared/specs/ITCH50.md).
 * hc_itch_decode() turns one framed message into struct hc_itch_msg, field by field, with
 * explicit big-endian loads; it knows nothing of books. Prices stay integers: `_e4` fields
 * have 4 implied decimals, `_e8` fields (only V) 8. Alpha fields are copied as sent (space
 * padded, not NUL terminated). A message it cannot decode returns -HC_DROP_*; the caller
 * counts it (hc_books_count_drop) and goes on with the next one. */
#ifndef HC_ITCH_H
#define HC_ITCH_H

#include <stdint.h>
#include <string.h>
#include "mold.h"

/* Drop reasons, shared by the decoder, the file readers and the books (one counter array
 * in struct hc_books_stats). Functions return them negated. */
enum hc_drop {
	HC_DROP_UNKNOWN_TYPE = 1, /* type byte not in the 5.0 catalogue: skipped by framing length */
	HC_DROP_BAD_LENGTH,       /* framing length longer than the type's fixed length */
	HC_DROP_TRUNCATED,        /* framing length shorter than the type's fixed length */
	HC_DROP_EMPTY,            /* zero-length block or record */
	HC_DROP_MOLD_TRUNCATED,   /* MoldUDP64 count promised blocks the datagram does not hold */
	HC_DROP_FILE_TRUNCATED,   /* file/buffer ends inside a length prefix or a record */
	HC_DROP_BAD_CAPTURE,      /* pcap/pcapng record or block malformed: rest of file unusable */
	HC_DROP_NOT_MOLD,         /* captured frame is not Ethernet/[VLAN]/IPv4/UDP (or a fragment) */
	HC_DROP_MOLD_MALFORMED,   /* MoldUDP64 header short or trailing bytes */
	HC_DROP_UNKNOWN_REF,      /* E/C/X/D/U for an order reference not on the book */
	HC_DROP_DUPLICATE_REF,    /* A/F/U adding a reference that is already live: add ignored */
	HC_DROP_OVER_REDUCE,      /* E/C/X for more shares than rest: clamped, order removed */
	HC_DROP_ZERO_SHARES,      /* A/F/U with 0 shares: nothing rests */
	HC_DROP_BAD_SIDE,         /* A/F side not 'B' or 'S' */
	HC_DROP_NO_MEMORY,        /* a pool could not grow: the add is dropped */
	HC_DROP_UNKNOWN_REF_INCOMPLETE, /* unknown_ref while the books joined mid-session */
	HC_DROP__MAX
};
extern const char *const hc_drop_names[HC_DROP__MAX]; /* [0] is NULL */

/* Fixed total length of each type (type byte included); 0 for unknown types. */
extern const uint8_t hc_itch_len[256];

struct hc_itch_msg {
	uint8_t type;
	uint16_t stock_locate;
	uint16_t tracking_number;
	uint64_t timestamp_ns; /* ns since midnight (itch_ns domain) */
	union {
		struct { char event_code; } system_event; /* S */
		struct {
			char stock[8];
			char market_category, financial_status_indicator;
			uint32_t round_lot_size;
			char round_lots_only, issue_classification, issue_sub_type[2], authenticity;
			char short_sale_threshold_indicator, ipo_flag, luld_reference_price_tier, etp_flag;
			uint32_t etp_leverage_factor;
			char inverse_indicator;
		} stock_directory; /* R */
		struct { char stock[8]; char trading_state, reserved, reason[4]; } trading_action; /* H */
		struct { char stock[8]; char reg_sho_action; } reg_sho; /* Y */
		struct {
			char mpid[4], stock[8];
			char primary_market_maker, market_maker_mode, market_participant_state;
		} participant_position; /* L */
		struct { uint64_t level1_e8, level2_e8, level3_e8; } mwcb_decline; /* V */
		struct { char breached_level; } mwcb_status; /* W */
		struct {
			char stock[8];
			uint32_t ipo_quotation_release_time_s;
			char ipo_quotation_release_qualifier;
			uint32_t ipo_price_e4;
		} ipo_quoting; /* K */
		struct {
			char stock[8];
			uint32_t auction_collar_reference_price_e4, upper_auction_collar_price_e4;
			uint32_t lower_auction_collar_price_e4, auction_collar_extension;
		} luld_collar; /* J */
		struct { char stock[8]; char market_code, operational_halt_action; } operational_halt; /* h */
		/* The order messages (A F E C X D U P) share one layout: the reference (U: the
		 * original one) at 0, shares at 8, the price at 12, an 8-byte field at 16, a byte at 24,
		 * so the decoder fills them from a per-type table of offsets without a branch on the
		 * type (decode() in itch.c). Code uses the names; the order is the decoder's business. */
		struct {
			uint64_t order_reference_number;
			uint32_t shares;
			uint32_t price_e4;
			char stock[8];
			char buy_sell_indicator;
			char attribution[4]; /* F only; zero bytes for A */
		} add; /* A, F */
		struct {
			uint64_t order_reference_number;
			uint32_t executed_shares;
			uint32_t execution_price_e4; /* C only; 0 for E (the order's price applies) */
			uint64_t match_number;
			char printable;              /* C only; 0 for E */
		} executed; /* E, C */
		struct { uint64_t order_reference_number; uint32_t canceled_shares; } cancel; /* X */
		struct { uint64_t order_reference_number; } del; /* D */
		struct {
			uint64_t original_order_reference_number;
			uint32_t shares, price_e4;
			uint64_t new_order_reference_number;
		} replace; /* U */
		struct {
			uint64_t order_reference_number;
			uint32_t shares;
			uint32_t price_e4;
			char stock[8];
			char buy_sell_indicator;
			uint64_t match_number;
		} trade; /* P */
		struct {
			uint64_t shares;
			char stock[8];
			uint32_t cross_price_e4;
			uint64_t match_number;
			char cross_type;
		} cross_trade; /* Q */
		struct { uint64_t match_number; } broken_trade; /* B */
		struct {
			uint64_t paired_shares, imbalance_shares;
			char imbalance_direction, stock[8];
			uint32_t far_price_e4, near_price_e4, current_reference_price_e4;
			char cross_type, price_variation_indicator;
		} noii; /* I */
		struct { char stock[8]; char interest_flag; } rpii; /* N */
		struct {
			char stock[8];
			char open_eligibility_status;
			uint32_t minimum_allowable_price_e4, maximum_allowable_price_e4, near_execution_price_e4;
			uint64_t near_execution_time;
			uint32_t lower_price_range_collar_e4, upper_price_range_collar_e4;
		} dlcr; /* O */
	};
};

static inline uint32_t hc_be32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return __builtin_bswap32(v);
}
static inline uint64_t hc_be48(const uint8_t *p)
{
	return (uint64_t)hc_be16(p) << 32 | hc_be32(p + 2);
}

/* NASDAQ's file layout: each message after a 2-byte big-endian length. Is the record at off
 * complete (its length prefix and all the bytes it announces inside len)? */
static inline int hc_nasdaq_complete(const uint8_t *p, size_t len, size_t off)
{
	return len - off >= 2 && len - off - 2 >= hc_be16(p + off);
}

/* Take the complete record at *off: its message in *msg and *n, *off moved past it; returns 1.
 * Returns 0, leaving *off, when no complete record is left. */
static inline int hc_nasdaq_next(const uint8_t *p, size_t len, size_t *off, const uint8_t **msg,
				 uint32_t *n)
{
	if (!hc_nasdaq_complete(p, len, *off))
		return 0;
	*n = hc_be16(p + *off);
	*msg = p + *off + 2;
	*off += 2 + (size_t)*n;
	return 1;
}

/* 0, or -HC_DROP_{EMPTY,UNKNOWN_TYPE,TRUNCATED,BAD_LENGTH}. Reads at most len bytes. */
int hc_itch_decode(const uint8_t *msg, uint32_t len, struct hc_itch_msg *out);
/* Decode every complete record of a buffer in NASDAQ file layout (into a scratch message,
 * the decode-only measure): returns the messages decoded, counts the others' drop reasons in
 * drops[], and sets *off to the bytes consumed (a partial record at the end is left). */
uint64_t hc_itch_decode_records(const uint8_t *p, size_t len, size_t *off,
				uint64_t drops[HC_DROP__MAX]);

#endif
