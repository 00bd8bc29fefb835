"""Sends a file over one TCP connection, paced to RATE bytes/s (0: as fast as it goes).
Shared by the end-to-end scripts: python3 paced-send.py IP PORT FILE RATE"""
import socket
import sys
import time

ip, port, path, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
for attempt in range(40):  # the receiver may still be starting on a loaded machine
    try:
        s = socket.create_connection((ip, port), timeout=60)
        break
    except ConnectionRefusedError:
        time.sleep(0.25)
else:
    sys.exit("the receiver never listened")
data, t0, sent, chunk = open(path, "rb").read(), time.monotonic(), 0, 1 << 16
while sent < len(data):
    s.sendall(data[sent:sent + chunk])
    sent += chunk
    if rate:
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
s.close()
