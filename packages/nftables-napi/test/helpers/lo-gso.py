#!/usr/bin/env python3
"""Prints lo's GSO sizes in this network namespace as JSON, read with RTM_GETLINK.

iproute2 6.1 (Debian 12) does not show gso_ipv4_max_size, so tests read it here,
independently of the addon code that sets it.
"""
import json
import socket
import struct

IFLA_GSO_MAX_SIZE = 41
IFLA_GSO_IPV4_MAX_SIZE = 63
RTM_GETLINK = 18
NLM_F_REQUEST = 1
NLMSG_ERROR = 2

index = socket.if_nametoindex("lo")
ifinfo = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
request = struct.pack("IHHII", 16 + len(ifinfo), RTM_GETLINK, NLM_F_REQUEST, 1, 0) + ifinfo
with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
    s.settimeout(2)
    s.send(request)
    reply = s.recv(65536)
length, kind = struct.unpack_from("IH", reply, 0)
if kind == NLMSG_ERROR:
    raise SystemExit("RTM_GETLINK lo failed: errno %d" % -struct.unpack_from("i", reply, 16)[0])
sizes = {}
offset = 16 + 16  # nlmsghdr, ifinfomsg
while offset + 4 <= length:
    attr_len, attr_type = struct.unpack_from("HH", reply, offset)
    if attr_len < 4:
        break
    if attr_type == IFLA_GSO_MAX_SIZE:
        sizes["gsoMaxSize"] = struct.unpack_from("I", reply, offset + 4)[0]
    elif attr_type == IFLA_GSO_IPV4_MAX_SIZE:
        sizes["gsoIpv4MaxSize"] = struct.unpack_from("I", reply, offset + 4)[0]
    offset += (attr_len + 3) & ~3
print(json.dumps(sizes))
