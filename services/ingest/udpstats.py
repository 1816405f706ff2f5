"""Kernel receive-drop counters of our UDP sockets, read from /proc/net/udp{,6}.

A datagram dropped because the socket buffer was full never reaches user space; the
kernel counts it per socket. Reading that counter is how the collector (and the
benchmark) know its loss, instead of guessing from sequence numbers alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def socket_inode(sock: socket.socket) -> int:
    """The inode that identifies this socket in /proc/net/udp."""
    return os.fstat(sock.fileno()).st_ino


def kernel_drops(inodes: set[int]) -> dict[int, int]:
    """Drop counter per socket inode (missing on non-Linux systems: empty dict)."""
    found: dict[int, int] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        path = Path(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) < 13:
                continue
            try:
                inode = int(cols[9])
            except ValueError:
                continue
            if inode in inodes:
                found[inode] = int(cols[-1])
    return found
