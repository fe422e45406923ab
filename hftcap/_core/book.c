/* book.c: order books (see book.h for layout, concurrency and memory). */
#include <errno.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include "hc_mem.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "book.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define INLINE inline __attribute__((always_inline)) /* the per-message path, into the loops */

/* Level key: ascending in the array for both sides so the best level is the last one.
 * Bids: key = price; asks: key = ~price. */
static inline uint32_t side_key(int side, uint32_t price_e4) { return side ? ~price_e4 : price_e4; }
static inline uint32_t key_price(int side, uint32_t key) { return side ? ~key : key; }

/* A price level lives in a slot of its side's level pool and keeps that slot for its whole
 * life, so an order names its level by slot (hc_order.lvl): executions, cancels and deletes
 * reach the level without searching. The sorted index (keys[], idx[]) is searched only to
 * add an order (find or create its level) and to drop a level that has emptied. A level keeps
 * no list of its orders: their queue (time priority) is the order of their arrival stamps
 * (hc_order.stamp), so adding or removing an order touches no other order's line. */
struct hc_level {
	union {
		uint32_t key;       /* side key */
		uint32_t next_free; /* while the slot is unused: the next free one (0: none) */
	};
	uint32_t orders;
	uint64_t shares;
};
_Static_assert(sizeof(struct hc_level) == 16, "four levels a cache line");

/* Keys are stored biased (key ^ 0x80000000) as signed ints, so the top-8 lookup compares
 * with one signed SIMD compare; HC_KEY_PAD INT32_MIN sentinels before keys[0] let it load
 * the 8 keys below the top even when a side has fewer levels. */
#define HC_KEY_BIAS 0x80000000u
#define HC_KEY_PAD 8
static inline int32_t bias_key(uint32_t key) { return (int32_t)(key ^ HC_KEY_BIAS); }

/* One allocation per side per capacity: keys[cap] (after the sentinels), idx[cap] (level
 * slot of keys[i]) and lv[cap + 1] (slot 0 unused). Live levels == sorted entries <= cap. */
struct hc_level_arr {
	uint32_t cap;
	uint32_t pad;
	struct hc_level_arr *retired; /* chain of outgrown arrays, freed in hc_books_free */
	int32_t *keys;
	uint32_t *idx;
	struct hc_level *lv;
};

struct hc_side {
	struct hc_level_arr *a; /* published with release; readers clamp n to a->cap */
	struct hc_level *lv;    /* the writer's copies of a->lv and a->keys (a->idx is keys + */
	int32_t *keys;          /* cap): the writer never loads a's header line */
	uint32_t n;             /* levels (sorted entries) */
	uint32_t free_lv;       /* free level slots, linked through head (0: none) */
	uint32_t hw;            /* next never-used level slot */
	uint32_t cap;           /* the writer's copy of a->cap (for the prefetch hints) */
};

/* Field order matters: what every order message touches (seq, the counters, the sides) is
 * in the first two cache lines; info (filled in by readers with the counters) and the trade
 * ring come after. */
struct hc_stock {
	_Atomic uint32_t seq;     /* odd while the writer changes this stock */
	uint32_t pad;
	uint64_t messages;        /* info.messages, info.last_itch_ns, info.orders_live */
	uint64_t last_itch_ns;
	uint64_t orders_live;
	struct hc_side side[2];
	uint64_t trades_total;    /* ring head: trades pushed so far */
	struct hc_stock_info info;
	struct hc_trade ring[HC_TRADES_RING];
} __attribute__((aligned(64)));

struct hc_order {
	uint64_t ref;
	uintptr_t stock_side;     /* its stock (64-byte aligned) | side: no locate -> stock load */
	uint32_t shares;          /* > 0 while live; 0 marks a free pool slot */
	uint32_t lvl;             /* its level's slot; the free list's link while free */
	uint64_t stamp;           /* arrival (hc_books.stamp when it rested): its queue position */
};

static inline struct hc_stock *order_stock(const struct hc_order *o)
{
	return (struct hc_stock *)(o->stock_side & ~(uintptr_t)1);
}
static inline int order_side(const struct hc_order *o) { return (int)(o->stock_side & 1); }
_Static_assert(sizeof(struct hc_order) == 32, "book.h states 32-byte orders");
_Static_assert(offsetof(struct hc_stock, info) <= 128, "hot stock fields in 2 lines");

struct hc_books {
	struct hc_order *pool;    /* index 0 unused (null) */
	uint32_t pool_cap, pool_used, free_head;
	uint64_t stamp;           /* orders rested so far: the next order's arrival stamp */
	/* Reference index, part 1: a sliding window of pool indices (0 = none) for references
	 * [win_base, win_base + win_mask], slot ref & win_mask. Invariant: a live reference in
	 * that range is in the window, never in the table. */
	uint32_t *win;
	uint64_t win_base, win_mask, win_n; /* win_n: live entries in the window */
	uint64_t slide_budget;    /* slot visits a slide may still spend (grows per add) */
	uint64_t far_hint;        /* last reference refused a jump of the window (0: none) */
	uint64_t above_n;         /* table entries above the window; while > 0, all of them */
	uint64_t above_lo, above_hi; /* are in [above_lo, above_hi] */
	/* Part 2: every other live reference, open addressing, linear probing, 0 = empty. */
	uint32_t *table;
	uint64_t *unk_loc;        /* unknown-reference drops per stock locate (writer; relaxed) */
	uint64_t mask, table_n;
	int shift;
	struct hc_stock *_Atomic stocks[65536];
	uint16_t locs[65536];     /* locates in order of first appearance (writer only) */
	uint32_t n_locs;
	struct hc_books_stats st;
	struct hc_level_arr *retired;
	int bbo_locate;
	struct hc_stock *bbo_stock; /* the stock of bbo_locate once it exists (NULL: none) */
	char bbo_symbol[9];       /* "" : none */
	struct hc_bbo_change *bbo;
	size_t bbo_n, bbo_cap;
	struct hc_bbo_change bbo_last;
	_Atomic int suspect;      /* hc_books_mark_suspect: read by readers, never by the hot path */
	int incomplete;           /* joined mid-session without a snapshot (hc_books_set_incomplete) */
	int unknown_ref_reason;   /* where an unknown reference is counted: apart while incomplete */
	uint64_t warm_pos;        /* hc_books_warm's cursor (writer only) */
	int lazy;                 /* hc_books_new_lazy: big arrays faulted in where first written */
	uint32_t *walk_ord, *walk_start; /* hc_books_walk's index (walk_build), NULL: none */
	uint64_t walk_stamp, walk_live;  /* the books' stamp and live orders it was built at */
};

/* ---- big arrays: anonymous mappings (zeroed). The window, the pool and the table are hit
 * at random by the order messages of a day-scale book: they ask for transparent huge pages
 * (a cold lookup then costs one cache miss, not a page walk too; measured 5 % on the day
 * profile) and are faulted in when allocated (hc_books_new, or a growth, which copies
 * anyway): a huge-page fault zeroes 2 MiB and may compact memory, which must not happen
 * inside a message (hc_books_new_lazy: an offline replay, where it may). ---- */
static void *big_alloc(const struct hc_books *b, size_t bytes)
{
	return hc_map_huge(bytes, !b->lazy);
}
static void big_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}

