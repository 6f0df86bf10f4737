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


#: Listing the abstract names of the run's network namespace, and one way of reaching one: what it made of it.
AUTOBIND_PRELUDE = """import errno, json, os, socket, time
KINDS = dict(stream=socket.SOCK_STREAM, dgram=socket.SOCK_DGRAM, seqpacket=socket.SOCK_SEQPACKET)
def listed():
    rows = (line.split() for line in open("/proc/net/unix").read().splitlines()[1:])
    return {{row[7] for row in rows if len(row) > 7 and row[7].startswith("@")}}
def wait_for(name, gone=False):
    end = time.monotonic() + 20  # liveness only, inside the 30 s run: the other run starts with this one
    while (name in listed()) == gone and time.monotonic() < end:
        time.sleep(0.02)
    return (name in listed()) != gone
def autobound():
    made = {{}}
    for kind, type_ in KINDS.items():
        s = socket.socket(socket.AF_UNIX, type_)
        s.bind("")  # autobind: the kernel picks a free abstract name, @ and five hex digits
        if type_ != socket.SOCK_DGRAM:
            s.listen()
        s.setblocking(False)
        made["@" + s.getsockname()[1:].decode()] = s
    return made
def reach(name, kind, how):
    s = socket.socket(socket.AF_UNIX, KINDS[kind])
    try:
        if how == "connect":
            s.connect("\\0" + name[1:])
        else:
            s.sendto(b"x", "\\0" + name[1:])
        return "reached"
    except OSError as exc:
        return errno.errorcode[exc.errno]
    finally:
        s.close()
def attack(names):
    return {{f"{{name}} {{kind}} {{how}}": reach(name, kind, how)
            for name in sorted(names) for kind in KINDS for how in ("connect", "sendto")}}
"""
#: Holds one autobound socket of each kind until the spy is done; then says whether anything reached them.
#: The two meet by names they bind and list (ready, done, ack): no sleep decides who goes first.
AUTOBIND_VICTIM = AUTOBIND_PRELUDE + """held = autobound()
ready = socket.socket(socket.AF_UNIX)
ready.bind("\\0sandbox-autobind-ready-{tag}")
print(json.dumps({{"net": os.readlink("/proc/self/ns/net"), "names": sorted(held)}}), flush=True)
done = wait_for("@sandbox-autobind-done-{tag}")
ack = socket.socket(socket.AF_UNIX)
ack.bind("\\0sandbox-autobind-ack-{tag}")  # held until the spy, having seen it, lets "done" go
contacts = []
for sock in held.values():
    try:
        contacts.append(repr(sock.recv(16) if sock.type == socket.SOCK_DGRAM else sock.accept()))
    except BlockingIOError:
        pass
let_go = wait_for("@sandbox-autobind-done-{tag}", gone=True)
print(json.dumps({{"spy_done": done, "contacts": contacts, "let_go": let_go}}))
"""
#: Lists every abstract name but its own (the victim's, any other run's, the forker's) and tries each three kinds
#: of socket, connect and sendto; the control: its own autobound sockets, reached the same way.
AUTOBIND_SPY = AUTOBIND_PRELUDE + """seen_victim = wait_for("@sandbox-autobind-ready-{tag}")
own = autobound()
others = listed() - set(own)
result = {{"net": os.readlink("/proc/self/ns/net"), "seen_victim": seen_victim, "others": attack(others),
          "own_listed": set(own) <= listed(),
          "own": {{f"{{name}} {{kind}} {{how}}": reach(name, kind, how) for name, sock in own.items()
                  for kind, type_ in KINDS.items() if type_ == sock.type for how in ("connect", "sendto")
                  if (how == "sendto") == (type_ == socket.SOCK_DGRAM)}}}}
done = socket.socket(socket.AF_UNIX)
done.bind("\\0sandbox-autobind-done-{tag}")
result["acked"] = wait_for("@sandbox-autobind-ack-{tag}")
done.close()
print(json.dumps(result))
"""


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_a_run_cant_reach_the_autobound_sockets_it_lists(boxes, policy):
    """One-shot runs of a zygote share one network namespace (confine/netns.py), so ``/proc/net/unix`` lists a
    run the abstract names the runs beside it hold, autobound ones (``@1e806``) included, without guessing. A run
    holds a socket of each kind; another, at the same time, connects and sends to every name it lists, each kind:
    Landlock's scoping refuses each (EPERM), and nothing reaches the victim. Its own sockets it reaches."""
    import json
    import threading

    from sandbox.confine import landlock

    if not (os.geteuid() == 0 and landlock.abi_version() >= 6):
        pytest.skip("one-shot runs share no network namespace here (confine/netns.py): no other run's name to list")
    box, tag = boxes[policy], f"{os.getpid()}-{policy}"
    got = {}
    victim = threading.Thread(target=lambda: got.update(v=box.run(AUTOBIND_VICTIM.format(tag=tag))))
    victim.start()
    spy = box.run(AUTOBIND_SPY.format(tag=tag))
    victim.join()
    assert got["v"].ok and spy.ok, (got["v"], spy)
    held, end = map(json.loads, got["v"].stdout.splitlines())
    seen = json.loads(spy.stdout)
    assert seen["seen_victim"] and end["spy_done"] and seen["acked"] and end["let_go"], (held, seen, end)
    assert seen["net"] == held["net"], (held, seen)
    # the control: the listing and the probe work (a run reaches its own sockets, so a reachable one would show)
    assert seen["own_listed"] and set(seen["own"].values()) == {"reached"} and len(seen["own"]) == 3, seen
    assert set(held["names"]) <= {key.split()[0] for key in seen["others"]}, (held, seen)
    assert "reached" not in seen["others"].values(), seen["others"]
    for name in held["names"]:  # the victim's own kind of socket is refused by the scoping, not for its kind
        assert "EPERM" in {seen["others"][f"{name} {kind} {how}"] for kind in ("stream", "dgram", "seqpacket")
                           for how in ("connect", "sendto")}, seen["others"]
    assert end["contacts"] == [], end
