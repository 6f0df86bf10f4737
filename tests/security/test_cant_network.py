"""Network attacks: every one must fail, and the loopback listeners must see no contact."""

from __future__ import annotations

import os
import socket

import pytest

import sandbox

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


PEER_LISTENER = """
import os, socket
print(os.readlink("/proc/self/ns/net"), flush=True)
s = socket.socket(socket.AF_UNIX)
s.bind("\\0sandbox-peer-{tag}")
s.listen()
s.settimeout(6)
try:
    s.accept()
    print("accepted")
except socket.timeout:
    print("none")
"""

PEER_CALLER = """
import errno, os, socket, time
print(os.readlink("/proc/self/ns/net"))
end, seen = time.monotonic() + 2, set()
while time.monotonic() < end:
    try:
        socket.socket(socket.AF_UNIX).connect("\\0sandbox-peer-{tag}")
        seen.add("connected")
    except OSError as exc:
        seen.add(errno.errorcode[exc.errno])
    time.sleep(0.1)
print(sorted(seen))
"""


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_concurrent_runs_cannot_reach_each_others_abstract_sockets(boxes, policy):
    """Root's workers share one empty network namespace (confine/netns.py); Landlock's scoping keeps each
    run's abstract sockets its own. A run listens; another, at the same time, tries to connect to it."""
    import threading
    import time

    box, tag = boxes[policy], f"{os.getpid()}-{policy}"
    got = {}
    listener = threading.Thread(target=lambda: got.update(a=box.run(PEER_LISTENER.format(tag=tag))))
    listener.start()
    time.sleep(1.5)  # the listener's worker is bound by now (it is a warm pool's run)
    caller = box.run(PEER_CALLER.format(tag=tag))
    listener.join()
    a, b = got["a"], caller
    assert a.ok and b.ok, (a.error, b.error)
    assert a.stdout.splitlines()[1] == "none", a.stdout
    assert "connected" not in b.stdout, b.stdout
    net_a, net_b = a.stdout.splitlines()[0], b.stdout.splitlines()[0]
    assert os.readlink("/proc/self/ns/net") not in (net_a, net_b)
    if net_a == net_b:  # one zygote's workers, its shared namespace: what refuses is Landlock's scoping
        assert b.stdout.splitlines()[1] == "['EPERM']", b.stdout


def test_workers_of_a_zygote_share_one_empty_network_namespace():
    """Where the policy requires seccomp and landlock and Landlock scopes abstract sockets (confine/netns.py),
    as root; each worker a namespace of its own otherwise. Empty either way."""
    from sandbox.confine import landlock

    probe = "import os\nprint(os.readlink('/proc/self/ns/net'), open('/proc/net/dev').read().count(':'))"
    with sandbox.Sandbox(pool_size=1, cold_start=False) as box:
        seen = [box.run(probe) for _ in range(3)]
    assert all(r.ok for r in seen), [r.error for r in seen]
    nets = {r.stdout.split()[0] for r in seen}
    assert {r.stdout.split()[1] for r in seen} == {"1"}  # one device: lo
    assert os.readlink("/proc/self/ns/net") not in nets
    shared = os.geteuid() == 0 and landlock.abi_version() >= 6
    assert len(nets) == (1 if shared else 3), [r.stdout for r in seen]


#: Binds an abstract and a pathname unix socket named after ``tag``; they live as long as the session's state.
SESSION_BINDS = """import socket
held = []
for name in ("\\0sandbox-secret-{tag}", "sandbox-secret-{tag}.sock"):
    s = socket.socket(socket.AF_UNIX)
    s.bind(name)
    s.listen()
    held.append(s)
"""
#: The unix socket names a run can list, without guessing them.
LISTED = "print(sorted(line.split()[7] for line in open('/proc/net/unix').read().splitlines()[1:] " \
         "if len(line.split()) > 7))"


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_a_sessions_socket_names_are_not_listed_to_other_runs(boxes, policy):
    """``/proc/net/unix`` lists every unix socket of the reader's network namespace: a one-shot run, or a run of
    another session, read the names a session's state had bound (shared namespace, confine/netns.py), secrets in
    them included. A session has a namespace of its own now; its own runs still list them."""
    box, tag = boxes[policy], f"{os.getpid()}-{policy}"
    with box.session() as victim, box.session() as other:
        assert victim.run(SESSION_BINDS.format(tag=tag)).ok
        own = victim.run(LISTED)
        assert own.ok and f"@sandbox-secret-{tag}" in own.stdout and f"sandbox-secret-{tag}.sock" in own.stdout, own
        for seen in (box.run(LISTED), other.run(LISTED)):
            assert seen.ok, seen.error
            assert f"sandbox-secret-{tag}" not in seen.stdout, seen.stdout
