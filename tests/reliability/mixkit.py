"""The vocabulary of the soak's mix (mix.py: benign kinds, hostile.py: hostile ones).

A :class:`Job` is a snippet plus a check of its own Result; a :class:`Kind` is a row of
the mix's table (weight, builder, hostile or not, what it needs of the host); a builder
gets the run's unique token and an :class:`Env`: the Sandbox's limits and what the
hostile kinds aim at (the zygote's and the host's pids, a :class:`Canary` of the host).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import sandbox
from sandbox import Outcome
from sandbox.confine import disk, memcg
from sandbox.policy import Limits

Check = Callable[[sandbox.Result], "str | None"]
"""Returns what is wrong with a result, or None."""


@dataclass(frozen=True)
class Job:
    kind: str
    code: str
    files: dict[str, bytes] | None
    timeout: float | None
    check: Check


class Canary:
    """A host dir holding a secret file, outside every work dir: hostile runs point symlinks at
    both and leave them for cleanup to meet; :meth:`problem` says whether anything changed."""

    def __init__(self, parent: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="soak-canary-", dir=parent)
        os.chmod(self.dir, 0o755)  # readable: only the confinement keeps runs from it
        self.file = os.path.join(self.dir, "secret.txt")
        self.text = f"soak-canary-{os.getpid()}-{os.urandom(8).hex()}"
        with open(self.file, "w") as fh:
            fh.write(self.text)
        os.chmod(self.file, 0o644)

    def problem(self) -> str | None:
        try:
            entries = sorted(os.listdir(self.dir))
            with open(self.file) as fh:
                text = fh.read()
            mode = os.stat(self.file).st_mode & 0o777
        except OSError as exc:
            return f"canary: {exc}"
        if entries != ["secret.txt"] or text != self.text or mode != 0o644:
            return f"canary changed: entries {entries}, text {text[:60]!r}, mode {oct(mode)}"
        return None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Env:
    """What a builder may know: the limits its run meets and what hostile runs aim at."""

    limits: Limits
    zygote: int
    host: int
    canary: Canary
    memcg: bool
    """Runs get a memory cgroup (else memfd_create and shmget are refused)."""
    private_disk: bool
    """Runs get a size- and inode-limited disk of their own (else they would fill the host's)."""

    @classmethod
    def of(cls, sb: sandbox.Sandbox, canary: Canary) -> "Env":
        return cls(limits=sb.policy.limits, zygote=sb.zygote_pids[0], host=os.getpid(), canary=canary,
                   memcg=memcg.probe()[0],
                   private_disk="namespaces" in sb.policy.confinement.layers and disk.probe()[0])


@dataclass(frozen=True)
class Kind:
    """One row of the mix."""

    weight: int
    build: Callable[[str, Env], Job]
    hostile: bool = False
    needs: str | None = None
    """An Env flag the kind needs (e.g. ``private_disk``); the mix leaves it out where it is false."""

    def available(self, env: Env) -> bool:
        return self.needs is None or bool(getattr(env, self.needs))


# -- checks --------------------------------------------------------------------------------
def expect(outcome: Outcome, reason: str | None = None, *, stdout: str | None = None,
           in_output: str | None = None, in_error: str | None = None, images: int | None = None,
           file: tuple[str, bytes] | None = None, max_stdout: int | None = None) -> Check:
    def check(r: sandbox.Result) -> str | None:
        problems = []
        if r.outcome != outcome:
            problems.append(f"outcome {r.outcome!s} != {outcome!s}")
        if reason is not None and r.reason != reason:
            problems.append(f"reason {r.reason!r} != {reason!r}")
        if stdout is not None and r.stdout != stdout:
            problems.append(f"stdout {r.stdout[:200]!r} != {stdout[:200]!r}")
        if in_output is not None and in_output not in (r.output or ""):
            problems.append(f"{in_output!r} not in output {(r.output or '')[:200]!r}")
        if in_error is not None and in_error not in (r.error or ""):
            problems.append(f"{in_error!r} not in error {(r.error or '')[:200]!r}")
        if images is not None and len(r.images) != images:
            problems.append(f"{len(r.images)} images != {images}")
        if file is not None and (file[0], file[1]) not in {(f.name, f.data) for f in r.files}:
            problems.append(f"file {file[0]!r} missing from {[f.name for f in r.files]}")
        if max_stdout is not None and len(r.stdout) > max_stdout:
            problems.append(f"stdout of {len(r.stdout)} chars over the cap {max_stdout}")
        return "; ".join(problems) or None
    return check


def all_of(*checks: Check) -> Check:
    def check(r: sandbox.Result) -> str | None:
        return "; ".join(p for p in (c(r) for c in checks) if p) or None
    return check


def starts_with(token: str) -> Check:
    """Its own token first: a result delivered to the wrong caller fails here."""
    def check(r: sandbox.Result) -> str | None:
        return None if r.stdout.startswith(f"{token}\n") else f"stdout {r.stdout[:200]!r} does not start with {token!r}"
    return check


def somewhere(token: str) -> Check:
    """Its own token anywhere in its output (stdout and stderr in arrival order)."""
    def check(r: sandbox.Result) -> str | None:
        return None if token in (r.output or "") else f"{token!r} not in output {(r.output or '')[:200]!r}"
    return check


def number_between(label: str, low: int, high: int) -> Check:
    """stdout says ``<label> <n>`` with ``low <= n <= high``."""
    def check(r: sandbox.Result) -> str | None:
        found = re.search(rf"^{re.escape(label)} (\d+)", r.stdout, re.M)
        if not found:
            return f"no {label!r} count in stdout {r.stdout[:200]!r}"
        n = int(found.group(1))
        return None if low <= n <= high else f"{label} {n}, not within [{low}, {high}]"
    return check


def never(*needles: str) -> Check:
    """None of ``needles`` anywhere in what came back (text, names, file and image data)."""
    def check(r: sandbox.Result) -> str | None:
        texts = [r.stdout, r.stderr, r.error or "", *(i.name for i in r.images), *(f.name for f in r.files)]
        blobs = [f.data for f in r.files] + [i.data for i in r.images]
        hits = [n for n in needles if any(n in t for t in texts) or any(n.encode() in b for b in blobs)]
        return f"{hits} came back in the result" if hits else None
    return check


def own_or_nothing(token: str, check: Check) -> Check:
    """For the short-deadline kinds: on a loaded machine the deadline may pass before the
    snippet prints, so stdout is either its own token or empty, never anything else."""
    def both(r: sandbox.Result) -> str | None:
        if r.stdout not in ("", f"{token}\n"):
            return f"stdout {r.stdout[:200]!r} is neither '' nor {token!r}"
        return check(r)
    return both
