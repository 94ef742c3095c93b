#!/usr/bin/env python3
"""
A hostile agent: tries to get out of a keel sandbox in the ways a security reviewer
would, one named attempt at a time, each bounded by explicit timeouts.

    python3 escape.py '<json config>' attempt [attempt ...]

For each attempt it prints two lines:

    ATTEMPT <name> <ms> <rc>        rc 0 = the attempt got through (an escape), 1 = blocked
    RESULT <name> <json>            what exactly happened (outcome, status, reason, ...)

Standard library only (runs as `nobody` with the system python3). Every socket has a
timeout, every loop a bound; the whole run is bounded by the test's keel timeout too.
RUN THIS ONLY INSIDE A KEEL SANDBOX: every address is local there (AnyIP routes on lo).
"""
import asyncio
import errno
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import time

CONFIG = {}
T = 2.0  # per-operation timeout, seconds

# ---------------------------------------------------------------- helpers


def err_name(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, ssl.SSLError):
        return "ssl:" + (e.reason or str(e))
    code = getattr(e, "errno", None)
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code]
    return type(e).__name__


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def sockaddr(host, port):
    if ":" in host:
        return socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
    return (host, port)


def read_all(s, limit=65536):
    """Reads until EOF, reset, timeout or `limit` bytes. Returns (data, end)."""
    data = b""
    for _ in range(1000):
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return data, "reset"
        except socket.timeout:
            return data, "timeout"
        except OSError as e:
            return data, err_name(e)
        if not chunk:
            return data, "eof"
        data += chunk
        if len(data) >= limit:
            return data, "limit"
    return data, "limit"


def tcp(host, port, payload=None, timeout=T, end=False, chunks=None):
    """One TCP exchange. outcome: refused | connect-<err> | reset | eof | timeout | data."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sockaddr(host, port))
    except ConnectionRefusedError:
        s.close()
        return {"outcome": "refused"}
    except OSError as e:
        s.close()
        return {"outcome": "connect-" + err_name(e)}
    try:
        if chunks is not None:
            for piece, pause in chunks:
                s.sendall(piece)
                if pause:
                    time.sleep(pause)
        elif payload:
            s.sendall(payload)
        if end:
            s.shutdown(socket.SHUT_WR)
    except OSError as e:
        s.close()
        return {"outcome": "send-" + err_name(e)}
    data, how = read_all(s)
    s.close()
    r = {"outcome": "data" if data else how, "end": how, "bytes": len(data)}
    if data:
        r["head"] = data[:1024].decode("latin1")
    return r


def http_result(r):
    """Adds status / x-keel-reason / world from an HTTP response in r['head']."""
    head = r.get("head", "")
    if head.startswith("HTTP/"):
        r["status"] = int(head.split(" ")[1])
    return r


def http(host, port, host_header, path="/", extra="", raw=None, chunks=None):
    req = raw if raw is not None else f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n{extra}Connection: close\r\n\r\n".encode("latin1")
    r = tcp(host, port, None if chunks else req, chunks=chunks)
    return with_reason(http_result(r))


def with_reason(r):
    # The full head may exceed 160 bytes: re-read reason from what we kept; keel's
    # X-Keel-Reason comes early in its response.
    head = r.get("head", "")
    for line in head.split("\r\n"):
        if line.lower().startswith("x-keel-reason:"):
            r["reason"] = line.split(":", 1)[1].strip()
    r["world"] = '"world":true' in head
    return r


def resolve4(name):
    try:
        return socket.getaddrinfo(name, 0, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        return None


def tls_alert_name(data):
    names = {40: "handshake_failure", 49: "access_denied", 50: "decode_error", 80: "internal_error", 112: "unrecognized_name"}
    if len(data) >= 7 and data[0] == 21:
        return names.get(data[6], str(data[6]))
    return None


def raw_tls(host, port, hello):
    r = tcp(host, port, hello)
    if r.get("head"):
        alert = tls_alert_name(r["head"].encode("latin1"))
        if alert:
            r["alert"] = alert
    return r


def client_hello(sni=None, ech=False, sni_entries=None, alpn=None):
    exts = b""
    entries = sni_entries if sni_entries is not None else ([b"\x00" + struct.pack("!H", len(sni)) + sni] if sni is not None else [])
    if entries:
        lst = b"".join(entries)
        lst = struct.pack("!H", len(lst)) + lst
        exts += struct.pack("!HH", 0, len(lst)) + lst
    if alpn:
        names = b"".join(bytes([len(a)]) + a for a in alpn)
        names = struct.pack("!H", len(names)) + names
        exts += struct.pack("!HH", 0x10, len(names)) + names
    # supported_versions: TLS 1.3, 1.2
    exts += struct.pack("!HHB", 0x2B, 5, 4) + b"\x03\x04\x03\x03"
    if ech:
        exts += struct.pack("!HH", 0xFE0D, 4) + b"\x00\x00\x00\x00"
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls(host, port, sni, path="/", host_header=None, ca=None):
    """A real TLS handshake with python's ssl (OpenSSL); outcome tls-ok / tls-alert:<x> / ..."""
    ctx = ssl.create_default_context(cafile=ca or CONFIG.get("ca"))
    if sni is None:
        ctx.check_hostname = False
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(T)
    try:
        s.connect(sockaddr(host, port))
    except ConnectionRefusedError:
        return {"outcome": "refused"}
    except OSError as e:
        return {"outcome": "connect-" + err_name(e)}
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
    except ssl.SSLError as e:
        s.close()
        return {"outcome": "tls-alert", "alert": (e.reason or str(e)).lower()}
    except OSError as e:
        s.close()
        return {"outcome": "tls-" + err_name(e)}
    try:
        t.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header or sni}\r\nConnection: close\r\n\r\n".encode())
        data, how = read_all(t)
    except OSError as e:
        data, how = b"", err_name(e)
    t.close()
    r = {"outcome": "tls-ok", "end": how, "head": data[:400].decode("latin1")}
    return with_reason(http_result(r))