/* ---- seqlock (writer side) ---- */
static inline uint32_t seq_begin(struct hc_stock *s)
{
	uint32_t v = atomic_load_explicit(&s->seq, memory_order_relaxed) + 1;
	atomic_store_explicit(&s->seq, v, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	return v;
}
static inline void seq_end(struct hc_stock *s, uint32_t v)
{
	atomic_store_explicit(&s->seq, v + 1, memory_order_release);
}

/* ---- order table ---- */
/* Blocks of 16 consecutive references (one 64-byte line of slots) are placed by Fibonacci
 * hashing of ref / 16; inside a block the low bits index directly. References are mostly
 * increasing, so a run of adds touches one cache line per 16 orders instead of one each,
 * while sparse, strided or hostile references still spread over the whole table. */
#define HC_REF_BLOCK_BITS 4
/* Window size: 2 x expected_orders rounded up to a power of two, within these bounds. */
#define HC_WIN_MIN (1ull << 11)
#define HC_WIN_MAX (1ull << 22)
static inline uint64_t ref_hash(const struct hc_books *b, uint64_t ref)
{
	uint64_t blk = ((ref >> HC_REF_BLOCK_BITS) * 0x9E3779B97F4A7C15ull) >> b->shift;
	return blk << HC_REF_BLOCK_BITS | (ref & ((1u << HC_REF_BLOCK_BITS) - 1));
}

static inline uint32_t *table_slot(struct hc_books *b, uint64_t ref)
{
	uint64_t i = ref_hash(b, ref);
	for (;;) {
		uint32_t o = b->table[i];
		if (!o || b->pool[o].ref == ref)
			return &b->table[i];
		i = (i + 1) & b->mask;
	}
}

/* Remove the entry at slot i, shifting later entries of the cluster back (no tombstones). */
static void table_erase(struct hc_books *b, uint64_t i)
{
	uint64_t j = i;
	for (;;) {
		j = (j + 1) & b->mask;
		uint32_t o = b->table[j];
		if (!o)
			break;
		uint64_t k = ref_hash(b, b->pool[o].ref);
		/* move o back to i if its home k is not cyclically in (i, j] */
		int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
		if (!stays) {
			b->table[i] = o;
			i = j;
		}
	}
	b->table[i] = 0;
}

static int table_alloc(struct hc_books *b, uint64_t slots)
{
	int bits = 10;
	while ((1ull << bits) < slots)
		bits++;
	uint32_t *t = big_alloc(b, (1ull << bits) * sizeof(*t));
	if (!t)
		return -ENOMEM;
	uint32_t *old = b->table;
	uint64_t old_n = old ? b->mask + 1 : 0;
	b->table = t;
	b->mask = (1ull << bits) - 1;
	b->shift = 64 - (bits - HC_REF_BLOCK_BITS);
	for (uint64_t i = 0; i < old_n; i++)
		if (old[i])
			*table_slot(b, b->pool[old[i]].ref) = old[i];
	big_free(old, old_n * sizeof(*old));
	return 0;
}

/* ---- reference index: window first, table for the rest ---- */
static NOINLINE int table_grow(struct hc_books *b)
{
	return table_alloc(b, (b->mask + 1) * 2);
}

/* Room in the table for `more` entries under 70 % load; -ENOMEM if it cannot grow. */
static inline int table_room(struct hc_books *b, uint64_t more)
{
	while (UNLIKELY((b->table_n + more) * 10 >= (b->mask + 1) * 7))
		if (table_grow(b) < 0)
			return -ENOMEM;
	return 0;
}

/* Slot of reference ref: its pool index, or 0 when it is not live. */
static inline uint32_t *ref_slot(struct hc_books *b, uint64_t ref)
{
	if (LIKELY(ref - b->win_base <= b->win_mask))
		return &b->win[ref & b->win_mask];
	return table_slot(b, ref);
}

static inline int slot_in_win(const struct hc_books *b, const uint32_t *slot)
{
	return (uintptr_t)slot - (uintptr_t)b->win <= b->win_mask * sizeof(*slot);
}

/* Store pool index idx in the empty slot from ref_slot_add. */
static inline void ref_set(struct hc_books *b, uint32_t *slot, uint32_t idx)
{
	*slot = idx;
	if (LIKELY(slot_in_win(b, slot))) {
		b->win_n++;
		return;
	}
	b->table_n++;
	uint64_t ref = b->pool[idx].ref;
	if (ref > b->win_base) { /* above the window */
		b->above_n++;
		if (ref < b->above_lo)
			b->above_lo = ref;
		if (ref > b->above_hi)
			b->above_hi = ref;
	}
}

/* Remove the (live) entry at slot. */
static inline void ref_erase(struct hc_books *b, uint32_t *slot)
{
	if (LIKELY(slot_in_win(b, slot))) {
		*slot = 0;
		b->win_n--;
	} else {
		if (b->pool[*slot].ref > b->win_base) /* in the table, so above the window */
			b->above_n--;
		table_erase(b, (uint64_t)(slot - b->table));
		b->table_n--;
	}
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Move table entry at slot e (reference r, now in the window's range) into the window. */
static inline void pull_in(struct hc_books *b, uint32_t *e, uint64_t r)
{
	b->win[r & b->win_mask] = *e;
	b->win_n++;
	table_erase(b, (uint64_t)(e - b->table));
	b->table_n--;
	b->above_n--;
}

/* Live entries a slide moves to the table per batch: their table home slots are prefetched
 * together, then written, so the (random) table lines miss in parallel, not one after another. */
#define HC_SLIDE_BATCH 16

/* The 16 window slots of the 64-byte line at e are all 0. */
static inline int win_line_empty(const uint32_t *e)
{
#if defined(__SSE2__)
	const __m128i *v = (const __m128i *)e;
	__m128i o = _mm_or_si128(_mm_or_si128(_mm_loadu_si128(v), _mm_loadu_si128(v + 1)),
				 _mm_or_si128(_mm_loadu_si128(v + 2), _mm_loadu_si128(v + 3)));
	return _mm_movemask_epi8(_mm_cmpeq_epi8(o, _mm_setzero_si128())) == 0xFFFF;
#else
	uint32_t o = 0;
	for (int i = 0; i < 16; i++)
		o |= e[i];
	return o == 0;
#endif
}

/* Move the window up to start at nb (win_base < nb <= UINT64_MAX - win_mask): live entries
 * it leaves go to the table; table entries above the old window that it now covers come into
 * it. Returns -ENOMEM (nothing moved) if the table is full. */
static NOINLINE int win_slide(struct hc_books *b, uint64_t nb)
{
	uint64_t w = b->win_mask + 1, ob = b->win_base, d = nb - ob;
	if (table_room(b, min_u64(b->win_n, min_u64(d, w))) < 0)
		return -ENOMEM;
	uint64_t refs[HC_SLIDE_BATCH];
	uint32_t idxs[HC_SLIDE_BATCH];
	for (uint64_t k = 0, n = min_u64(d, w); k < n && b->win_n;) {
		uint32_t got = 0;
		for (; k < n && got < HC_SLIDE_BATCH && got < b->win_n; k++) {
			uint32_t *e = &b->win[(ob + k) & b->win_mask];
			/* most slots a slide leaves are empty (most orders die young): a line of 16
			 * empty slots is passed with one test (the window's 16-slot lines start at
			 * references that are multiples of 16, and W is one) */
			while (((ob + k) & 15) == 0 && n - k >= 16 && win_line_empty(e)) {
				k += 16;
				e = &b->win[(ob + k) & b->win_mask];
			}
			if (k >= n)
				break;
			if (*e) {
				refs[got] = ob + k;
				idxs[got++] = *e;
				*e = 0;
				__builtin_prefetch(&b->table[ref_hash(b, ob + k)], 1, 3);
			}
		}
		for (uint32_t i = 0; i < got; i++)
			*table_slot(b, refs[i]) = idxs[i];
		b->table_n += got;
		b->win_n -= got;
	}
	b->win_base = nb;
	uint64_t hi = nb + b->win_mask, otop = ob + b->win_mask;
	if (!b->above_n || b->above_lo > hi)
		return 0;
	uint64_t phi = hi < b->above_hi ? hi : b->above_hi;
	if (b->above_lo >= nb && phi - b->above_lo < b->mask) {
		for (uint64_t r = b->above_lo; b->above_n; r++) {
			uint32_t *e = table_slot(b, r);
			if (*e)
				pull_in(b, e, r);
			if (r == phi)
				break;
		}
	} else { /* a jump may also leave entries that were above the window below it */
		for (uint64_t i = 0; i <= b->mask && b->above_n;) {
			uint32_t o = b->table[i];
			uint64_t r = o ? b->pool[o].ref : 0;
			if (o && r > otop && r <= hi) {
				if (r >= nb) {
					pull_in(b, &b->table[i], r); /* may shift a later entry into i */
					continue;
				}
				b->above_n--; /* now below the window */
			}
			i++;
		}
	}
	if (!b->above_n)
		b->above_lo = UINT64_MAX, b->above_hi = 0;
	else if (b->above_lo < hi)
		b->above_lo = hi; /* everything up to the top was pulled in */
	return 0;
}

/* Slot where an add of ref goes (window or table) -- it holds the live duplicate if there is
 * one -- or NULL when the table cannot grow. A reference above the window slides it up when
 * the slide budget allows: a slide costs one visit per slot it leaves (and per reference or
 * table slot it looks at to pull entries in), and every add earns HC_SLIDE_EARN, so hostile
 * references cost O(HC_SLIDE_EARN) amortized per add. A jump past the whole window while it
 * holds live orders also needs a second reference within a window of the first, so one stray
 * huge reference cannot carry the window away from the day's dense ones. What is refused goes
 * to the table. */
#define HC_SLIDE_EARN 16
/* A slide moves the window up by at least this many references: small, since one slide is one
 * message's stall (the live entries it leaves go to the table at a cache miss or so each;
 * measured on the day profile, 20 M messages, W = 2^21: a slide of W/16 took ~0.8 ms, of W/256
 * ~50 us, ~30 us with HC_SLIDE_BATCH, the same total), and not so small that its fixed costs
 * repeat at every add. */
#define HC_SLIDE_CHUNK(w) ((w) >> 8 > 64 ? (w) >> 8 : 64)
static NOINLINE uint32_t *ref_slot_add_slow(struct hc_books *b, uint64_t ref)
{
	uint64_t w = b->win_mask + 1;
	if (b->slide_budget > 4 * w)
		b->slide_budget = 4 * w;
	if (table_room(b, 1) < 0)
		return NULL;
	if (ref < b->win_base)
		return table_slot(b, ref);
	uint64_t ob = b->win_base, nb = ref - b->win_mask;
	if (nb < ob + HC_SLIDE_CHUNK(w))
		nb = ob + HC_SLIDE_CHUNK(w); /* slide in chunks */
	uint64_t span = min_u64(nb - ob, w);
	int far = nb - ob >= w && b->win_n;
	int confirmed = !far || (b->far_hint && ref - b->far_hint < w);
	uint64_t cost = b->win_n ? span : 0;
	if (b->above_n && b->above_lo <= nb + b->win_mask)
		cost += b->above_lo < nb ? b->mask + 1 :
			min_u64(min_u64(nb + b->win_mask, b->above_hi) - b->above_lo + 1, b->mask + 1);
	if (confirmed && cost <= b->slide_budget && win_slide(b, nb) == 0) {
		b->slide_budget -= cost;
		b->far_hint = 0;
		return &b->win[ref & b->win_mask];
	}
	if (far)
		b->far_hint = ref;
	return table_slot(b, ref);
}

static inline uint32_t *ref_slot_add(struct hc_books *b, uint64_t ref)
{
	b->slide_budget += HC_SLIDE_EARN;
	if (LIKELY(ref - b->win_base <= b->win_mask))
		return &b->win[ref & b->win_mask];
	return ref_slot_add_slow(b, ref);
}

static NOINLINE int pool_grow(struct hc_books *b)
{
	uint64_t cap = (uint64_t)b->pool_cap * 2;
	if (cap > UINT32_MAX)
		return -ENOMEM;
	struct hc_order *p = big_alloc(b, cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memcpy(p, b->pool, (size_t)b->pool_used * sizeof(*p));
	big_free(b->pool, (size_t)b->pool_cap * sizeof(*p));
	b->pool = p;
	b->pool_cap = (uint32_t)cap;
	return 0;
}

/* Pool index for a new order, growing pool/table when needed; 0 on allocation failure. */
static inline uint32_t order_alloc(struct hc_books *b)
{
	uint32_t idx = b->free_head;
	if (idx) {
		b->free_head = b->pool[idx].lvl;
	} else {
		if (UNLIKELY(b->pool_used == b->pool_cap) && pool_grow(b) < 0)
			return 0;
		idx = b->pool_used++;
	}
	return idx;
}

static inline void order_release(struct hc_books *b, uint32_t idx)
{
	b->pool[idx].shares = 0;
	b->pool[idx].lvl = b->free_head;
	b->free_head = idx;
}

/* ---- stocks ---- */
/* Level arrays for `cap` levels; the sentinels set, everything else unset. */
static struct hc_level_arr *level_arr_new(uint32_t cap)
{
	size_t keys = ((size_t)HC_KEY_PAD + cap) * sizeof(int32_t), idx = (size_t)cap * sizeof(uint32_t);
	/* lv[] starts on a cache line (no level straddles two): up to 60 bytes of padding */
	size_t bytes = (sizeof(struct hc_level_arr) + keys + idx + 63) / 64 * 64 + ((size_t)cap + 1) * sizeof(struct hc_level);
	struct hc_level_arr *a = aligned_alloc(64, (bytes + 63) / 64 * 64);
	if (!a)
		return NULL;
	a->cap = cap;
	a->retired = NULL;
	a->keys = (int32_t *)(a + 1) + HC_KEY_PAD;
	a->idx = (uint32_t *)(a->keys + cap);
	a->lv = (struct hc_level *)(((uintptr_t)(a->idx + cap) + 63) & ~(uintptr_t)63);
	for (int i = 1; i <= HC_KEY_PAD; i++)
		a->keys[-i] = INT32_MIN;
	return a;
}
#define HC_LEVELS_INITIAL 64

static NOINLINE struct hc_stock *stock_new(struct hc_books *b, uint16_t locate)
{
	struct hc_stock *s = aligned_alloc(64, sizeof(*s));
	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->info.locate = locate;
	for (int k = 0; k < 2; k++) {
		struct hc_level_arr *a = level_arr_new(HC_LEVELS_INITIAL);
		if (!a) {
			free(s->side[0].a);
			free(s);
			return NULL;
		}
		s->side[k].a = a;
		s->side[k].lv = a->lv;
		s->side[k].keys = a->keys;
		s->side[k].cap = a->cap;
		s->side[k].hw = 1;
	}
	b->locs[b->n_locs++] = locate;
	if (b->bbo_locate == (int)locate)
		b->bbo_stock = s;
	atomic_store_explicit(&b->stocks[locate], s, memory_order_release);
	return s;
}

static inline struct hc_stock *stock_get(struct hc_books *b, uint16_t locate)
{
	struct hc_stock *s = atomic_load_explicit(&b->stocks[locate], memory_order_relaxed);
	if (UNLIKELY(!s))
		s = stock_new(b, locate);
	return s;
}

/* ---- levels ---- */
/* How many of the 8 ascending keys at p are < k (they are a prefix). */
static inline uint32_t lt8(const int32_t *p, int32_t k)
{
#if defined(__SSE2__)
	__m128i kk = _mm_set1_epi32(k);
	__m128i lt = _mm_packs_epi32(_mm_cmplt_epi32(_mm_loadu_si128((const __m128i *)p), kk),
				     _mm_cmplt_epi32(_mm_loadu_si128((const __m128i *)(p + 4)), kk));
	/* keys ascend, so "< k" holds for a prefix of the 8 lanes: 2 mask bits per lane */
	return (uint32_t)__builtin_ctz(~(uint32_t)_mm_movemask_epi8(lt)) / 2;
#else
	uint32_t c = 0;
	for (int j = 0; j < 8; j++)
		c += p[j] < k;
	return c;
#endif
}

/* Lower bound in the sorted keys: the first index whose key >= k. Looks at the top 8 keys
 * first (where most activity is) with one SIMD compare and no branch on the depth (which
 * varies message to message); if all 8 are >= k, at the next HC_LB_SCAN blocks of 8 below
 * them the same way (a day's updates reach depth 14 at p90: sequential lines, no chain of
 * dependent loads), then a binary search without branches below those. keys[-8..-1] are
 * INT32_MIN sentinels, so any block that starts above keys - 8 can be loaded: a block
 * reaching below keys[0] counts its sentinels as < k (unless k is INT32_MIN, then c is 0). */
#define HC_LB_SCAN 4
static inline uint32_t level_lb(const int32_t *keys, uint32_t n, int32_t k)
{
	uint32_t c = lt8(keys + (int32_t)n - 8, k);
	if (LIKELY(c))
		return n - 8 + c;
	/* all of the top 8 are >= k (or k is INT32_MIN): the answer is in [0, n - 8] */
	uint32_t m = n > 8 ? n - 8 : 0;
	for (int j = 0; j < HC_LB_SCAN && m; j++) {
		int32_t st = (int32_t)m - 8;
		c = lt8(keys + st, k);
		if (c)
			return (uint32_t)(st + (int32_t)c);
		if (st <= 0)
			return 0;
		m = (uint32_t)st; /* keys[m..] >= k */
	}
	if (!m)
		return 0;
	const int32_t *base = keys;
	while (m > 1) {
		uint32_t half = m / 2;
		base = base[half] < k ? base + half : base;
		m -= half;
	}
	return (uint32_t)(base - keys) + (*base < k);
}

static NOINLINE int side_grow(struct hc_books *b, struct hc_side *sd)
{
	struct hc_level_arr *o = sd->a, *a = level_arr_new(o->cap * 2);
	if (!a)
		return -ENOMEM;
	memcpy(a->keys, o->keys, (size_t)sd->n * sizeof(*a->keys));
	memcpy(a->idx, o->idx, (size_t)sd->n * sizeof(*a->idx));
	memcpy(a->lv, o->lv, (size_t)sd->hw * sizeof(*a->lv));
	o->retired = b->retired;
	b->retired = o;
	sd->lv = a->lv;
	sd->keys = a->keys;
	sd->cap = a->cap;
	atomic_store_explicit((struct hc_level_arr *_Atomic *)&sd->a, a, memory_order_release);
	return 0;
}

/* Level slot for (side, key), created if absent; 0 when the arrays cannot grow. */
static inline uint32_t level_get(struct hc_books *b, struct hc_side *sd, uint32_t key)
{
	int32_t bk = bias_key(key);
	int32_t *keys = sd->keys;
	uint32_t n = sd->n;
	uint32_t i = level_lb(keys, n, bk);
	if (i < n && keys[i] == bk)
		return ((uint32_t *)keys + sd->cap)[i];
	if (UNLIKELY(n == sd->cap)) {
		if (side_grow(b, sd) < 0)
			return 0;
		keys = sd->keys;
	}
	uint32_t *idx = (uint32_t *)keys + sd->cap;
	uint32_t li = sd->free_lv;
	if (li)
		sd->free_lv = sd->lv[li].next_free;
	else
		li = sd->hw++;
	if (i < n) {
		memmove(&keys[i + 1], &keys[i], (size_t)(n - i) * sizeof(*keys));
		memmove(&idx[i + 1], &idx[i], (size_t)(n - i) * sizeof(*idx));
	}
	keys[i] = bk;
	idx[i] = li;
	sd->lv[li] = (struct hc_level){ .key = key };
	sd->n = n + 1;
	return li;
}

/* Drop level slot li (now empty) from the sorted index and free the slot. */
static inline void level_remove(struct hc_side *sd, uint32_t li)
{
	int32_t *keys = sd->keys;
	uint32_t *idx = (uint32_t *)keys + sd->cap;
	uint32_t n = --sd->n;
	uint32_t i = level_lb(keys, n + 1, bias_key(sd->lv[li].key));
	if (i < n) {
		memmove(&keys[i], &keys[i + 1], (size_t)(n - i) * sizeof(*keys));
		memmove(&idx[i], &idx[i + 1], (size_t)(n - i) * sizeof(*idx));
	}
	sd->lv[li].next_free = sd->free_lv;
	sd->free_lv = li;
}

/* Best level of a side (n > 0). */
static inline const struct hc_level *level_top(const struct hc_side *sd)
{
	return &sd->lv[((const uint32_t *)sd->keys + sd->cap)[sd->n - 1]];
}

/* ---- BBO recording (offline, one locate) ---- */
static NOINLINE void bbo_record(struct hc_books *b, struct hc_stock *s, uint64_t ts)
{
	struct hc_bbo_change c = { .itch_ns = ts };
	struct hc_side *bs = &s->side[HC_SIDE_BID], *as = &s->side[HC_SIDE_ASK];
	if (bs->n) {
		c.bid_price_e4 = key_price(0, level_top(bs)->key);
		c.bid_shares = level_top(bs)->shares;
	}
	if (as->n) {
		c.ask_price_e4 = key_price(1, level_top(as)->key);
		c.ask_shares = level_top(as)->shares;
	}
	struct hc_bbo_change *l = &b->bbo_last;
	if (c.bid_price_e4 == l->bid_price_e4 && c.ask_price_e4 == l->ask_price_e4 &&
	    c.bid_shares == l->bid_shares && c.ask_shares == l->ask_shares)
		return;
	b->bbo_last = c;
	if (b->bbo_n == b->bbo_cap) {
		size_t cap = b->bbo_cap ? b->bbo_cap * 2 : 65536;
		struct hc_bbo_change *p = realloc(b->bbo, cap * sizeof(*p));
		if (!p) {
			b->st.drops[HC_DROP_NO_MEMORY]++;
			return;
		}
		b->bbo = p;
		b->bbo_cap = cap;
	}
	b->bbo[b->bbo_n++] = c;
	b->st.bbo_changes++;
}

/* ---- book operations ---- */
static inline void trade_push(struct hc_stock *s, uint64_t ts, uint32_t price_e4, uint64_t shares)
{
	struct hc_trade *t = &s->ring[s->trades_total % HC_TRADES_RING];
	t->itch_ns = ts;
	t->price_e4 = price_e4;
	t->shares = shares;
	s->trades_total++;
	s->info.trades++;
	s->info.volume += shares;
	s->info.last_trade_price_e4 = price_e4;
}

/* Rest order idx (fields ref/shares/stock/side set) at the back of the queue of its level
 * (side key `key`): the newest stamp. */
static inline int order_rest(struct hc_books *b, struct hc_stock *s, uint32_t idx, uint32_t key)
{
	struct hc_order *o = &b->pool[idx];
	struct hc_side *sd = &s->side[order_side(o)];
	uint32_t li = level_get(b, sd, key);
	if (UNLIKELY(!li))
		return -ENOMEM;
	struct hc_level *lv = &sd->lv[li];
	o->lvl = li;
	o->stamp = b->stamp++;
	lv->orders++;
	lv->shares += o->shares;
	s->orders_live++;
	return 0;
}

/* Take order idx (at index slot `slot`) off its level and out of the index and pool. */
static inline void order_remove(struct hc_books *b, struct hc_stock *s, uint32_t idx,
				uint32_t *slot)
{
	struct hc_order *o = &b->pool[idx];
	struct hc_side *sd = &s->side[order_side(o)];
	struct hc_level *lv = &sd->lv[o->lvl];
	lv->shares -= o->shares;
	if (--lv->orders == 0)
		level_remove(sd, o->lvl);
	s->orders_live--;
	ref_erase(b, slot);
	order_release(b, idx);
	b->st.orders_live--;
}

/* Add a new order; returns 0 or -reason. */
static INLINE int add_order(struct hc_books *b, struct hc_stock *s, uint64_t ref, int side,
			    uint32_t shares, uint32_t price_e4)
{
	if (UNLIKELY(shares == 0))
		return -HC_DROP_ZERO_SHARES;
	uint32_t *slot = ref_slot_add(b, ref);
	if (UNLIKELY(!slot))
		return -HC_DROP_NO_MEMORY;
	if (UNLIKELY(*slot))
		return -HC_DROP_DUPLICATE_REF;
	uint32_t idx = order_alloc(b);
	if (UNLIKELY(!idx))
		return -HC_DROP_NO_MEMORY;
	struct hc_order *o = &b->pool[idx];
	o->ref = ref;
	o->shares = shares;
	o->stock_side = (uintptr_t)s | (uintptr_t)side;
	if (UNLIKELY(order_rest(b, s, idx, side_key(side, price_e4)) < 0)) {
		order_release(b, idx);
		return -HC_DROP_NO_MEMORY;
	}
	ref_set(b, slot, idx);
	if (++b->st.orders_live > b->st.orders_peak)
		b->st.orders_peak = b->st.orders_live;
	return 0;
}

static inline void maybe_bbo(struct hc_books *b, struct hc_stock *s, uint64_t ts)
{
	if (UNLIKELY(s == b->bbo_stock))
		bbo_record(b, s, ts);
}

/* An order message whose reference is not live: counted by reason (apart while incomplete)
 * and for the stock the message names (its locate; readers take it relaxed). */
static NOINLINE void unknown_ref(struct hc_books *b, uint16_t loc)
{
	b->st.drops[b->unknown_ref_reason]++;
	__atomic_store_n(&b->unk_loc[loc], b->unk_loc[loc] + 1, __ATOMIC_RELAXED);
}

/* Pool index of live order ref (its index slot in *slot), or 0, counted as unknown_ref. */
static inline uint32_t order_find(struct hc_books *b, uint64_t ref, uint32_t **slot, uint16_t loc)
{
	*slot = ref_slot(b, ref);
	uint32_t idx = **slot;
	if (UNLIKELY(!idx))
		unknown_ref(b, loc);
	return idx;
}

/* Open a change of stock s by a message stamped ts (seq_begin and the per-message counters);
 * returns what seq_end takes. */
static inline uint32_t stock_begin(struct hc_stock *s, uint64_t ts)
{
	uint32_t sv = seq_begin(s);
	s->messages++;
	s->last_itch_ns = ts;
	return sv;
}

/* E, C, X: take `shares` off order ref. exec_price_e4: 0 for X, else the print price. */
static INLINE void reduce(struct hc_books *b, uint16_t loc, uint64_t ref, uint32_t shares, uint64_t ts,
			  int print, uint32_t exec_price_e4)
{
	uint32_t *slot;
	uint32_t idx = order_find(b, ref, &slot, loc);
	if (UNLIKELY(!idx))
		return;
	struct hc_order *o = &b->pool[idx];
	struct hc_stock *s = order_stock(o);
	uint32_t amt = shares;
	if (UNLIKELY(amt > o->shares)) {
		b->st.drops[HC_DROP_OVER_REDUCE]++;
		amt = o->shares;
	}
	uint32_t sv = stock_begin(s, ts);
	struct hc_level *lv = &s->side[order_side(o)].lv[o->lvl];
	if (print)
		trade_push(s, ts, exec_price_e4 ? exec_price_e4 : key_price(order_side(o), lv->key), amt);
	if (amt == o->shares) {
		order_remove(b, s, idx, slot);
	} else {
		o->shares -= amt;
		lv->shares -= amt;
	}
	seq_end(s, sv);
	maybe_bbo(b, s, ts);
}

static INLINE void delete_order(struct hc_books *b, uint16_t loc, uint64_t ref, uint64_t ts)
{
	uint32_t *slot;
	uint32_t idx = order_find(b, ref, &slot, loc);
	if (UNLIKELY(!idx))
		return;
	struct hc_stock *s = order_stock(&b->pool[idx]);
	uint32_t sv = stock_begin(s, ts);
	order_remove(b, s, idx, slot);
	seq_end(s, sv);
	maybe_bbo(b, s, ts);
}

static INLINE void replace_order(struct hc_books *b, uint16_t loc, uint64_t old_ref, uint64_t new_ref,
				 uint32_t shares, uint32_t price_e4, uint64_t ts)
{
	uint32_t *slot;
	uint32_t idx = order_find(b, old_ref, &slot, loc);
	if (UNLIKELY(!idx))
		return;
	struct hc_stock *s = order_stock(&b->pool[idx]);
	int side = order_side(&b->pool[idx]);
	uint32_t sv = stock_begin(s, ts);
	order_remove(b, s, idx, slot);
	int rc = add_order(b, s, new_ref, side, shares, price_e4);
	seq_end(s, sv);
	if (UNLIKELY(rc < 0))
		b->st.drops[-rc]++;
	maybe_bbo(b, s, ts);
}

static INLINE void apply_add(struct hc_books *b, uint16_t locate, uint64_t ts, uint64_t ref,
			     char sc, uint32_t shares, uint32_t price_e4)
{
	if (UNLIKELY(sc != 'B' && sc != 'S')) {
		b->st.drops[HC_DROP_BAD_SIDE]++;
		return;
	}
	struct hc_stock *s = stock_get(b, locate);
	if (UNLIKELY(!s)) {
		b->st.drops[HC_DROP_NO_MEMORY]++;
		return;
	}
	uint32_t sv = stock_begin(s, ts);
	int rc = add_order(b, s, ref, sc == 'S', shares, price_e4);
	seq_end(s, sv);
	if (UNLIKELY(rc < 0))
		b->st.drops[-rc]++;
	maybe_bbo(b, s, ts);
}

static void copy_symbol(char dst[9], const char src[8])
{
	int n = 8;
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == 0))
		n--;
	memcpy(dst, src, (size_t)n);
	dst[n] = 0;
}

/* Messages that only touch per-stock state. */
static NOINLINE void apply_state(struct hc_books *b, const struct hc_itch_msg *m)
{
	struct hc_stock *s = stock_get(b, m->stock_locate);
	if (UNLIKELY(!s)) {
		b->st.drops[HC_DROP_NO_MEMORY]++;
		return;
	}
	uint32_t sv = stock_begin(s, m->timestamp_ns);
	switch (m->type) {
	case 'R':
		copy_symbol(s->info.symbol, m->stock_directory.stock);
		s->info.market_category = m->stock_directory.market_category;
		s->info.financial_status_indicator = m->stock_directory.financial_status_indicator;
		s->info.authenticity = m->stock_directory.authenticity;
		s->info.issue_classification = m->stock_directory.issue_classification;
		s->info.round_lot_size = m->stock_directory.round_lot_size;
		if (b->bbo_symbol[0] && strcmp(b->bbo_symbol, s->info.symbol) == 0)
			b->bbo_locate = s->info.locate, b->bbo_stock = s;
		break;
	case 'H':
		s->info.trading_state = m->trading_action.trading_state;
		break;
	case 'Y':
		s->info.reg_sho_action = m->reg_sho.reg_sho_action;
		break;
	case 'h': {
		char c = m->operational_halt.market_code;
		int k = c == 'Q' ? 0 : c == 'B' ? 1 : c == 'X' ? 2 : -1;
		if (k >= 0)
			s->info.halted_markets[k] = m->operational_halt.operational_halt_action;
		break;
	}
	case 'P':
		trade_push(s, m->timestamp_ns, m->trade.price_e4, m->trade.shares);
		break;
	case 'Q':
		if (m->cross_trade.shares)
			trade_push(s, m->timestamp_ns, m->cross_trade.cross_price_e4, m->cross_trade.shares);
		break;
	case 'B':
		s->info.broken_trades++;
		b->st.broken_trades++;
		break;
	}
	seq_end(s, sv);
}

void hc_books_apply(struct hc_books *b, const struct hc_itch_msg *m)
{
	b->st.messages[m->type]++;
	switch (m->type) {
	case 'A':
	case 'F':
		apply_add(b, m->stock_locate, m->timestamp_ns, m->add.order_reference_number,
			  m->add.buy_sell_indicator, m->add.shares, m->add.price_e4);
		return;
	case 'E':
		reduce(b, m->stock_locate, m->executed.order_reference_number, m->executed.executed_shares,
		       m->timestamp_ns, 1, 0);
		return;
	case 'C':
		reduce(b, m->stock_locate, m->executed.order_reference_number, m->executed.executed_shares,
		       m->timestamp_ns, m->executed.printable == 'Y', m->executed.execution_price_e4);
		return;
	case 'X':
		reduce(b, m->stock_locate, m->cancel.order_reference_number, m->cancel.canceled_shares,
		       m->timestamp_ns, 0, 0);
		return;
	case 'D':
		delete_order(b, m->stock_locate, m->del.order_reference_number, m->timestamp_ns);
		return;
	case 'U':
		replace_order(b, m->stock_locate, m->replace.original_order_reference_number,
			      m->replace.new_order_reference_number, m->replace.shares,
			      m->replace.price_e4, m->timestamp_ns);
		return;
	case 'R': case 'H': case 'Y': case 'h': case 'P': case 'Q': case 'B':
		apply_state(b, m);
		return;
	default:
		return;
	}
}

/* Any other message, or an order message of the wrong length: the full decoder (which
 * checks the length and type and returns the same drop reasons), then hc_books_apply. */
static NOINLINE int feed_other(struct hc_books *b, const uint8_t *p, uint32_t len)
{
	struct hc_itch_msg m;
	int rc = hc_itch_decode(p, len, &m);
	if (UNLIKELY(rc < 0)) {
		b->st.drops[-rc]++;
		return rc;
	}
	hc_books_apply(b, &m);
	return 0;
}

/* Fused decode + apply for the order messages (lengths of hc_itch_len and offsets of
 * ITCH50.md section 4, the same as hc_itch_decode's). Each type checks its own fixed length
 * against a constant; everything else, and any length mismatch, goes through feed_other (so
 * even a wrong constant here would only make that type slower, never change what is applied
 * or counted). One list, used by the switch of feed_msg and by the steady loop of
 * hc_books_feed_records (whose jump table names the same types). */
#define TS(p) (hc_be64((p) + 3) & 0xFFFFFFFFFFFFull) /* 48 bits at 5, one load at 3 */
#define HC_FEED_TYPES(M) M(A, 'A', 36) M(F, 'F', 40) M(E, 'E', 31) M(C, 'C', 36) M(X, 'X', 23) \
	M(D, 'D', 19) M(U, 'U', 35)
static INLINE void feed_A(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['A']++;
	apply_add(b, hc_be16(p + 1), TS(p), hc_be64(p + 11), (char)p[19], hc_be32(p + 20),
		  hc_be32(p + 32));
}
static INLINE void feed_F(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['F']++;
	apply_add(b, hc_be16(p + 1), TS(p), hc_be64(p + 11), (char)p[19], hc_be32(p + 20),
		  hc_be32(p + 32));
}
static INLINE void feed_E(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['E']++;
	reduce(b, hc_be16(p + 1), hc_be64(p + 11), hc_be32(p + 19), TS(p), 1, 0);
}
static INLINE void feed_C(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['C']++;
	reduce(b, hc_be16(p + 1), hc_be64(p + 11), hc_be32(p + 19), TS(p), p[31] == 'Y', hc_be32(p + 32));
}
static INLINE void feed_X(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['X']++;
	reduce(b, hc_be16(p + 1), hc_be64(p + 11), hc_be32(p + 19), TS(p), 0, 0);
}
static INLINE void feed_D(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['D']++;
	delete_order(b, hc_be16(p + 1), hc_be64(p + 11), TS(p));
}
static INLINE void feed_U(struct hc_books *b, const uint8_t *p)
{
	b->st.messages['U']++;
	replace_order(b, hc_be16(p + 1), hc_be64(p + 11), hc_be64(p + 19), hc_be32(p + 27), hc_be32(p + 31), TS(p));
}
#undef TS

static inline __attribute__((always_inline)) int feed_msg(struct hc_books *b, const uint8_t *p,
							 uint32_t len)
{
	if (UNLIKELY(len == 0)) {
		b->st.drops[HC_DROP_EMPTY]++;
		return -HC_DROP_EMPTY;
	}
	switch (p[0]) {
#define CASE(t, c, n) case c: if (LIKELY(len == n)) { feed_##t(b, p); return 0; } break;
	HC_FEED_TYPES(CASE)
#undef CASE
	}
	return feed_other(b, p, len);
}

NOINLINE int hc_books_feed_msg(struct hc_books *b, const uint8_t *p, uint32_t len)
{
	return feed_msg(b, p, len);
}

/* Warm what a message ahead will touch: HC_PF_SLOT records ahead, the window slot of the
 * reference at offset 11 (the order reference of A F E C X D U P); HC_PF_ORDER records
 * ahead, the order in that slot, the slot having been fetched by then. Hints only, with no
 * type test (a branch here would mispredict as often as types change): for other types, or
 * a reference outside the window, they warm a harmless slot. */
#define HC_PF_SLOT 16 /* records ahead; a power of two (ring of window-slot pointers) */
#define HC_PF_ORDER 8
/* In the steady loop also: HC_PF_SLOT records ahead, the stock the record names (offset 1);
 * HC_PF_LEVEL records ahead (the order and stock fetched by then), what applying it will
 * touch next: the order's level (a message by reference), and the
 * top keys and the next free level slot of the side an add names (offset 19). Both for every
 * record, with no test of its type: for the wrong kind they warm harmless lines. */
#define HC_PF_LEVEL 4

/* HC_PF_ADD records ahead (the side's top keys fetched by then), the level an add will
 * join when it is one of the top 8 of its side (most adds are): found by the same compare as
 * level_lb's, its counters warmed. */
#define HC_PF_ADD 2

/* Stands in for a missing stock or order in those hints, so they need no branch; its sides'
 * keys point into pf_dummy_keys (n = cap = 0: the top-8 compare reads keys[-8..-1] and
 * idx[-8..0]). */
static int32_t pf_dummy_keys[2][HC_KEY_PAD + 1];
static struct hc_stock pf_dummy = {
	.side = { { .keys = pf_dummy_keys[0] + HC_KEY_PAD }, { .keys = pf_dummy_keys[1] + HC_KEY_PAD } },
};

static INLINE void pf_addr(uintptr_t a) { __builtin_prefetch((const void *)a, 1, 3); }

static INLINE void prefetch_stock(const struct hc_books *b, const uint8_t *m)
{
	uintptr_t s = (uintptr_t)atomic_load_explicit(&b->stocks[hc_be16(m + 1)], memory_order_relaxed);
	pf_addr(s);
	pf_addr(s + 64);
}

/* The top 8 keys of a side and the index entry of its best level (idx[] is right after
 * keys[cap], level_arr_new). */
static INLINE void prefetch_top(const struct hc_side *sd)
{
	uintptr_t keys = (uintptr_t)sd->keys;
	pf_addr(keys + (uintptr_t)sd->n * sizeof(int32_t) - 32);
	pf_addr(keys + (uintptr_t)sd->n * sizeof(int32_t) - 4);
	pf_addr(keys + ((uintptr_t)sd->cap + sd->n) * sizeof(int32_t) - 4);
}

/* The side an add (A, F) joins: its stock's side named at offset 19. For any other record
 * the dummy's (always in cache): the side a D, E, X or C names is its order's, warmed from the
 * order (prefetch_levels), and offset 19 of those is not a side, so warming what it named
 * would spend a few lines of memory-level parallelism per message on lines nothing uses. The
 * choice is a select, not a branch (types mix at random). */
static INLINE const struct hc_side *add_side(const struct hc_books *b, const uint8_t *m)
{
	const struct hc_stock *s = atomic_load_explicit(&b->stocks[hc_be16(m + 1)], memory_order_relaxed);
	uintptr_t real = (uintptr_t)s, dummy = (uintptr_t)&pf_dummy;
	uintptr_t keep = -(uintptr_t)(((m[0] == 'A') | (m[0] == 'F')) & (s != NULL));
	s = (const struct hc_stock *)((real & keep) | (dummy & ~keep));
	return &s->side[m[19] == 'S'];
}

static INLINE const struct hc_side *prefetch_levels(const struct hc_books *b, const uint8_t *m,
						   uint32_t idx)
{
	const struct hc_order *o = &b->pool[idx];
	const struct hc_stock *os = order_stock(o);
	const struct hc_side *osd = &(os ? os : &pf_dummy)->side[order_side(o)];
	pf_addr((uintptr_t)osd->lv + (uintptr_t)o->lvl * sizeof(struct hc_level));
	prefetch_top(osd); /* a level that empties is found in the index */
	const struct hc_side *asd = add_side(b, m);
	prefetch_top(asd);
	pf_addr((uintptr_t)asd->lv + (uintptr_t)asd->free_lv * sizeof(struct hc_level));
	pf_addr((uintptr_t)&b->pool[b->free_head]);
	return asd;
}

/* Where a record's reference (offset 11) is looked up: its window slot, or for a reference
 * outside the window (an old order resting from long ago, or one far above) the home slot of
 * its table probe, selected without a branch (old and new references mix at random). Kept
 * as a tagged position (top bit: table), not a pointer: the table may grow before the hint is
 * used, and the position, masked again then, stays inside the current table (it never
 * shrinks). */
#define HC_HINT_TABLE (1ull << 63)
static INLINE uint64_t hint_pos(const struct hc_books *b, const uint8_t *m)
{
	uint64_t ref = hc_be64(m + 11);
	return ref - b->win_base <= b->win_mask ? ref & b->win_mask : HC_HINT_TABLE | ref_hash(b, ref);
}
static INLINE const uint32_t *hint_slot(const struct hc_books *b, uint64_t pos)
{
	int t = pos >> 63;
	const uint32_t *base = t ? b->table : b->win;
	return &base[pos & (t ? b->mask : b->win_mask)];
}

/* See HC_PF_ADD. sd: the record's add_side, from prefetch_levels (the dummy's for a record
 * that is no add). A harmless hint whatever it names, reading only inside the side's arrays
 * (keys[n - 8 .. n - 1], idx[n - 8 .. n], the sentinels and idx[cap] = lv[0] being part of
 * the allocation). */
static INLINE void prefetch_add_level(const struct hc_side *sd, const uint8_t *m)
{
	int side = m[19] == 'S';
	const int32_t *keys = sd->keys;
	int32_t k = bias_key(side_key(side, hc_be32(m + 32)));
	const int32_t *top = keys + (int32_t)sd->n - 8;
	uint32_t c = lt8(top, k);
	uint32_t li = ((const uint32_t *)keys + sd->cap)[(int32_t)sd->n - 8 + (int32_t)c];
	uintptr_t lv = (uintptr_t)&sd->lv[li <= sd->cap ? li : 0];
	pf_addr(lv); /* levels never straddle two lines (level_arr_new) */
}

#define HC_PF_BYTES 1024 /* the record stream itself, bytes ahead */

/* While more than this many bytes remain past the lookahead cursor, the record there is
 * complete whatever its length says, and reading its reference (offset 11, 8 bytes), its
 * side (offset 19) or prefetching HC_PF_BYTES ahead stays inside the buffer: the steady loop
 * tests nothing else. */
#define HC_FEED_SAFE (2u + 65535u + HC_PF_BYTES)

/* The lookahead step: warm the slot of the record at *a and remember it in the rings (for a
 * record shorter than 19 bytes, whatever 8 bytes are there: a harmless hint). The message
 * ring is kept only for the deep loop's hints; a deep step after a plain one reads entries
 * that are older records of this buffer (before safe_end, so in bounds): wrong hints for
 * 16 records, nothing worse. */
static INLINE void look_ahead(const uint32_t *win, uint64_t win_mask, const uint8_t *p, size_t len,
			      const uint32_t **slots, const uint8_t **recs, uint32_t *parsed,
			      size_t *a, int safe, int keep_rec)
{
	uint32_t n = hc_be16(p + *a);
	uint64_t ref = safe || LIKELY(n >= 19) ? hc_be64(p + *a + 2 + 11) : 0;
	if (safe || LIKELY(len - *a > HC_PF_BYTES))
		__builtin_prefetch(p + *a + HC_PF_BYTES, 0, 0);
	const uint32_t *slot = &win[ref & win_mask];
	__builtin_prefetch(slot, 0, 3);
	slots[*parsed % HC_PF_SLOT] = slot;
	if (keep_rec)
		recs[*parsed % HC_PF_SLOT] = p + *a + 2;
	++*parsed;
	*a += 2 + (size_t)n;
}

/* The steady state, while a < end: one record in at the front, one applied at the back
 * (HC_PF_SLOT + 1 records in flight; the ring slot written is that of the record being
 * applied, whose reference is no longer needed). The only test is the distance to the
 * buffer's end. The type's code is reached straight from a 256-entry table: one indirect
 * jump per message, no range test first (the jump is the one branch of the loop that random
 * type mixes make mispredict). `deep` adds the stock and level hints. */
#define FEED_STEADY(deep) do { \
	static const void *const jump_[256] = { /* the types of HC_FEED_TYPES, in order */ \
		[0 ... 'A' - 1] = &&other_, ['A'] = &&type_A, ['B'] = &&other_, \
		['C'] = &&type_C, ['D'] = &&type_D, ['E'] = &&type_E, ['F'] = &&type_F, \
		['G' ... 'T'] = &&other_, ['U'] = &&type_U, ['V' ... 'W'] = &&other_, \
		['X'] = &&type_X, ['Y' ... 255] = &&other_, \
	}; \
	const uint8_t *m_; \
	uint32_t n_; \
	while (a < end) { \
		look_ahead(win, win_mask, p, len, slots, recs, &parsed, &a, 1, deep); \
		if (deep) { \
			prefetch_stock(b, recs[(parsed - 1) % HC_PF_SLOT]); \
			uint64_t h_ = hint_pos(b, recs[(parsed - 1) % HC_PF_SLOT]); \
			hints[(parsed - 1) % HC_PF_SLOT] = h_; \
			__builtin_prefetch(hint_slot(b, h_), 0, 3); \
			uint32_t i_ = *hint_slot(b, hints[(parsed - 1 + HC_PF_ORDER) % HC_PF_SLOT]); \
			hints[(parsed - 1 + HC_PF_ORDER) % HC_PF_SLOT] = i_; \
			__builtin_prefetch(&b->pool[i_], 1, 3); \
			sides[(parsed - 1 + HC_PF_LEVEL) % HC_PF_SLOT] = \
				prefetch_levels(b, recs[(parsed - 1 + HC_PF_LEVEL) % HC_PF_SLOT], \
						(uint32_t)hints[(parsed - 1 + HC_PF_LEVEL) % HC_PF_SLOT]); \
			prefetch_add_level(sides[(parsed - 1 + HC_PF_ADD) % HC_PF_SLOT], \
					   recs[(parsed - 1 + HC_PF_ADD) % HC_PF_SLOT]); \
		} else { \
			__builtin_prefetch(&b->pool[*slots[(parsed - 1 + HC_PF_ORDER) % HC_PF_SLOT]], 1, 3); \
		} \
		n_ = hc_be16(p + off); \
		m_ = p + off + 2; \
		off += 2 + (size_t)n_; \
		goto *jump_[m_[0]]; /* m[0] of an empty record is the next length's: checked below */ \
		HC_FEED_TYPES(FEED_BODY) \
other_: \
		feed_msg(b, m_, n_); \
	} \
} while (0)
#define FEED_BODY(t, c_, len_) type_##t: if (UNLIKELY(n_ != len_)) goto other_; feed_##t(b, m_); continue;

/* The cursor handed to the deep loop (kept apart so the plain loop's stays in registers). */
struct feed_cur { uint32_t parsed; size_t off, a; };

/* FEED_STEADY(1) up to end, in a function of its own (its labels are its own). */
static NOINLINE void feed_steady_deep(struct hc_books *b, const uint8_t *p, size_t len, size_t end,
				      const uint32_t **slots, const uint8_t **recs, struct feed_cur *cur)
{
	/* per record in flight: its hint_pos from HC_PF_SLOT records ahead, replaced HC_PF_ORDER
	 * ahead by the pool index found there, for the level hints (0 or an index that was live,
	 * and the pool never shrinks: any entry is in the pool) */
	uint64_t hints[HC_PF_SLOT] = { 0 };
	/* per record in flight: its add_side, from HC_PF_LEVEL records ahead (for HC_PF_ADD) */
	const struct hc_side *sides[HC_PF_SLOT];
	for (int i = 0; i < HC_PF_SLOT; i++)
		sides[i] = &pf_dummy.side[0];
	const uint32_t *win = b->win;
	const uint64_t win_mask = b->win_mask;
	uint32_t parsed = cur->parsed;
	size_t off = cur->off, a = cur->a;
	FEED_STEADY(1);
	cur->parsed = parsed;
	cur->off = off;
	cur->a = a;
}

/* Books past this many live orders or stocks take the deep loop (their order, level and
 * stock lines no longer stay in L1/L2 between messages); the choice is made again every
 * HC_FEED_STEP bytes. */
#define HC_DEEP_ORDERS 65536u
#define HC_DEEP_STOCKS 64u
#define HC_FEED_STEP (1u << 20)

static NOINLINE size_t feed_records(struct hc_books *b, const uint8_t *p, size_t len, int more)
{
	const uint32_t *slots[HC_PF_SLOT];
	const uint8_t *recs[HC_PF_SLOT]; /* the messages of the records in flight */
	uint64_t hints[HC_PF_SLOT]; /* the deep loop's only (FEED_STEADY(0) names them) */
	const struct hc_side *sides[HC_PF_SLOT];
	const uint32_t *win = b->win; /* fixed for the books' life */
	const uint64_t win_mask = b->win_mask;
	uint32_t parsed = 0, done = 0; /* records seen by the lookahead / applied */
	size_t off = 0, a = 0;
	/* The apply step: warm the order HC_PF_ORDER records ahead, apply the record at off. */
#define APPLY(feed) do { \
		if (parsed - done > HC_PF_ORDER) { \
			/* a window slot holds 0 or a pool index, so this is in the pool */ \
			__builtin_prefetch(&b->pool[*slots[(done + HC_PF_ORDER) % HC_PF_SLOT]], 1, 3); \
		} \
		uint32_t n_ = hc_be16(p + off); \
		feed(b, p + off + 2, n_); \
		off += 2 + (size_t)n_; \
		done++; \
	} while (0)
	while (parsed < HC_PF_SLOT && hc_nasdaq_complete(p, len, a))
		look_ahead(win, win_mask, p, len, slots, recs, &parsed, &a, 0, 1);
	if (parsed == HC_PF_SLOT && len > HC_FEED_SAFE) {
		/* here done == parsed - HC_PF_SLOT always: one counter is kept */
		for (size_t safe_end = len - HC_FEED_SAFE; a < safe_end;) {
			size_t end = safe_end - a > HC_FEED_STEP ? a + HC_FEED_STEP : safe_end;
			if (b->st.orders_live > HC_DEEP_ORDERS || b->n_locs > HC_DEEP_STOCKS) {
				struct feed_cur c = { parsed, off, a };
				feed_steady_deep(b, p, len, end, slots, recs, &c);
				parsed = c.parsed;
				off = c.off;
				a = c.a;
			} else {
				FEED_STEADY(0);
			}
		}
		if (more && off)
			return off; /* what was looked ahead past off only warmed lines */
		done = parsed - HC_PF_SLOT;
	}
	while (hc_nasdaq_complete(p, len, a)) { /* the last 64 KiB: every test, nothing inlined again */
		look_ahead(win, win_mask, p, len, slots, recs, &parsed, &a, 0, 0);
		APPLY(hc_books_feed_msg);
	}
	while (done != parsed)
		APPLY(hc_books_feed_msg);
#undef APPLY
	return off;
}

