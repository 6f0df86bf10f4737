"""Memory that RLIMIT_AS does not see (issue 16, item 5): memfds, SysV shared memory, /dev/shm, more processes.

Each attack holds 3 x ``limits.memory_mb`` (256 MiB here, under policies derived from ``default`` and
``strict``) in memory no mapping holds, or spread over processes each under its own RLIMIT_AS. With a memory
cgroup (confine/memcg.py) the run ends FAILED with reason ``memory_limit``, read by the host from the cgroup,
whose peak it reports; without one (uid 65534 here: see test_unprivileged.py; root with the hierarchy hidden:
below) memfd_create and shmget (and semget and msgget) are refused with a readable error. Never does a snippet print ESCAPED.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from typing import Iterator

import psutil
import pytest

import sandbox
from sandbox.confine import memcg, memcg_lookup

from .attacks import in_child, snippet
from .conftest import checked_run

MIB = 1 << 20
MEMORY_MB = 256
HAVE_MEMCG, WHY = memcg.probe()


def _policy(name: str, **limits: int) -> sandbox.Policy:
    """``name`` with memory_mb = 256, and session.max_memory_mb = 256 too."""
    policy = sandbox.Policy.load(name).with_limits(memory_mb=MEMORY_MB, **limits)
    return policy.replace(session=dataclasses.replace(policy.session, max_memory_mb=MEMORY_MB))


@pytest.fixture(scope="module")
def small_boxes() -> Iterator[dict[str, sandbox.Sandbox]]:
    """default and strict with memory_mb = 256 and a file size cap that lets one memfd reach 3 x that."""
    big = {"max_file_size_mb": 4 * MEMORY_MB}
    with sandbox.Sandbox(policy=_policy("default", **big)) as d, sandbox.Sandbox(policy=_policy("strict", **big)) as s:
        yield {"default": d, "strict": s}


@pytest.fixture(params=("default", "strict"))
def box(request, small_boxes) -> sandbox.Sandbox:
    return small_boxes[request.param]


ATTACKS = {
    # One memfd, sized with ftruncate, filled with pwrite: never mapped, so RLIMIT_AS never sees it.
    "memfd": '''
fd = os.memfd_create("hold")
size = 3 * $mb << 20
os.ftruncate(fd, size)
chunk = b"x" * (1 << 20)
for off in range(0, size, 1 << 20):
    os.pwrite(fd, chunk, off)
print("ESCAPED held", os.fstat(fd).st_size >> 20, "MiB in a memfd")
''',
    # Many memfds, each within the policy's own file size cap (strict: 16 MiB): that cap does not bound the sum.
    "many_memfds": '''
each = min(64, $file_mb) << 20
chunk, fds = b"x" * (1 << 20), []
while len(fds) * each < 3 * $mb << 20:
    fd = os.memfd_create("hold")
    for off in range(0, each, 1 << 20):
        os.pwrite(fd, chunk, off)
    fds.append(fd)
print("ESCAPED held", len(fds) * each >> 20, "MiB in", len(fds), "memfds")
''',
    # SysV shared memory: attach, fill, detach; a detached segment lives on, outside every address space.
    "sysv_shm": '''
libc.shmat.restype = ctypes.c_void_p
seg, held = 64 << 20, 0
while held < 3 * $mb << 20:
    shmid = raw(29, 0, seg, 0o1600)  # shmget(IPC_PRIVATE, seg, IPC_CREAT | 0600)
    addr = libc.shmat(shmid, None, 0)
    ctypes.memset(addr, 1, seg)
    libc.shmdt(ctypes.c_void_p(addr))
    held += seg
print("ESCAPED held", held >> 20, "MiB of detached SysV shared memory")
''',
}


def _expect_memory_limit(result: sandbox.Result, box: sandbox.Sandbox) -> None:
    text = (result.stdout or "") + (result.error or "")
    assert "ESCAPED" not in text, text
    if HAVE_MEMCG:
        assert result.outcome == sandbox.Outcome.FAILED and result.reason == "memory_limit", result
        assert "limits.memory_mb" in result.error and "memfd" in result.error, result.error
        limit_mib = int(re.search(r"(\d+) MiB", result.error).group(1))  # the cgroup's limit, as the host read it
        assert MEMORY_MB < limit_mib < MEMORY_MB + 1024, result.error  # memory_mb + the image's baseline
        # The host read the cgroup's peak: at least memory_mb of memory no process maps (RSS would not show it).
        assert MEMORY_MB * MIB <= result.peak_memory_bytes <= (limit_mib + 1) * MIB, result  # MiB: rounded down
    else:
        assert result.outcome == sandbox.Outcome.FAILED and "Operation not permitted" in result.error, result


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_cant_hold_memory_outside_rlimit_as(box, attack):
    code = snippet(ATTACKS[attack], mb=MEMORY_MB, file_mb=box.policy.limits.max_file_size_mb)
    result = checked_run(box, code, timeout=30)
    _expect_memory_limit(result, box)
    assert _cgroups_left(box) == [], "a run's memory cgroup was left behind"


def test_cant_hold_a_memfd_without_namespaces():
    """Without the namespaces layer a worker is a plain fork that makes its memory cgroup itself while it
    confines (maybe after the zygote handed it the request): the host must still find it and read it."""
    policy = _policy("default", max_file_size_mb=4 * MEMORY_MB)
    policy = policy.replace(confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces")))
    with sandbox.Sandbox(policy=policy) as box:  # the first run: its worker may still be confining itself
        for _ in range(2):
            result = box.run(snippet(ATTACKS["memfd"], mb=MEMORY_MB), timeout=30)
            _expect_memory_limit(result, box)
        assert _cgroups_left(box) == []


def test_without_namespaces_the_hosts_dev_shm_is_not_writable():
    """Without a mount namespace /dev/shm is the host's tmpfs, shared by every run and the host: memory that
    outlives the run and that no limit of the run bounds, and a channel to the next run. Landlock refuses it."""
    policy = _policy("default")
    policy = policy.replace(confinement=dataclasses.replace(
        policy.confinement, layers=tuple(n for n in policy.confinement.layers if n != "namespaces")))
    before = set(os.listdir("/dev/shm"))
    with sandbox.Sandbox(policy=policy) as box:
        result = checked_run(box, snippet('attempt("plant", lambda: open("/dev/shm/sandbox-plant", "w").write("x"))'))
    assert "ESCAPED" not in result.stdout and "blocked plant: [Errno 13] Permission denied" in result.stdout, result
    assert set(os.listdir("/dev/shm")) == before


#: Huge pages of the machine's hugetlb pool by each way a process may take them, each held until the run ends.
HUGETLB = '''
import mmap
HUGE = 2 << 20
libc.mmap.restype = ctypes.c_void_p
held = []
def mapped(fd=-1, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40000):  # MAP_HUGETLB
    m = mmap.mmap(fd, HUGE, flags=flags)
    m[0] = 1  # faulted: the page is the run's now
    held.append(m)
    return "a huge page"
def memfd():
    fd = os.memfd_create("huge", 0x4)  # MFD_HUGETLB
    os.ftruncate(fd, HUGE)
    return mapped(fd, mmap.MAP_SHARED)
def shm():
    shmid = raw(29, 0, HUGE, 0o1600 | 0o4000)  # shmget(IPC_PRIVATE, IPC_CREAT | 0600 | SHM_HUGETLB)
    addr = libc.shmat(shmid, None, 0)
    raw(31, shmid, 0, 0)  # IPC_RMID: gone once detached
    ctypes.memset(addr, 1, 1)
    return "a huge page"
attempt("mmap(MAP_HUGETLB)", mapped)
attempt("memfd_create(MFD_HUGETLB)", memfd)
attempt("shmget(SHM_HUGETLB)", shm)
print("done")
'''


@pytest.fixture
def hugetlb_pool() -> Iterator[int]:
    """4 more huge pages in the machine's pool (vm.nr_hugepages), as a database's host reserves; put back after.
    Yields how many are free then."""
    path = "/proc/sys/vm/nr_hugepages"
    if os.geteuid() != 0 or not os.path.exists(path):
        pytest.skip("setting up a hugetlb pool needs root and a kernel with hugetlb")
    with open("/proc/meminfo") as fh:
        if "Hugepagesize:       2048 kB\n" not in fh.read():
            pytest.skip("the attack and the host's check map 2 MiB huge pages, not this machine's size")
    with open(path) as fh:
        before = fh.read()
    try:
        with open(path, "w") as fh:
            fh.write(str(int(before) + 4))
        with open("/proc/meminfo") as fh:
            yield next(int(line.split()[1]) for line in fh if line.startswith("HugePages_Free:"))
    finally:
        with open(path, "w") as fh:
            fh.write(before)


def _host_huge_pages(count: int) -> str:
    """This (the host's) process maps and touches ``count`` huge pages: "ok", or the error."""
    import mmap
    try:
        held = [mmap.mmap(-1, 2 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40000) for _ in range(count)]
        for m in held:
            m[0] = 1
            m.close()
        return "ok"
    except OSError as exc:
        return str(exc)


def test_cant_take_the_machines_huge_pages(box, hugetlb_pool):
    """The hugetlb pool is one for the machine and no memory cgroup charges it (v1; v2 only under
    ``memory_hugetlb_accounting``): a run under either policy took every page of it, by ``mmap(MAP_HUGETLB)``, a
    ``MFD_HUGETLB`` memfd or a ``SHM_HUGETLB`` segment (its gid 0 passes ``vm.hugetlb_shm_group``), and every
    other process's ``MAP_HUGETLB`` failed ENOMEM for as long as the run or its session's state lived. The filter
    refuses all three (seccomp_rules.py); the host gets the whole pool while a session's state lives."""
    assert _host_huge_pages(hugetlb_pool) == "ok"
    with box.session() as s:
        r = s.run(snippet(HUGETLB))
        assert "ESCAPED" not in r.stdout and r.stdout.endswith("done\n"), r
        for label in ("mmap(MAP_HUGETLB)", "memfd_create(MFD_HUGETLB)", "shmget(SHM_HUGETLB)"):
            assert f"blocked {label}: [Errno 1] Operation not permitted" in r.stdout, (label, r.stdout)
        assert _host_huge_pages(hugetlb_pool) == "ok"


def test_cant_hold_memory_in_more_processes(small_boxes):
    """RLIMIT_AS is per process: four children each stay under it and together hold 3.6 x memory_mb. The cgroup
    holds them all; its OOM ends the whole tree (v2: memory.oom.group; v1: the zygote, on the OOM event)."""
    if not HAVE_MEMCG:
        pytest.skip(f"nothing bounds the sum of processes without a memory cgroup: {WHY}")
    box = small_boxes["default"]  # strict forbids fork
    code = snippet('''
import time
r, w = os.pipe()
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(int(0.9 * $mb) << 20)
        for k in range(0, len(block), 4096):
            block[k] = 1
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for _ in kids:
    os.read(r, 1)
print("ESCAPED", len(kids), "children hold", int(3.6 * $mb), "MiB")
time.sleep(60)
''', mb=MEMORY_MB)
    started = time.monotonic()
    result = checked_run(box, code, timeout=30)  # checked_run: no process of the tree outlived the run
    assert time.monotonic() - started < 25, "the tree was not killed at the OOM: the run waited for its deadline"
    _expect_memory_limit(result, box)
    assert result.peak_memory_bytes >= 2 * MEMORY_MB * MIB, result  # more than any one process could map


def test_dev_shm_is_charged_or_bounded(box):
    """/dev/shm is a private 64 MiB tmpfs under namespaces (unwritable without them): filling it stops there, and
    with a memory cgroup its pages are charged to the run (the host's peak shows them above an empty run's; the
    peak RSS would not: it counts the image's shared pages, and no tmpfs page that is not mapped)."""
    idle_peak = box.run("pass").peak_memory_bytes
    code = snippet('''
chunk, n = b"x" * (1 << 20), 0
try:
    with open("/dev/shm/fill", "wb") as fh:
        while n < 3 * $mb:
            fh.write(chunk); fh.flush(); n += 1
except OSError as exc:
    print("blocked after", n, "MiB:", exc)
if n >= 3 * $mb:
    print("ESCAPED held", n, "MiB in /dev/shm")
''', mb=MEMORY_MB)
    result = checked_run(box, code, timeout=30)
    text = (result.stdout or "") + (result.error or "")
    assert "ESCAPED" not in text, text
    if result.reason == "memory_limit":
        return
    assert "blocked after" in result.stdout, result
    written = int(result.stdout.split("blocked after", 1)[1].split()[0])
    if HAVE_MEMCG and written:
        assert result.peak_memory_bytes >= idle_peak + written * MIB, (written, idle_peak, result.peak_memory_bytes)


#: Empty files in /dev/shm, as many as the tmpfs lets it make (up to 200,000), each one's inode and dentry kernel
#: memory (about 1 KiB) that the tmpfs's size does not count.
SHM_FILES = '''
n = 0
try:
    while n < 200000:
        os.close(os.open(f"/dev/shm/{n}", os.O_CREAT | os.O_WRONLY, 0o600))
        n += 1
    print("ESCAPED made", n, "files in /dev/shm")
except OSError as exc:
    print("blocked after", n, "files:", exc.strerror)
'''


def test_dev_shm_bounds_its_files_without_a_memory_cgroup():
    """As uid 65534 (no memory cgroup: nothing charges a run's kernel memory). /dev/shm was a tmpfs of 64 MiB with
    the default ``nr_inodes``, half the machine's pages (3 million here): a run made 500,000 empty files in 3.4 s,
    400 MiB of unreclaimable slab outside every limit of the run, and could go on to 3 GiB, a session's for as long
    as it lived. Its tmpfs now holds 4,096 files; a one-shot run and a session's run stop there."""
    from .attacks import NOBODY, in_child_as_nobody
    from .test_unprivileged import _readable_as
    if os.geteuid() == 0 and not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}: the zygote cannot be exec'd as that uid")

    def attack(out: dict) -> None:
        with sandbox.Sandbox(policy="default") as box:
            out["one-shot"] = box.run(snippet(SHM_FILES), timeout=30).stdout
            with box.session() as s:
                s.run("x = 1")
                out["session"] = s.run(snippet(SHM_FILES), timeout=30).stdout
    out = in_child_as_nobody(attack)
    assert "error" not in out, out["error"]
    for route in ("one-shot", "session"):
        assert out[route].startswith("blocked after"), (route, out[route])
        assert int(out[route].split()[2]) < 5000 and "No space left on device" in out[route], (route, out[route])


