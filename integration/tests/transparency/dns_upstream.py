"""A one-name DNS server over UDP on ADDRESS:53, standing in for a host's resolver: NAME A
IPV4, no other record of NAME, NXDOMAIN for every other name. Prints "ready" once it
listens."""

import socket
import struct
import sys

address, name, ipv4 = sys.argv[1], sys.argv[2].rstrip(".").lower(), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((address, 53))
print("ready", flush=True)
while True:
    query, client = sock.recvfrom(4096)
    if len(query) < 12 or query[2] & 0x80:
        continue
    labels, at = [], 12
    while at < len(query) and query[at] != 0:
        length = query[at]
        labels.append(query[at + 1 : at + 1 + length].decode(errors="replace"))
        at += 1 + length
    at += 1
    if at + 4 > len(query):
        continue
    qtype = struct.unpack("!H", query[at : at + 2])[0]
    question = query[12 : at + 4]
    asked = ".".join(labels).lower()
    known = asked == name
    answers = b""
    if known and qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton(ipv4)
    flags = 0x8180 | (0 if known else 3)
    header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if answers else 0, 0, 0)
    sock.sendto(header + question + answers, client)
