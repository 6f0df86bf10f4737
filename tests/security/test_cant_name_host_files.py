"""Names and text from inside cannot crash the CLI, escape its folders or drive the terminal.

Real snippets through the real CLI (``python -m sandbox run|batch`` in a subprocess).
A snippet chooses the names of the files it writes in its work dir (a 252-character
name whose "extension" is 250 characters, a name of only dots, two files of one name
in two folders, escape sequences, bytes that are not UTF-8), and, running in the
worker's process, it can forge the worker's frames: images named with a lone surrogate, escape sequences, 400 characters, or a number (a name that
leaves the work dir, ``..``, ``''`` or one with NUL fails the run: tests/security/test_cant_forge_frames.py);
"done" frames whose fields have the wrong type; denied actions whose kind is a
malformed mathtext formula. ``--out`` and ``--images-dir`` must write every file under
a safe, unique name inside their folder (or report it), within the policy's caps;
a batch must give every item a record and still write its report, whose summary stays bounded
whatever kinds of denials the runs forge.
"""

from __future__ import annotations

import json
import os
import pty
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import sandbox

ROOT = Path(__file__).resolve().parents[2]

#: Forge frames on the worker's own channel (the snippet runs in the worker's process).
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))


#: A whole 1x1 PNG: the host keeps an image frame as an image only when its bytes are one (returned_types.py).
WHOLE_PNG = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack("!IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(b"\x00\x00")) + _chunk(b"IEND", b""))
FORGE = r'''
import json, os, sys
_proto = sys.modules["sandbox.protocol"]
_chan = sys.modules["sandbox.inside.request"].current()
def forge(kind, blob=b"", **fields):
    header = {"v": _proto.VERSION, "type": kind, "blobs": [len(blob)] if blob else [], **fields}
    raw = json.dumps(header).encode()  # ASCII JSON: a lone surrogate travels as \ud800
    _chan.sock.sendall(_proto._LEN.pack(len(raw)) + raw + blob)
PNG = bytes.fromhex("%s") + b"x" * 100
''' % WHOLE_PNG.hex()
HOSTILE_NAMES = FORGE + r'''
for name in ["\ud800.png", "x." + "e" * 250, "n" * 400 + ".png", "\x1b]0;pwned\x07.png", "dup.png", "dup.png",
             "sub/..png", "sub/" + "d" * 300 + "/x.png"]:
    forge("image", PNG, name=name, mime_type="image/png")
forge("file", b"text", name="deep/er/escape.txt", mime_type="text/plain")
open("...", "w").write("dots")
open("x." + "e" * 250, "w").write("long extension")
os.makedirs("a"); os.makedirs("b")
open("a/same.txt", "w").write("a"); open("b/same.txt", "w").write("b")
open("\x1b[2Jclear.txt", "w").write("escape sequence")
open(b"\xff\xfe.txt", "w").write("not UTF-8")
import matplotlib.pyplot as plt
plt.plot([1, 2]); plt.show()
print("printed")
'''
#: Every name above that the run returns (8 forged images, the figure, 1 forged + 6 work-dir files).
#: (Names of the wrong type are the frame checks' business: tests/security/test_cant_forge_frames.py.)
RETURNED = 16


def sandbox_cli(*args: str, cwd: Path, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], check=False, cwd=cwd, capture_output=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def everything_under(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*"))


def assert_plain_files(folder: Path) -> list[str]:
    names = sorted(os.listdir(folder))
    for name in names:
        assert (folder / name).is_file() and not (folder / name).is_symlink(), name
        assert len(name.encode()) <= 255 and name.strip(".") and name.isprintable(), repr(name)
    return names


def test_cant_crash_run_out_or_write_outside_it(tmp_path):
    (tmp_path / "snippet.py").write_text(HOSTILE_NAMES)
    out = tmp_path / "deep" / "er" / "out"  # ../../escape.png from out would land in tmp_path/deep
    proc = sandbox_cli("run", "snippet.py", "--out", str(out), cwd=tmp_path)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert proc.stdout == b"printed\n"
    names = assert_plain_files(out)
    assert everything_under(tmp_path) == sorted([tmp_path / "snippet.py", tmp_path / "deep", tmp_path / "deep" / "er",
                                                 out, *(out / n for n in names)]), "a file landed outside --out"
    assert len(names) == RETURNED, names  # unique: nothing overwritten, nothing lost
    assert {"dup.png", "dup_2.png", "same.txt", "same_2.txt", "escape.txt", "figure_1.png", "x.png",
            "_..png",  # "sub/..png": a hidden file, shown (outfiles.inert)
            "_udcff_udcfe.txt"} <= set(names)
    long_names = [n for n in names if "eeeee" in n]  # the forged image's and the work-dir file's, both kept
    assert len(long_names) == 2 and all(len(n.encode()) <= 255 for n in long_names), long_names
    assert sorted((out / n).read_bytes() for n in long_names) == \
        sorted([WHOLE_PNG + b"x" * 100, b"long extension"])
    assert sorted(line.split(" ", 1)[1] for line in stderr.splitlines() if line.startswith("wrote ")) == \
        sorted(str(out / n) for n in names)


def test_run_out_is_bounded_by_the_policy_caps(tmp_path):
    policy = tmp_path / "small.toml"
    policy.write_text("[limits]\nmax_returned_files = 3\nmax_returned_images = 3\nmax_returned_file_bytes = 1000\n")
    (tmp_path / "snippet.py").write_text(FORGE + r'''
for index in range(50):  # past the worker's caps: straight onto the channel
    forge("image", PNG + b"i" * 5000, name=f"forged_{index}.png", mime_type="image/png")
for index in range(10):
    open(f"file_{index}.txt", "w").write("f" * 5000)
''')
    out = tmp_path / "out"
    proc = sandbox_cli("run", "snippet.py", "--out", str(out), "--policy", str(policy), cwd=tmp_path)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    names = assert_plain_files(out)
    images = [n for n in names if n.endswith(".png")]
    files = [n for n in names if n.endswith(".txt")]
    assert len(images) == 3 and len(files) <= 3 and len(names) == len(images) + len(files), names
    assert all((out / n).stat().st_size <= 1000 for n in names)
    # The host kept 3 of the 50 forged images while reading (sandbox/inbox.py); --out wrote those 3.


def run_on_a_terminal(args: list[str], cwd: Path, timeout: float = 180) -> bytes:
    """Run ``python -m sandbox ...`` with stdout and stderr on a pseudo-terminal; what it wrote."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=secondary, stderr=secondary, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(secondary)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    return b"".join(chunks)


TERMINAL_ATTACK = ('print("\\x1b]0;retitled\\x07\\x1b[2J\\x1b[31mred\\rover\\u202eevil")\n'
                   'import sys; print("\\x1b[1Aup", file=sys.stderr)\n'
                   'open("\\x1b[5mblink.txt", "w").write("x")\n')


def test_terminal_sees_control_sequences_escaped(tmp_path):
    (tmp_path / "snippet.py").write_text(TERMINAL_ATTACK)
    shown = run_on_a_terminal(["run", "snippet.py", "--out", str(tmp_path / "out")], tmp_path)
    assert b"\x1b" not in shown and b"\x07" not in shown and "\u202e".encode() not in shown, shown
    assert rb"\x1b]0;retitled\x07\x1b[2J\x1b[31mred\x0dover\u202eevil" in shown
    assert rb"\x1b[1Aup" in shown
    assert b"_[5mblink.txt" in shown


def test_pipe_gets_the_bytes_unchanged(tmp_path):
    (tmp_path / "snippet.py").write_text(TERMINAL_ATTACK)
    proc = sandbox_cli("run", "snippet.py", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0
    # output: stdout, then what the snippet wrote to stderr (the service's format)
    assert proc.stdout == "\x1b]0;retitled\x07\x1b[2J\x1b[31mred\rover\u202eevil\n\x1b[1Aup\n".encode()


def test_cant_stop_a_batch_or_its_report(tmp_path):
    items = [
        {"id": "before", "code": "print('before')"},
        {"id": "names", "code": HOSTILE_NAMES},
        {"id": "mathtext", "code": FORGE + r'''
for kind in ["$\\frac{", "a$b$c", "$x^$", "\ud800\x00", "k" * 5000, "\x1b[31m"]:
    forge("denied", event=kind[:60], detail=("$" + kind)[:500])  # within the frame's caps: they reach the report
print("denied forged")
'''},
        {"id": "wrong_types", "code": FORGE + 'forge("done", maxrss_kb="lots", cpu_s=[1])\nos._exit(0)'},
        {"id": "after", "code": "print('after')"},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(item) + "\n" for item in items))
    proc = sandbox_cli("batch", str(corpus), "--out", "results.jsonl", "--images-dir", "images", "-j", "2",
                       "--report", "report.png", cwd=tmp_path, timeout=300)
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 1) and "Traceback" not in stderr, stderr[-3000:]
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert set(records) == {item["id"] for item in items}, "an item got no record"
    assert records["before"]["output"] == "before\n" and records["after"]["output"] == "after\n"
    assert records["mathtext"]["output"] == "denied forged\n"
    names = assert_plain_files(tmp_path / "images")
    saved = [image["path"] for image in records["names"]["images"]]
    assert len(saved) == 9 and None not in saved  # 8 forged + the figure
    assert sorted(os.path.basename(p) for p in saved) == sorted(names)
    assert all(os.path.dirname(os.path.abspath(tmp_path / p)) == str(tmp_path / "images") for p in saved)
    assert sorted(everything_under(tmp_path)) == sorted([tmp_path / "corpus.jsonl", tmp_path / "results.jsonl",
                                                         tmp_path / "report.png", tmp_path / "images",
                                                         *(tmp_path / "images" / n for n in names)])
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    from sandbox.batch_report import load_results, write_report
    write_report(load_results(str(tmp_path / "results.jsonl")), str(tmp_path / "report.html"))
    assert "sandbox batch report" in (tmp_path / "report.html").read_text()


def test_a_name_or_text_that_is_not_utf8_is_reported_not_a_crash(boxes):
    """os.listdir gives such a name with lone surrogates, which no JSON encoder writes as
    UTF-8: the worker sends them as text ("\\udcff") instead of dying mid-report."""
    r = boxes["default"].run("open(b'\\xff.txt', 'w').write('x')\nraise ValueError('bad \\udcff')")
    assert r.outcome == sandbox.Outcome.FAILED and r.reason == "exception", (r.reason, r.error)
    assert r.error.startswith("bad \\udcff\n") and [f.name for f in r.files] == ["\\udcff.txt"]
    for text in (r.error, r.output, r.files[0].name):
        text.encode("utf-8")  # no lone surrogate reached the host


def test_forged_denied_kinds_keep_the_batch_summary_bounded(tmp_path):
    """A run chooses the kinds of its denials (200 a run, forged on its worker's channel): the batch's tally kept
    each new one by name (~50 KB a record: 100,000 such runs, a 5 GB tally) and printed a summary line for each.
    Past batch_tally.MAX_DENIED_KINDS names, kinds are counted together; the records keep every one."""
    from sandbox.batch_tally import MAX_DENIED_KINDS, OTHER_KINDS
    runs, per_run = 3, 200
    items = [{"id": f"forger-{n}", "code": FORGE + f'for i in range({per_run}):\n'
                                                    f'    forge("denied", event=f"forged-kind-{n}-{{i}}", detail="x")\n'}
             for n in range(runs)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(item) + "\n" for item in items))
    proc = sandbox_cli("batch", str(corpus), "--out", "results.jsonl", "-j", "2", cwd=tmp_path, timeout=300)
    assert proc.returncode in (0, 1) and b"Traceback" not in proc.stderr, proc.stderr.decode()[-3000:]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(len({d["kind"] for d in r["denied"]}) for r in records) == [per_run] * runs  # the records keep them
    summary = proc.stdout.decode().splitlines()
    named = [line for line in summary if "forged-kind-" in line]
    assert len(named) == MAX_DENIED_KINDS, summary
    other = [line.split() for line in summary if line.startswith(OTHER_KINDS)]
    assert other == [[*OTHER_KINDS.split(), str(runs * per_run - MAX_DENIED_KINDS), str(runs)]], summary


def test_no_written_name_is_an_option_to_a_command_on_the_folder(tmp_path):
    """The files a run names are written into --out under their own names: a run that saved "--checkpoint=1",
    "--checkpoint-action=exec=sh s.sh" and "s.sh" made `tar cf x.tar *` in that folder run s.sh on the host (and
    "-rf" is `rm *`'s). No name written begins with "-"."""
    (tmp_path / "snippet.py").write_text(FORGE + r'''
open("--checkpoint=1", "w").write("")
open("--checkpoint-action=exec=sh s.sh", "w").write("")
open("s.sh", "w").write("touch ../escaped\n")
open("-rf", "w").write("")
forge("image", PNG, name="sub/-figure.png", mime_type="image/png")
''')
    out = tmp_path / "out"
    proc = sandbox_cli("run", "snippet.py", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    names = assert_plain_files(out)
    assert sorted(names) == ["_-checkpoint-action=exec=sh s.sh", "_-checkpoint=1", "_figure.png", "_rf", "s.sh"]
    subprocess.run(["tar", "cf", str(tmp_path / "x.tar"), *names], cwd=out, check=True, capture_output=True)
    assert not (tmp_path / "escaped").exists()