def test_a_benign_numpy_run_near_the_limit_still_works(box):
    """200 MiB of numpy under memory_mb = 256: the image the worker was forked from is not held against it."""
    code = ("import numpy as np\n"
            "a = np.ones(200 * 2**20 // 8)\n"
            "print(int(a.sum()), a.nbytes >> 20)")
    result = checked_run(box, code, timeout=30)
    assert result.outcome == sandbox.Outcome.OK, result
    assert result.stdout == f"{200 * 2**20 // 8} 200\n"
    if HAVE_MEMCG:
        assert 200 * MIB <= result.peak_memory_bytes < (MEMORY_MB + 1024) * MIB, result.peak_memory_bytes


def _cgroups_left(box: sandbox.Sandbox, timeout: float = 5.0) -> list[str]:
    """Memory cgroups under the sandbox's zygotes that belong to no live worker (removal follows the reap)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for zygote in box.zygote_pids:
            live = {f"w{child.pid}" for child in psutil.Process(zygote).children()}
            for zdir in memcg_lookup.zygote_dirs(zygote):
                left += [os.path.join(zdir, n) for n in os.listdir(zdir) if n.startswith("w") and n not in live]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def test_no_cgroup_outlives_its_run_or_its_sandbox():
    if not HAVE_MEMCG:
        pytest.skip(WHY)
    policy = _policy("strict", max_file_size_mb=4 * MEMORY_MB)
    with sandbox.Sandbox(policy=policy) as box:
        zygote = box.zygote_pids[0]
        codes = ("print(1)", snippet(ATTACKS["memfd"], mb=MEMORY_MB), "raise SystemExit(3)", "import os; os._exit(9)")
        for code in codes:
            box.run(code, timeout=20)
        with box.session() as s:
            s.run("x = 1")
        assert _cgroups_left(box) == []
        zdirs = memcg_lookup.zygote_dirs(zygote)
        assert zdirs, "no memory cgroup was made"
        # The pre-forked workers (each leads its own session); not the forker (inside/forker.py), the zygote's
        # child that clones them and has no cgroup of its own. A refill in flight (its cgroup made, the clone not
        # yet its own session leader) settles within moments.
        deadline = time.monotonic() + 5
        while True:
            live = sorted(n for z in zdirs for n in os.listdir(z) if n.startswith("w"))
            workers = sorted(f"w{c.pid}" for c in psutil.Process(zygote).children() if _leads_session(c.pid))
            if live == workers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert live == workers, live
    assert memcg_lookup.zygote_dirs(zygote) == [], "the zygote's cgroup outlived the sandbox"


# -- sessions -------------------------------------------------------------------------------------------------------
def _session_line(s: "sandbox.Session", via: str) -> "sandbox.Session":
    """The session itself, a branch of it, or the session back at a restored checkpoint."""
    if via == "branch":
        return s.fork()
    if via == "restored":
        mark = s.checkpoint()
        assert s.run("x = 0").ok
        s.restore(mark)
    return s


@pytest.mark.parametrize("via", ["session", "branch", "restored"])
def test_cant_hold_a_memfd_in_a_session(box, via):
    """The session tree is in one cgroup: a memfd past session.max_memory_mb + memory_mb ends it, memory_limit;
    the same through a branch and a restored checkpoint (one tree, one cgroup)."""
    with box.session() as s:
        assert s.run("x = 41").ok
        line = _session_line(s, via)
        code = snippet(ATTACKS["many_memfds"].replace("3 * $mb", "3 * ($mb + $session_mb)"), mb=MEMORY_MB,
                       session_mb=box.policy.session.max_memory_mb, file_mb=box.policy.limits.max_file_size_mb)
        result = line.run(code, timeout=30)
        _expect_memory_limit(result, box)
        if HAVE_MEMCG:
            assert "session.max_memory_mb" in result.error and "session is closed" in result.error, result.error
            for each in {id(s): s, id(line): line}.values():
                with pytest.raises(sandbox.SandboxClosed, match=r"session is closed \(.*session\.max_memory_mb"):
                    each.run("print(x)")
    after = checked_run(box, "print('next')")
    assert after.stdout == "next\n"
    with box.session() as s:  # a new session is unaffected
        assert s.run("print(2)").stdout == "2\n"
    assert _cgroups_left(box) == []


def test_session_memory_counts_memfds(small_boxes):
    """session.max_memory_mb counts shmem no process maps: a state that keeps a 200 MiB memfd is over 128 MB."""
    if not HAVE_MEMCG:
        pytest.skip(f"without a memory cgroup memfd_create is refused: {WHY}")
    policy = small_boxes["strict"].policy
    policy = policy.replace(session=dataclasses.replace(policy.session, max_memory_mb=128))
    with sandbox.Sandbox(policy=policy) as sb, sb.session() as s:
        code = ('import os\nfd = os.memfd_create("keep")\n'
                'for i in range(200): os.write(fd, b"x" * 2**20)\nprint("kept")')
        result = s.run(code)
        assert result.outcome == sandbox.Outcome.FAILED and result.reason == "memory_limit", result
        assert result.rolled_back and "session.max_memory_mb" in result.error and "would hold" in result.error
        assert s.run("print('still here')").stdout == "still here\n"  # rolled back, not closed


def test_a_session_runs_peak_is_its_own(small_boxes):
    """A session run's peak comes from the session's cgroup, restarted for each run: a run after one that held
    a 200 MiB memfd (and closed it) does not report that run's peak. Where the kernel cannot restart it (cgroup v2
    before Linux 6.12: ``memory.peak`` is read-only), a run reports the session's peak so far, as documented."""
    if not HAVE_MEMCG:
        pytest.skip(WHY)
    with small_boxes["strict"].session() as s:
        big = s.run('import os\nfd = os.memfd_create("x")\nfor i in range(200): os.write(fd, b"x" * 2**20)\n'
                    'os.close(fd)')
        small = s.run("print(1)")
    assert big.ok and small.ok, (big, small)
    if _peak_restarts():
        assert big.peak_memory_bytes >= 200 * MIB > small.peak_memory_bytes + 100 * MIB, (big, small)
    else:  # an upper bound of the run's own
        assert small.peak_memory_bytes >= big.peak_memory_bytes >= 200 * MIB, (big, small)


