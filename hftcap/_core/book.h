/* book.h: exact order-by-order books for every stock of an ITCH 5.0 stream.
 *
 * One global reference index (day-unique references) maps a reference to an order in a pool;
 * each order sits in a FIFO queue at its price level, its place kept as an arrival stamp, not
 * as links to its neighbours (so an add or a remove touches no other order: on a day's books
 * those were two or three more random cache lines a message). Each stock (indexed by stock locate)
 * has two sides; a side keeps its levels in a pool where each level keeps its slot for its
 * life (an order names its level by slot, so executions, cancels and deletes never search),
 * and a sorted index of (price key, slot) with the best price at the end, so the BBO is the
 * last entry (O(1)) and changes near the top move few bytes. Adds find their level in the
 * index by one SIMD compare of the top 8 keys (a binary search below them). Levels
 * aggregate shares and order counts.
 *
 * Reference index: NASDAQ references are dense and mostly increasing within a day, so most
 * live ones sit in a sliding window of W references indexed directly (slot = ref mod W); the
 * window slides up with the newest references, and references outside it (older orders still
 * resting, references far above, below or hostile) live in a hash table. Sliding costs are
 * budgeted per add, so no stream makes the index more than O(1) amortized per message.
 *
 * Feeding a buffer (hc_books_feed_records) looks ahead: 16 records ahead it warms the window
 * slot of each record's reference, 8 ahead the order in it; once the books hold more than
 * 64 stocks or 65,536 live orders (a day's books, no longer in L1/L2 between messages) it
 * also warms, 16 ahead, the stock each record names and the index slot its reference is
 * looked up in (the window slot, or for an old order outside the window the home slot of
 * its table probe, so old orders are not a cold probe each); 8 ahead the order found there;
 * 4 ahead the order's level and the top of the side an add names; and
 * 2 ahead the level an add joins when it is among the top 8 of its side.
 *
 * Concurrency: one writer (the data thread calling hc_books_apply), any number of readers
 * taking snapshots (hc_books_snapshot, hc_books_trades, hc_books_stock_info). Each stock has
 * a seqlock the writer bumps around every change; readers retry, the writer never waits.
 * Level arrays that are outgrown are retired, not freed, until hc_books_free, so a reader
 * racing a growth reads stale (then retried) memory, never freed memory.
 *
 * Memory (x86-64): an order is 32 bytes in the pool (it points at its stock directly); the
 * window is W u32 pool indices, W = 2 x expected_orders rounded up to a power of two, between
 * 2^11 and 2^22 (at most 16 MB); the hash table is a power-of-two array of u32 pool indices
 * kept at most 70 % full, sized for expected_orders up front. For 10 million live orders
 * (hc_books_new(.., 10M)): pool 10M x 32 B = 320 MB (grown by doubling to 16.8M slots =
 * 512 MB worst case right after a growth), window 4M x 4 B = 16 MB, table 16M x 4 B = 64 MB
 * (32M x 4 B = 128 MB if 11.7M references ever sit in the table at once), levels 24 B per
 * slot of capacity per side (a 16-byte level, four to a cache line, a 4-byte key and a 4-byte
 * slot in the index; capacity doubles from 64), and ~1 KB per stock (~4 KB with both sides'
 * initial 64 level slots). So ~420-670 MB for 10M live orders, plus ~4 KB per stock (32 MB
 * for 8,000 stocks). Window, pool and table are anonymous mappings that ask for transparent huge
 * pages and are resident from hc_books_new on (faulted in there, and again after a growth);
 * hc_books_new_lazy leaves them to be faulted in where first written, for an offline replay
 * whose start-up is part of its time and which touches only what its orders use.
 * hc_books_new sizes all three for `expected_orders` up front, so a warm book never allocates
 * per message; growth is by doubling (rehash of the table) and happens O(log n) times.
 */
#ifndef HC_BOOK_H
#define HC_BOOK_H

#include <stdint.h>
#include <stddef.h>
#include "itch.h"

