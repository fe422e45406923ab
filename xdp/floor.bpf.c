/* floor.bpf.c: the floor's XDP program, the least an AF_XDP receiver needs. Parses Ethernet,
 * IPv4 and UDP (no VLAN tags, no fragments, no feed map, no counters), and for the one
 * configured (group, port) stamps CLOCK_TAI after the parse, writes the stamp in front of the
 * frame and redirects it to the socket of RX queue 0. Everything else passes. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "floor_shared.h"

/* Set by the loader before load. */
const volatile __u32 group_be = 0;
const volatile __u16 port_be = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int floor_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5 ||
	    ip->daddr != group_be)
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || udp->dest != port_be)
		return XDP_PASS;
	__u64 now = bpf_ktime_get_tai_ns();
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct hc_floor_meta)) == 0) {
		struct hc_floor_meta *m = (void *)(long)ctx->data_meta;
		if ((void *)(m + 1) <= (void *)(long)ctx->data) {
			m->xdp_tai_ns = now;
			m->magic = HC_FLOOR_MAGIC;
		}
	}
	return bpf_redirect_map(&xsks, 0, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