def _peak_restarts() -> bool:
    """Whether a session's memory cgroup can restart its peak: v1 always, v2 from Linux 6.12."""
    if memcg_lookup.hierarchies("memory")[0].version == 1:
        return True
    release = tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])
    return release >= (6, 12)


# -- the fallback as root: no memory hierarchy ------------------------------------------------------------------------
def _hidden_run(policy: sandbox.Policy, code: str) -> dict:
    """In a forked child with every memory hierarchy hidden: start a Sandbox, run ``code``; what came back (only
    the refusal, if the Sandbox was unavailable; only ``"error"``, if anything else went wrong)."""
    from tests.confine.test_memcg import hide_memory_hierarchies

    def hidden(out: dict) -> None:
        try:
            hide_memory_hierarchies()
            got = _one_shot_and_session(policy, code)
        except sandbox.SandboxUnavailable as exc:
            got = {"unavailable": exc.layer, "text": str(exc)}
        out.update(got)  # whole or not at all: an error is reported alone
    return in_child(hidden)


def _one_shot_and_session(policy: sandbox.Policy, code: str) -> dict:
    with sandbox.Sandbox(policy=policy) as sb:
        res = sb.run(code, timeout=20)
        out = {"outcome": str(res.outcome), "reason": res.reason, "text": res.stdout + (res.error or "")}
        with sb.session() as s:
            res = s.run(code, timeout=20)
            out["session"] = {"outcome": str(res.outcome), "text": res.stdout + (res.error or "")}
    return out