size_t hc_books_feed_records(struct hc_books *b, const uint8_t *p, size_t len)
{
	return feed_records(b, p, len, 0);
}

size_t hc_books_feed_records_more(struct hc_books *b, const uint8_t *p, size_t len)
{
	return feed_records(b, p, len, 1);
}
#undef FEED_BODY
#undef FEED_STEADY

/* A/F/E/C/X/D/U all carry an order reference at offset 11 (U: the original one). */
void hc_books_prefetch_slot(const struct hc_books *b, const uint8_t *msg, uint32_t len)
{
	if (len >= 19)
		__builtin_prefetch(&b->win[hc_be64(msg + 11) & b->win_mask], 0, 3);
}

void hc_books_prefetch_order(const struct hc_books *b, const uint8_t *msg, uint32_t len)
{
	if (len >= 19) {
		uint32_t idx = b->win[hc_be64(msg + 11) & b->win_mask];
		__builtin_prefetch(&b->pool[idx < b->pool_cap ? idx : 0], 1, 3);
	}
}

/* ---- keeping the books in cache while the data thread idles (hc_books_warm) ----
 * One cursor walks, over the calls, every stock seen (its two hot lines, then for each side the
 * line of its top keys, of their level slots and of the best level), then the order pool's used
 * lines (each order's window slot too, when its reference is in the window). Every address is
 * prefetched HC_WARM_AHEAD steps before the step that reads it, so a cold line never stalls the
 * loop: a packet that arrives meanwhile waits at most for one call's few loads. */
