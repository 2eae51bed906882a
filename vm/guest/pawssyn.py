"""Sends one hand-made SYN whose TCP timestamp is BACK ms older than the clock client sockets
use (the client namespace runs with net.ipv4.tcp_timestamps=2: TSval = CLOCK_MONOTONIC in ms).
Usage: pawssyn.py SRC_IP SRC_PORT DST_IP DST_PORT BACK"""
import random
import socket
import struct
import sys
import time

src, sport, dst, dport, back = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
now_ms = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000
tsval = (now_ms - back) & 0xFFFFFFFF
isn = random.getrandbits(32)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# MSS 1460, SACK_PERM, TIMESTAMP, NOP, WSCALE 7: a Linux SYN (40-byte header).
opts = struct.pack("!BBH", 2, 4, 1460) + bytes([4, 2]) + struct.pack("!BBII", 8, 10, tsval, 0) + bytes([1, 3, 3, 7])
hdr = struct.pack("!HHIIBBHHH", sport, dport, isn, 0, 10 << 4, 0x02, 64240, 0, 0) + opts
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
c = csum(pseudo + hdr)
hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.bind((src, 0))
s.sendto(hdr, (dst, 0))
print(f"crafted SYN {src}:{sport} -> {dst}:{dport} isn={isn} tsval={tsval} (clock {now_ms & 0xFFFFFFFF}, {back} ms older)")