def _refused_without_a_memory_cgroup(name: str, code: str, *labels: str) -> None:
    """Under policy ``name`` with the memory hierarchy hidden, a one-shot run and a session's run of ``code`` each
    had every attempt named in ``labels`` refused with EPERM, and nothing escaped."""
    if os.geteuid() != 0 or not HAVE_MEMCG:
        pytest.skip("root with a memory hierarchy to hide (uid 65534: test_unprivileged.py)")
    got = _hidden_run(_policy(name), code)
    assert "error" not in got, got
    for run in (got, got["session"]):  # a one-shot run, and a session's
        assert run["outcome"] == "OUTCOME_OK" and "ESCAPED" not in run["text"], got
        for label in labels:
            assert f"blocked {label}: [Errno 1] Operation not permitted" in run["text"], got


@pytest.mark.parametrize("name", ["default", "strict"])
def test_without_a_memory_cgroup_memfd_and_shmget_are_refused(name):
    _refused_without_a_memory_cgroup(name, snippet('attempt("memfd", lambda: os.memfd_create("x"))\n'
                                                    'attempt("shmget", lambda: raw(29, 0, 1 << 20, 0o1600))\n'),
                                     "memfd", "shmget")


#: System V semaphore arrays and message queues in the run's own IPC namespace: kernel memory no mapping holds, that
#: only a memory cgroup charges. 100 arrays of 32,000 semaphores (~200 MiB), 500 queues of 16 KiB (~8 MiB).
SYSV_KERNEL_MEMORY = '''
def call(fn, *args):
    res = fn(*args)
    if res == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return res
def semaphores():
    return [call(libc.semget, 0, 32000, 0o1600) for _ in range(100)] and "100 arrays of 32,000 semaphores"
def messages():
    msg = ctypes.create_string_buffer(8 + 8192)
    ctypes.c_long.from_buffer(msg).value = 1  # mtype
    for _ in range(500):
        queue = call(libc.msgget, 0, 0o1600)
        for _ in range(2):
            call(libc.msgsnd, queue, msg, 8192, 0o4000)  # IPC_NOWAIT
    return "500 queues of 16 KiB"
attempt("semget", semaphores)
attempt("msgget", messages)
'''


