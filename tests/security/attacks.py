"""Shared pieces of attack snippets: a prelude with ``attempt()`` and raw-syscall helpers."""

from __future__ import annotations

import os
from string import Template

PRELUDE = r'''
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def attempt(label, fn):
    """Run one attack step: print ESCAPED if it worked, else the readable refusal (also on stderr)."""
    try:
        value = fn()
    except (OSError, ValueError) as exc:
        print(f"blocked {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"blocked {label}: {exc}")
        return None
    print(f"ESCAPED {label}: {value!r}"[:300])
    return value
def raw(nr, *args):
    """A raw system call; raises OSError with the errno like Python would."""
    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res
'''


def snippet(body: str, **values: object) -> str:
    """PRELUDE + body with ``$name`` placeholders filled (braces in the body stay as they are)."""
    return PRELUDE + Template(body).substitute({k: str(v) for k, v in values.items()})


def host_values(sb) -> dict[str, object]:
    """Pids an attack aims at: the zygote and this test process (the host)."""
    return {"zygote": sb.zygote_pids[0], "host": os.getpid()}
