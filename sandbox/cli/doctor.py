"""``sandbox doctor``: which isolation layers work here, which the policy requires, and the fix.

For each layer it reports three facts, each established for real:

- **available**: the layer's own ``probe()`` on this kernel, for this uid (user
  namespaces are made and set up in a throwaway child as a worker's are, which tells
  "unavailable" from "restricted": see ``system.user_namespaces``; Landlock's ABI is
  asked of the kernel; the seccomp filter is built);
- **required**: listed in the policy's ``confinement.required``;
- **active**: observed from *inside* a real run: a probe snippet goes through
  ``sandbox.Sandbox`` (zygote, worker, full stack) and reports what it sees
  (``NoNewPrivs``, ``Seccomp`` mode, every capability set empty, pid 1 in its own
  namespace with only a down ``lo`` and no route, whether ``/`` and AF_INET are
  refused, whether it may signal the doctor's own process, its rlimits, and whether a root
  worker's threads stop short of ``limits.max_processes`` in the pids cgroup it reports joining). With
  ``--fork`` (or when the sandbox cannot start) a forked child of this process
  applies ``apply_all`` and runs the same probe instead. One part is observed by the
  host instead (:data:`.doctor_probe.HOST_OBSERVED`): the memory cgroup, which the worker cannot
  see (it is the root of its cgroup namespace); the host finds the probe's worker's
  cgroup and reads its limit from the kernel's files, as it does for every run. Where
  there is none, the probe reports whether ``memfd_create`` was refused (the fallback).
  The cpu cgroup is neither: no process of the run can see it, and its effect (a fair
  share under contention) takes seconds to show, so its row is the worker's own report
  of joining it (the worker exits rather than run outside a cgroup it reports).

Rows follow ``confine.ORDER``: the policy's layers, and four parts
(``pids_cgroup``, ``memory_cgroup`` and ``cpu_cgroup``, indented under the rlimits layer they serve;
``capabilities``, dropped in every worker: required under any policy). No policy
names the first; ``confinement.required`` may list ``memory_cgroup``. Under the
namespaces row, what the worker's mount namespace gives it (``filesystem`` in the
JSON): ``fs_view`` (its own root: the probe sees a read-only tmpfs root without
``/run`` or ``/sys/fs/cgroup``; its detail says whether the run's root was a copy of its
forker's template, seen as a ``/proc`` mounted over the template's) and ``private_disk``
(its work dir on a filesystem of exactly ``limits.max_disk_mb`` and ``max_disk_inodes``). Both are required with
namespaces: a policy that requires namespaces refuses runs where they cannot be built.
Under the seccomp row, ``state_scope`` (``sessions`` in the JSON): whether the states of
one session are kept apart (confine/state_scope.py), observed by a real session run that
signals its own checkpoint and must be refused; with ``--fork`` it reads "no" (not observed).

Here is the command (its ``--help``, flags and exit status); the probe snippet is in ``doctor_probe.py``, the runs
that observe it in ``doctor_verify.py``, the report as data in ``doctor_report.py`` (its ``system`` section in
``doctor_system.py``), the table in ``doctor_render.py``.

Exit status: 0 when every required layer is active, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json

from .doctor_render import render
from .doctor_report import diagnose

#: ``sandbox doctor --help``: what a user reads (the module's docstring above says how each fact is found).
HELP = """\
Which isolation layers work on this machine, which the policy requires, and how to fix what is missing.

One row per layer (rlimits and the pids/memory/cpu cgroups under it, no_new_privs,
namespaces with fs_view and private_disk, capabilities, landlock, seccomp with state_scope),
each with three columns:
  available  the layer works on this kernel for this user (tried for real, not guessed)
  required   the policy lists it in confinement.required (a run is refused without it)
  active     seen from inside a real run: a probe snippet runs through a Sandbox and
             reports what it finds (its seccomp mode, capabilities, pid namespace,
             network, rlimits, whether it may signal this process, ...)
A required layer that is not active gets a line saying what to change on this machine.
The lines above the table say who you are (root or not), whether user namespaces are
allowed here (Ubuntu 24.04 and many containers restrict them: runs then go without) and
what that changes. Run it as the user who will run the sandbox: root and a normal user get
different rows.

With --venv DIR the test run's zygote runs DIR's interpreter (as 'sandbox run --venv DIR'
does); the lines above the table name the interpreter and virtual environment checked.

Exit status: 0 when every required layer is active, 1 otherwise.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="which isolation layers are active here, and how to fix",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="default", help="policy name or TOML path (default: %(default)s)")
    parser.add_argument("--image", default="vertex", help="image for the test run (default: %(default)s)")
    parser.add_argument("--venv", default=None, metavar="DIR",
                        help="virtual environment holding the image (from 'sandbox image install NAME --venv DIR'): "
                             "the test run uses its interpreter")
    parser.add_argument("--fork", action="store_true",
                        help="verify in a forked child of this process instead of a real sandbox run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.fork and args.venv is not None:  # the forked child is this interpreter: the venv would go unchecked
        from ..errors import InputError
        raise InputError("--fork verifies in a forked child of this interpreter, not --venv's: give one of them")
    report = diagnose(args.policy, args.image, use_sandbox=not args.fork, venv=args.venv)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1