@pytest.mark.parametrize("name", ["default", "strict"])
def test_without_a_memory_cgroup_a_run_cant_hold_kernel_memory_in_system_v_ipc(name):
    """A semaphore array of 32,000 semaphores is 2 MiB of kernel memory, a queue's messages up to 16 KiB, and the
    run's IPC namespace allows 32,000 of each: only a memory cgroup charges them. Without one a run made 100 arrays
    in 1.3 s, 200 MiB of unreclaimable slab outside every limit of the run, and could go on to 64 GiB (a session's
    state keeping them between runs). ``semget`` and ``msgget`` are refused there now, as ``shmget`` was."""
    _refused_without_a_memory_cgroup(name, snippet(SYSV_KERNEL_MEMORY), "semget", "msgget")


#: A private futex hash of 2^22 slots (``prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS)``, Linux 6.16): ~250 MiB of
#: vmalloc'd kernel memory, which no mapping holds.
FUTEX_HASH = '''
def futex_hash():
    raw(157, 78, 1, 1 << 22, 0, 0)  # prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, 2^22)
    return f"{raw(157, 78, 2, 0, 0, 0)} slots"  # PR_FUTEX_HASH_GET_SLOTS
attempt("futex hash", futex_hash)
'''


@pytest.mark.parametrize("name", ["default", "strict"])
def test_without_a_memory_cgroup_a_run_cant_hold_kernel_memory_in_a_futex_hash(name):
    """A process may ask for a private futex hash of up to 2^24 slots (~1 GiB of vmalloc, outside RLIMIT_AS,
    charged to a memory cgroup only where there is one): without one, one process of a run held 970 MiB that no
    limit of the run saw (its ``peak_memory_bytes`` said 16 MiB), and default's 64 processes may hold 64 GiB; a
    session's state keeps its own. The filter refuses ``PR_FUTEX_HASH`` (seccomp_rules.py)."""
    _refused_without_a_memory_cgroup(name, snippet(FUTEX_HASH), "futex hash")


