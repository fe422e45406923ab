/* bpfstats.h: the kernel's own run-time statistics of a BPF program (run_time_ns, run_cnt of
 * struct bpf_prog_info), counted only while BPF run-time statistics are enabled. The kernel
 * measures each run with sched_clock(), in nanoseconds. Returns 0 / an fd, or -errno. */
#ifndef HC_BPFSTATS_H
#define HC_BPFSTATS_H
#include <stdint.h>

/* BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): statistics stay on until the returned fd is closed
 * (the kernel counts holders; kernel.bpf_stats_enabled reads 1 meanwhile and goes back to
 * its own setting when the last holder closes, also when the process dies). */
int hc_bpf_enable_stats(void);
int hc_bpf_prog_run_stats(uint32_t prog_id, uint64_t *run_time_ns, uint64_t *run_cnt);
#endif
