/* hc_time.h: the data plane's clock reads. User-space stamps are CLOCK_TAI (vDSO), the same
 * clock as the XDP program's bpf_ktime_get_tai_ns(), so they subtract without mapping. */
#ifndef HC_TIME_H
#define HC_TIME_H
#include <stdint.h>
#include <time.h>

static inline uint64_t hc_now_tai_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_TAI, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Durations that no clock step may bend (snapshot load and join times). */
static inline uint64_t hc_now_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
/* ---- Cheaper stamps: the invariant TSC, calibrated to CLOCK_TAI ----
 *
 * The consumer's own stamps (dequeue, decode, book) are taken with hc_stamp_tai_ns(): with
 * source HC_STAMP_TSC an ordered TSC read (lfence; rdtsc, as the kernel's rdtsc_ordered) mapped
 * to CLOCK_TAI by an affine fit, tai = tai0 + (tsc - tsc0) * mult / 2^HC_TSC_SHIFT; with
 * HC_STAMP_CLOCK clock_gettime(CLOCK_TAI), the fallback and the reference. Only an invariant TSC
 * (constant_tsc and nonstop_tsc in /proc/cpuinfo) is used. hc_tsc_cal_start() fits the rate from
 * two (tsc, tai) pairs ~20 ms apart; hc_tsc_cal_check(), run by the data thread between packets
 * every HC_TSC_CHECK_NS, compares the fit with a fresh pair (the error is recorded), re-anchors
 * the offset on it and refits the rate from the oldest of the last HC_TSC_PAIRS pairs. A pair is the TAI read
 * bracketed by two TSC reads, the narrowest of HC_TSC_PAIR_TRIES; its half-width bounds its own
 * uncertainty. The fit maths (hc_tsc_fit, hc_tsc_to_ns) are pure, for exact unit tests. */
enum { HC_STAMP_AUTO = -1, HC_STAMP_CLOCK = 0, HC_STAMP_TSC = 1 };
#define HC_TSC_SHIFT 48 /* mult < 2^64 for up to 65,536 ns per tick */
#define HC_TSC_CHECK_NS 50000000ull   /* 50 ms */
#define HC_TSC_PAIRS 64               /* the checks' pairs kept: the rate is fitted over up to 3.2 s */
#define HC_TSC_PAIR_TRIES 16

struct hc_tsc_cal {
	uint64_t tsc0, tai0;   /* anchor */
	uint64_t mult;         /* ns per tick << HC_TSC_SHIFT */
	uint64_t ring_tsc[HC_TSC_PAIRS], ring_tai[HC_TSC_PAIRS]; /* the last pairs, oldest = rate's base */
	uint64_t npairs;
	uint64_t next_check_tsc, check_ticks;
	/* reported (written by the data thread, read after it stops or racily for display) */
	uint64_t checks;
	int64_t last_err_ns;      /* fit - CLOCK_TAI at the last check */
	uint64_t max_abs_err_ns;  /* worst |fit - CLOCK_TAI| over the checks */
	uint64_t pair_halfwidth_ns; /* widest half-width of the pairs used (uncertainty of each) */
	uint64_t start_err_ns;    /* |fit - CLOCK_TAI| of a pair right after the start fit */
};

static inline uint64_t hc_rdtsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
	uint32_t lo, hi;
	__asm__ __volatile__("lfence\n\trdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return (uint64_t)hi << 32 | lo;
#else
	return 0;
#endif
}

/* Pure: the fit through pairs a and b (b later), anchored at b. -1 when b is not after a. */
static inline int hc_tsc_fit(struct hc_tsc_cal *k, uint64_t tsc_a, uint64_t tai_a, uint64_t tsc_b,
			     uint64_t tai_b)
{
	if (tsc_b <= tsc_a || tai_b <= tai_a)
		return -1;
	unsigned __int128 num = (unsigned __int128)(tai_b - tai_a) << HC_TSC_SHIFT;
	uint64_t dt = tsc_b - tsc_a;
	k->mult = (uint64_t)((num + dt / 2) / dt); /* rounded to nearest */
	k->tsc0 = tsc_b;
	k->tai0 = tai_b;
	return 0;
}

/* Pure: a TSC reading on the fit (before the anchor too). */
static inline uint64_t hc_tsc_to_ns(const struct hc_tsc_cal *k, uint64_t tsc)
{
	const uint64_t half = 1ull << (HC_TSC_SHIFT - 1);
	if (tsc >= k->tsc0)
		return k->tai0 + (uint64_t)(((unsigned __int128)(tsc - k->tsc0) * k->mult + half) >> HC_TSC_SHIFT);
	return k->tai0 - (uint64_t)(((unsigned __int128)(k->tsc0 - tsc) * k->mult + half) >> HC_TSC_SHIFT);
}

struct hc_clock {
	int source; /* HC_STAMP_* */
	struct hc_tsc_cal cal;
};

static inline uint64_t hc_stamp_tai_ns(const struct hc_clock *k)
{
	if (__builtin_expect(k->source == HC_STAMP_TSC, 1))
		return hc_tsc_to_ns(&k->cal, hc_rdtsc());
	return hc_now_tai_ns();
}

/* The TSC is invariant (constant_tsc and nonstop_tsc): 1, else 0 (tsc.c). */
int hc_tsc_invariant(void);
/* Calibrate k for source (HC_STAMP_TSC needs an invariant TSC: -ENOTSUP otherwise;
 * HC_STAMP_AUTO takes the TSC when it is invariant, else clock_gettime). Sleeps
 * ~20 ms for the TSC (not on the data thread's hot path: before it starts). 0 or -errno. */
int hc_clock_init(struct hc_clock *k, int source);
/* The data thread, between packets: re-check the fit when it is due (one TSC read otherwise).
 * idle = no packet was waiting; when packets never stop, the check runs anyway once it is
 * HC_TSC_OVERDUE periods late. */
#define HC_TSC_OVERDUE 10
void hc_clock_check_slow(struct hc_clock *k, uint64_t tsc);
static inline void hc_clock_check(struct hc_clock *k, int idle)
{
	if (k->source == HC_STAMP_TSC) {
		uint64_t t = hc_rdtsc();
		uint64_t due = k->cal.next_check_tsc + (idle ? 0 : HC_TSC_OVERDUE * k->cal.check_ticks);
		if (__builtin_expect(t >= due, 0))
			hc_clock_check_slow(k, t);
	}
}

/* One pause in a spin-wait loop (the waits of the sender's pacing and the floor's spin). */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif
#endif