#: Landlock rules of the run's own: 100 rulesets (fds), each given a rule for each of 10,000 files of the stdlib
#: (O_PATH fds): 1,000,000 rules, ~70 MiB of unreclaimable slab in 5 s; nothing but the run's fds bounds the rulesets.
LANDLOCK_RULES = '''
import struct
attr = ctypes.create_string_buffer(struct.pack("QQQ", 1 | 4, 0, 0))  # handles EXECUTE and READ_FILE
rule = ctypes.create_string_buffer(12)
def rules():
    rulesets = [raw(444, ctypes.addressof(attr), 8, 0) for _ in range(100)]  # landlock_create_ruleset
    paths = [os.path.join(d, f) for d, _, fs in os.walk(os.path.dirname(os.__file__)) for f in fs][:10000]
    made = 0
    for path in paths:
        fd = os.open(path, os.O_PATH)
        ctypes.memmove(rule, struct.pack("=Qi", 4, fd), 12)  # READ_FILE beneath fd
        for ruleset in rulesets:
            raw(445, ruleset, 1, ctypes.addressof(rule), 0)  # landlock_add_rule
            made += 1
        os.close(fd)
    return f"{made} rules"
attempt("landlock rules", rules)
'''


@pytest.mark.xfail(strict=True, reason="a run's own Landlock rulesets and rules are kernel memory that only a memory "
                                       "cgroup charges; refusing landlock_create_ruleset there would refuse the "
                                       "stacked domains test_cant_flood_the_audit_log lets runs make")
