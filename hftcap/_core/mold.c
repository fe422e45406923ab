/* mold.c: MoldUDP64 sequencing. Policy without recovery (recovery is a later stage):
 * in-order and overlapping packets deliver their new blocks; a packet past the expected
 * sequence counts the missing messages as a gap and is delivered; an old packet is a
 * duplicate. A new session string resets the expected sequence to the packet's. */
#include "mold.h"

void hc_mold_init(struct hc_mold *m)
{
	memset(m, 0, sizeof(*m));
	m->next = 1;
}

int hc_mold_begin(struct hc_mold *m, const uint8_t *pkt, size_t len, struct hc_mold_iter *it)
{
	m->st.packets++;
	it->left = 0;
	if (len < HC_MOLD_HDR) {
		m->st.drop_short++;
		return 0;
	}
	uint64_t seq = hc_be64(pkt + 10);
	uint32_t count = hc_be16(pkt + 18);
	if (!m->have_session || memcmp(m->session, pkt, 10) != 0) {
		memcpy(m->session, pkt, 10);
		m->have_session = 1;
		m->next = seq;
		m->st.sessions++;
	}
	if (count == HC_MOLD_HEARTBEAT || count == HC_MOLD_END_OF_SESSION) {
		if (count == HC_MOLD_HEARTBEAT)
			m->st.heartbeats++;
		else
			m->st.end_of_session++;
		if (len != HC_MOLD_HDR)
			m->st.drop_trailing++;
		if (seq > m->next) { /* tail loss, seen through the heartbeat */
			m->st.gaps += seq - m->next;
			m->st.gap_events++;
			m->next = seq;
		}
		return 0;
	}
	uint64_t end = seq + count;
	if (end <= m->next) {
		m->st.duplicates += count;
		return 0;
	}
	it->p = pkt + HC_MOLD_HDR;
	it->end = pkt + len;
	it->left = count;
	it->skip = 0;
	if (seq < m->next) {
		it->skip = (uint32_t)(m->next - seq);
		m->st.duplicates += it->skip;
	} else if (seq > m->next) {
		m->st.gaps += seq - m->next;
		m->st.gap_events++;
	}
	it->seq = seq + it->skip;
	it->end_seq = end;
	return (int)(count - it->skip);
}