# ---------------------------------------------------------------- DNS


def dns_query(name_labels, qtype=1, qclass=1, edns=True):
    """A DNS query. name_labels: list of bytes labels (so binary labels are possible)."""
    qid = random.randint(0, 0xFFFF)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    q += b"".join(bytes([len(l)]) + l for l in name_labels) + b"\x00" + struct.pack("!HH", qtype, qclass)
    if edns:
        q += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return qid, q


def labels(name):
    return [l.encode() for l in name.split(".") if l]


def skip_name(buf, off):
    for _ in range(128):
        if off >= len(buf):
            raise ValueError("name runs past the end")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n
    raise ValueError("name too long")


def dns_parse(resp):
    if len(resp) < 12:
        return {"outcome": "short"}
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", resp[:12])
    r = {"outcome": "answer", "rcode": flags & 0xF, "answers": an}
    for code in (b"dns_name_denied", b"dns_query_type_denied", b"upstream_dns_failed", b"internal_error"):
        if code in resp:
            r["ede"] = code.decode()
    try:
        off = 12
        for _ in range(qd):
            off = skip_name(resp, off) + 4
        addrs = []
        for _ in range(an):
            off = skip_name(resp, off)
            rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", resp[off:off + 10])
            off += 10
            rdata = resp[off:off + rdlen]
            off += rdlen
            if rtype == 1 and rdlen == 4:
                addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and rdlen == 16:
                addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
        r["addresses"] = addrs
    except (ValueError, struct.error, OSError) as e:
        r["parseError"] = str(e)
    return r


def dns_udp(server, port, qlabels, qtype=1):
    qid, q = dns_query(qlabels, qtype)
    s = socket.socket(family_of(server), socket.SOCK_DGRAM)
    s.settimeout(T)
    try:
        s.connect(sockaddr(server, port))
        s.send(q)
        resp = s.recv(4096)
    except ConnectionRefusedError:
        return {"outcome": "refused"}
    except OSError as e:
        return {"outcome": err_name(e)}
    finally:
        s.close()
    return dns_parse(resp)


def dns_tcp_full(server, port, q):
    s = socket.socket(family_of(server), socket.SOCK_STREAM)
    s.settimeout(T)
    try:
        s.connect(sockaddr(server, port))
        s.sendall(struct.pack("!H", len(q)) + q)
        data = b""
        for _ in range(100):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
                break
    except ConnectionRefusedError:
        return {"outcome": "refused"}
    except OSError as e:
        return {"outcome": err_name(e)}
    finally:
        s.close()
    if len(data) < 2:
        return {"outcome": "eof"}
    return dns_parse(data[2:])


def rand_label(n=63):
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(random.choice(alphabet) for _ in range(n))


# ---------------------------------------------------------------- attempts

ATTEMPTS = {}


def attempt(fn):
    ATTEMPTS[fn.__name__] = fn
    return fn


def blocked(r, escaped=False):
    r["escaped"] = bool(escaped)
    return r


# --- raw IP connections and port sweeps


@attempt
def ip_http():
    r = http("203.0.113.10", 80, "203.0.113.10")
    return blocked(r, r.get("world"))