#define HC_TRADES_RING 32
#define HC_SIDE_BID 0
#define HC_SIDE_ASK 1

struct hc_books;

struct hc_books_stats {
	uint64_t messages[256];       /* applied messages by type byte */
	uint64_t drops[HC_DROP__MAX]; /* by enum hc_drop */
	uint64_t orders_live;
	uint64_t orders_peak;
	uint64_t broken_trades;       /* B seen; volume is NOT reduced by busted matches */
	uint64_t bbo_changes;         /* recorded for the selected locate (offline) */
};

struct hc_level_snap { uint32_t price_e4; uint32_t orders; uint64_t shares; };
struct hc_trade { uint64_t itch_ns; uint64_t shares; uint32_t price_e4; uint32_t pad; };
struct hc_bbo_change {
	uint64_t itch_ns;
	uint32_t bid_price_e4, ask_price_e4; /* 0 when the side is empty */
	uint64_t bid_shares, ask_shares;
};

struct hc_stock_info {
	uint16_t locate;
	char symbol[9];                /* NUL-terminated, trailing spaces removed; "" before R */
	char market_category, financial_status_indicator, authenticity, issue_classification;
	uint32_t round_lot_size;
	char trading_state;            /* H; 0 before any H */
	char reg_sho_action;           /* Y; 0 before any Y */
	char halted_markets[3];        /* h for Q, B, X: 'H'/'T' or 0 */
	uint32_t last_trade_price_e4;  /* 0 before any trade */
	uint64_t last_itch_ns;
	uint64_t volume;               /* E + printable C + P + Q shares (busts not subtracted) */
	uint64_t trades;               /* prints counted in volume */
	uint64_t broken_trades;
	uint64_t messages;             /* messages applied to this stock */
	uint64_t orders_live;
	uint32_t bid_levels, ask_levels;
	int suspect;                   /* a gap was lost on the feed since start (hc_books_mark_suspect) */
	char incomplete;               /* the books joined mid-session: orders before it unknown */
	uint64_t unknown_refs;         /* E/C/X/D/U of this stock whose order reference was not live
	                                  (counted apart globally as unknown_ref[_incomplete]) */
};

int hc_books_new(struct hc_books **out, uint64_t expected_orders);
/* The same, the big arrays not faulted in up front (an offline replay: hc_reader_step). */
int hc_books_new_lazy(struct hc_books **out, uint64_t expected_orders);
void hc_books_free(struct hc_books *b);
void hc_books_apply(struct hc_books *b, const struct hc_itch_msg *m);
void hc_books_count_drop(struct hc_books *b, int reason); /* reason: a negative hc_drop */
const struct hc_books_stats *hc_books_stats(const struct hc_books *b);
/* A gap was declared lost (recovery.c): every stock, and every stock seen later, is suspect
 * (a lost message may have been for any of them) until a snapshot restores the books. */
void hc_books_mark_suspect(struct hc_books *b);
/* The books were restored whole from a snapshot (join.c): no longer suspect. */
void hc_books_clear_suspect(struct hc_books *b);

/* Cache warming for a packet's messages before they are applied (the live consumer): the
 * window slot of the message's order reference, then (once that slot is in cache) the order
 * itself. Harmless for messages without a reference. */
void hc_books_prefetch_slot(const struct hc_books *b, const uint8_t *msg, uint32_t len);
void hc_books_prefetch_order(const struct hc_books *b, const uint8_t *msg, uint32_t len);
/* Keep the books in cache while the data thread idles between packets (listen --warm-books, busy
 * polling): `steps` more steps of a cursor over every stock's hot lines (counters, top keys and
 * level slots, best level per side) and the order pool's used lines (with each order's window
 * slot), by prefetch only: nothing is written, no book changes. Writer side (the data thread). */
