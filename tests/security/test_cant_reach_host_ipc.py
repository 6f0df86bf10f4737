"""System V IPC and POSIX message queues of the host: out of a run's reach, with or without namespaces.

Under namespaces a run has an IPC namespace of its own, which dies with it. Where the kernel
makes none (containers that forbid user namespaces; here a policy without the ``namespaces``
layer) a run shared the host's: objects there are named by small ids, and as the host's uid a
run attached the host's own shared memory segment and read it, received from its message queue,
and left segments, queues and semaphores that outlived the run (and its Sandbox). The filter now
refuses those calls there (confine/seccomp.py); under namespaces they still work, in the run's own.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import pytest

import sandbox

from .attacks import no_namespaces, snippet
from .conftest import checked_run

IPC_PRIVATE, IPC_CREAT, IPC_RMID, IPC_NOWAIT = 0, 0o1000, 0, 0o4000
SECRET = b"host-ipc-secret"

#: Reach the host's objects by id, then make new ones that would outlive the run.
REACH = '''
libc.shmat.restype = ctypes.c_void_p
def read_segment():
    addr = libc.shmat($shm, None, 0o10000)  # SHM_RDONLY
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ctypes.string_at(addr, $size)
def receive():
    buf = ctypes.create_string_buffer(8 + 64)
    got = libc.msgrcv($msq, buf, 64, 0, 0o4000)  # IPC_NOWAIT
    if got < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return buf.raw[8:8 + got]
attempt("read the host's segment", read_segment)
attempt("receive from the host's queue", receive)
attempt("make a segment", lambda: raw(29, 0, 1 << 20, 0o1666))  # shmget
attempt("make a queue", lambda: raw(68, 0, 0o1666))  # msgget
attempt("make semaphores", lambda: raw(64, 0, 4, 0o1666))  # semget
libc.mq_open.restype = ctypes.c_int
def mq():
    fd = libc.mq_open(b"/sandbox-attack", 0o100 | 2, 0o666, None)  # O_CREAT | O_RDWR
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return fd
attempt("make a POSIX queue", mq)
'''


def _ipc_ids() -> list[str]:
    """The host IPC namespace's objects of mode 0666, as the snippets make them (others are other programs')."""
    table = subprocess.run(["ipcs"], capture_output=True, text=True, check=True).stdout
    return [line for line in table.splitlines() if " 666 " in line]


class _MsgBuf(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 64)]


@pytest.fixture
def host_objects():
    """A segment holding SECRET and a queue holding it, of this (the host's) uid, mode 0600, as a daemon makes them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shm = libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)
    msq = libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
    assert shm >= 0 and msq >= 0, os.strerror(ctypes.get_errno())
    try:
        addr = libc.shmat(shm, None, 0)
        ctypes.memmove(addr, SECRET, len(SECRET))
        libc.shmdt(ctypes.c_void_p(addr))
        for _ in range(4):  # one for each way in below
            assert libc.msgsnd(msq, ctypes.byref(_MsgBuf(1, SECRET)), len(SECRET), IPC_NOWAIT) == 0
        yield {"shm": shm, "msq": msq, "size": len(SECRET)}
    finally:
        libc.shmctl(shm, IPC_RMID, None)
        libc.msgctl(msq, IPC_RMID, None)


def test_cant_reach_the_hosts_ipc_without_namespaces(host_objects):
    """default (strict requires namespaces: it never runs without them)."""
    if not os.path.exists("/usr/bin/ipcs"):
        pytest.skip("no ipcs here to list the host's IPC objects")
    before = _ipc_ids()
    code = snippet(REACH, **host_objects)
    with sandbox.Sandbox(policy=no_namespaces("default")) as box:
        runs = [checked_run(box, code)]
        with box.session() as s:
            runs.append(s.run(code))
    for result in runs:
        text = result.stdout + result.stderr + (result.error or "")
        assert "ESCAPED" not in text and SECRET.decode() not in text, text
        assert text.count("blocked") == 12 and "Operation not permitted" in text, text
    assert _ipc_ids() == before, "a run left an IPC object in the host's namespace"


def test_a_runs_own_ipc_namespace_still_has_system_v_ipc():
    """Under namespaces the calls are a run's own business (and its objects die with its namespace)."""
    from sandbox.confine import namespaces
    if not namespaces.probe()[0]:
        pytest.skip(f"no namespaces here: {namespaces.probe()[1]}")
    before = _ipc_ids()
    with sandbox.Sandbox(policy="default") as box:
        code = snippet('attempt("queue", lambda: raw(68, 0, 0o1600))\n'
                       'attempt("semaphores", lambda: raw(64, 0, 4, 0o1600))')
        result = checked_run(box, code)
    assert result.stdout.count("ESCAPED") == 2, result  # here ESCAPED means "made": in the run's own namespace
    assert _ipc_ids() == before


#: Make POSIX queues until refused (RLIMIT_MSGQUEUE, counted per uid across user namespaces, is ~9 default queues).
FILL_QUEUES = '''
libc.mq_open.restype = ctypes.c_int
made, why = 0, "never refused"
while made < 64:
    fd = libc.mq_open(f"/sandbox-fill-{made}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    if fd < 0:
        why = os.strerror(ctypes.get_errno())
        break
    made += 1
print(made, why)
'''


def _host_mq_open(name: bytes) -> str:
    """"" if this (the host's) process makes a POSIX queue, else why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    fd = libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    libc.mq_unlink(name)
    os.close(fd)
    return ""


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_a_session_cant_use_up_the_posix_queues_of_the_hosts_uid(boxes, policy):
    """Under namespaces a run's mqueue namespace is its own, but RLIMIT_MSGQUEUE counts the bytes of queues per uid
    up through the user namespaces: a session's state holding queues as uid 0 (the host's) would leave the host's
    own mq_open failing with EMFILE while the session lived. Landlock refuses a run making one (EACCES)."""
    from sandbox.confine import landlock, namespaces
    if not namespaces.probe()[0]:
        pytest.skip(f"no namespaces here: {namespaces.probe()[1]} (without them: the test above)")
    if not landlock.probe()[0]:
        pytest.skip(f"no Landlock here: {landlock.probe()[1]}")
    tag = f"/sandbox-host-{os.getpid()}-{policy}".encode()
    why = _host_mq_open(tag)
    if why:  # the control: the host's own call works, so one that stops working shows
        pytest.skip(f"the host makes no POSIX queue here: {why}")
    with boxes[policy].session() as s:
        r = s.run(snippet(FILL_QUEUES))
        assert r.ok, r
        assert _host_mq_open(tag) == "", f"the session's run took the host uid's queues: {r.stdout}"
        assert r.stdout == "0 Permission denied\n", r.stdout
    assert _host_mq_open(tag) == ""


#: System V objects under one key: made in one run, looked up by key in another.
IPC_KEY = 0x5A0000 + os.getpid() % 0x10000
MAKE_BY_KEY = f'print(raw(29, {IPC_KEY}, 4096, 0o1666) >= 0, raw(68, {IPC_KEY}, 0o1666) >= 0)'  # shmget, msgget
FIND_BY_KEY = f'''
def find(nr, *args):
    try:
        return raw(nr, {IPC_KEY}, *args) >= 0
    except OSError as exc:
        return errno.errorcode[exc.errno]
print(find(29, 0, 0), find(68, 0))
'''


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_runs_cant_share_system_v_ipc_by_key(boxes, policy):
    """A session's state makes a shared memory segment and a message queue under a known key (what two cooperating
    runs, or a victim and a spy, would use); a one-shot run and another session's run, at the same time, look the
    key up: each run has an IPC namespace of its own (ENOENT). The session's own next run finds both."""
    from sandbox.confine import namespaces
    if not namespaces.probe()[0]:
        pytest.skip(f"no namespaces here: {namespaces.probe()[1]} (without them the calls are refused: above)")
    box = boxes[policy]
    with box.session() as maker, box.session() as other:
        made = maker.run(snippet(MAKE_BY_KEY))
        assert made.stdout == "True True\n", made
        found = maker.run(snippet(FIND_BY_KEY))
        assert found.stdout == "True True\n", found  # the control: the lookup works where the objects are
        for r in (box.run(snippet(FIND_BY_KEY)), other.run(snippet(FIND_BY_KEY))):
            assert r.stdout == "ENOENT ENOENT\n", r
