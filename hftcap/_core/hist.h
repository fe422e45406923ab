/* hist.h: fixed-size log-linear latency histograms (HdrHistogram-style), one per hop and path.
 *
 * Geometry (HC_HIST_SUB_BITS = 7, i.e. 128 sub-buckets per power of two):
 *   - values 0 .. 255 ns each have their own bucket (exact);
 *   - from 256 ns on, every octave [2^e, 2^(e+1)) is split into 128 equal buckets of width
 *     2^(e-7), so a bucket is at most 1/128 = 0.78% of its lower bound wide: any value in a
 *     bucket represents any other value of it to within 0.78%, the midpoint to within 0.39%;
 *   - values above HC_HIST_MAX_NS (10 s) go to the overflow bucket (index HC_HIST_OVERFLOW)
 *     and still update max; they are not added to sum_ns.
 * That is 3478 regular buckets + 1 overflow = 27.8 KB of counts plus a 32-byte header.
 *
 * Record is O(1), allocation-free and branch-light (clz, shifts, two conditional moves).
 * A histogram is written by one thread only; readers in other threads (snapshots) may see a
 * header a few samples ahead of or behind the counts, so percentiles are computed from the
 * counts array alone (its sum), never from `count`.
 *
 * The struct layout is also the export record: HC_HIST_HEADER_WORDS u64 header words
 * (count, min_ns, max_ns, sum_ns) followed by HC_HIST_BUCKETS u64 counts, no padding.
 * An empty histogram has count 0, min_ns UINT64_MAX and max_ns 0: zeroed memory is not empty
 * (its min would stick at 0), so call hc_hist_init() first. hc_hist_reset() is a 27.8 KB
 * memset, meant for the warm-up discard, not for every interval (diff snapshots instead).
 */
#ifndef HC_HIST_H
#define HC_HIST_H
#include <stddef.h>
#include <stdint.h>

#define HC_HIST_SUB_BITS 7u
#define HC_HIST_SUB_COUNT (1u << HC_HIST_SUB_BITS)
#define HC_HIST_MAX_NS 10000000000ull /* 10 s: the largest value that lands in a regular bucket */
/* Index of the bucket holding HC_HIST_MAX_NS (2^33 <= 1e10 < 2^34: e = 33, mantissa 149). */
#define HC_HIST_LAST_REGULAR ((33u - HC_HIST_SUB_BITS) * HC_HIST_SUB_COUNT + 149u)
#define HC_HIST_OVERFLOW (HC_HIST_LAST_REGULAR + 1u)
#define HC_HIST_BUCKETS (HC_HIST_OVERFLOW + 1u) /* regular buckets + the overflow bucket */
#define HC_HIST_HEADER_WORDS 4u
#define HC_HIST_RECORD_WORDS (HC_HIST_HEADER_WORDS + HC_HIST_BUCKETS)

struct hc_hist {
	uint64_t count;   /* samples recorded, overflow included */
	uint64_t min_ns;  /* UINT64_MAX while empty */
	uint64_t max_ns;  /* 0 while empty; exact, overflow included */
	uint64_t sum_ns;  /* sum of the in-range samples (<= HC_HIST_MAX_NS) only */
	uint64_t counts[HC_HIST_BUCKETS];
};

_Static_assert(sizeof(struct hc_hist) == HC_HIST_RECORD_WORDS * sizeof(uint64_t),
	       "struct hc_hist must be exactly the export record");

/* Bucket index of a value: 0..HC_HIST_LAST_REGULAR, or HC_HIST_OVERFLOW above HC_HIST_MAX_NS. */
static inline unsigned hc_hist_index(uint64_t v_ns)
{
	/* OR-ing in 2^SUB_BITS makes e >= SUB_BITS (shift 0: exact buckets below 256 ns) and
	 * keeps clz defined for v = 0. */
	unsigned e = 63u - (unsigned)__builtin_clzll(v_ns | HC_HIST_SUB_COUNT);
	unsigned shift = e - HC_HIST_SUB_BITS;
	unsigned idx = (shift << HC_HIST_SUB_BITS) + (unsigned)(v_ns >> shift);
	return v_ns > HC_HIST_MAX_NS ? HC_HIST_OVERFLOW : idx;
}

static inline void hc_hist_record(struct hc_hist *h, uint64_t v_ns)
{
	h->counts[hc_hist_index(v_ns)]++;
	h->count++;
	h->sum_ns += v_ns > HC_HIST_MAX_NS ? 0 : v_ns;
	h->min_ns = v_ns < h->min_ns ? v_ns : h->min_ns;
	h->max_ns = v_ns > h->max_ns ? v_ns : h->max_ns;
}

void hc_hist_init(struct hc_hist *h);
void hc_hist_reset(struct hc_hist *h);
/* dst += src (counts, count, sum; min/max combined). */
void hc_hist_merge(struct hc_hist *dst, const struct hc_hist *src);

/* Inclusive lower bound of bucket i; for the overflow bucket HC_HIST_MAX_NS + 1.
 * i must be < HC_HIST_BUCKETS (larger i returns UINT64_MAX). */
uint64_t hc_hist_bucket_low(unsigned i);
/* Exclusive upper bound of bucket i (= low of bucket i + 1); the last regular bucket ends at
 * HC_HIST_MAX_NS + 1, the overflow bucket at UINT64_MAX (which it does not exclude). */
uint64_t hc_hist_bucket_high(unsigned i);

/* Export n contiguous histograms into out (n * HC_HIST_RECORD_WORDS u64): one memcpy each.
 * Returns the number of u64 words written, or -ENOSPC if out_words is too small. */
long hc_hist_export(const struct hc_hist *hists, unsigned n, uint64_t *out, size_t out_words);
/* Same for histograms that are not contiguous (an array of pointers). */
long hc_hist_export_ptrs(const struct hc_hist *const *hists, unsigned n, uint64_t *out,
			 size_t out_words);
#endif
