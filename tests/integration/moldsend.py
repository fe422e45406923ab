"""A deliberately simple, independent MoldUDP64 sender for tests (run inside the exchange
namespace with `ip netns exec`): N packets of K messages, consecutive sequence numbers,
bounded in count and in time (10 s, times the suite's HFTCAP_TEST_TIME_SCALE), multicast interface set explicitly."""
import os
import socket
import struct
import sys
import time

group, port, ifaddr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
npkts, k = int(sys.argv[4]), int(sys.argv[5])
first = int(sys.argv[6]) if len(sys.argv) > 6 else 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
msg = b"S" + struct.pack(">HH", 0, 0) + (0).to_bytes(6, "big") + b"O"  # ITCH System Event
seq = first
deadline = time.monotonic() + 10 * float(os.environ.get("HFTCAP_TEST_TIME_SCALE", "1"))
for i in range(npkts):
    if time.monotonic() > deadline:
        sys.exit("moldsend: time bound reached")
    pkt = b"TESTSESS01" + struct.pack(">QH", seq, k) + (struct.pack(">H", len(msg)) + msg) * k
    s.sendto(pkt, (group, port))
    seq += k
    time.sleep(0.0005)
