"""``sandbox run FILE|-`` with what a careless user passes it: clear errors (exit 2), never a traceback or all memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sandbox_run(*args: str, cwd: Path, stdin: "bytes | int | None" = None) -> subprocess.CompletedProcess:
    """``python -m sandbox run ARGS`` under a 2 GiB address space: an unbounded read fails fast, not the host."""
    def cap_memory() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    return subprocess.run([sys.executable, "-m", "sandbox", "run", *args], cwd=cwd, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=cap_memory, **feed)


def assert_refused(proc: subprocess.CompletedProcess, message: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err == f"sandbox: error: {message}\n"


@pytest.mark.parametrize("args, message", [
    (["/dev/zero"], "the snippet '/dev/zero' is over the limit of 1000000 bytes (policy 'default': "
                    "limits.max_code_bytes)"),
    (["ok.py", "--input", "/dev/zero"], "input file '/dev/zero' is over the limit of 2000000 bytes "
                                        "(policy 'default': limits.max_input_file_bytes)"),
    (["ok.py", "--input", "big.csv", "--policy", "strict"], "input file 'big.csv' is over the limit of "),
])
def test_an_endless_or_oversize_file_is_refused_unread(tmp_path, args, message):
    (tmp_path / "ok.py").write_text("print(1)\n")
    with open(tmp_path / "big.csv", "wb") as fh:
        fh.truncate(3 << 30)  # sparse: 3 GiB read whole would not fit the 2 GiB cap
    proc = sandbox_run(*args, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and message in err, err


def test_endless_stdin_is_refused_unread(tmp_path):
    with subprocess.Popen(["yes"], stdout=subprocess.PIPE) as yes:
        proc = sandbox_run("-", cwd=tmp_path, stdin=yes.stdout.fileno())
        yes.kill()
    assert_refused(proc, "the snippet from stdin is over the limit of 1000000 bytes (policy 'default': "
                         "limits.max_code_bytes)")


def test_stdin_that_is_not_utf8_is_named(tmp_path):
    proc = sandbox_run("-", cwd=tmp_path, stdin=b'print("\xe9")\n')
    assert_refused(proc, "cannot read the snippet from stdin: not UTF-8 text: 'utf-8' codec can't decode byte 0xe9 "
                         "in position 7: invalid continuation byte")


def test_closed_stdin_is_named(tmp_path):
    proc = subprocess.run(f"exec {sys.executable} -m sandbox run - <&-", shell=True, cwd=tmp_path,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_refused(proc, "cannot read the snippet from stdin: stdin is closed")


def test_a_snippet_file_with_a_byte_order_mark_runs(tmp_path):
    """As ``python FILE`` runs it (the mark was passed on: SyntaxError, invalid non-printable character U+FEFF)."""
    (tmp_path / "bom.py").write_bytes(b'\xef\xbb\xbfprint("bom")\n')
    proc = sandbox_run("bom.py", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, b"bom\n"), proc.stderr


def test_missing_folder_and_non_utf8_files_are_named(tmp_path):
    (tmp_path / "latin.py").write_bytes(b'print("\xe9")\n')
    assert_refused(sandbox_run("missing.py", cwd=tmp_path),
                   "cannot read the snippet 'missing.py': [Errno 2] No such file or directory: 'missing.py'")
    assert_refused(sandbox_run(".", cwd=tmp_path), "cannot read the snippet '.': [Errno 21] Is a directory: '.'")
    assert_refused(sandbox_run("latin.py", cwd=tmp_path),
                   "cannot read the snippet 'latin.py': not UTF-8 text: 'utf-8' codec can't decode byte 0xe9 in "
                   "position 7: invalid continuation byte")


def test_an_out_that_cannot_be_made_is_refused_before_the_run(tmp_path):
    """--out cannot be made (a file is in its path): the run ran, its figure was then lost ("cannot write image"),
    exit 1; it is refused before anything runs. A made --out the run left empty is removed again."""
    (tmp_path / "plot.py").write_text("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('drawn')\n")
    (tmp_path / "quiet.py").write_text("print('nothing drawn')\n")
    (tmp_path / "taken").write_text("a file, not a folder")
    proc = sandbox_run("plot.py", "--out", "taken/figures", cwd=tmp_path)
    assert_refused(proc, "--out 'taken/figures' cannot be made (ENOTDIR: Not a directory): the run's figures and "
                         "files would be lost; give another --out")
    assert proc.stdout == b""
    assert sandbox_run("plot.py", "--out", "figures/today", cwd=tmp_path).returncode == 0
    assert os.listdir(tmp_path / "figures" / "today") == ["figure_1.png"]
    quiet = sandbox_run("quiet.py", "--out", "empty/today", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == b"nothing drawn\n", quiet.stderr
    assert (tmp_path / "empty").is_dir() and not (tmp_path / "empty" / "today").exists()


def test_an_out_this_uid_may_not_write_is_refused_before_the_run():
    """README command 1 as uid 65534 in a checkout it may not write: the demo ran, then its figure was lost."""
    import tempfile

    from tests.security.attacks import NOBODY
    from tests.security.test_unprivileged import _readable_as

    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    checkout = Path(tempfile.mkdtemp(prefix="root-checkout-"))  # outside pytest's 0700 tree: nobody reaches it
    try:
        checkout.chmod(0o755)
        (checkout / "out").mkdir(mode=0o755)
        for out, message in (("out", f"--out 'out': uid {NOBODY} may not write into it: the run's figures and files "
                                     "would be lost; give another --out"),
                             ("new/figures", "--out 'new/figures' cannot be made (EACCES: Permission denied): the "
                                             "run's figures and files would be lost; give another --out")):
            proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "-", "--out", out], input=b"print(1)\n",
                                  capture_output=True, timeout=120, cwd=checkout,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, user=NOBODY, group=NOBODY,
                                  extra_groups=[])
            assert_refused(proc, message)
            assert proc.stdout == b""
    finally:
        shutil.rmtree(checkout)


def test_out_that_is_a_file_is_refused_before_the_run(tmp_path):
    """It ran, and its figures and files were lost, blamed on the first figure ("File exists")."""
    (tmp_path / "plot.py").write_text("print('ran')\n")
    (tmp_path / "taken").write_text("a file, not a folder")
    proc = sandbox_run("plot.py", "--out", "taken", cwd=tmp_path)
    assert_refused(proc, "--out 'taken' is a file, not a folder for the run's figures and files")
    assert proc.stdout == b""


def test_a_run_cannot_write_over_what_out_already_holds(tmp_path):
    """The run names its files: with --out at a project's folder it wrote its 'pyproject.toml' and 'notes.txt' over
    the user's own, silently (and a second run over the first's figure). What is there stays; the run's copies get
    the next free name, which the report gives."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("precious")
    (tmp_path / "out" / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "s.py").write_text("open('notes.txt', 'w').write('from the run')\n"
                                   "open('pyproject.toml', 'w').write('evil')\n")
    proc = sandbox_run("s.py", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "precious"
    assert (tmp_path / "out" / "pyproject.toml").read_text() == "[project]\n"
    assert (tmp_path / "out" / "notes_2.txt").read_text() == "from the run"
    assert (tmp_path / "out" / "pyproject_2.toml").read_text() == "evil"
    assert "wrote out/notes_2.txt\nwrote out/pyproject_2.toml\n" in proc.stderr.decode()


def test_a_run_cannot_plant_files_that_tools_load_from_out(tmp_path):
    """With --out at a project's folder, a run's conftest.py ran on the host at the user's next pytest there, and its
    json.py at the next script that imported json; its hidden .envrc and .pdbrc went unseen. Such names get a '_' in
    front; the run's other files keep theirs."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_x.py").write_text("import json\ndef test_x():\n    assert json.dumps(1) == '1'\n")
    (tmp_path / "s.py").write_text(
        "for name in ('conftest.py', 'json.py', 'sitecustomize.py', '.envrc', '.pdbrc', 'analysis.py', 'notes.txt'):\n"
        "    open(name, 'w').write(\"open('/tmp/planted-' + __name__, 'w')\\nraise SystemExit('planted')\\n\")\n")
    proc = sandbox_run(str(tmp_path / "s.py"), "--out", ".", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(project)) == ["_.envrc", "_.pdbrc", "__json.py", "_conftest.py", "_sitecustomize.py",
                                           "analysis.py", "notes.txt", "test_x.py"]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py"], cwd=project,
                           capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0 and "1 passed" in tests.stdout, tests.stdout + tests.stderr


def test_help_says_out_is_never_written_over(tmp_path):
    """README says --out never takes a file already there (the next free name); --help said only 'safe and unique'
    and 'image files', so a user reading it could not tell that the run's other files land there, renamed."""
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "figures from plt.show() and the files the snippet saves are written to --out" in text
    assert "never over a file already there (the next free name, figure_1_2.png, on its 'wrote' line)" in text
    assert "images and files the snippet produced, never over a file already there" in text


def test_the_readme_first_command_prints_a_table_and_writes_its_figure(tmp_path):
    """README's set-up line ends with 'sandbox run examples/demo.py --out demo-out': a table, demo-out/figure_1.png."""
    proc = sandbox_run(str(ROOT / "examples" / "demo.py"), "--out", "demo-out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["x", "y", "mean", "4.5", "28.5", "max", "9.0", "81.0"]
    assert (tmp_path / "demo-out" / "figure_1.png").read_bytes().startswith(b"\x89PNG")
    assert proc.stderr.decode().splitlines()[0] == "wrote demo-out/figure_1.png"


def test_a_venv_this_uid_cannot_read_is_a_usage_error_naming_it():
    """``sandbox run --venv DIR`` as uid 65534 with DIR another user's (0700) ended in a PermissionError traceback
    from ``pyvenv.cfg``'s stat (exit 1); it is an error naming the venv, the file and the uid (exit 2)."""
    import tempfile

    from tests.security.attacks import NOBODY
    from tests.security.test_unprivileged import _readable_as

    if os.geteuid() != 0:
        pytest.skip("needs root to drop to uid 65534")
    if not _readable_as(NOBODY, sys.executable):
        pytest.skip(f"{sys.executable} is not readable by uid {NOBODY}")
    venv = Path(tempfile.mkdtemp(prefix="root-venv-"))  # root's, 0700
    try:
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        (venv / "bin").mkdir()
        (venv / "bin" / "python").symlink_to(sys.executable)
        proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "--venv", str(venv), "-"], input=b"print(1)\n",
                              capture_output=True, timeout=120, cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)},
                              user=NOBODY, group=NOBODY, extra_groups=[])
        assert_refused(proc, f"cannot use the virtual environment {venv}: Permission denied ({venv}/pyvenv.cfg); "
                             f"uid {NOBODY} needs to read it and run its bin/python")
    finally:
        shutil.rmtree(venv)


