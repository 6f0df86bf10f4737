"""Persistence attacks: nothing run A leaves behind is visible to run B."""

from __future__ import annotations

import pytest

from .attacks import snippet
from .conftest import checked_run

PERSIST = {
    # name: (run A plants, run B looks; B prints ESCAPED if it finds the plant)
    "file_in_workdir": ('open("plant.txt", "w").write("A")',
                        'attempt("find", lambda: open("plant.txt").read())'),
    "file_in_tmpdir": ('import tempfile\nopen(os.path.join(tempfile.gettempdir(), "plant.txt"), "w").write("A")',
                       'import tempfile\nattempt("find", lambda: open(os.path.join(tempfile.gettempdir(), "plant.txt")).read())'),
    "file_in_dev_shm": ('attempt("plant", lambda: open("/dev/shm/plant.txt", "w").write("A"))',
                        'attempt("find", lambda: open("/dev/shm/plant.txt").read())'),
    "file_in_host_tmp": ('attempt("plant", lambda: open("/tmp/sandbox-plant.txt", "w").write("A"))',
                         'attempt("find", lambda: open("/tmp/sandbox-plant.txt").read())'),
    "detached_daemon": ('import time\n'
                        'if os.fork() == 0:\n'
                        '    os.setsid()\n'
                        '    if os.fork() == 0:\n'
                        '        while True:\n'
                        '            try: open("/dev/shm/beacon", "w").write(str(time.time()))\n'
                        '            except OSError: pass\n'
                        '            time.sleep(0.05)\n'
                        '    os._exit(0)\n'
                        'time.sleep(0.2)',
                        'import time\ntime.sleep(0.3)\nattempt("beacon", lambda: open("/dev/shm/beacon").read())'),
    "monkeypatch_stdlib": ('import json\njson.dumps = lambda *a, **k: "PWNED"',
                           'import json\nprint("ESCAPED patched json") if json.dumps(1) == "PWNED" else print("clean")'),
    "plant_module_on_sys_path": ('attempt("plant", lambda: open(os.path.join(sys.path[-1], "evil_mod.py"), "w").write("x=1"))',
                                 'attempt("import", lambda: __import__("evil_mod"))'),
    "environment_variable": ('os.environ["PLANTED"] = "A"', 'attempt("env", lambda: os.environ["PLANTED"])'),
    # numpy's global RNG, not random's: CPython reseeds ``random`` after a fork by itself.
    "rng_state_shared": ('import numpy as np\nprint(np.random.random())', 'import numpy as np\nprint(np.random.random())'),
}


@pytest.mark.parametrize("name", sorted(PERSIST))
def test_cant_persist_between_runs(sb, name):
    plant, look = PERSIST[name]
    a = checked_run(sb, snippet(plant))
    b = checked_run(sb, snippet(look))
    text = b.stdout + b.stderr + (b.error or "")
    assert "ESCAPED" not in text, text
    # Both snippets ran their steps (a refusal or a KeyError is the attack failing; a NameError or a SyntaxError is a
    # broken snippet that planted or looked at nothing, and passed).
    both = text + a.stdout + a.stderr + (a.error or "")
    assert not any(broken in both for broken in ("NameError", "SyntaxError", "IndentationError")), both
    if name == "monkeypatch_stdlib":
        assert b.stdout == "clean\n", b.stdout
    if name == "rng_state_shared":
        assert a.stdout != b.stdout  # every run is reseeded
    if name == "file_in_workdir":
        assert "No such file" in text