void hc_books_warm(struct hc_books *b, uint32_t steps);
/* Decode and apply one framed message, counting a drop instead. Returns 0 or -reason. */
int hc_books_feed_msg(struct hc_books *b, const uint8_t *msg, uint32_t len);
/* Apply every complete record of a buffer in NASDAQ file layout (u16 BE length + message);
 * returns the bytes consumed (a partial record at the end is left). */
size_t hc_books_feed_records(struct hc_books *b, const uint8_t *p, size_t len);
/* The same for a buffer that more records will follow (a reader's staging buffer): it stops
 * where the steady loop stops, leaving the last ~66 KiB (and at most 16 records more) for the
 * caller to carry to the next call, instead of applying them with every bound tested; a
 * buffer too small for the steady loop is consumed as by hc_books_feed_records. Returns the
 * bytes consumed: > 0 for a buffer holding a complete record. */
size_t hc_books_feed_records_more(struct hc_books *b, const uint8_t *p, size_t len);

/* Snapshots (safe while the writer runs). Return the number of levels/trades copied, or
 * -ENOENT for a locate never seen. Bids and asks best first. */
int hc_books_snapshot(struct hc_books *b, uint16_t locate, uint32_t levels,
		      struct hc_level_snap *bids, uint32_t *n_bids,
		      struct hc_level_snap *asks, uint32_t *n_asks);
int hc_books_trades(struct hc_books *b, uint16_t locate, uint32_t n, struct hc_trade *out);
int hc_books_stock_info(struct hc_books *b, uint16_t locate, struct hc_stock_info *out);
/* Locates seen so far, ascending; returns the count (writes at most cap). */
int hc_books_locates(struct hc_books *b, uint16_t *out, int cap);
/* Unknown-reference drops of one stock locate, whether or not the stock was ever seen (a late
 * join may see only the deletes of a stock). Any thread (relaxed). */
uint64_t hc_books_unknown_refs(const struct hc_books *b, uint16_t locate);

/* Record every change of (best bid, best ask) of one locate (offline use; -1 stops). */
int hc_books_record_bbo(struct hc_books *b, int locate);
/* Same, for the locate an R message will announce for `symbol` (space/NUL padded, <= 8). */
int hc_books_record_bbo_symbol(struct hc_books *b, const char *symbol);
const struct hc_bbo_change *hc_books_bbo_changes(struct hc_books *b, size_t *n);

/* Orders at one level in queue order (tests; not safe while the writer runs; read through
 * hc_books_walk's index). Returns the count (writes at most cap), -ENOENT, -ENOMEM, or -EIO
 * when the level's count and its orders disagree. */
int hc_books_level_orders(struct hc_books *b, uint16_t locate, int side, uint32_t price_e4,
			  uint64_t *refs, uint32_t *shares, int cap);
/* Full consistency check (tests). 0, or a negative code; -1000 means crossed book only. */
int hc_books_check(struct hc_books *b);

/* Every resting order of one stock: bids then asks, best level first, each level in queue
 * (time priority) order. Writer side only (the exchange's snapshot, on its own books).
 * The first walk after the books changed sorts every live order once (O(n log n), 16 bytes a
 * live order kept until the next change or hc_books_free); walks of the other stocks reuse it.
 * Returns the orders visited, -ENOENT, or -ENOMEM. */
typedef void (*hc_books_walk_fn)(void *ctx, int side, uint32_t price_e4, uint64_t ref,
				 uint32_t shares);
int hc_books_walk(struct hc_books *b, uint16_t locate, hc_books_walk_fn fn, void *ctx);
/* Remove every order and reset every stock's state (symbol, trading state, trades), each
 * stock under its seqlock, so readers stay safe. For the thread that owns the writer role
 * (a snapshot loader, join.h); levels keep their memory. */
void hc_books_clear(struct hc_books *b);
/* Mark the books as joined mid-session (1) or whole (0). While incomplete, unknown-reference
 * drops are counted as unknown_ref_incomplete, apart from unknown_ref, and every stock's info
 * says incomplete. Before the writer starts, or by the writer. */
void hc_books_set_incomplete(struct hc_books *b, int incomplete);

#endif