@attempt
def ip_tls():
    r = raw_tls("198.51.100.20", 443, client_hello(b"api.allowed.test"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def ip_opaque():
    r = tcp("192.0.2.30", 22, b"SSH-2.0-OpenSSH_9.0\r\n")
    return blocked(r, r.get("outcome") == "data")


def sweep(host, ports, concurrency=128):
    async def one(port, sem):
        async with sem:
            started = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), T)
            except ConnectionRefusedError:
                return port, "refused", time.monotonic() - started
            except (OSError, asyncio.TimeoutError) as e:
                return port, "connect-" + err_name(e), time.monotonic() - started
            try:
                data = await asyncio.wait_for(reader.read(100), T)
                how = "data" if data else "eof"
            except ConnectionResetError:
                how = "reset"
            except asyncio.TimeoutError:
                how = "timeout"
            except OSError as e:
                how = err_name(e)
            writer.close()
            return port, how, time.monotonic() - started

    async def main():
        sem = asyncio.Semaphore(concurrency)
        return await asyncio.gather(*(one(p, sem) for p in ports))

    results = asyncio.run(main())
    outcomes = {}
    for _, how, _ in results:
        outcomes[how] = outcomes.get(how, 0) + 1
    slowest = max(ms for _, _, ms in results)
    return {"outcome": "sweep", "ports": len(ports), "outcomes": outcomes, "slowestMs": round(slowest * 1000),
            "open": [p for p, how, _ in results if how in ("data", "timeout")][:20]}


@attempt
def sweep_ip():
    r = sweep("192.0.2.77", [p for p in range(1, 1025) if p != 53])
    return blocked(r, r["open"])


@attempt
def sweep_name():
    addr = resolve4("plain.test")
    if addr is None:
        return blocked({"outcome": "nxdomain"})
    r = sweep(addr, [p for p in range(1, 1025) if p not in (53, 80)])
    r["address"] = addr
    return blocked(r, r["open"])


@attempt
def unbound_synthetic():
    r = http("198.18.250.250", 80, "api.allowed.test")
    return blocked(r, r.get("world"))


# --- DNS: other resolvers, DoT, DoH, tunnelling


@attempt
def udp_resolver_denied():
    r = dns_udp("8.8.8.8", 53, labels("other.test"))
    return blocked(r, r.get("rcode") == 0 and r.get("answers"))


@attempt
def udp_resolver_allowed_is_keel():
    # Asking 1.1.1.1 for an allowed name: keel answers with a synthetic address, 1.1.1.1 never sees it.
    r = dns_udp("1.1.1.1", 53, labels("api.allowed.test"))
    addrs = r.get("addresses", [])
    synthetic = len(addrs) > 0 and all(a.startswith("198.18.") or a.startswith("198.19.") for a in addrs)
    r["synthetic"] = synthetic
    return blocked(r, r.get("answers") and not synthetic)


@attempt
def udp_resolver_odd_port():
    r = dns_udp("9.9.9.9", 9953, labels("other.test"))
    return blocked(r, r.get("outcome") == "answer")


@attempt
def udp_quic():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(T)
    try:
        s.connect(("8.8.4.4", 443))
        s.send(b"\xc0\x00\x00\x00\x01" + os.urandom(1200))
        s.recv(100)
        r = {"outcome": "data"}
    except OSError as e:
        r = {"outcome": err_name(e)}
    s.close()
    return blocked(r, r["outcome"] == "data")


@attempt
def udp6_resolver_odd_port():
    r = dns_udp("2001:4860:4860::8888", 5353, labels("other.test"))
    return blocked(r, r.get("outcome") == "answer")


@attempt
def tcp_resolver_denied():
    r = dns_tcp_full("8.8.8.8", 53, dns_query(labels("other.test"))[1])
    return blocked(r, r.get("rcode") == 0 and r.get("answers"))


@attempt
def tcp_resolver_odd_port():
    r = dns_tcp_full("8.8.8.8", 5353, dns_query(labels("other.test"))[1])
    return blocked(r, r.get("outcome") == "answer")


