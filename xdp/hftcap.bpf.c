/* hftcap.bpf.c: the XDP program. Redirects IPv4 UDP packets addressed to a configured
 * (multicast group, port) to the AF_XDP socket of the RX queue, and passes everything
 * else to the kernel untouched. In front of each redirected frame it writes a
 * struct hc_xdp_meta with the XDP time and, when built with HC_HW_TS (a device-bound
 * program), the NIC hardware RX timestamp.
 * Built twice from this file: hftcap_hw.bpf.o (-DHC_HW_TS=1) and hftcap.bpf.o. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hftcap_shared.h"

#ifndef HC_HW_TS
#define HC_HW_TS 0
#endif

/* Set by the loader before load; the verifier prunes the branch not taken. */
const volatile __u32 use_tai_clock = 1;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, HC_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * HC_MAX_FEEDS); /* each feed's A line and its B line */
	__type(key, struct hc_feed_key);
	__type(value, __u32);
} feeds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HC_XDP_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

#if HC_HW_TS
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym;
#endif

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

static __always_inline void count(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &reason);
	if (v)
		*v += 1;
}

SEC("xdp")
int hftcap_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 xdp_ns;

	/* Read the clock first: this is the moment the program saw the frame. */
	if (use_tai_clock)
		xdp_ns = bpf_ktime_get_tai_ns();
	else
		xdp_ns = bpf_ktime_get_ns();

	if ((void *)(eth + 1) > end) {
		count(HC_XDP_MALFORMED);
		return XDP_PASS;
	}
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	/* Up to two VLAN tags (802.1Q, 802.1ad). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr_ *vh = l3;
		if ((void *)(vh + 1) > end) {
			count(HC_XDP_MALFORMED);
			return XDP_PASS;
		}
		proto = vh->proto;
		l3 = vh + 1;
	}
	if (proto != bpf_htons(ETH_P_IP)) {
		count(HC_XDP_PASS_NOT_FEED);
		return XDP_PASS;
	}
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end) {
		count(HC_XDP_MALFORMED);
		return XDP_PASS;
	}
	if (ip->protocol != IPPROTO_UDP) {
		count(HC_XDP_PASS_NOT_FEED);
		return XDP_PASS;
	}
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip)) {
		count(HC_XDP_MALFORMED);
		return XDP_PASS;
	}
	if (ip->frag_off & bpf_htons(0x3fff)) { /* MF set or a non-zero offset */
		count(HC_XDP_PASS_FRAGMENT);
		return XDP_PASS;
	}
	struct udphdr *udp = l3 + ihl;
	if ((void *)(udp + 1) > end) {
		count(HC_XDP_MALFORMED);
		return XDP_PASS;
	}
	struct hc_feed_key key = { .group = ip->daddr, .port = udp->dest, .pad = 0 };
	__u32 *feed = bpf_map_lookup_elem(&feeds, &key);
	if (!feed) {
		count(HC_XDP_PASS_NOT_FEED);
		return XDP_PASS;
	}
	__u32 feed_idx = *feed;
	__u32 q = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(HC_XDP_PASS_NO_SOCKET);
		return XDP_PASS;
	}

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct hc_xdp_meta)) == 0) {
		struct hc_xdp_meta *m = (void *)(long)ctx->data_meta;
		void *d = (void *)(long)ctx->data;
		if ((void *)(m + 1) <= d) {
			m->xdp_ns = xdp_ns;
			m->flags = use_tai_clock ? HC_META_XDP_TAI : 0;
			m->magic = HC_META_MAGIC;
			m->feed = feed_idx;
			m->rx_hw_ns = 0;
			m->rx_hw_err = 0;
#if HC_HW_TS
			__u64 ts = 0;
			int err = bpf_xdp_metadata_rx_timestamp(ctx, &ts);
			if (err) {
				m->rx_hw_err = err;
				count(HC_XDP_HW_TS_ERR);
			} else if (ts) {
				m->rx_hw_ns = ts;
				m->flags |= HC_META_HW_VALID;
			}
#else
			m->rx_hw_err = -95; /* -EOPNOTSUPP: program built without the kfunc */
#endif
		}
	} else {
		count(HC_XDP_META_FAILED);
	}
	count(HC_XDP_REDIRECTED);
	return bpf_redirect_map(&xsks, q, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