#define HC_WARM_AHEAD 4

static INLINE void warm_stock_lines(const struct hc_books *b, uint32_t k)
{
	const struct hc_stock *s = atomic_load_explicit(&b->stocks[b->locs[k]], memory_order_relaxed);
	pf_addr((uintptr_t)s);
	pf_addr((uintptr_t)s + 64);
}

static INLINE void warm_stock(const struct hc_books *b, uint32_t k)
{
	const struct hc_stock *s = atomic_load_explicit(&b->stocks[b->locs[k]], memory_order_relaxed);
	for (int i = 0; i < 2; i++) {
		const struct hc_side *sd = &s->side[i];
		if (!sd->n)
			continue;
		const uint32_t *idx = (const uint32_t *)sd->keys + sd->cap;
		pf_addr((uintptr_t)&sd->keys[sd->n - 1]);
		pf_addr((uintptr_t)&idx[sd->n - 1]);
	}
}

static INLINE void warm_stock_top(const struct hc_books *b, uint32_t k)
{
	const struct hc_stock *s = atomic_load_explicit(&b->stocks[b->locs[k]], memory_order_relaxed);
	for (int i = 0; i < 2; i++) {
		const struct hc_side *sd = &s->side[i];
		if (sd->n)
			pf_addr((uintptr_t)&sd->lv[((const uint32_t *)sd->keys + sd->cap)[sd->n - 1]]);
	}
}