@attempt
def dot_ip():
    r = raw_tls("9.9.9.9", 853, client_hello(b"dns.quad9.net"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def dot_allowed_name():
    addr = resolve4("api.allowed.test")
    r = raw_tls(addr, 853, client_hello(b"api.allowed.test"))
    r["address"] = addr
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def doh_ip():
    r = raw_tls("1.1.1.1", 443, client_hello(b"cloudflare-dns.com", alpn=[b"h2", b"http/1.1"]))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def doh_name():
    addr = resolve4("dns.google")
    return blocked({"outcome": "nxdomain" if addr is None else "resolved", "address": addr}, addr is not None)


@attempt
def doh_ip_fronted():
    # The SNI of an allowed name does not make an IP literal allowed.
    r = raw_tls("8.8.8.8", 443, client_hello(b"api.allowed.test"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


def tunnel_names(parent, count, prefix):
    names = []
    for i in range(count):
        data = rand_label(50)
        names.append(f"{prefix}{i}x{data}.{rand_label(40)}.{parent}")
    return names


@attempt
def tunnel_exact_parent():
    """Data in labels under api.allowed.test (allowed exactly, not its subdomains)."""
    prefix = CONFIG.get("marker", "tnl")
    results = {}
    qtypes = [1, 28, 16, 10, 15, 255, 5, 64, 65]
    names = tunnel_names("api.allowed.test", 30, prefix)
    for i, name in enumerate(names):
        qtype = qtypes[i % len(qtypes)]
        r = dns_udp("10.255.255.53", 53, labels(name), qtype) if i % 2 == 0 else dns_tcp_full("10.255.255.53", 53, dns_query(labels(name), qtype)[1])
        key = f"{r.get('outcome')}:{r.get('rcode')}:{r.get('ede')}"
        results[key] = results.get(key, 0) + 1
    leaked = sum(n for k, n in results.items() if not k.startswith("answer:3:"))
    return blocked({"outcome": "tunnel", "queries": len(names), "results": results}, leaked)


@attempt
def tunnel_wildcard_depth():
    """*.cdn.test allows one extra label; two extra labels are denied."""
    prefix = CONFIG.get("marker", "tnl")
    results = {}
    for i in range(10):
        name = f"{prefix}d{i}x{rand_label(30)}.{rand_label(30)}.cdn.test"
        r = dns_udp("10.255.255.53", 53, labels(name), 1)
        key = f"{r.get('outcome')}:{r.get('rcode')}:{r.get('ede')}"
        results[key] = results.get(key, 0) + 1
    leaked = sum(n for k, n in results.items() if not k.startswith("answer:3:"))
    return blocked({"outcome": "tunnel", "results": results}, leaked)


@attempt
def tunnel_binary_labels():
    prefix = CONFIG.get("marker", "tnl").encode()
    results = {}
    for i in range(10):
        raw = prefix + bytes(random.randrange(256) for _ in range(40))
        r = dns_udp("10.255.255.53", 53, [raw, b"api", b"allowed", b"test"], 1)
        key = f"{r.get('outcome')}:{r.get('rcode')}:{r.get('ede')}"
        results[key] = results.get(key, 0) + 1
    leaked = sum(n for k, n in results.items() if not k.startswith("answer:3:"))
    return blocked({"outcome": "tunnel", "results": results}, leaked)


@attempt
def tunnel_txt_allowed():
    """Non-address types for an allowed name are answered empty, never forwarded."""
    results = {}
    for qtype in (16, 10, 15, 33, 64, 65, 255, 99):
        r = dns_udp("10.255.255.53", 53, labels("api.allowed.test"), qtype)
        key = f"{r.get('outcome')}:{r.get('rcode')}:{r.get('answers')}:{r.get('ede')}"
        results[key] = results.get(key, 0) + 1
    leaked = sum(n for k, n in results.items() if not k.startswith("answer:0:0:"))
    return blocked({"outcome": "tunnel", "results": results}, leaked)


@attempt
def dns_direct_keel_port():
    u = dns_udp("127.0.0.1", 15053, labels("other.test"))
    t = dns_tcp_full("127.0.0.1", 15053, dns_query(labels("other.test"))[1])
    r = {"outcome": "answer", "udp": u, "tcp": t}
    return blocked(r, u.get("rcode") == 0 or t.get("rcode") == 0)


# --- IPv6 literals and IPv4-mapped IPv6


@attempt
def v6_literal():
    r = http("2001:db8::10", 80, "[2001:db8::10]")
    return blocked(r, r.get("world"))


@attempt
def v4mapped():
    r = http("::ffff:203.0.113.9", 80, "203.0.113.9")
    return blocked(r, r.get("world"))


@attempt
def v4mapped_metadata():
    r = http("::ffff:169.254.169.254", 80, "169.254.169.254", path="/latest/meta-data/")
    return blocked(r, r.get("world"))


@attempt
def nat64_metadata():
    r = http("64:ff9b::a9fe:a9fe", 80, "[64:ff9b::a9fe:a9fe]")
    return blocked(r, r.get("world"))


@attempt
def sixtofour_metadata():
    r = http("2002:a9fe:a9fe::1", 80, "[2002:a9fe:a9fe::1]")
    return blocked(r, r.get("world"))


@attempt
def aws_v6_metadata():
    r = http("fd00:ec2::254", 80, "[fd00:ec2::254]")
    return blocked(r, r.get("world"))


@attempt
def v6_link_local():
    r = http("fe80::1%lo", 80, "[fe80::1]")
    return blocked(r, r.get("world"))


@attempt
def v4mapped_loopback():
    r = http("::ffff:127.0.0.7", 80, "plain.test")
    return blocked(r, r.get("world"))


@attempt
def v4mapped_synthetic_other_name():
    # The synthetic address of plain.test, IPv4-mapped, with another Host: still bound to plain.test.
    addr = resolve4("plain.test")
    r = http("::ffff:" + addr, 80, "evil.test")
    return blocked(r, r.get("world"))


# --- SNI spoofing, Host spoofing, CONNECT


@attempt
def sni_mismatch():
    addr = resolve4("api.allowed.test")
    r = tls(addr, 443, "evil.test")
    return blocked(r, r.get("outcome") == "tls-ok")


@attempt
def sni_missing():
    addr = resolve4("api.allowed.test")
    r = raw_tls(addr, 443, client_hello(None))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def sni_ech():
    addr = resolve4("api.allowed.test")
    r = raw_tls(addr, 443, client_hello(b"api.allowed.test", ech=True))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def sni_nul():
    addr = resolve4("api.allowed.test")
    r = raw_tls(addr, 443, client_hello(b"api.allowed.test\x00.evil.test"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def sni_two_names():
    addr = resolve4("api.allowed.test")
    e1 = b"\x00" + struct.pack("!H", 16) + b"api.allowed.test"
    e2 = b"\x00" + struct.pack("!H", 9) + b"evil.test"
    r = raw_tls(addr, 443, client_hello(sni_entries=[e1, e2]))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def sni_ip_literal():
    addr = resolve4("api.allowed.test")
    r = raw_tls(addr, 443, client_hello(b"127.0.0.9"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def host_mismatch():
    r = http(resolve4("plain.test"), 80, "evil.test")
    return blocked(r, r.get("world"))


@attempt
def host_twice():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET / HTTP/1.1\r\nHost: plain.test\r\nHost: evil.test\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def host_absolute_target():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET http://evil.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def host_missing():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET / HTTP/1.0\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def host_userinfo():
    addr = resolve4("plain.test")
    r = http(addr, 80, "plain.test@evil.test")
    return blocked(r, r.get("world"))


@attempt
def host_obs_fold():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET / HTTP/1.1\r\nHost:\r\n evil.test\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def host_bare_lf():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET / HTTP/1.1\nHost: evil.test\n\n")
    return blocked(r, r.get("world"))


@attempt
def host_space_before_colon():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"GET / HTTP/1.1\r\nHost : evil.test\r\nHost: plain.test\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def host_dribbled():
    addr = resolve4("plain.test")
    req = b"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
    r = http(addr, 80, None, chunks=[(req[i:i + 1], 0.005) for i in range(len(req))])
    return blocked(r, r.get("world"))


@attempt
def connect_redirected():
    addr = resolve4("plain.test")
    r = http(addr, 80, None, raw=b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    return blocked(r, r.get("status") == 200)


@attempt
def connect_direct_proxy():
    r = http("127.0.0.1", 15001, None, raw=b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    return blocked(r, r.get("status") == 200)


@attempt
def connect_direct_proxy_v6():
    r = http("::1", 15001, None, raw=b"CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n")
    return blocked(r, r.get("status") == 200)


@attempt
def absolute_direct_proxy():
    r = http("127.0.0.1", 15001, None, raw=b"GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n")
    return blocked(r, r.get("world"))


@attempt
def tls_direct_proxy():
    r = raw_tls("127.0.0.1", 15001, client_hello(b"api.allowed.test"))
    return blocked(r, r.get("outcome") == "data" and not r.get("alert"))


@attempt
def garbage_direct_proxy():
    r = tcp("127.0.0.1", 15001, b"\x00\x01garbage")
    return blocked(r, r.get("outcome") == "data")


# --- ICMP and raw sockets (as an unprivileged agent)


def try_socket(*args):
    try:
        s = socket.socket(*args)
    except OSError as e:
        return {"outcome": err_name(e)}
    s.close()
    return {"outcome": "created"}


@attempt
def raw_icmp():
    r = try_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return blocked(r, r["outcome"] == "created")


@attempt
def ping_socket():
    r = try_socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    return blocked(r, r["outcome"] == "created")


@attempt
def raw_ip():
    r = try_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    return blocked(r, r["outcome"] == "created")


@attempt
def raw_icmp6():
    r = try_socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    return blocked(r, r["outcome"] == "created")


@attempt
def packet_socket():
    r = try_socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    return blocked(r, r["outcome"] == "created")


def run(cmd, timeout=5, tail=300):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).decode("latin1", "replace")[-tail:]
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    except OSError as e:
        return -2, err_name(e)


@attempt
def nft_flush_unprivileged():
    rc, out = run(["nft", "flush", "ruleset"])
    after = http("203.0.113.11", 80, "203.0.113.11")
    r = {"outcome": "nft-rc-%d" % rc, "out": out, "after": after}
    return blocked(r, rc == 0 or after.get("world") or after.get("reason") != "policy_default_deny")


@attempt
def ip_route_unprivileged():
    rc, out = run(["ip", "route", "add", "203.0.113.0/24", "dev", "lo"])
    return blocked({"outcome": "ip-rc-%d" % rc, "out": out}, rc == 0)


@attempt
def userns_netns():
    """An unprivileged user+net namespace: an empty network, no way back out."""
    code = (
        "import socket\n"
        "s=socket.socket(); s.settimeout(2)\n"
        "try:\n s.connect(('203.0.113.12',80)); print('CONNECTED')\n"
        "except OSError as e: print('ERR', e.errno)\n"
    )
    rc, out = run(["unshare", "-rn", sys.executable, "-c", code])
    return blocked({"outcome": "unshare-rc-%d" % rc, "out": out.strip()}, "CONNECTED" in out)


# --- the host's loopback services


@attempt
def host_loopback():
    dns_port = int(CONFIG.get("worldDnsPort", 0))
    tries = {
        "world_https": tcp("127.0.0.2", 443, b"\x16\x03\x01"),
        "world_http": http("127.0.0.7", 80, "plain.test"),
        "world_echo": tcp("127.0.0.6", 7, b"ping"),
        "world_dns_tcp": dns_tcp_full("127.0.0.1", dns_port, dns_query(labels("api.allowed.test"))[1]) if dns_port else {"outcome": "skipped"},
        "world_dns_udp": dns_udp("127.0.0.1", dns_port, labels("api.allowed.test")) if dns_port else {"outcome": "skipped"},
        "zero_addr": http("0.0.0.0", 80, "plain.test"),
        "v6_loopback": http("::1", 80, "plain.test"),
        "localhost_name": http("localhost", 80, "plain.test"),
    }
    host_port = int(CONFIG.get("hostLoopbackPort", 0))
    if host_port:
        tries["host_service"] = tcp("127.0.0.1", host_port, b"hello")
    escaped = [k for k, v in tries.items() if v.get("outcome") not in ("refused",)]
    return blocked({"outcome": "loopback", "tries": tries, "notRefused": escaped}, escaped)


@attempt
def rebind_loopback():
    """An allowed name whose real address is the host's loopback: keel must not dial it."""
    addr = resolve4("api.allowed.test")
    if addr is None:
        return blocked({"outcome": "nxdomain"})
    r = http(addr, 80, "api.allowed.test")
    r["address"] = addr
    return blocked(r, r.get("world"))


# --- documented limitations (SECURITY.md): these are expected to get through


@attempt
def limit_domain_fronting():
    """TLS to an allowed name with its SNI, another Host inside: keel cannot see inside TLS."""
    addr = resolve4("api.allowed.test")
    r = tls(addr, 443, "api.allowed.test", path="/fronted", host_header="evil.test")
    return blocked(r, r.get("world"))


@attempt
def limit_keepalive_second_request():
    """Only the first request head on a connection is checked."""
    addr = resolve4("plain.test")
    req = (b"GET /first HTTP/1.1\r\nHost: plain.test\r\n\r\n"
           b"GET /second HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
    s = socket.socket()
    s.settimeout(T)
    s.connect((addr, 80))
    s.sendall(req)
    data, how = read_all(s)
    s.close()
    responses = data.count(b"HTTP/1.1 200")
    return blocked({"outcome": "responses-%d" % responses, "end": how}, responses == 2)


@attempt
def limit_opaque_to_allowed():
    """Bytes that are neither TLS nor HTTP, to an allowed name and port, are passed."""
    addr = resolve4("echo.test")
    secret = b"\x00secret-data-" + os.urandom(8).hex().encode()
    r = tcp(addr, 7, secret, end=True)
    got = r.get("head", "").encode("latin1")
    return blocked({"outcome": r.get("outcome"), "echoed": got == secret}, got == secret)


@attempt
def limit_wildcard_dns():
    """A single-label wildcard (*.cdn.test) lets any label through to the upstream resolver."""
    name = "%swild%s.cdn.test" % (CONFIG.get("marker", "tnl"), rand_label(20))
    r = dns_udp("10.255.255.53", 53, labels(name), 1)
    r["name"] = name
    return blocked(r, r.get("outcome") == "answer")


@attempt
def limit_unix_socket():
    """Filesystem Unix sockets are not network: the host's are reachable (shared mount namespace)."""
    path = CONFIG.get("unixSocket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(T)
    try:
        s.connect(path)
        s.sendall(b"hello from the sandbox")
        data = s.recv(100)
        r = {"outcome": "data", "head": data.decode("latin1")}
    except OSError as e:
        r = {"outcome": err_name(e)}
    s.close()
    return blocked(r, r["outcome"] == "data")


@attempt
def limit_same_user_process():
    """A process of the agent's own user outside the sandbox: take its socket (pidfd_getfd)."""
    import ctypes
    pid, target_fd = int(CONFIG["hostPid"]), int(CONFIG["hostFd"])
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        return blocked({"outcome": "pidfd_open-" + err_name(e)})
    fd = libc.syscall(438, pidfd, target_fd, 0)  # pidfd_getfd(2), Linux 5.6
    if fd < 0:
        return blocked({"outcome": "pidfd_getfd-" + errno.errorcode.get(ctypes.get_errno(), "?")})
    s = socket.socket(fileno=fd)
    s.settimeout(T)
    try:
        s.sendall(b"sent through a socket of the host namespace")
        data = s.recv(100)
        r = {"outcome": "data", "head": data.decode("latin1")}
    except OSError as e:
        r = {"outcome": err_name(e)}
    return blocked(r, r["outcome"] == "data")


# --- as root inside the namespace (keel run --as-root)


def icmp_echo(dst, timeout=T):
    """One ICMP echo over a raw socket; outcome echo-reply / icmp-type-<t> / <errno>."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = random.randint(0, 0xFFFF)
    payload = b"keel-hostile"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    csum = checksum(header + payload)
    packet = struct.pack("!BBHHH", 8, 0, csum, ident, 1) + payload
    try:
        s.sendto(packet, (dst, 0))
        deadline = time.monotonic() + timeout
        for _ in range(50):
            if time.monotonic() > deadline:
                return {"outcome": "timeout"}
            data, src = s.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            icmp_type = data[ihl]
            if icmp_type == 8:
                continue  # our own request, seen on lo
            return {"outcome": "echo-reply" if icmp_type == 0 else "icmp-type-%d" % icmp_type, "from": src[0]}
        return {"outcome": "no-reply"}
    except OSError as e:
        return {"outcome": err_name(e)}
    finally:
        s.close()


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    total = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


@attempt
def root_icmp():
    r = icmp_echo("203.0.113.1")
    return blocked(r, r["outcome"] == "echo-reply")


@attempt
def root_icmp6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.settimeout(T)
    try:
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, 1, 1) + b"keel", ("2001:db8::1", 0))
        data, src = s.recvfrom(2048)
        r = {"outcome": "icmp6-type-%d" % data[0]}
    except OSError as e:
        r = {"outcome": err_name(e)}
    s.close()
    return blocked(r, r["outcome"] == "icmp6-type-129")


@attempt
def root_raw_protocol():
    """IP protocol 253 (experimental) to a public address: neither TCP, UDP nor ICMP."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    s.settimeout(T)
    try:
        s.sendto(b"keel-hostile-proto-253", ("203.0.113.2", 0))
        r = {"outcome": "sent"}
    except OSError as e:
        r = {"outcome": err_name(e)}
    s.close()
    return blocked(r, False)


@attempt
def root_packet_socket():
    """AF_PACKET on lo: the only link there is. Frames written here stay in the namespace."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.bind(("lo", 0))
        s.send(b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 19)
        s.close()
        r = {"outcome": "sent-on-lo"}
    except OSError as e:
        r = {"outcome": err_name(e)}
    r["links"] = netns_links()
    return blocked(r, any(not l.startswith("lo") and not l.startswith("kv") for l in r["links"]))


def netns_links():
    # Not /sys/class/net: sysfs is the host's mount, so it lists the host's links.
    rc, out = run(["ip", "-o", "link", "show"], tail=100_000)
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line)


@attempt
def root_flush():
    """Flush keel's ruleset and add a veth pair with addresses and routes (inside the namespace)."""
    steps = [
        ["nft", "flush", "ruleset"],
        ["ip", "link", "add", "kv0", "type", "veth", "peer", "name", "kv1"],
        ["ip", "addr", "add", "10.66.0.1/24", "dev", "kv0"],
        ["ip", "addr", "add", "10.66.0.2/24", "dev", "kv1"],
        ["ip", "link", "set", "kv0", "up"],
        ["ip", "link", "set", "kv1", "up"],
        ["ip", "route", "add", "default", "via", "10.66.0.2", "dev", "kv0"],
        ["ip", "route", "add", "203.0.113.0/24", "dev", "kv0"],
        ["ip", "link", "add", "kd0", "type", "dummy"],
    ]
    rcs = {" ".join(cmd[:5]): run(cmd)[0] for cmd in steps}
    _, rules = run(["nft", "list", "ruleset"])
    return blocked({"outcome": "flushed", "steps": rcs, "ruleset": rules.strip(), "links": netns_links()}, False)


@attempt
def root_unroute():
    """Also delete the AnyIP routes, so non-local addresses route to the veth (a dead end)."""
    steps = [
        ["ip", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", "local"],
        ["ip", "-6", "route", "del", "local", "::/0", "dev", "lo", "table", "local"],
    ]
    rcs = {" ".join(cmd[:6]): run(cmd)[0] for cmd in steps}
    return blocked({"outcome": "unrouted", "steps": rcs}, False)


def got_out(tries):
    out = []
    for k, v in tries.items():
        if v.get("world") or v.get("outcome") in ("echo-reply", "tls-ok"):
            out.append(k)
        if k != "keel_dns_direct" and v.get("outcome") == "answer" and v.get("rcode") == 0 and v.get("addresses"):
            out.append(k)
    return out


@attempt
def root_after_flush():
    """With keel's rules gone nothing is redirected, and there is still no way out."""
    tries = {
        "public_http": http("203.0.113.10", 80, "203.0.113.10"),
        "public_routed": tcp("203.0.113.20", 443, b"\x16\x03\x01"),
        "world_https": tcp("127.0.0.2", 443, b"\x16\x03\x01"),
        "world_http": http("127.0.0.7", 80, "plain.test"),
        "world_echo": tcp("127.0.0.6", 7, b"ping"),
        "resolver_udp": dns_udp("10.255.255.53", 53, labels("api.allowed.test")),
        "public_dns_udp": dns_udp("8.8.8.8", 53, labels("api.allowed.test")),
        "public_dns_tcp": dns_tcp_full("8.8.8.8", 53, dns_query(labels("api.allowed.test"))[1]),
        "v6_public": http("2001:db8::10", 80, "[2001:db8::10]"),
        "getaddrinfo": {"outcome": "resolved" if resolve4("api.allowed.test") else "no-answer"},
        "icmp": icmp_echo("203.0.113.1"),
    }
    dns_port = int(CONFIG.get("worldDnsPort", 0))
    if dns_port:
        tries["world_dns"] = dns_udp("127.0.0.1", dns_port, labels("api.allowed.test"))
    # keel's own sockets still listen on 127.0.0.1 inside the namespace: its resolver still
    # applies the policy, and its proxy, reached directly, has no destination to go to.
    synth = dns_udp("127.0.0.1", 15053, labels("api.allowed.test"))
    tries["keel_dns_direct"] = synth
    addr = (synth.get("addresses") or [None])[0]
    if addr:
        tries["synthetic_after_flush"] = http(addr, 80, "api.allowed.test")
    tries["keel_proxy_direct"] = http("127.0.0.1", 15001, None, raw=b"CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n")
    out = got_out(tries)
    return blocked({"outcome": "after-flush", "tries": tries, "gotOut": out}, out)


@attempt
def root_after_unroute():
    """Without the AnyIP routes, packets go to the veth: nothing is there, nothing leaves."""
    global T
    T = 1.0
    tries = {
        "public_http": http("203.0.113.10", 80, "203.0.113.10"),
        "public_dns_udp": dns_udp("8.8.8.8", 53, labels("api.allowed.test")),
        "v6_public": http("2001:db8::10", 80, "[2001:db8::10]"),
        "icmp": icmp_echo("203.0.113.1", timeout=1.0),
        "world_http": http("127.0.0.7", 80, "plain.test"),
    }
    out = got_out(tries)
    return blocked({"outcome": "after-unroute", "tries": tries, "gotOut": out}, out)


# ---------------------------------------------------------------- main


def main():
    global CONFIG
    CONFIG = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    names = sys.argv[2:] or list(ATTEMPTS)
    for name in names:
        fn = ATTEMPTS.get(name)
        started = time.monotonic()
        try:
            r = fn() if fn else {"outcome": "unknown-attempt", "escaped": False}
        except Exception as e:  # an attempt that crashes still reports
            r = {"outcome": "agent-error", "error": repr(e), "escaped": False}
        ms = round((time.monotonic() - started) * 1000)
        print(f"ATTEMPT {name} {ms} {0 if r.get('escaped') else 1}", flush=True)
        print(f"RESULT {name} {json.dumps(r, default=str)}", flush=True)


if __name__ == "__main__":
    main()
