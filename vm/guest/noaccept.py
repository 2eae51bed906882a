"""A TCP listener that never accepts (backlog 0), for SECONDS at most: its accept queue fills
with the first connection and later SYNs are dropped silently. Usage: noaccept.py PORT SECONDS"""
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(0)
time.sleep(seconds)