@pytest.mark.parametrize("name", ["default", "strict"])
def test_without_a_memory_cgroup_a_run_cant_hold_kernel_memory_in_landlock_rules(name):
    """Each rule of a ruleset is ~70 B of kernel memory (GFP_KERNEL_ACCOUNT: a memory cgroup's, where there is one),
    and a run may make as many rulesets as it has fds, each with a rule per inode it can open: without a memory
    cgroup a run made 1,000,000 rules in 5.3 s, 70 MiB of unreclaimable slab outside every limit of the run (its
    ``peak_memory_bytes`` said 17 MiB), at that rate some 400 MiB a process in a run's 30 s, and a session's state
    keeps its rulesets between runs."""
    if os.geteuid() != 0 or not HAVE_MEMCG:
        pytest.skip("root with a memory hierarchy to hide (uid 65534: test_unprivileged.py)")
    got = _hidden_run(_policy(name), snippet(LANDLOCK_RULES))
    assert "error" not in got, got
    for run in (got, got["session"]):  # a one-shot run, and a session's
        assert run["outcome"] == "OUTCOME_OK" and "ESCAPED" not in run["text"], got


#: POSIX record locks of the run's own: 200 files of its work dir, a lock on every other byte of the first 1,000
#: (each a lock record of the kernel's, ~170 B: nothing merges them), 100,000 in all.
POSIX_LOCKS = '''
import fcntl
def locks():
    made = 0
    for f in range(200):
        fd = os.open(f"lock{f}", os.O_RDWR | os.O_CREAT, 0o600)
        for start in range(0, 1000, 2):
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, start)
            made += 1
    return f"{made} lock records"
attempt("posix locks", locks)
'''


