/* tsc.c: the TSC stamps' calibration (hc_time.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "hc_time.h"

int hc_tsc_invariant(void)
{
#if defined(__x86_64__) || defined(__i386__)
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return 0;
	char line[4096];
	int ok = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5))
			continue;
		/* whole words: " constant_tsc " and " nonstop_tsc " */
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[n - 1] = ' ';
		ok = strstr(line, " constant_tsc ") && strstr(line, " nonstop_tsc ");
		break;
	}
	fclose(f);
	return ok;
#else
	return 0;
#endif
}

/* A (tsc, tai) pair: the TAI read between two TSC reads, the narrowest of a few tries; the
 * pair's tsc is the midpoint. *halfwidth_ns: half the bracket, in ns on the fit k (or the
 * nominal 1 ns/tick before there is one). */
static void take_pair(const struct hc_tsc_cal *k, uint64_t *tsc, uint64_t *tai, uint64_t *halfwidth_ns)
{
	uint64_t best = UINT64_MAX;
	for (int i = 0; i < HC_TSC_PAIR_TRIES; i++) {
		uint64_t a = hc_rdtsc();
		uint64_t t = hc_now_tai_ns();
		uint64_t b = hc_rdtsc();
		if (b >= a && b - a < best) {
			best = b - a;
			*tsc = a + (b - a) / 2;
			*tai = t;
		}
	}
	uint64_t ticks = best == UINT64_MAX ? 0 : (best + 1) / 2;
	*halfwidth_ns = k->mult ? (uint64_t)(((unsigned __int128)ticks * k->mult) >> HC_TSC_SHIFT) : ticks;
}

static uint64_t ns_to_ticks(const struct hc_tsc_cal *k, uint64_t ns)
{
	return (uint64_t)(((unsigned __int128)ns << HC_TSC_SHIFT) / k->mult);
}

int hc_clock_init(struct hc_clock *k, int source)
{
	memset(k, 0, sizeof(*k));
	k->source = HC_STAMP_CLOCK;
	if (source == HC_STAMP_AUTO)
		source = hc_tsc_invariant() ? HC_STAMP_TSC : HC_STAMP_CLOCK;
	if (source == HC_STAMP_CLOCK)
		return 0;
	if (source != HC_STAMP_TSC)
		return -EINVAL;
	if (!hc_tsc_invariant())
		return -ENOTSUP;
	struct hc_tsc_cal *c = &k->cal;
	uint64_t ta, na, tb, nb, hw;
	take_pair(c, &ta, &na, &hw);
	struct timespec d = { 0, 20000000 }; /* 20 ms between the two pairs */
	while (nanosleep(&d, &d) && errno == EINTR)
		;
	take_pair(c, &tb, &nb, &hw);
	if (hc_tsc_fit(c, ta, na, tb, nb))
		return -EIO;
	uint64_t ta0 = ta, na0 = na;
	take_pair(c, &ta, &na, &hw); /* widths in ns now that there is a rate */
	c->pair_halfwidth_ns = hw;
	uint64_t f = hc_tsc_to_ns(c, ta);
	c->start_err_ns = f > na ? f - na : na - f;
	c->ring_tsc[0] = ta0;
	c->ring_tai[0] = na0;
	c->ring_tsc[1] = c->tsc0;
	c->ring_tai[1] = c->tai0;
	c->npairs = 2;
	c->check_ticks = ns_to_ticks(c, HC_TSC_CHECK_NS);
	c->next_check_tsc = c->tsc0 + c->check_ticks;
	k->source = HC_STAMP_TSC;
	return 0;
}

void hc_clock_check_slow(struct hc_clock *k, uint64_t now)
{
	struct hc_tsc_cal *c = &k->cal;
	uint64_t tsc, tai, hw;
	take_pair(c, &tsc, &tai, &hw);
	int64_t err = (int64_t)(hc_tsc_to_ns(c, tsc) - tai);
	uint64_t abs_err = err < 0 ? (uint64_t)-err : (uint64_t)err;
	__atomic_store_n(&c->last_err_ns, err, __ATOMIC_RELAXED);
	if (abs_err > c->max_abs_err_ns)
		__atomic_store_n(&c->max_abs_err_ns, abs_err, __ATOMIC_RELAXED);
	if (hw > c->pair_halfwidth_ns)
		__atomic_store_n(&c->pair_halfwidth_ns, hw, __ATOMIC_RELAXED);
	__atomic_store_n(&c->checks, c->checks + 1, __ATOMIC_RELAXED);
	/* Re-anchor on this pair; refit the rate from the oldest pair kept (up to 3.2 s back). */
	uint64_t old = c->npairs >= HC_TSC_PAIRS ? c->npairs - HC_TSC_PAIRS + 1 : 0;
	struct hc_tsc_cal fit;
	if (!hc_tsc_fit(&fit, c->ring_tsc[old % HC_TSC_PAIRS], c->ring_tai[old % HC_TSC_PAIRS], tsc, tai))
		c->mult = fit.mult;
	c->ring_tsc[c->npairs % HC_TSC_PAIRS] = tsc;
	c->ring_tai[c->npairs % HC_TSC_PAIRS] = tai;
	c->npairs++;
	c->tsc0 = tsc;
	c->tai0 = tai;
	c->next_check_tsc = now + c->check_ticks;
}
