"""Network attacks: every one must fail, and the loopback listeners must see no contact."""

from __future__ import annotations

import os
import socket

import pytest

from .attacks import snippet
from .conftest import blocked, checked_run

NET_ATTACKS = {
    "tcp_connect_loopback": 'attempt("tcp", lambda: socket.create_connection(("127.0.0.1", $tcp), timeout=2))',
    "tcp6_connect_loopback": 'attempt("tcp6", lambda: socket.create_connection(("::1", $tcp6), timeout=2))',
    "udp_sendto_loopback": ('attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)'
                            '.sendto(b"x", ("127.0.0.1", $udp)))'),
    "dns_lookup": 'attempt("dns", lambda: socket.getaddrinfo("example.com", 443))',
    "dns_raw_udp_to_resolver": ('attempt("dns53", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)'
                                '.sendto(b"\\x00" * 12, ("8.8.8.8", 53)))'),
    "raw_ip_socket": 'attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))',
    "packet_socket": 'attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))',
    "netlink_socket": 'attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))',
    "vsock_socket": 'attempt("vsock", lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM))',
    "raw_socket_syscall_ctypes": 'attempt("syscall socket", lambda: raw(41, 2, 1, 0))',
    "socket_family_high_bits": 'attempt("high bits", lambda: raw(41, (1 << 32) | 2, 1, 0))',
    "tcp_listen_for_inbound": ('s = attempt("sock", lambda: socket.socket())\n'
                               'attempt("bind", lambda: s and s.bind(("0.0.0.0", 0)) or s.listen())'),
    "abstract_unix_to_host_listener": ('attempt("abstract", lambda: socket.socket(socket.AF_UNIX)'
                                       '.connect("\\0sandbox-attack-$host"))'),
}


@pytest.mark.parametrize("name", sorted(NET_ATTACKS))
def test_cant_reach_the_network(sb, listeners, name):
    if name == "tcp6_connect_loopback" and "tcp6" not in listeners:
        pytest.skip("no IPv6 loopback on this machine")
    ports = {"tcp6": 9, **{k: v.address[1] for k, v in listeners.items() if k in ("tcp", "udp", "tcp6")}}
    r = checked_run(sb, snippet(NET_ATTACKS[name], host=os.getpid(), **ports))
    blocked(r, "blocked")


def test_cant_reach_host_unix_socket_in_run(sb):
    """A host daemon's pathname socket under /run: the run's mount namespace shows an empty /run."""
    path = f"/run/sandbox-attack-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.settimeout(0.5)
    try:
        r = checked_run(sb, snippet('attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("$p"))', p=path))
        blocked(r, "blocked")
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
        os.unlink(path)
