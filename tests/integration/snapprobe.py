"""Run inside a namespace: log in to a snapshot server, read the spin to its End of Snapshot,
print its sequence (or 0 when nothing answers); with "connect", 1 once it accepts. The tests' own client, independent of listen."""
import os
import socket
import sys

from hftcap.feed import soupbin


def main(host, port, mode="spin"):
    try:
        s = socket.create_connection((host, int(port)), timeout=5 * float(os.environ.get("HFTCAP_TEST_TIME_SCALE", "1")))
    except OSError:
        print(0)
        return
    if mode == "connect":  # only: is it listening?
        s.close()
        print(1)
        return
    s.sendall(soupbin.login_request("", "", "", 1))
    r = soupbin.Reader()
    with s:
        while True:
            data = s.recv(1 << 20)
            if not data:
                print(0)
                return
            r.feed(data)
            for kind, payload in r.packets():
                if kind == b"S" and payload[:1] == b"G":
                    s.sendall(soupbin.packet(b"O"))
                    print(int(payload[1:].decode().strip()))
                    return


if __name__ == "__main__":
    main(*sys.argv[1:4])
