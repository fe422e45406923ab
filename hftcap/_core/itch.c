/* itch.c: ITCH 5.0 decoder. Lengths and offsets are those of ITCH50.md sections 3 and 4. */
#include "itch.h"

const char *const hc_drop_names[HC_DROP__MAX] = {
	[HC_DROP_UNKNOWN_TYPE] = "unknown_type",
	[HC_DROP_BAD_LENGTH] = "bad_length",
	[HC_DROP_TRUNCATED] = "truncated",
	[HC_DROP_EMPTY] = "empty",
	[HC_DROP_MOLD_TRUNCATED] = "mold_truncated",
	[HC_DROP_FILE_TRUNCATED] = "file_truncated",
	[HC_DROP_BAD_CAPTURE] = "bad_capture",
	[HC_DROP_NOT_MOLD] = "not_mold",
	[HC_DROP_MOLD_MALFORMED] = "mold_malformed",
	[HC_DROP_UNKNOWN_REF] = "unknown_ref",
	[HC_DROP_DUPLICATE_REF] = "duplicate_ref",
	[HC_DROP_OVER_REDUCE] = "over_reduce",
	[HC_DROP_ZERO_SHARES] = "zero_shares",
	[HC_DROP_BAD_SIDE] = "bad_side",
	[HC_DROP_NO_MEMORY] = "no_memory",
	[HC_DROP_UNKNOWN_REF_INCOMPLETE] = "unknown_ref_incomplete",
};

const uint8_t hc_itch_len[256] = {
	['S'] = 12, ['R'] = 39, ['H'] = 25, ['Y'] = 20, ['L'] = 26, ['V'] = 35, ['W'] = 12,
	['K'] = 28, ['J'] = 35, ['h'] = 21, ['A'] = 36, ['F'] = 40, ['E'] = 31, ['C'] = 36,
	['X'] = 23, ['D'] = 19, ['U'] = 35, ['P'] = 44, ['Q'] = 40, ['B'] = 19, ['I'] = 50,
	['N'] = 20, ['O'] = 48,
};

#define CP(dst, off) memcpy((dst), p + (off), sizeof(dst))

