/* hist.c: the non-inline parts of the latency histograms (see hist.h for the geometry). */
#include "hist.h"

#include <errno.h>
#include <string.h>

void hc_hist_init(struct hc_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

void hc_hist_reset(struct hc_hist *h)
{
	hc_hist_init(h);
}

void hc_hist_merge(struct hc_hist *dst, const struct hc_hist *src)
{
	for (unsigned i = 0; i < HC_HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t hc_hist_bucket_low(unsigned i)
{
	if (i >= HC_HIST_BUCKETS)
		return UINT64_MAX;
	if (i == HC_HIST_OVERFLOW)
		return HC_HIST_MAX_NS + 1;
	if (i < 2 * HC_HIST_SUB_COUNT)
		return i; /* width-1 buckets */
	unsigned shift = (i >> HC_HIST_SUB_BITS) - 1;
	uint64_t mantissa = (i & (HC_HIST_SUB_COUNT - 1)) + HC_HIST_SUB_COUNT;
	return mantissa << shift;
}

uint64_t hc_hist_bucket_high(unsigned i)
{
	if (i >= HC_HIST_OVERFLOW)
		return UINT64_MAX;
	if (i == HC_HIST_LAST_REGULAR)
		return HC_HIST_MAX_NS + 1;
	return hc_hist_bucket_low(i + 1);
}

long hc_hist_export(const struct hc_hist *hists, unsigned n, uint64_t *out, size_t out_words)
{
	if (out_words < (size_t)n * HC_HIST_RECORD_WORDS)
		return -ENOSPC;
	memcpy(out, hists, (size_t)n * sizeof(*hists));
	return (long)n * HC_HIST_RECORD_WORDS;
}

long hc_hist_export_ptrs(const struct hc_hist *const *hists, unsigned n, uint64_t *out,
			 size_t out_words)
{
	if (out_words < (size_t)n * HC_HIST_RECORD_WORDS)
		return -ENOSPC;
	for (unsigned i = 0; i < n; i++)
		memcpy(out + (size_t)i * HC_HIST_RECORD_WORDS, hists[i], sizeof(*hists[i]));
	return (long)n * HC_HIST_RECORD_WORDS;
}