@pytest.mark.parametrize("args", [["run", "-"], ["run", "-", "--json"], ["image", "list"]])
def test_a_reader_that_went_away_is_no_traceback(tmp_path, args):
    """``sandbox run x.py | head -1``, ``sandbox image list | head -1``: the reader closes the pipe. Each printed a
    BrokenPipeError traceback (only ``batch`` caught it); now they exit 1 with nothing on stderr. The read end is
    closed before the command starts, so every write of it fails, whatever the timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=tmp_path, input=b"print(1)\n",
                              stdout=write_end, stderr=subprocess.PIPE, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 1, (proc.returncode, err)


def test_code_given_with_c_runs_and_the_snippet_is_given_once(tmp_path):
    """``python -c`` habits: `sandbox run -c CODE` was a usage error showing the top-level usage."""
    proc = sandbox_run("-c", "import sys; print(6 * 7); sys.exit(3)", cwd=tmp_path)
    assert proc.stdout == b"42\n" and proc.returncode == 1, proc.stderr
    assert b"OUTCOME_FAILED" in proc.stderr
    assert_refused(sandbox_run(cwd=tmp_path), "give the snippet as FILE, - (stdin) or -c CODE: one of them")
    assert_refused(sandbox_run("s.py", "-c", "1", cwd=tmp_path),
                   "give the snippet as FILE, - (stdin) or -c CODE: one of them (got both: 's.py' and -c)")


def test_files_the_sandbox_cut_or_dropped_are_named(tmp_path):
    """The host's caps cut a 17 MB file to 16 MB and dropped the files past 32 before the CLI saw them: --out had
    the cut file and lacked the rest without a word, where the API's Result says both (File.truncated, denied)."""
    code = ("open('big.bin', 'wb').write(b'x' * (17 << 20))\n"
            "for i in range(40):\n    open(f'f{i:02}.txt', 'w').write('1')\n")
    proc = sandbox_run("-c", code, "--out", "out", cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert f"wrote out{os.sep}big.bin (cut to 16000000 bytes by the sandbox)" in err
    assert "sandbox: 9 more files were not returned (policy 'default': limits.max_returned_files)" in err, err
    assert len(os.listdir(tmp_path / "out")) == 32