/* The decoder, inlined into hc_itch_decode and into the record loop of hc_itch_decode_records. */
static inline __attribute__((always_inline)) int decode(const uint8_t *p, uint32_t len,
							struct hc_itch_msg *m)
{
	if (__builtin_expect(len == 0, 0))
		return -HC_DROP_EMPTY;
	uint32_t want = hc_itch_len[p[0]];
	if (__builtin_expect(len != want, 0)) {
		if (!want)
			return -HC_DROP_UNKNOWN_TYPE;
		return len < want ? -HC_DROP_TRUNCATED : -HC_DROP_BAD_LENGTH;
	}
	m->type = p[0];
	m->stock_locate = hc_be16(p + 1);
	m->tracking_number = hc_be16(p + 3);
	m->timestamp_ns = hc_be48(p + 5);
	switch (p[0]) {
	case 'A':
	case 'F':
		m->add.order_reference_number = hc_be64(p + 11);
		m->add.buy_sell_indicator = (char)p[19];
		m->add.shares = hc_be32(p + 20);
		CP(m->add.stock, 24);
		m->add.price_e4 = hc_be32(p + 32);
		if (p[0] == 'F')
			CP(m->add.attribution, 36);
		else
			memset(m->add.attribution, 0, 4);
		break;
	case 'E':
	case 'C':
		m->executed.order_reference_number = hc_be64(p + 11);
		m->executed.executed_shares = hc_be32(p + 19);
		m->executed.match_number = hc_be64(p + 23);
		if (p[0] == 'C') {
			m->executed.printable = (char)p[31];
			m->executed.execution_price_e4 = hc_be32(p + 32);
		} else {
			m->executed.printable = 0;
			m->executed.execution_price_e4 = 0;
		}
		break;
	case 'X':
		m->cancel.order_reference_number = hc_be64(p + 11);
		m->cancel.canceled_shares = hc_be32(p + 19);
		break;
	case 'D':
		m->del.order_reference_number = hc_be64(p + 11);
		break;
	case 'U':
		m->replace.original_order_reference_number = hc_be64(p + 11);
		m->replace.new_order_reference_number = hc_be64(p + 19);
		m->replace.shares = hc_be32(p + 27);
		m->replace.price_e4 = hc_be32(p + 31);
		break;
	case 'P':
		m->trade.order_reference_number = hc_be64(p + 11);
		m->trade.buy_sell_indicator = (char)p[19];
		m->trade.shares = hc_be32(p + 20);
		CP(m->trade.stock, 24);
		m->trade.price_e4 = hc_be32(p + 32);
		m->trade.match_number = hc_be64(p + 36);
		break;
	case 'Q':
		m->cross_trade.shares = hc_be64(p + 11);
		CP(m->cross_trade.stock, 19);
		m->cross_trade.cross_price_e4 = hc_be32(p + 27);
		m->cross_trade.match_number = hc_be64(p + 31);
		m->cross_trade.cross_type = (char)p[39];
		break;
	case 'B':
		m->broken_trade.match_number = hc_be64(p + 11);
		break;
	case 'S':
		m->system_event.event_code = (char)p[11];
		break;
	case 'R':
		CP(m->stock_directory.stock, 11);
		m->stock_directory.market_category = (char)p[19];
		m->stock_directory.financial_status_indicator = (char)p[20];
		m->stock_directory.round_lot_size = hc_be32(p + 21);
		m->stock_directory.round_lots_only = (char)p[25];
		m->stock_directory.issue_classification = (char)p[26];
		CP(m->stock_directory.issue_sub_type, 27);
		m->stock_directory.authenticity = (char)p[29];
		m->stock_directory.short_sale_threshold_indicator = (char)p[30];
		m->stock_directory.ipo_flag = (char)p[31];
		m->stock_directory.luld_reference_price_tier = (char)p[32];
		m->stock_directory.etp_flag = (char)p[33];
		m->stock_directory.etp_leverage_factor = hc_be32(p + 34);
		m->stock_directory.inverse_indicator = (char)p[38];
		break;
	case 'H':
		CP(m->trading_action.stock, 11);
		m->trading_action.trading_state = (char)p[19];
		m->trading_action.reserved = (char)p[20];
		CP(m->trading_action.reason, 21);
		break;
	case 'Y':
		CP(m->reg_sho.stock, 11);
		m->reg_sho.reg_sho_action = (char)p[19];
		break;
	case 'L':
		CP(m->participant_position.mpid, 11);
		CP(m->participant_position.stock, 15);
		m->participant_position.primary_market_maker = (char)p[23];
		m->participant_position.market_maker_mode = (char)p[24];
		m->participant_position.market_participant_state = (char)p[25];
		break;
	case 'V':
		m->mwcb_decline.level1_e8 = hc_be64(p + 11);
		m->mwcb_decline.level2_e8 = hc_be64(p + 19);
		m->mwcb_decline.level3_e8 = hc_be64(p + 27);
		break;
	case 'W':
		m->mwcb_status.breached_level = (char)p[11];
		break;
	case 'K':
		CP(m->ipo_quoting.stock, 11);
		m->ipo_quoting.ipo_quotation_release_time_s = hc_be32(p + 19);
		m->ipo_quoting.ipo_quotation_release_qualifier = (char)p[23];
		m->ipo_quoting.ipo_price_e4 = hc_be32(p + 24);
		break;
	case 'J':
		CP(m->luld_collar.stock, 11);
		m->luld_collar.auction_collar_reference_price_e4 = hc_be32(p + 19);
		m->luld_collar.upper_auction_collar_price_e4 = hc_be32(p + 23);
		m->luld_collar.lower_auction_collar_price_e4 = hc_be32(p + 27);
		m->luld_collar.auction_collar_extension = hc_be32(p + 31);
		break;
	case 'h':
		CP(m->operational_halt.stock, 11);
		m->operational_halt.market_code = (char)p[19];
		m->operational_halt.operational_halt_action = (char)p[20];
		break;
	case 'I':
		m->noii.paired_shares = hc_be64(p + 11);
		m->noii.imbalance_shares = hc_be64(p + 19);
		m->noii.imbalance_direction = (char)p[27];
		CP(m->noii.stock, 28);
		m->noii.far_price_e4 = hc_be32(p + 36);
		m->noii.near_price_e4 = hc_be32(p + 40);
		m->noii.current_reference_price_e4 = hc_be32(p + 44);
		m->noii.cross_type = (char)p[48];
		m->noii.price_variation_indicator = (char)p[49];
		break;
	case 'N':
		CP(m->rpii.stock, 11);
		m->rpii.interest_flag = (char)p[19];
		break;
	case 'O':
		CP(m->dlcr.stock, 11);
		m->dlcr.open_eligibility_status = (char)p[19];
		m->dlcr.minimum_allowable_price_e4 = hc_be32(p + 20);
		m->dlcr.maximum_allowable_price_e4 = hc_be32(p + 24);
		m->dlcr.near_execution_price_e4 = hc_be32(p + 28);
		m->dlcr.near_execution_time = hc_be64(p + 32);
		m->dlcr.lower_price_range_collar_e4 = hc_be32(p + 40);
		m->dlcr.upper_price_range_collar_e4 = hc_be32(p + 44);
		break;
	}
	return 0;
}

int hc_itch_decode(const uint8_t *p, uint32_t len, struct hc_itch_msg *m)
{
	return decode(p, len, m);
}

uint64_t hc_itch_decode_records(const uint8_t *p, size_t len, size_t *off_out,
				uint64_t drops[HC_DROP__MAX])
{
	struct hc_itch_msg m;
	const uint8_t *msg;
	uint32_t n;
	uint64_t ok = 0;
	size_t off = 0;
	while (hc_nasdaq_next(p, len, &off, &msg, &n)) {
		int rc = decode(msg, n, &m);
		if (__builtin_expect(rc < 0, 0))
			drops[-rc]++;
		else
			ok++;
		/* the decoded message is the result: keep the stores */
		__asm__ volatile("" : : "r"(&m) : "memory");
	}
	*off_out = off;
	return ok;
}