static INLINE void warm_orders(const struct hc_books *b, uint64_t line)
{
	const struct hc_order *o = (const struct hc_order *)((const uint8_t *)b->pool + line * 64);
	for (int i = 0; i < 2; i++)
		if (o[i].ref - b->win_base <= b->win_mask)
			pf_addr((uintptr_t)&b->win[o[i].ref & b->win_mask]);
}

void hc_books_warm(struct hc_books *b, uint32_t steps)
{
	/* positions: 3 per stock (lines, keys, top level: each a step after the one it needs), then
	 * the pool's lines; the pool line p is prefetched at step p - HC_WARM_AHEAD */
	const uint64_t ns = (uint64_t)b->n_locs * 3;
	const uint64_t pool_lines = (uint64_t)b->pool_used * sizeof(struct hc_order) / 64; /* whole lines */
	const uint64_t end = ns + pool_lines;
	if (!end)
		return;
	uint64_t p = b->warm_pos;
	for (uint32_t n = 0; n < steps; n++, p++) {
		if (p >= end)
			p = 0;
		uint64_t q = p + HC_WARM_AHEAD; /* ahead: the line a later step reads */
		if (q < ns) {
			if (q % 3 == 0)
				warm_stock_lines(b, (uint32_t)(q / 3));
		} else if (q - ns < pool_lines) {
			pf_addr((uintptr_t)b->pool + (q - ns) * 64);
		}
		if (p < ns) {
			uint32_t k = (uint32_t)(p / 3);
			if (p % 3 == 1)
				warm_stock(b, k);
			else if (p % 3 == 2)
				warm_stock_top(b, k);
		} else {
			warm_orders(b, p - ns);
		}
	}
	b->warm_pos = p;
}

