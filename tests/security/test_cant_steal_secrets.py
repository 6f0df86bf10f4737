"""Secret attacks: the host's environment, memory and fds stay out of reach."""

from __future__ import annotations

import pytest

import sandbox

from .attacks import host_values, snippet
from .conftest import HOST_SECRET, blocked, checked_run

SECRET_ATTACKS = {
    "environ_has_no_host_vars": 'print(sorted(os.environ))\nprint(os.environ.get("SANDBOX_TEST_HOST_SECRET"))',
    "proc_host_environ": 'attempt("host environ", lambda: open("/proc/$host/environ", "rb").read())',
    "proc_zygote_environ": 'attempt("zygote environ", lambda: open("/proc/$zygote/environ", "rb").read())',
    "proc_every_environ": ('for p in os.listdir("/proc"):\n'
                           '    if p.isdigit():\n'
                           '        try: print(open(f"/proc/{p}/environ", "rb").read())\n'
                           '        except OSError as e: print("blocked", p, e)'),
    "proc_host_mem": ('f = attempt("open mem", lambda: open("/proc/$host/mem", "rb"))\n'
                      'if f: attempt("read mem", lambda: f.read(16))'),
    "proc_host_maps": 'attempt("maps", lambda: open("/proc/$host/maps").read())',
    "process_vm_readv_host": ('buf = ctypes.create_string_buffer(64)\n'
                              'iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)\n'
                              'riov = (ctypes.c_void_p * 2)(0x400000, 64)\n'
                              'attempt("process_vm_readv", lambda: raw(310, $host, ctypes.addressof(iov), 1, '
                              'ctypes.addressof(riov), 1, 0))'),
    "pidfd_getfd_from_host": ('fd = attempt("pidfd_open", lambda: raw(434, $host, 0))\n'
                              'attempt("pidfd_getfd", lambda: raw(438, fd if fd else -1, 3, 0))'),
    "keyctl_read_keyrings": 'attempt("keyctl", lambda: raw(250, 0, -3, 0, 0))',
    "inherited_fds_only_ours": ('import stat\n'
                                'for fd in map(int, os.listdir("/proc/self/fd")):\n'
                                '    try: print(fd, os.readlink(f"/proc/self/fd/{fd}"))\n'
                                '    except OSError: pass'),
}


@pytest.mark.parametrize("name", sorted(SECRET_ATTACKS))
def test_cant_read_host_secrets(sb, name):
    r = checked_run(sb, snippet(SECRET_ATTACKS[name], **host_values(sb)))
    text = r.stdout + r.stderr + (r.error or "")
    assert HOST_SECRET not in text
    assert r.outcome == sandbox.Outcome.OK, r  # each attack catches its refusals: a run that failed never attacked
    if "attempt(" in SECRET_ATTACKS[name]:
        blocked(r, "blocked ")  # it reached its attempt, and that was refused
    else:
        blocked(r)
    if name == "inherited_fds_only_ours":  # stdin/stdout/stderr, the run's pipes and socket: nothing of the host's
        assert ".py" not in r.stdout and "/root" not in r.stdout and "TCP" not in r.stdout, r.stdout
