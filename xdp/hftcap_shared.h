/* hftcap_shared.h: the contract between the XDP program and the user-space data plane.
 * Both sides include this file; nothing here may depend on libc or the kernel headers
 * beyond <linux/types.h>. */
#ifndef HFTCAP_SHARED_H
#define HFTCAP_SHARED_H

#include <linux/types.h>

#define HC_MAX_FEEDS 64
#define HC_MAX_QUEUES 64
/* In a feed map value (and the consumer's feed index): the packet came on the feed's B line
 * (listen --feed-b), the low bits name the feed. */
#define HC_FEED_LINE_B (1u << 16)

/* Key of the feed map: IPv4 multicast group and UDP port, both in network order. */
struct hc_feed_key {
	__be32 group;
	__be16 port;
	__u16 pad; /* always 0 */
};

/* Written by the XDP program into the metadata area in front of every redirected
 * frame; the consumer finds it at (packet start - sizeof(struct hc_xdp_meta)).
 * Size is a multiple of 4, as bpf_xdp_adjust_meta requires. */
struct hc_xdp_meta {
	__u64 rx_hw_ns;  /* NIC PHC time from bpf_xdp_metadata_rx_timestamp; 0 = none */
	__u64 xdp_ns;    /* bpf_ktime_get_tai_ns() or bpf_ktime_get_ns(), see flags */
	__s32 rx_hw_err; /* 0, or -errno the kfunc returned (-EOPNOTSUPP, -ENODATA) */
	__u32 flags;     /* HC_META_* */
	__u32 magic;     /* HC_META_MAGIC: lets the consumer tell a stamped frame */
	__u32 feed;      /* value from the feed map (index of the --feed option) */
};

#define HC_META_MAGIC 0x48464331u /* "HFC1" */
#define HC_META_HW_VALID (1u << 0) /* rx_hw_ns holds a PHC time */
#define HC_META_XDP_TAI (1u << 1)  /* xdp_ns is CLOCK_TAI (else CLOCK_MONOTONIC) */

/* Per-CPU counters of the XDP program, index = reason. */
enum hc_xdp_stat {
	HC_XDP_REDIRECTED = 0, /* feed packet handed to the AF_XDP socket */
	HC_XDP_PASS_NOT_FEED,  /* not IPv4 UDP to a configured (group, port) */
	HC_XDP_PASS_NO_SOCKET, /* feed packet, but no socket on this RX queue */
	HC_XDP_PASS_FRAGMENT,  /* IPv4 fragment: passed, the kernel reassembles */
	HC_XDP_MALFORMED,      /* truncated or inconsistent headers: passed */
	HC_XDP_META_FAILED,    /* bpf_xdp_adjust_meta refused: redirected without stamps */
	HC_XDP_HW_TS_ERR,      /* the RX timestamp kfunc returned an error */
	HC_XDP_NSTATS,
};

#endif