void hc_books_count_drop(struct hc_books *b, int reason)
{
	if (reason < 0 && -reason < HC_DROP__MAX)
		b->st.drops[-reason]++;
}

const struct hc_books_stats *hc_books_stats(const struct hc_books *b) { return &b->st; }

static int books_new(struct hc_books **out, uint64_t expected_orders, int lazy)
{
	struct hc_books *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->lazy = lazy;
	if (expected_orders < 1024)
		expected_orders = 1024;
	if (expected_orders > (1u << 31))
		expected_orders = 1u << 31;
	b->pool_cap = (uint32_t)expected_orders + 1;
	b->pool = big_alloc(b, (size_t)b->pool_cap * sizeof(*b->pool));
	b->pool_used = 1;
	b->bbo_locate = -1;
	b->unknown_ref_reason = HC_DROP_UNKNOWN_REF;
	uint64_t w = HC_WIN_MIN;
	while (w < expected_orders * 2 && w < HC_WIN_MAX)
		w *= 2;
	b->win = big_alloc(b, w * sizeof(*b->win));
	b->unk_loc = calloc(65536, sizeof(*b->unk_loc));
	b->win_mask = w - 1;
	b->slide_budget = 2 * w;
	b->above_lo = UINT64_MAX;
	if (!b->pool || !b->win || !b->unk_loc || table_alloc(b, expected_orders * 10 / 7 + 1) < 0) {
		free(b->unk_loc);
		big_free(b->pool, (size_t)b->pool_cap * sizeof(*b->pool));
		big_free(b->win, w * sizeof(*b->win));
		free(b);
		return -ENOMEM;
	}

	*out = b;
	return 0;
}

