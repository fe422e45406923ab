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
/* One pause in a spin-wait loop (the waits of the sender's pacing and the floor's spin). */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif
#endif
