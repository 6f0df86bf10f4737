"""Layer 2: ``prctl(PR_SET_NO_NEW_PRIVS, 1)``.

After it, no ``execve`` can grant privileges (setuid/setgid bits and file
capabilities are ignored), and it is what lets an unprivileged process install a
seccomp filter and a Landlock domain. It is irreversible and inherited by every child.
"""

from __future__ import annotations

from typing import Any

from ..policy import Policy
from . import _sys

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39


def probe() -> tuple[bool, str]:
    """Available since Linux 3.5: ask the kernel whether the option is known."""
    try:
        _sys.prctl(PR_GET_NO_NEW_PRIVS, name="prctl(PR_GET_NO_NEW_PRIVS)")
    except OSError as exc:
        return False, f"{exc} (needs Linux >= 3.5)"
    return True, "prctl(PR_SET_NO_NEW_PRIVS) is available"


def describe(policy: Policy) -> str:
    """One line: what the layer does."""
    return "no_new_privs: execve can never gain privileges (setuid bits, file capabilities ignored)"


def apply(policy: Policy, ctx: Any) -> None:
    """Set the flag and check that it stuck; raises ``OSError`` naming the prctl."""
    _sys.prctl(PR_SET_NO_NEW_PRIVS, 1, name="prctl(PR_SET_NO_NEW_PRIVS)")
    if _sys.prctl(PR_GET_NO_NEW_PRIVS, name="prctl(PR_GET_NO_NEW_PRIVS)") != 1:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) returned success but the flag is not set")


def is_set() -> bool:
    """Whether this process already has no_new_privs."""
    return _sys.prctl(PR_GET_NO_NEW_PRIVS, name="prctl(PR_GET_NO_NEW_PRIVS)") == 1
