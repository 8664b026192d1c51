#!/usr/bin/env python3
"""Capture the first bytes a TLS client sends (its ClientHello) into a file.

Listens on 127.0.0.1:PORT, accepts exactly one connection, reads until the
record lengths say a whole ClientHello handshake message has arrived (it may
span several records) or 2 seconds pass, writes the bytes read to OUT and
closes the connection (the client's handshake then fails; that is expected).

Usage: scripts/capture-hello.py PORT OUT
Python 3 standard library only.
"""

import socket
import sys
import time

TIMEOUT_S = 2.0


def hello_complete(buf: bytes) -> bool:
    """True once the records in buf carry a whole handshake message."""
    pos = 0
    payload = b""
    while pos + 5 <= len(buf):
        if buf[pos] != 22:  # not a handshake record: stop reading
            return True
        rec_len = int.from_bytes(buf[pos + 3:pos + 5], "big")
        end = pos + 5 + rec_len
        if end > len(buf):
            return False
        payload += buf[pos + 5:end]
        pos = end
        if len(payload) >= 4:
            msg_len = 4 + int.from_bytes(payload[1:4], "big")
            if len(payload) >= msg_len:
                return True
    return False


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    port, out = int(sys.argv[1]), sys.argv[2]
    with socket.create_server(("127.0.0.1", port)) as srv:
        print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        conn, peer = srv.accept()
        with conn:
            deadline = time.monotonic() + TIMEOUT_S
            buf = b""
            while not hello_complete(buf):
                left = deadline - time.monotonic()
                if left <= 0:
                    print("timeout before a whole ClientHello", file=sys.stderr)
                    break
                conn.settimeout(left)
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                buf += chunk
    with open(out, "wb") as f:
        f.write(buf)
    print(f"{out}: {len(buf)} bytes from {peer[0]}:{peer[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