@pytest.mark.xfail(strict=True, reason="a run's POSIX lock records are kernel memory that only a memory cgroup "
                                       "charges, and no limit counts them (refusing F_SETLK would break sqlite3)")
def test_without_a_memory_cgroup_a_run_cant_hold_kernel_memory_in_file_locks():
    """A lock on a byte range is a lock record (~170 B, GFP_KERNEL_ACCOUNT: a memory cgroup's, where there is one),
    and the kernel counts them per nothing: without a memory cgroup a run took 1,000,000 (200 files, 5,000 each) in
    32 s, 175 MiB of unreclaimable slab outside every limit of the run (its ``peak_memory_bytes`` said 43 MiB), more
    with fewer locks a file (each lock scans its file's list) and more processes; a session's state keeps its own."""
    if os.geteuid() != 0 or not HAVE_MEMCG:
        pytest.skip("root with a memory hierarchy to hide (uid 65534: test_unprivileged.py)")
    got = _hidden_run(_policy("default"), snippet(POSIX_LOCKS))
    assert "error" not in got, got
    for run in (got, got["session"]):  # a one-shot run, and a session's
        assert run["outcome"] == "OUTCOME_OK" and "ESCAPED" not in run["text"], got


def test_a_policy_requiring_a_memory_cgroup_refuses_to_run_without_one():
    if os.geteuid() != 0 or not HAVE_MEMCG:
        pytest.skip("root with a memory hierarchy to hide")
    base = _policy("strict")
    policy = base.replace(confinement=dataclasses.replace(
        base.confinement, required=(*base.confinement.required, "memory_cgroup")))
    got = _hidden_run(policy, "print('ran')")
    assert got.get("unavailable") == "memory_cgroup", got
    assert "confinement.required" in got["text"] and "memory cgroup" in got["text"], got



#: What the kernel's OOM killer makes of a run: its score, and whether the run could lower it.
OOM_SCORE = '''
import os
def lower():
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    return open("/proc/self/oom_score_adj").read().strip()
attempt("lowering oom_score_adj", lower)
print("score", open("/proc/self/oom_score_adj").read().strip())
'''


def test_the_oom_killer_takes_a_run_before_the_host_or_the_zygote(box):
    """Kernel memory a run holds outside a memory cgroup (the xfail tests above, epoll watches) can run the machine
    short, and the OOM killer picks by size: the host's application or the zygote rather than the run that did it.
    Workers (clones of a forker that raised its own score) have ``oom_score_adj`` 1000, which a run cannot lower;
    the host and the zygote keep theirs."""
    host = open("/proc/self/oom_score_adj").read().strip()
    r = box.run(snippet(OOM_SCORE))
    assert r.outcome == sandbox.Outcome.OK and "ESCAPED" not in r.stdout, r
    assert "blocked lowering oom_score_adj" in r.stdout and r.stdout.endswith("score 1000\n"), r.stdout
    with box.session() as s:
        assert s.run(snippet(OOM_SCORE)).stdout.endswith("score 1000\n")
    assert open("/proc/self/oom_score_adj").read().strip() == host
    assert {open(f"/proc/{pid}/oom_score_adj").read().strip() for pid in box.zygote_pids} == {host}
