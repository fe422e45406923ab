/* floor_shared.h: the contract between the floor's XDP program (floor.bpf.c) and its
 * consumer (hftcap/_core/floor.c). */
#ifndef HC_FLOOR_SHARED_H
#define HC_FLOOR_SHARED_H
#include <linux/types.h>

/* In front of every redirected frame: the consumer finds it at packet - sizeof. */
struct hc_floor_meta {
	__u64 xdp_tai_ns; /* bpf_ktime_get_tai_ns() after the parse */
	__u32 magic;      /* HC_FLOOR_MAGIC: the program wrote this frame's stamp */
	__u32 pad;
};
#define HC_FLOOR_MAGIC 0x464c5231u /* "FLR1" */
#endif