int hc_books_new(struct hc_books **out, uint64_t expected_orders)
{
	return books_new(out, expected_orders, 0);
}

int hc_books_new_lazy(struct hc_books **out, uint64_t expected_orders)
{
	return books_new(out, expected_orders, 1);
}

static void walk_drop(struct hc_books *b);
static int walk_build(struct hc_books *b);

void hc_books_free(struct hc_books *b)
{
	if (!b)
		return;
	for (int i = 0; i < 65536; i++) {
		struct hc_stock *s = b->stocks[i];
		if (s) {
			free(s->side[0].a);
			free(s->side[1].a);
			free(s);
		}
	}
	for (struct hc_level_arr *a = b->retired, *nx; a; a = nx) {
		nx = a->retired;
		free(a);
	}
	free(b->bbo);
	walk_drop(b);
	big_free(b->table, (b->mask + 1) * sizeof(*b->table));
	big_free(b->win, (b->win_mask + 1) * sizeof(*b->win));
	free(b->unk_loc);
	big_free(b->pool, (size_t)b->pool_cap * sizeof(*b->pool));
	free(b);
}

/* ---- readers ---- */
static inline struct hc_stock *stock_peek(struct hc_books *b, uint16_t locate)
{
	return atomic_load_explicit(&b->stocks[locate], memory_order_acquire);
}
static inline uint32_t seq_read_begin(struct hc_stock *s)
{
	uint32_t v;
	while ((v = atomic_load_explicit(&s->seq, memory_order_acquire)) & 1) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
	return v;
}
static inline int seq_read_retry(struct hc_stock *s, uint32_t v)
{
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&s->seq, memory_order_relaxed) != v;
}

static uint32_t copy_side(struct hc_side *sd, int side, uint32_t levels, struct hc_level_snap *out)
{
	struct hc_level_arr *a = atomic_load_explicit((struct hc_level_arr *_Atomic *)&sd->a,
						      memory_order_acquire);
	uint32_t n = *(volatile uint32_t *)&sd->n;
	if (n > a->cap)
		n = a->cap; /* torn read: retried by the caller */
	uint32_t k = n < levels ? n : levels;
	for (uint32_t i = 0; i < k; i++) {
		uint32_t li = a->idx[n - 1 - i];
		const struct hc_level *l = &a->lv[li <= a->cap ? li : 0]; /* torn: retried */
		out[i].price_e4 = key_price(side, (uint32_t)a->keys[n - 1 - i] ^ HC_KEY_BIAS);
		out[i].orders = l->orders;
		out[i].shares = l->shares;
	}
	return k;
}

int hc_books_snapshot(struct hc_books *b, uint16_t locate, uint32_t levels,
		      struct hc_level_snap *bids, uint32_t *n_bids,
		      struct hc_level_snap *asks, uint32_t *n_asks)
{
	struct hc_stock *s = stock_peek(b, locate);
	if (!s)
		return -ENOENT;
	uint32_t v;
	do {
		v = seq_read_begin(s);
		*n_bids = copy_side(&s->side[0], 0, levels, bids);
		*n_asks = copy_side(&s->side[1], 1, levels, asks);
	} while (seq_read_retry(s, v));
	return 0;
}

int hc_books_trades(struct hc_books *b, uint16_t locate, uint32_t n, struct hc_trade *out)
{
	struct hc_stock *s = stock_peek(b, locate);
	if (!s)
		return -ENOENT;
	if (n > HC_TRADES_RING)
		n = HC_TRADES_RING;
	uint32_t v, k;
	do {
		v = seq_read_begin(s);
		uint64_t total = s->trades_total;
		k = total < n ? (uint32_t)total : n;
		/* oldest first */
		for (uint32_t i = 0; i < k; i++)
			out[i] = s->ring[(total - k + i) % HC_TRADES_RING];
	} while (seq_read_retry(s, v));
	return (int)k;
}

int hc_books_stock_info(struct hc_books *b, uint16_t locate, struct hc_stock_info *out)
{
	struct hc_stock *s = stock_peek(b, locate);
	if (!s)
		return -ENOENT;
	uint32_t v;
	do {
		v = seq_read_begin(s);
		*out = s->info;
		out->messages = s->messages;
		out->last_itch_ns = s->last_itch_ns;
		out->orders_live = s->orders_live;
		out->bid_levels = *(volatile uint32_t *)&s->side[0].n;
		out->ask_levels = *(volatile uint32_t *)&s->side[1].n;
	} while (seq_read_retry(s, v));
	out->symbol[8] = 0;
	out->suspect = atomic_load_explicit(&b->suspect, memory_order_relaxed);
	out->incomplete = (char)b->incomplete;
	out->unknown_refs = __atomic_load_n(&b->unk_loc[locate], __ATOMIC_RELAXED);
	return 0;
}

void hc_books_mark_suspect(struct hc_books *b)
{
	atomic_store_explicit(&b->suspect, 1, memory_order_relaxed);
}

void hc_books_clear_suspect(struct hc_books *b)
{
	atomic_store_explicit(&b->suspect, 0, memory_order_relaxed);
}

uint64_t hc_books_unknown_refs(const struct hc_books *b, uint16_t locate)
{
	return __atomic_load_n(&b->unk_loc[locate], __ATOMIC_RELAXED);
}

int hc_books_locates(struct hc_books *b, uint16_t *out, int cap)
{
	int n = 0;
	for (int i = 0; i < 65536; i++)
		if (stock_peek(b, (uint16_t)i)) {
			if (n < cap)
				out[n] = (uint16_t)i;
			n++;
		}
	return n;
}

int hc_books_record_bbo(struct hc_books *b, int locate)
{
	b->bbo_locate = locate;
	b->bbo_stock = locate >= 0 && locate < 65536 ? stock_peek(b, (uint16_t)locate) : NULL;
	b->bbo_symbol[0] = 0;
	b->bbo_n = 0;
	memset(&b->bbo_last, 0, sizeof(b->bbo_last));
	return 0;
}

int hc_books_record_bbo_symbol(struct hc_books *b, const char *symbol)
{
	char tmp[8];
	size_t n = strnlen(symbol, 8);
	memset(tmp, ' ', 8);
	memcpy(tmp, symbol, n);
	hc_books_record_bbo(b, -1);
	copy_symbol(b->bbo_symbol, tmp);
	return 0;
}

const struct hc_bbo_change *hc_books_bbo_changes(struct hc_books *b, size_t *n)
{
	*n = b->bbo_n;
	return b->bbo;
}

int hc_books_level_orders(struct hc_books *b, uint16_t locate, int side, uint32_t price_e4,
			  uint64_t *refs, uint32_t *shares, int cap)
{
	struct hc_stock *s = stock_peek(b, locate);
	if (!s || side < 0 || side > 1)
		return -ENOENT;
	struct hc_side *sd = &s->side[side];
	int32_t bk = bias_key(side_key(side, price_e4));
	uint32_t i = level_lb(sd->a->keys, sd->n, bk);
	if (i >= sd->n || sd->a->keys[i] != bk)
		return -ENOENT;
	uint32_t li = sd->a->idx[i];
	int rc = walk_build(b); /* the stock's orders, each level's in stamp (queue) order */
	if (rc < 0)
		return rc;
	uint32_t n = 0;
	for (uint32_t j = b->walk_start[locate]; j < b->walk_start[locate + 1]; j++) {
		const struct hc_order *o = &b->pool[b->walk_ord[j]];
		if (order_side(o) != side || o->lvl != li)
			continue;
		if ((int)n < cap) {
			refs[n] = o->ref;
			shares[n] = o->shares;
		}
		n++;
	}
	if (n != sd->lv[li].orders)
		return -EIO; /* the level's count and its orders disagree (hc_books_check says how) */
	return (int)n;
}

/* For pool_check: stock pointers sorted, to name an order's stock without trusting it. */
struct stock_key { uintptr_t s; uint32_t k; };
static int stock_key_cmp(const void *x, const void *y)
{
	uintptr_t a = ((const struct stock_key *)x)->s, b = ((const struct stock_key *)y)->s;
	return (a > b) - (a < b);
}

