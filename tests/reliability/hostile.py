"""The soak's hostile kinds: the attacks of tests/security/test_cant_*.py, each with the result it must get.

Each row of :data:`HOSTILE` is a snippet and the check of its own result. Every snippet first
prints its run's token (so a result handed to the wrong caller is caught, as for the benign
kinds) and prints ``ESCAPED`` if its attack worked. ``$name`` placeholders are filled from the
Sandbox's limits and the host's targets (:func:`values`). What a hostile run must not do to
others (a neighbour's result, the zygote, the host's fds, processes, temp dirs, RSS, the
canary) is checked by the benign kinds and the soak's host checks, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from string import Template

from sandbox import Outcome
from sandbox.confine import disk

from .mixkit import Check, Env, Job, Kind, all_of, expect, never, number_between, somewhere, starts_with

FAILED, OK = Outcome.FAILED, Outcome.OK
#: Depth of the tree left for cleanup: past Python's recursion limit (recursive removal raised).
DEPTH = 1500

PRELUDE = 'import os, sys\nprint("$token", flush=True)\n'

# -- disk: a run fills its own private disk, never the host's --------------------------------
FILL_DISK = '''
import tempfile
n = 0
try:
    while n < 2 * $disk_mb:  # in tmp: the work dir's files would come back to the host
        with open(os.path.join(tempfile.gettempdir(), f"fill{n // 16}.bin"), "ab") as fh:
            fh.write(b"x" * (1 << 20))
        n += 1
except OSError:
    print("full after", n, flush=True)
    raise
print("ESCAPED wrote", n, "MiB")
'''
FILL_INODES = '''
import tempfile
top = os.path.join(tempfile.gettempdir(), "many")
os.mkdir(top)
n = 0
try:
    while n < 2 * $inodes:
        open(f"{top}/{n}", "w").close()
        n += 1
    print("ESCAPED made", n, "files")
except OSError as exc:
    print("files", n, exc.strerror)
'''
# -- cleanup: what recursive removal chokes on, and symlinks it must not follow ---------------
DEEP_TREE = '''
import socket
HOME = os.getcwd()
def chain(top, depth, name):
    os.mkdir(top)
    os.chdir(top)
    for _ in range(depth):  # by chdir: relative, one path walk a level
        os.mkdir(name)
        os.chdir(name)
    os.symlink("$canary_dir", "to_host_dir")
    os.chdir(HOME)
for base in (HOME, os.environ["TMPDIR"]):
    chain(base + "/deep", $depth, "d")
    chain(base + "/long", 24, "n" * 255)  # ~6,000-byte paths: past PATH_MAX
    os.makedirs(base + "/locked/inner")
    os.chmod(base + "/locked/inner", 0)
    os.chmod(base + "/locked", 0)
    os.mkfifo(base + "/fifo")
    socket.socket(socket.AF_UNIX).bind(base + "/sock")
    os.symlink("$canary_dir", base + "/to_host_dir")
    os.symlink("$canary_file", base + "/to_host_file")
'''
SYMLINK_HOST = '''
os.symlink("$canary_file", "secret.txt")
os.symlink("$canary_dir", "host_dir")
os.symlink("/etc/passwd", "passwd")
for label, attack in [("read", lambda: open("secret.txt").read()),
                      ("plant", lambda: open("host_dir/planted.txt", "w").write("x")),
                      ("list", lambda: os.listdir("host_dir"))]:
    try:
        print("ESCAPED", label, attack())
    except OSError:
        print("blocked", label)
'''
# -- memory and processes: each within its own limit ------------------------------------------
HOLD_MEMFD = '''
each = min(64, $file_mb) << 20  # many memfds, each within the file size cap
chunk, fds = b"x" * (1 << 20), []
while len(fds) * each < 3 * $memory_mb << 20:
    fd = os.memfd_create("hold")
    for off in range(0, each, 1 << 20):
        os.pwrite(fd, chunk, off)
    fds.append(fd)
print("ESCAPED held", len(fds) * each >> 20, "MiB in memfds")
'''
MEMORY_BOMB = '''
blocks = []
while True:
    blocks.append(bytearray(64 << 20))
'''
FORK_BOMB = '''
import time
n = 0
try:
    for _ in range(2 * $procs):
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        n += 1
    print("ESCAPED forked", n)
except OSError as exc:
    print("forks", n, exc.strerror)
'''
THREAD_BOMB = '''
import threading, time
n = 0
try:
    while n < 2 * $procs + 1000:
        threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
        n += 1
    print("ESCAPED started", n, "threads")
except (RuntimeError, OSError, MemoryError) as exc:
    print("threads", n, exc)
'''
SPINNING_DAEMON = '''
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            pass
    os._exit(0)
print("detached")
'''
FD_EXHAUSTION = '''
fds = []  # held to the end of the run
try:
    while len(fds) < 100_000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    print("ESCAPED opened", len(fds))
except OSError as exc:
    print("fds", len(fds), exc.strerror)
'''
KILL_OTHERS = '''
import signal
mine = {0, os.getpid(), os.getppid()}
hit = []
for pid in [-1, $zygote, $host, *range(1, 4096)]:  # -1: every process it may signal
    if pid not in mine:
        try:
            os.kill(pid, signal.SIGKILL)
            hit.append(pid)
        except OSError:
            pass
print("killed", hit)
'''
FLOOD_BOTH = '''
chunk = b"y" * 65536
while True:
    os.write(1, chunk)
    os.write(2, chunk)
'''
# -- frames forged on the run's own message channel --------------------------------------------
FORGE = '''
import json, struct, time, zlib
_channel = sys.modules["sandbox.inside.request"].current()
def raw(header, blobs=(), text=None):
    data = (text or json.dumps({"v": 1, "blobs": [len(b) for b in blobs], **header})).encode()
    return struct.pack("!I", len(data)) + data + b"".join(blobs)
def forge(*frames):
    _channel.sock.sendall(b"".join(frames))
def _chunk(kind, body):
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))
# A whole 1x1 PNG: the host keeps an image frame as an image only when its bytes are one (returned_types.py).
WHOLE_PNG = (b"\\x89PNG\\r\\n\\x1a\\n" + _chunk(b"IHDR", struct.pack("!IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(b"\\x00\\x00")) + _chunk(b"IEND", b""))
'''
#: kind -> (forgery, what the error names). The run then sleeps: the host must stop it.
BAD_FRAMES = {
    "forged_unavailable": ('forge(raw({"type": "unavailable", "layer": "seccomp", "reason": "forged", "fix": "-"}))',
                           "'unavailable' frame arrived after 'ready'"),
    "forged_nested": ('forge(raw(None, text=\'{"v": 1, "type": "denied", "blobs": [], "event": "x", "detail": \''
                      ' + "[" * 200000 + "]" * 200000 + "}"))', "levels deep"),
    "forged_wrong_type": ('forge(raw({"type": "done", "maxrss_kb": "lots"}))', "field 'maxrss_kb'"),
    "forged_oversize": ('forge(struct.pack("!I", (1 << 20) + 1) + b"{" * 100)', "exceeds"),
    "forged_value": ('forge(raw({"type": "value", "codec": "bytes"}, (b"x",)))', "only call"),
    "forged_escaping_name": ('forge(raw({"type": "image", "name": "../../x.png", "mime_type": "image/png"}, (b"x",)))',
                             "field 'name' must be a path below the work dir"),
}
#: A forged ``done``, every stream and the channel closed: the host has a result while the process lives on.
FORGED_DONE = FORGE + '''
forge(raw({"type": "done"}))
os.closerange(0, 1 << 16)
time.sleep(600)
'''
FORGED_IMAGES = FORGE + '''
forge(raw({"type": "image", "name": "i.png", "mime_type": "image/png"}, (WHOLE_PNG,)) * 10_000)
print("went on")
'''
#: The files HOSTILE_NAMES writes in its work dir: name in the run -> (name in the Result, content).
NAMED = {"...": ("...", "dots"), "x." + "e" * 250: ("x." + "e" * 250, "long extension"),
         "\x1b[2Jclear.txt": ("\x1b[2Jclear.txt", "escape sequence"),
         b"\xff\xfe.txt": ("\\udcff\\udcfe.txt", "not UTF-8")}
#: 7 forged images whose names are too long, repeat, hold a lone surrogate or escape sequences (one that leaves the
#: work dir, is empty or holds NUL fails the run: forged_escaping_name).
HOSTILE_NAMES = FORGE + r'''
PNG = WHOLE_PNG + b"x" * 100
for name in ["\ud800.png", "x." + "e" * 250, "n" * 400 + ".png", "\x1b]0;pwned\x07.png", "dup.png", "dup.png",
             "sub/..png"]:
    forge(raw({"type": "image", "name": name, "mime_type": "image/png"}, (PNG,)))
''' + f"for name, text in {[(name, text) for name, (_, text) in NAMED.items()]!r}:\n    open(name, 'w').write(text)\n"


def values(token: str, env: Env) -> dict[str, object]:
    limits = env.limits
    return {"token": token, "disk_mb": limits.max_disk_mb, "inodes": limits.max_disk_inodes,
            "memory_mb": limits.memory_mb, "file_mb": limits.max_file_size_mb, "procs": limits.max_processes,
            "canary_dir": env.canary.dir, "canary_file": env.canary.file, "zygote": env.zygote, "host": env.host,
            "depth": DEPTH}


@dataclass(frozen=True)
class Hostile:
    """A hostile kind: its snippet (after PRELUDE) and the check of its result."""

    weight: int
    code: str
    check: Callable[[str, Env], Check]
    """(token, env) -> the check; "never ESCAPED" and ``starts_with(token)`` are added to it."""
    needs: str | None = None
    token_first: bool = True
    """False where the snippet writes with ``os.write`` too: raw writes travel on their own pipe, so a
    printed line may arrive after raw bytes written later (sandbox/streams.py); the token is then anywhere."""

    def kind(self, name: str) -> Kind:
        def build(token: str, env: Env) -> Job:
            code = Template(PRELUDE + self.code).substitute(values(token, env))
            own = starts_with(token) if self.token_first else somewhere(token)
            return Job(name, code, None, None, all_of(own, never("ESCAPED"), self.check(token, env)))
        return Kind(self.weight, build, hostile=True, needs=self.needs)


def _memory(token: str, env: Env) -> Check:
    if env.memcg:  # the run's cgroup counts memfd pages; its OOM ends the run
        return expect(FAILED, "memory_limit", in_error="limits.memory_mb")
    return expect(FAILED, "exception", in_error="Operation not permitted")  # memfd_create refused


def _names(token: str, env: Env) -> Check:
    want = sorted(NAMED.values())

    def files(r) -> str | None:
        got = sorted((f.name, f.data.decode(errors="replace")) for f in r.files)
        return None if got == want else f"files {got} != {want}"
    return all_of(expect(OK, stdout=f"{token}\n", images=7), files)


def _flood(token: str, env: Env) -> Check:
    cap = env.limits.max_output_bytes

    def capped(r) -> str | None:
        size = len(r.stdout.encode()) + len(r.stderr.encode())
        return None if size <= cap else f"{size} bytes of output over the cap {cap}"
    return all_of(expect(FAILED, "output_limit"), capped)


def _forged_images(token: str, env: Env) -> Check:
    cap = env.limits.max_returned_images
    note = f"{10_000 - cap} more images were not returned"

    def noted(r) -> str | None:
        return None if any(d.kind == "limit" and d.detail.startswith(note) for d in r.denied) else \
            f"no {note!r} in {[d.detail for d in r.denied][:3]}"
    return all_of(expect(OK, stdout=f"{token}\nwent on\n", images=cap), noted)


def _bad_frame(forgery: str, fragment: str) -> Hostile:
    return Hostile(1, FORGE + "print('forging', flush=True)\n" + forgery + "\ntime.sleep(120)\n",
                   lambda token, env: expect(FAILED, "protocol", stdout=f"{token}\nforging\n",
                                             in_error=fragment))


HOSTILE: dict[str, Hostile] = {
    "fill_disk": Hostile(1, FILL_DISK, lambda t, e: all_of(
        expect(FAILED, "exception", in_error="No space left on device"),
        number_between("full after", e.limits.max_disk_mb // 2, e.limits.max_disk_mb)), needs="private_disk"),
    "fill_inodes": Hostile(1, FILL_INODES, lambda t, e: all_of(
        expect(OK, in_output="No space left on device"),
        number_between("files", e.limits.max_disk_inodes // 2, e.limits.max_disk_inodes + disk.RESERVED_INODES)),
        needs="private_disk"),
    "deep_tree": Hostile(2, DEEP_TREE, lambda t, e: all_of(expect(OK, stdout=f"{t}\n"), never(e.canary.text))),
    "deep_tree_died": Hostile(1, DEEP_TREE + "os._exit(3)\n", lambda t, e: all_of(
        expect(FAILED, "crashed", stdout=f"{t}\n", in_error="status 3"), never(e.canary.text))),
    "symlink_host": Hostile(2, SYMLINK_HOST, lambda t, e: all_of(
        expect(OK, stdout=f"{t}\nblocked read\nblocked plant\nblocked list\n"), never(e.canary.text))),
    "hold_memfd": Hostile(1, HOLD_MEMFD, _memory),
    "memory_bomb": Hostile(1, MEMORY_BOMB, lambda t, e: expect(FAILED, "memory_limit", in_error="MemoryError")),
    "fork_bomb": Hostile(1, FORK_BOMB, lambda t, e: all_of(
        expect(OK, in_output="Resource temporarily unavailable"),
        number_between("forks", 0, e.limits.max_processes - 1))),
    "thread_bomb": Hostile(1, THREAD_BOMB, lambda t, e: all_of(
        expect(OK), number_between("threads", 0, e.limits.max_processes))),
    "spinning_daemon": Hostile(2, SPINNING_DAEMON, lambda t, e: expect(OK, stdout=f"{t}\ndetached\n")),
    # stderr unchecked: the worker's epilogue prints a traceback there (xfail in test_hostile_output.py)
    "fd_exhaustion": Hostile(2, FD_EXHAUSTION, lambda t, e: all_of(
        expect(OK, in_output="Too many open files"), number_between("fds", 1, e.limits.max_open_files))),
    "kill_others": Hostile(2, KILL_OTHERS, lambda t, e: expect(OK, stdout=f"{t}\nkilled []\n")),
    "flood_both": Hostile(1, FLOOD_BOTH, _flood, token_first=False),
    "forged_done": Hostile(1, FORGED_DONE, lambda t, e: expect(OK, stdout=f"{t}\n")),
    "forged_images": Hostile(1, FORGED_IMAGES, _forged_images),
    "hostile_names": Hostile(2, HOSTILE_NAMES, _names),
    **{name: _bad_frame(forgery, fragment) for name, (forgery, fragment) in BAD_FRAMES.items()},
}

#: The hostile rows of the mix's table.
KINDS: dict[str, Kind] = {name: row.kind(name) for name, row in HOSTILE.items()}