/* The pool against the levels (hc_books_check, after the levels' own checks; `total` live
 * orders by the stocks' counts): every live order names a known stock, a used level slot of
 * its side, a stamp already given out, and is found by its reference; each level's order
 * count and shares are what its orders add up to; the free list holds exactly the pool's
 * other slots. One pass over the pool, whatever the number of stocks. */
static int pool_check(struct hc_books *b, uint64_t total)
{
	uint32_t ns = b->n_locs;
	struct stock_key *sk = malloc(((size_t)ns + 1) * sizeof(*sk));
	uint64_t *base = malloc(((size_t)ns * 2 + 1) * sizeof(*base));
	uint64_t slots = 0;
	for (uint32_t k = 0; k < ns && sk && base; k++) {
		sk[k] = (struct stock_key){ (uintptr_t)b->stocks[b->locs[k]], k };
		for (int side = 0; side < 2; side++) {
			base[k * 2 + side] = slots;
			slots += b->stocks[b->locs[k]]->side[side].hw;
		}
	}
	uint32_t *cnt = calloc(slots + 1, sizeof(*cnt));
	uint64_t *sh = calloc(slots + 1, sizeof(*sh));
	int rc = 0;
	if (!sk || !base || !cnt || !sh) {
		rc = -ENOMEM;
		goto out;
	}
	qsort(sk, ns, sizeof(*sk), stock_key_cmp);
	uint64_t live = 0;
	for (uint32_t i = 1; i < b->pool_used; i++) {
		const struct hc_order *o = &b->pool[i];
		if (!o->shares)
			continue;
		struct stock_key key = { (uintptr_t)order_stock(o), 0 };
		const struct stock_key *f = bsearch(&key, sk, ns, sizeof(*sk), stock_key_cmp);
		int side = order_side(o);
		if (!f || !o->lvl || o->lvl >= ((struct hc_stock *)f->s)->side[side].hw ||
		    o->stamp >= b->stamp) {
			rc = -5;
			goto out;
		}
		if (*ref_slot(b, o->ref) != i) {
			rc = -6; /* not findable by reference */
			goto out;
		}
		uint64_t at = base[f->k * 2 + side] + o->lvl;
		cnt[at]++;
		sh[at] += o->shares;
		live++;
	}
	if (live != total) {
		rc = -7; /* an order the levels do not count, or a count with no order */
		goto out;
	}
	for (uint32_t k = 0; k < ns; k++)
		for (int side = 0; side < 2; side++) {
			const struct hc_side *sd = &b->stocks[b->locs[k]]->side[side];
			for (uint32_t i = 0; i < sd->n; i++) {
				uint32_t li = sd->a->idx[i];
				uint64_t at = base[k * 2 + side] + li;
				if (cnt[at] != sd->lv[li].orders || sh[at] != sd->lv[li].shares) {
					rc = -8;
					goto out;
				}
			}
		}
	uint64_t n_free = 0;
	for (uint32_t i = b->free_head; i; i = b->pool[i].lvl)
		if (i >= b->pool_used || b->pool[i].shares || ++n_free > b->pool_used) {
			rc = -7; /* the free list out of the pool, through a live order, or looping */
			goto out;
		}
	if (n_free + live != (uint64_t)b->pool_used - 1)
		rc = -7; /* pool slots lost or doubly used */
out:
	free(sk);
	free(base);
	free(cnt);
	free(sh);
	return rc;
}

int hc_books_check(struct hc_books *b)
{
	uint64_t total = 0;
	int crossed = 0;
	for (uint32_t li = 0; li < b->n_locs; li++) {
		uint16_t loc = b->locs[li];
		struct hc_stock *s = b->stocks[loc];
		if (s->seq & 1)
			return -1;
		uint64_t stock_orders = 0;
		for (int side = 0; side < 2; side++) {
			struct hc_side *sd = &s->side[side];
			struct hc_level_arr *a = sd->a;
			if (sd->n > a->cap || sd->lv != a->lv || sd->hw > a->cap + 1)
				return -2;
			uint32_t n_free = 0;
			for (uint32_t li = sd->free_lv; li; li = sd->lv[li].next_free)
				if (li >= sd->hw || ++n_free > a->cap)
					return -2; /* free list out of range or looping */
			if (sd->n + n_free != sd->hw - 1)
				return -2; /* level slots lost or doubly used */
			for (int k = 1; k <= HC_KEY_PAD; k++)
				if (a->keys[-k] != INT32_MIN)
					return -2;
			for (uint32_t i = 0; i < sd->n; i++) {
				uint32_t li = a->idx[i];
				if (!li || li >= sd->hw)
					return -2;
				struct hc_level *l = &sd->lv[li];
				if (i && a->keys[i - 1] >= a->keys[i])
					return -3; /* not strictly sorted */
				if (bias_key(l->key) != a->keys[i])
					return -3; /* index and level disagree */
				if (!l->orders || !l->shares)
					return -4; /* empty level kept */
				stock_orders += l->orders;
			}
		}
		if (stock_orders != s->orders_live)
			return -9;
		total += stock_orders;
		struct hc_side *bs = &s->side[0], *as = &s->side[1];
		if (bs->n && as->n && key_price(0, level_top(bs)->key) >= key_price(1, level_top(as)->key))
			crossed = 1;
	}
	if (total != b->st.orders_live)
		return -10;
	int rc = pool_check(b, total);
	if (rc < 0)
		return rc;
	uint64_t in_table = 0, in_win = 0, above = 0;
	for (uint64_t i = 0; i <= b->mask; i++)
		if (b->table[i]) {
			uint64_t r = b->pool[b->table[i]].ref;
			in_table++;
			if (r - b->win_base <= b->win_mask)
				return -12; /* in the window's range but in the table */
			if (r > b->win_base) {
				above++;
				if (r < b->above_lo || r > b->above_hi)
					return -14;
			}
		}
	if (above != b->above_n)
		return -14;
	for (uint64_t i = 0; i <= b->win_mask; i++)
		in_win += b->win[i] != 0;
	if (in_table + in_win != total)
		return -11;
	if (in_table != b->table_n || in_win != b->win_n)
		return -13;
	return crossed ? -1000 : 0;
}

/* ---- snapshot support: walk (the exchange's spin) and clear (a client about to load) ---- */
/* The walk's index: every live order's pool index sorted by (locate, side, level best first,
 * stamp), and where each locate's run starts. Built by the first walk after the books changed
 * shape (an order added or removed: the stamp or the live count moved), so a spin that walks
 * every stock sorts the pool once. Shares are read from the pool at the walk. */
struct walk_ent { uint64_t k; uint64_t stamp; uint32_t idx; };
static int walk_ent_cmp(const void *x, const void *y)
{
	const struct walk_ent *a = x, *b = y;
	if (a->k != b->k)
		return a->k < b->k ? -1 : 1;
	return (a->stamp > b->stamp) - (a->stamp < b->stamp);
}

static void walk_drop(struct hc_books *b)
{
	free(b->walk_ord);
	free(b->walk_start);
	b->walk_ord = NULL;
	b->walk_start = NULL;
}

static int walk_build(struct hc_books *b)
{
	if (b->walk_ord && b->walk_stamp == b->stamp && b->walk_live == b->st.orders_live)
		return 0;
	walk_drop(b);
	uint64_t live = b->st.orders_live;
	struct walk_ent *e = malloc((live + 1) * sizeof(*e));
	uint32_t *ord = malloc((live + 1) * sizeof(*ord));
	uint32_t *start = calloc(65537, sizeof(*start));
	if (!e || !ord || !start) {
		free(e);
		free(ord);
		free(start);
		return -ENOMEM;
	}
	uint64_t n = 0;
	for (uint32_t i = 1; i < b->pool_used && n < live; i++) {
		const struct hc_order *o = &b->pool[i];
		if (!o->shares)
			continue;
		const struct hc_stock *s = order_stock(o);
		int side = order_side(o);
		uint32_t key = s->side[side].lv[o->lvl].key;
		e[n++] = (struct walk_ent){ (uint64_t)s->info.locate << 33 | (uint64_t)side << 32 | (uint32_t)~key,
					   o->stamp, i };
	}
	qsort(e, n, sizeof(*e), walk_ent_cmp);
	for (uint64_t j = 0; j < n; j++) {
		ord[j] = e[j].idx;
		start[(e[j].k >> 33) + 1]++;
	}
	for (uint32_t l = 0; l < 65536; l++)
		start[l + 1] += start[l];
	free(e);
	b->walk_ord = ord;
	b->walk_start = start;
	b->walk_stamp = b->stamp;
	b->walk_live = b->st.orders_live;
	return 0;
}

int hc_books_walk(struct hc_books *b, uint16_t locate, hc_books_walk_fn fn, void *ctx)
{
	struct hc_stock *s = stock_peek(b, locate);
	if (!s)
		return -ENOENT;
	int rc = walk_build(b);
	if (rc < 0)
		return rc;
	int n = 0;
	for (uint32_t j = b->walk_start[locate]; j < b->walk_start[locate + 1]; j++, n++) {
		const struct hc_order *o = &b->pool[b->walk_ord[j]];
		int side = order_side(o);
		fn(ctx, side, key_price(side, s->side[side].lv[o->lvl].key), o->ref, o->shares);
	}
	return n;
}

/* Every stock is odd (readers retry) while the pool is emptied in one pass. */
void hc_books_clear(struct hc_books *b)
{
	for (uint32_t k = 0; k < b->n_locs; k++)
		seq_begin(b->stocks[b->locs[k]]);
	for (uint32_t i = 1; i < b->pool_used; i++) {
		struct hc_order *o = &b->pool[i];
		if (o->shares)
			order_remove(b, order_stock(o), i, ref_slot(b, o->ref));
	}
	walk_drop(b);
	for (uint32_t k = 0; k < b->n_locs; k++) {
		struct hc_stock *s = b->stocks[b->locs[k]];
		uint16_t locate = s->info.locate;
		memset(&s->info, 0, sizeof(s->info));
		s->info.locate = locate;
		s->messages = 0;
		s->last_itch_ns = 0;
		s->trades_total = 0;
		/* the writer's own odd seq, as seq_begin returned it */
		seq_end(s, atomic_load_explicit(&s->seq, memory_order_relaxed));
	}
}

void hc_books_set_incomplete(struct hc_books *b, int incomplete)
{
	b->incomplete = incomplete != 0;
	b->unknown_ref_reason = incomplete ? HC_DROP_UNKNOWN_REF_INCOMPLETE : HC_DROP_UNKNOWN_REF;
}

